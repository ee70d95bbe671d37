//! The insecure-registry settings of containers-registries.conf(5), read as podman
//! reads them: `/etc/containers/registries.conf` and `registries.conf.d/*.conf` in
//! name order, or only the file `CONTAINERS_REGISTRIES_CONF` names.

use std::path::{Path, PathBuf};

use super::{RegistryError, Result};

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
pub(crate) fn is_insecure(registry: &str) -> Result<bool> {
    let mut insecure = false;
    for path in files() {
        let file = read(&path)?;
        for entry in &file.registry {
            let pattern = if entry.prefix.is_empty() { &entry.location } else { &entry.prefix };
            if let (Some(flag), true) = (entry.insecure, covers(pattern, registry)) {
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
    fn the_environment_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, "[[registry]]\nlocation = \"insecure.example:5000\"\ninsecure = true\n").expect("write");
        // SAFETY: this test is the only one in the crate that touches this variable.
        unsafe { std::env::set_var("CONTAINERS_REGISTRIES_CONF", &path) };
        assert!(is_insecure("insecure.example:5000").expect("reads"));
        assert!(!is_insecure("other.example:5000").expect("reads"));
        std::fs::write(&path, "[[registry]\n").expect("write");
        let err = is_insecure("x").expect_err("broken file");
        assert!(err.to_string().contains("registries.conf"), "{err}");
        unsafe { std::env::remove_var("CONTAINERS_REGISTRIES_CONF") };
    }
}
