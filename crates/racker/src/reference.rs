//! Image references, normalised the way docker normalises them.
//!
//! `debian` is `docker.io/library/debian:latest`; a first path component with a dot,
//! a colon or equal to `localhost` is a registry host; `docker://` is accepted and
//! dropped. Names are stored fully qualified so that an image imported locally and
//! the same image pulled later land under one name.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const OFFICIAL_PREFIX: &str = "library/";

/// A fully qualified reference: registry, repository path, and a tag and/or digest.
///
/// Equality and hashing ignore whether the tag was written or defaulted: `debian` and
/// `debian:latest` name the same image.
#[derive(Clone, Debug)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
    /// The tag was written, not the `latest` a bare name gets: a filter such as
    /// `racker images debian` matches every tag, `debian:latest` only that one.
    tag_given: bool,
}

impl PartialEq for Reference {
    fn eq(&self, other: &Self) -> bool {
        (&self.registry, &self.repository, &self.tag, &self.digest)
            == (&other.registry, &other.repository, &other.tag, &other.digest)
    }
}

impl Eq for Reference {}

impl std::hash::Hash for Reference {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.registry, &self.repository, &self.tag, &self.digest).hash(state);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: &'static str },
}

fn invalid(reference: &str, reason: &'static str) -> ReferenceError {
    ReferenceError::Invalid { reference: reference.to_owned(), reason }
}

fn is_registry_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    let bytes = c.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut prev_sep: Option<u8> = None;
    let mut sep_len = 0;
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {
                prev_sep = None;
                sep_len = 0;
            }
            b'.' | b'_' | b'-' => {
                sep_len += 1;
                let ok = match (prev_sep, b) {
                    (None, _) => true,
                    (Some(b'_'), b'_') => sep_len == 2,
                    (Some(b'-'), b'-') => true,
                    _ => false,
                };
                if !ok {
                    return false;
                }
                prev_sep = Some(b);
            }
            _ => return false,
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` would.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let s = input.strip_prefix("docker://").unwrap_or(input);
        if s.is_empty() {
            return Err(invalid(input, "empty name"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                (r, Some(d.parse::<Digest>().map_err(|_| invalid(input, "digest must be sha256:<64 hex>"))?))
            }
            None => (s, None),
        };
        // A tag follows the last colon, unless that colon belongs to a host:port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(input, "tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_host(first) => (first.to_owned(), path.to_owned()),
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_owned() } else { registry };
        let repository =
            if registry == DEFAULT_REGISTRY && !path.contains('/') { format!("{OFFICIAL_PREFIX}{path}") } else { path };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(input, "repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(invalid(input, "repository path components are [a-z0-9] separated by '.', '_', '__' or '-'"));
        }
        if registry.len() + 1 + repository.len() > 255 {
            return Err(invalid(input, "name is longer than 255 characters"));
        }
        let tag_given = tag.is_some();
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest, tag_given })
    }

    /// Parses a name as podman names local images (`load` of an OCI archive, `import`):
    /// a name without a registry host is `localhost/NAME`, and `:latest` without a tag.
    /// A full reference (`quay.io/x/y:1`, `docker.io/foo`) is used as is.
    pub fn parse_local(input: &str) -> Result<Self, ReferenceError> {
        match Reference::local_alternative(input) {
            Some(local) => local,
            None => Reference::parse(input),
        }
    }

    /// `localhost/NAME` for a short name (no registry host), which is where podman's
    /// rule puts imported and loaded images; `None` for a name that has a host.
    pub fn local_alternative(input: &str) -> Option<Result<Self, ReferenceError>> {
        let s = input.strip_prefix("docker://").unwrap_or(input);
        match s.split_once('/') {
            Some((first, _)) if is_registry_host(first) => None,
            _ if s.is_empty() => None,
            _ => Some(Reference::parse(&format!("localhost/{s}"))),
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// The tag, if the reference spelled one out (`debian:latest`, not `debian`).
    pub fn explicit_tag(&self) -> Option<&str> {
        self.tag.as_deref().filter(|_| self.tag_given)
    }

    /// `registry/repository`, the key under which tags are stored.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints: `debian` for `docker.io/library/debian`.
    pub fn familiar_name(&self) -> String {
        familiar_name(&self.name())
    }

    /// A copy with another tag (and no digest), as `racker tag` makes.
    pub fn with_tag(&self, tag: &str) -> Self {
        Reference { tag: Some(tag.to_owned()), digest: None, tag_given: true, ..self.clone() }
    }
}

/// Shortens a fully qualified repository name the way docker displays it.
pub fn familiar_name(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix(OFFICIAL_PREFIX).unwrap_or(rest).to_owned(),
        None => name.to_owned(),
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("debian"), "docker.io/library/debian:latest");
        assert_eq!(norm("docker://debian:bookworm-slim"), "docker.io/library/debian:bookworm-slim");
        assert_eq!(norm("fedora:37"), "docker.io/library/fedora:37");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("index.docker.io/library/debian"), "docker.io/library/debian:latest");
        assert_eq!(norm("quay.io/centos/centos:stream9"), "quay.io/centos/centos:stream9");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(norm("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(norm(&format!("debian@{d}")), format!("docker.io/library/debian@{d}"));
        assert_eq!(norm(&format!("debian:12@{d}")), format!("docker.io/library/debian:12@{d}"));
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "Debian", "debian:", "a//b", "debian@sha256:xyz", "-x", "x:tag with space", "a/B"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn familiar_names() {
        assert_eq!(Reference::parse("debian").unwrap().familiar_name(), "debian");
        assert_eq!(Reference::parse("user/app").unwrap().familiar_name(), "user/app");
        assert_eq!(Reference::parse("quay.io/a/b").unwrap().familiar_name(), "quay.io/a/b");
    }

    #[test]
    fn remembers_whether_the_tag_was_written() {
        fn parse(s: &str) -> Reference {
            Reference::parse(s).unwrap()
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse("debian").explicit_tag(), None);
        assert_eq!(parse("debian").tag(), Some("latest"));
        assert_eq!(parse("debian:latest").explicit_tag(), Some("latest"));
        assert_eq!(parse("localhost:5000/app").explicit_tag(), None);
        assert_eq!(parse("localhost:5000/app:1").explicit_tag(), Some("1"));
        assert_eq!(parse(&format!("debian@{d}")).explicit_tag(), None);
        assert_eq!(parse(&format!("debian:12@{d}")).explicit_tag(), Some("12"));
        assert_eq!(parse("debian").with_tag("12").explicit_tag(), Some("12"));
        // Written or defaulted, the same image.
        assert_eq!(parse("debian"), parse("debian:latest"));
    }

    #[test]
    fn local_names_follow_podman() {
        let local = |s: &str| Reference::parse_local(s).map(|r| r.to_string());
        assert_eq!(local("foo:1").as_deref(), Ok("localhost/foo:1"));
        assert_eq!(local("latest").as_deref(), Ok("localhost/latest:latest"));
        assert_eq!(local("team/app").as_deref(), Ok("localhost/team/app:latest"));
        assert_eq!(local("quay.io/x/y:2").as_deref(), Ok("quay.io/x/y:2"));
        assert_eq!(local("docker.io/foo").as_deref(), Ok("docker.io/library/foo:latest"));
        assert!(Reference::local_alternative("quay.io/x/y").is_none());
        assert!(local("Bad").is_err());
    }
}
