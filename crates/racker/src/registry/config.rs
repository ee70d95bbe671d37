//! The insecure-registry settings and pull rewrites of containers-registries.conf(5),
//! read as podman reads them: `/etc/containers/registries.conf` and
//! `registries.conf.d/*.conf` in name order, or only the file `CONTAINERS_REGISTRIES_CONF`
//! names.
//!
//! A rewrite is a `[[registry]]` with both `prefix` and `location`: an image whose
//! name matches the prefix (the whole name, or up to a `/`, `:` or `@`) is pulled from
//! the location with the rest of its name appended; the longest matching prefix wins,
//! and a later file's entry replaces an earlier one with the same prefix.

use std::path::{Path, PathBuf};

use super::{RegistryError, Result};
use crate::reference::Reference;

const MAIN: &str = "/etc/containers/registries.conf";
const DROP_IN_DIR: &str = "/etc/containers/registries.conf.d";

#[derive(serde::Deserialize, Default)]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
    /// The version 1 format: `[registries.insecure] registries = [...]`.
    #[serde(default)]
    registries: Option<V1>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    location: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    insecure: Option<bool>,
}

#[derive(serde::Deserialize)]
struct V1 {
    #[serde(default)]
    insecure: Option<V1List>,
}

#[derive(serde::Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

fn files() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(path)];
    }
    let mut files = vec![PathBuf::from(MAIN)];
    if let Ok(entries) = std::fs::read_dir(DROP_IN_DIR) {
        let mut drop_ins: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "conf")).collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    files
}

/// Whether `pattern` (a host, `host/namespace`, or `*.domain`) covers the registry host.
fn covers(pattern: &str, registry: &str) -> bool {
    let host = pattern.split('/').next().unwrap_or(pattern);
    match host.strip_prefix("*.") {
        Some(domain) => registry.ends_with(&format!(".{domain}")),
        None => host == registry,
    }
}

fn read(path: &Path) -> Result<File> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
        Err(e) => return Err(RegistryError::Config { path: path.to_owned(), detail: e.to_string() }),
    };
    toml::from_str(&text).map_err(|e| RegistryError::Config {
        path: path.to_owned(),
        detail: format!("{}; fix or remove the file", e.message()),
    })
}

/// Whether the configuration marks `registry` insecure. Later files override earlier ones.
/// An entry's flag covers its prefix and its location (where a rewrite sends pulls).
pub(crate) fn is_insecure(registry: &str) -> Result<bool> {
    is_insecure_in(&files(), registry)
}

/// [`is_insecure`] by the configuration in `files`.
fn is_insecure_in(files: &[PathBuf], registry: &str) -> Result<bool> {
    let mut insecure = false;
    for path in files {
        let file = read(path)?;
        for entry in &file.registry {
            let pattern = if entry.prefix.is_empty() { &entry.location } else { &entry.prefix };
            let covered =
                covers(pattern, registry) || (!entry.location.is_empty() && covers(&entry.location, registry));
            if let (Some(flag), true) = (entry.insecure, covered) {
                insecure = flag;
            }
        }
        if let Some(list) = file.registries.and_then(|r| r.insecure) {
            if list.registries.iter().any(|r| covers(r, registry)) {
                insecure = true;
            }
        }
    }
    Ok(insecure)
}

/// Where to pull `reference` from: itself, or what the longest matching `prefix` of
/// the configuration rewrites it to.
pub(crate) fn rewrite(reference: &Reference) -> Result<Reference> {
    rewrite_in(&files(), reference)
}

