//! Registry credentials in the `auth.json` format docker and podman share:
//! `{"auths": {"HOST[/NAMESPACE]": {"auth": base64("user:password")}}}`.
//!
//! Read, like podman: `REGISTRY_AUTH_FILE` alone if set; else
//! `${XDG_RUNTIME_DIR}/containers/auth.json` (`/run/containers/UID/auth.json` without
//! it), then `~/.docker/config.json`. `racker login` writes the first of those.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::endpoint::Endpoint;
use super::{RegistryError, Result};

const DOCKER_HUB_KEYS: &[&str] =
    &["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"];

/// Where credentials are read from and written to.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    pub read: Vec<PathBuf>,
    pub write: PathBuf,
}

impl AuthFiles {
    /// The files podman and docker use, as the environment says.
    pub fn from_env() -> AuthFiles {
        if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
            return AuthFiles::file(PathBuf::from(path));
        }
        let runtime = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) => PathBuf::from(dir).join("containers/auth.json"),
            None => PathBuf::from(format!("/run/containers/{}/auth.json", rustix::process::geteuid().as_raw())),
        };
        let mut read = vec![runtime.clone()];
        if let Some(home) = std::env::var_os("HOME") {
            read.push(PathBuf::from(home).join(".docker/config.json"));
        }
        AuthFiles { read, write: runtime }
    }

    /// Only `path` (`--authfile`).
    pub fn file(path: PathBuf) -> AuthFiles {
        AuthFiles { read: vec![path.clone()], write: path }
    }

    /// The user and password for `registry` (and `repository`, for namespaced entries).
    pub fn credentials(&self, registry: &str, repository: &str) -> Result<Option<(String, String)>> {
        for path in &self.read {
            let json = load(path)?;
            let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else { continue };
            // The most specific key wins: host/ns/repo, then host/ns, then host.
            let mut best: Option<(usize, &serde_json::Value)> = None;
            for (key, entry) in auths {
                let key = normalise_key(key);
                let full = format!("{registry}/{repository}");
                let hit = key == registry
                    || (registry == "docker.io" && DOCKER_HUB_KEYS.contains(&key.as_str()))
                    || full == key
                    || full.starts_with(&format!("{key}/"));
                if hit && best.is_none_or(|(len, _)| key.len() > len) {
                    best = Some((key.len(), entry));
                }
            }
            if let Some((_, entry)) = best {
                return decode(path, entry).map(Some);
            }
        }
        Ok(None)
    }
}

fn normalise_key(key: &str) -> String {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    let key = key.trim_end_matches('/');
    key.strip_suffix("/v1").or_else(|| key.strip_suffix("/v2")).unwrap_or(key).to_owned()
}

fn load(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Config {
            path: path.to_owned(),
            detail: format!("not valid JSON ({e}); fix or remove it"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(RegistryError::Config { path: path.to_owned(), detail: e.to_string() }),
    }
}

fn decode(path: &Path, entry: &serde_json::Value) -> Result<(String, String)> {
    let bad = |detail: &str| RegistryError::Config { path: path.to_owned(), detail: detail.to_owned() };
    let auth = entry.get("auth").and_then(|a| a.as_str()).ok_or_else(|| bad("an entry has no \"auth\" field"))?;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(auth).map_err(|_| bad("an \"auth\" field is not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("an \"auth\" field is not UTF-8"))?;
    let (user, password) = text.split_once(':').ok_or_else(|| bad("an \"auth\" field is not user:password"))?;
    Ok((user.to_owned(), password.to_owned()))
}

fn store(path: &Path, json: &serde_json::Value) -> Result<()> {
    let err = |e: std::io::Error| RegistryError::Config { path: path.to_owned(), detail: e.to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_vec_pretty(json).expect("a JSON value always serialises");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
        file.write_all(&text).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Checks the credentials with the registry and saves them. Returns the file written.
pub fn login(
    files: &AuthFiles,
    registry: &str,
    user: &str,
    password: &str,
    tls_verify: Option<bool>,
) -> Result<PathBuf> {
    Endpoint::resolve(registry, tls_verify)?.check_login(user, password)?;
    let mut json = load(&files.write)?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if !json.get("auths").is_some_and(|a| a.is_object()) {
        json["auths"] = serde_json::json!({});
    }
    json["auths"][registry] = serde_json::json!({ "auth": auth });
    store(&files.write, &json)?;
    Ok(files.write.clone())
}

/// Forgets the credentials for `registry`. Returns whether there were any.
pub fn logout(files: &AuthFiles, registry: &str) -> Result<bool> {
    let mut json = load(&files.write)?;
    let removed = json.get_mut("auths").and_then(|a| a.as_object_mut()).is_some_and(|auths| {
        let keys: Vec<String> = auths.keys().filter(|k| normalise_key(k) == registry).cloned().collect();
        keys.iter().for_each(|k| {
            auths.remove(k);
        });
        !keys.is_empty()
    });
    if removed {
        store(&files.write, &json)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_most_specific_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.json");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "quay.io": {"auth": enc("a:1")},
                "quay.io/team": {"auth": enc("b:2")},
                "https://index.docker.io/v1/": {"auth": enc("hub:3")},
            }})
            .to_string(),
        )
        .expect("write");
        let files = AuthFiles::file(path);
        assert_eq!(files.credentials("quay.io", "other/x").expect("ok"), Some(("a".into(), "1".into())));
        assert_eq!(files.credentials("quay.io", "team/x").expect("ok"), Some(("b".into(), "2".into())));
        assert_eq!(files.credentials("docker.io", "library/debian").expect("ok"), Some(("hub".into(), "3".into())));
        assert_eq!(files.credentials("ghcr.io", "x").expect("ok"), None);
    }
}
