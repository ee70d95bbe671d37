//! `racker container prune`: every stopped container removed (with its writes), as
//! docker's, narrowed by `--filter until=…` and `--filter label=…`.

use chrono::{DateTime, Utc};

use super::lifecycle::{alive, list, remove};
use super::{Result, RuntimeError};
use crate::store::{ContainerRecord, ContainerState, Store};

/// Which stopped containers `prune` removes: docker's `until` and `label` filters.
#[derive(Clone, Debug, Default)]
pub struct PruneFilter {
    /// Only containers created before this.
    pub until: Option<DateTime<Utc>>,
    /// `label=KEY[=VALUE]` (must have) and `label!=KEY[=VALUE]` (must not have).
    pub labels: Vec<LabelFilter>,
}

#[derive(Clone, Debug)]
pub struct LabelFilter {
    pub key: String,
    pub value: Option<String>,
    pub negated: bool,
}

impl PruneFilter {
    /// Parses `--filter` values: `until=TIMESTAMP|DURATION`, `label=KEY[=VALUE]`,
    /// `label!=KEY[=VALUE]`. A timestamp is RFC 3339, a date, or Unix seconds; a duration
    /// (`10m`, `1h30m`) counts back from `now`.
    pub fn parse(filters: &[String], now: DateTime<Utc>) -> Result<PruneFilter> {
        let bad =
            |f: &str, reason: &str| RuntimeError::Invalid { what: format!("filter {f:?}"), reason: reason.into() };
        let mut parsed = PruneFilter::default();
        for f in filters {
            if let Some(rest) = f.strip_prefix("label!=") {
                parsed.labels.push(label(rest, true));
            } else if let Some(rest) = f.strip_prefix("label=") {
                parsed.labels.push(label(rest, false));
            } else if let Some(rest) = f.strip_prefix("until=") {
                let until = crate::timestamp::parse(rest, now).ok_or_else(|| {
                    bad(f, "expected a timestamp (2024-01-02T15:04:05Z, 2024-01-02, Unix seconds) or a duration (10m, 1h30m)")
                })?;
                parsed.until = Some(until);
            } else {
                return Err(bad(f, "prune filters by until=… or label=…"));
            }
        }
        Ok(parsed)
    }

    fn matches(&self, record: &ContainerRecord) -> bool {
        let created = DateTime::parse_from_rfc3339(&record.created).map(|t| t.with_timezone(&Utc)).ok();
        if let (Some(until), Some(created)) = (self.until, created) {
            if created >= until {
                return false;
            }
        }
        let labels = super::spec_of(record).map(|s| s.flags.labels).unwrap_or_default();
        self.labels.iter().all(|l| l.passes(labels.get(&l.key).map(String::as_str)))
    }
}

impl LabelFilter {
    /// Whether an object whose label `self.key` has `value` (None: no such label) passes.
    pub fn passes(&self, value: Option<&str>) -> bool {
        let has = value.is_some_and(|v| self.value.as_deref().is_none_or(|want| want == v));
        has != self.negated
    }
}

fn label(text: &str, negated: bool) -> LabelFilter {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (text.to_owned(), None),
    };
    LabelFilter { key, value, negated }
}

/// Removes every stopped container `filter` matches (a container its owner is still
/// starting or restarting is not stopped); returns the ids removed with the bytes each one's writes
/// took. One that cannot be removed is reported and left for the next prune.
pub fn prune(store: &Store, filter: &PruneFilter) -> Result<Vec<(String, u64)>> {
    let mut removed = Vec::new();
    for status in list(store, true)? {
        let record = status.record;
        let starting = record.state == ContainerState::Created && alive(record.monitor_pid);
        // Between two runs of its restart policy a container is not stopped (docker).
        let restarting = record.state == ContainerState::Restarting && alive(record.monitor_pid);
        if status.running || starting || restarting || !filter.matches(&record) {
            continue;
        }
        let size = super::files::writes_size(store, &record.id).unwrap_or(0);
        match remove(store, &record.id, false) {
            Ok(()) => removed.push((record.id, size)),
            Err(e) => tracing::warn!("container {}: not pruned: {e}", record.name),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_until_and_label() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T12:00:00Z").unwrap().with_timezone(&Utc);
        assert!(PruneFilter::parse(&["colour=red".into()], now).is_err());
    }
}
