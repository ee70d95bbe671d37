//! `--filter KEY=VALUE` as docker takes it: values of one key are alternatives (any
//! may match), different keys must all match.

use std::collections::BTreeMap;

use crate::template::UsageError;

/// The `--filter` flags of one command, grouped by key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the flags; a key not in `valid` is a usage error naming the valid ones.
    pub fn parse(flags: &[String], valid: &[&str]) -> Result<Filters, UsageError> {
        let mut filters = BTreeMap::<String, Vec<String>>::new();
        for flag in flags {
            let Some((key, value)) = flag.split_once('=') else {
                return Err(UsageError(format!("bad format of filter {flag:?} (expected name=value)")));
            };
            let key = key.trim().to_ascii_lowercase();
            if !valid.contains(&key.as_str()) {
                return Err(UsageError(format!("invalid filter '{key}': valid filters are {}", valid.join(", "))));
            }
            filters.entry(key).or_default().push(value.to_owned());
        }
        Ok(Filters(filters))
    }

    /// The values given for `key` (none when the flag was not given).
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether an item passes `key`: no value given, or any value `matches`.
    pub fn pass(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|values| values.iter().any(|v| matches(v)))
    }

    /// `pass` for a check that can fail on its value (an unknown image, a bad regex).
    pub fn try_pass(&self, key: &str, matches: impl Fn(&str) -> Result<bool, UsageError>) -> Result<bool, UsageError> {
        let Some(values) = self.0.get(key) else { return Ok(true) };
        for value in values {
            if matches(value)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// `label=KEY` (the label is set) or `label=KEY=VALUE` (set to VALUE).
pub fn label_matches(filter: &str, labels: &BTreeMap<String, String>) -> bool {
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

/// docker's `reference=` match: Go's `path.Match` of the pattern against `NAME:TAG`,
/// then against `NAME` alone (`busybox` matches every tag of busybox; `*` stops at `/`).
pub fn reference_matches(pattern: &str, name: &str, tag: &str) -> Result<bool, UsageError> {
    let glob =
        glob::Pattern::new(pattern).map_err(|e| UsageError(format!("invalid reference filter {pattern:?}: {e}")))?;
    let options = glob::MatchOptions { require_literal_separator: true, ..glob::MatchOptions::new() };
    Ok(glob.matches_with(&format!("{name}:{tag}"), options) || glob.matches_with(name, options))
}

/// `true` or `false`, for `dangling=`.
pub fn boolean(key: &str, value: &str) -> Result<bool, UsageError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(UsageError(format!("invalid filter '{key}={value}': expected true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn same_key_is_or_different_keys_are_and() {
        let f = Filters::parse(&flags(&["name=a", "name=b", "status=exited"]), &["name", "status"]).expect("valid");
        assert_eq!(f.values("name"), ["a", "b"]);
        assert!(f.pass("name", |v| v == "b"));
        assert!(!f.pass("status", |v| v == "running"));
        assert!(f.pass("label", |_| false), "a key not given lets everything pass");
    }

    #[test]
    fn unknown_keys_and_bad_flags_are_named() {
        let err = Filters::parse(&flags(&["colour=red"]), &["label", "name"]).expect_err("unknown key");
        assert_eq!(err.to_string(), "invalid filter 'colour': valid filters are label, name");
        let err = Filters::parse(&flags(&["name"]), &["name"]).expect_err("no value");
        assert_eq!(err.to_string(), "bad format of filter \"name\" (expected name=value)");
    }

    #[test]
    fn labels_match_by_key_or_key_and_value() {
        let labels = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        assert!(label_matches("a", &labels));
        assert!(label_matches("a=1", &labels));
        assert!(!label_matches("a=2", &labels));
        assert!(!label_matches("b", &labels));
    }

    #[test]
    fn references_match_as_dockers_globs() {
        let m = |p: &str, n: &str, t: &str| reference_matches(p, n, t).expect("pattern");
        assert!(m("busybox", "busybox", "latest"));
        assert!(m("busybox:latest", "busybox", "latest"));
        assert!(!m("busybox:1", "busybox", "latest"));
        assert!(m("busy*", "busybox", "latest"));
        assert!(m("*:lat*", "busybox", "latest"));
        assert!(!m("*", "library/busybox", "latest"), "* stops at a slash");
        assert!(m("*/*", "library/busybox", "latest"));
    }
}