/// [`rewrite`] by the configuration in `files`.
fn rewrite_in(files: &[PathBuf], reference: &Reference) -> Result<Reference> {
    let mut rules: Vec<(String, String, PathBuf)> = Vec::new();
    for path in files {
        for entry in read(path)?.registry {
            if entry.prefix.is_empty() || entry.location.is_empty() || entry.prefix.starts_with("*.") {
                continue; // no rewrite: a plain entry, or a wildcard (which may not have a location)
            }
            rules.retain(|(prefix, _, _)| *prefix != entry.prefix);
            rules.push((entry.prefix, entry.location, path.clone()));
        }
    }
    let full = reference.to_string();
    let Some((prefix, location, path)) =
        rules.iter().filter(|(prefix, _, _)| prefix_matches(prefix, &full)).max_by_key(|(prefix, _, _)| prefix.len())
    else {
        return Ok(reference.clone());
    };
    let rewritten = format!("{location}{}", &full[prefix.len()..]);
    Reference::parse(&rewritten).map_err(|e| RegistryError::Config {
        path: path.clone(),
        detail: format!("prefix {prefix:?} rewrites {full} to {rewritten:?}, which is not a valid reference: {e}"),
    })
}

/// containers-registries.conf(5): a prefix matches the whole name, or a part of it
/// that ends where a path component, tag or digest begins.
fn prefix_matches(prefix: &str, full: &str) -> bool {
    full.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':', '@']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats() {
        let v2: File = toml::from_str(
            r#"
            unqualified-search-registries = ["docker.io"]
            [[registry]]
            location = "registry.example.com:5000"
            insecure = true
            [[registry]]
            prefix = "*.internal"
            location = "mirror.internal"
            insecure = true
            "#,
        )
        .expect("v2 parses");
        assert_eq!(v2.registry.len(), 2);
        let v1: File = toml::from_str("[registries.insecure]\nregistries = ['old.example.com']\n").expect("v1 parses");
        assert_eq!(
            v1.registries.and_then(|r| r.insecure).map(|l| l.registries),
            Some(vec!["old.example.com".to_owned()])
        );
        assert!(covers("registry.example.com:5000", "registry.example.com:5000"));
        assert!(covers("*.internal", "a.internal"));
        assert!(covers("quay.io/ns", "quay.io"));
        assert!(!covers("registry.example.com", "registry.example.com:5000"));
    }

    #[test]
    fn entries_mark_registries_insecure_and_rewrite_by_the_longest_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, "[[registry]]\nlocation = \"insecure.example:5000\"\ninsecure = true\n").expect("write");
        // A path, not CONTAINERS_REGISTRIES_CONF: setting the environment races other test threads.
        let files = [path.clone()];
        let is_insecure = |registry: &str| is_insecure_in(&files, registry);
        assert!(is_insecure("insecure.example:5000").expect("reads"));
        assert!(!is_insecure("other.example:5000").expect("reads"));
        std::fs::write(
            &path,
            "[[registry]]\nprefix = \"docker.io/library\"\nlocation = \"mirror.example/lib\"\n\
             [[registry]]\nprefix = \"docker.io/library/debian\"\nlocation = \"127.0.0.1:5000/library/debian\"\n\
             insecure = true\n\
             [[registry]]\nprefix = \"docker.io/library/debianx\"\nlocation = \"elsewhere.example/x\"\n",
        )
        .expect("write");
        let rewrite_of =
            |r: &str| rewrite_in(&files, &Reference::parse(r).expect("reference")).expect("reads").to_string();
        assert_eq!(rewrite_of("debian:bookworm"), "127.0.0.1:5000/library/debian:bookworm", "longest prefix");
        assert_eq!(rewrite_of("library/debian/sub:1"), "127.0.0.1:5000/library/debian/sub:1");
        assert_eq!(rewrite_of("debiana:1"), "mirror.example/lib/debiana:1", "a prefix ends at a boundary");
        assert_eq!(rewrite_of("quay.io/x/y:1"), "quay.io/x/y:1", "no match, no rewrite");
        assert!(is_insecure("127.0.0.1:5000").expect("reads"), "insecure covers the location");
        std::fs::write(&path, "[[registry]\n").expect("write");
        let err = is_insecure("x").expect_err("broken file");
        assert!(err.to_string().contains("registries.conf"), "{err}");
    }
}
