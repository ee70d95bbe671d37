//! How to talk to one registry: HTTPS, HTTPS without certificate checks, or plain HTTP.
//!
//! Like docker, registries on loopback addresses are insecure by default; like podman,
//! `--tls-verify=false` and `insecure = true` in registries.conf make one insecure. An
//! insecure registry is still spoken to over HTTPS when it answers HTTPS (self-signed
//! certificates accepted), and over plain HTTP otherwise.

use std::net::IpAddr;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};

use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

use super::limits::Limits;
use super::{classify, config, AuthFiles, RegistryError, Result};
use crate::error;
use crate::http::{self, ca_certificates_present, ClientOptions, Redirects, CONNECT_TIMEOUT};
use crate::reference::Reference;
use crate::store::StoreError;

const USER_AGENT: &str = concat!("racker/", env!("CARGO_PKG_VERSION"));

pub(crate) struct Endpoint {
    pub registry: String,
    pub https: bool,
    pub accept_invalid_certs: bool,
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Endpoint {
    /// Decides the transport for `registry`. `tls_verify`: the user's explicit choice.
    pub fn resolve(registry: &str, tls_verify: Option<bool>) -> Result<Endpoint> {
        let insecure = match tls_verify {
            Some(verify) => !verify,
            None => is_loopback(registry) || config::is_insecure(registry)?,
        };
        if !insecure {
            return Ok(Endpoint { registry: registry.to_owned(), https: true, accept_invalid_certs: false });
        }
        let https = Self::probe_https(registry);
        Ok(Endpoint { registry: registry.to_owned(), https, accept_invalid_certs: https })
    }

    fn probe_https(registry: &str) -> bool {
        let options = ClientOptions {
            accept_invalid_certs: true,
            timeout: Some(Duration::from_secs(5)),
            ..ClientOptions::default()
        };
        http::blocking_client(&options).and_then(|c| c.get(format!("https://{registry}/v2/")).send()).is_ok()
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.registry)
    }

    /// Whether this endpoint's session may skip certificate checks, or an error if it
    /// needs the host's CA certificates and there are none (reqwest would fail to build
    /// its verifier, and oci-client answers that with a panic).
    ///
    /// A plain-HTTP registry needs no certificates; only a token realm on HTTPS could,
    /// and its address arrives over plain HTTP, so verifying it would protect nothing:
    /// on a host without CA certificates it is spoken to unverified, as the registry is.
    fn skip_certificate_checks(&self) -> Result<bool> {
        if self.accept_invalid_certs {
            return Ok(true);
        }
        if ca_certificates_present() {
            return Ok(false);
        }
        if self.https {
            return Err(RegistryError::NoCaCertificates { registry: self.registry.clone() });
        }
        Ok(true)
    }

    /// The oci-client for this endpoint (push). oci-client builds a default reqwest
    /// client whatever the configuration, and that panics on a host without CA
    /// certificates: refused here instead.
    pub fn client(&self, limits: &Limits) -> Result<oci_client::Client> {
        if !ca_certificates_present() {
            return Err(RegistryError::NoCaCertificates { registry: self.registry.clone() });
        }
        let config = ClientConfig {
            protocol: if self.https {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(vec![self.registry.clone()])
            },
            accept_invalid_certificates: self.skip_certificate_checks()?,
            connect_timeout: Some(CONNECT_TIMEOUT.min(limits.idle)),
            read_timeout: Some(limits.idle),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        // Not `Client::new`: on failure it falls back to a default client.
        oci_client::Client::try_from(config).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            detail: format!("cannot set up an HTTP client: {}", error::chain(&e)),
        })
    }

    /// The HTTP client pulls read manifests and blobs with: every wait for a byte is
    /// bounded by the idle timeout; redirects (to a CDN) are followed at most 10 times,
    /// and reqwest drops the `Authorization` header on those that leave the registry.
    fn http_client(&self, limits: &Limits) -> Result<reqwest::Client> {
        http::client(&ClientOptions {
            accept_invalid_certs: self.skip_certificate_checks()?,
            connect_timeout: Some(CONNECT_TIMEOUT.min(limits.idle)),
            read_timeout: Some(limits.idle),
            redirects: Redirects::Limited(10),
            user_agent: Some(USER_AGENT),
            ..ClientOptions::default()
        })
        .map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            detail: format!("cannot set up an HTTP client: {}", error::chain(&e)),
        })
    }

    /// The reference in oci-client's terms (it maps docker.io to its API host itself).
    pub fn oci_reference(&self, reference: &Reference, digest: Option<&str>) -> oci_client::Reference {
        let registry = reference.registry().to_owned();
        let repository = reference.repository().to_owned();
        match (digest.map(str::to_owned).or_else(|| reference.digest().map(|d| d.to_string())), reference.tag()) {
            (Some(digest), _) => oci_client::Reference::with_digest(registry, repository, digest),
            (None, tag) => oci_client::Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_owned()),
        }
    }

    /// Checks credentials the way `docker login` does: against `/v2/`, through the
    /// bearer-token realm when the registry names one.
    pub fn check_login(&self, user: &str, password: &str) -> Result<()> {
        let client = http::blocking_client(&ClientOptions {
            accept_invalid_certs: self.skip_certificate_checks()?,
            timeout: Some(Duration::from_secs(30)),
            ..ClientOptions::default()
        })
        .map_err(|e| self.unreachable(&e))?;
        let url = format!("{}/v2/", self.base_url());
        let probe = client.get(&url).send().map_err(|e| self.unreachable(&e))?;
        if probe.status().is_success() {
            return Ok(()); // a registry without authentication accepts anyone
        }
        let challenge = probe
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let answer = match challenge.split_once(' ') {
            Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => {
                let param = |key: &str| bearer_param(params, key);
                let realm = param("realm").ok_or_else(|| RegistryError::Protocol {
                    registry: self.registry.clone(),
                    detail: format!("bearer challenge without a realm: {challenge}"),
                })?;
                let mut query = vec![("account", user.to_owned())];
                if let Some(service) = param("service") {
                    query.push(("service", service));
                }
                client.get(realm).query(&query).basic_auth(user, Some(password)).send()
            }
            _ => client.get(&url).basic_auth(user, Some(password)).send(),
        }
        .map_err(|e| self.unreachable(&e))?;
        match answer.status() {
            s if s.is_success() => Ok(()),
            s if s.as_u16() == 401 || s.as_u16() == 403 => Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail: " (incorrect username or password)".into(),
            }),
            s => {
                Err(RegistryError::Protocol { registry: self.registry.clone(), detail: format!("login answered {s}") })
            }
        }
    }

    fn unreachable(&self, err: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable { registry: self.registry.clone(), detail: error::chain(err) }
    }
}

/// One registry and repository with the user's credentials, the HTTP client a pull
/// speaks through, and the runtime async calls run on.
pub(crate) struct Session {
    pub endpoint: Endpoint,
    pub http: reqwest::Client,
    pub auth: RegistryAuth,
    /// The bearer token a pull's requests carry, if the registry hands out tokens (see
    /// [`Session::authenticate`]); else they carry `auth`.
    pub token: std::sync::Mutex<Option<String>>,
    pub limits: Limits,
    pub runtime: tokio::runtime::Runtime,
}

impl Session {
    pub fn open(reference: &Reference, tls_verify: Option<bool>, auth: &AuthFiles) -> Result<Session> {
        let registry = reference.registry();
        let endpoint = Endpoint::resolve(registry, tls_verify)?;
        let limits = Limits::from_env();
        let http = endpoint.http_client(&limits)?;
        let auth = match auth.credentials(registry, reference.repository())? {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        };
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| {
                RegistryError::Store(StoreError::Invalid { what: "async runtime".into(), reason: e.to_string() })
            })?;
        Ok(Session { endpoint, http, auth, token: Default::default(), limits, runtime })
    }

    /// An oci-client authenticated for `operation` on `reference` (push uses it).
    pub fn oci_client(&self, reference: &Reference, operation: RegistryOperation) -> Result<oci_client::Client> {
        let client = self.endpoint.client(&self.limits)?;
        let oci_ref = self.endpoint.oci_reference(reference, None);
        self.runtime
            .block_on(client.auth(&oci_ref, &self.auth, operation))
            .map_err(|e| classify(e, reference.registry(), &reference.to_string()))?;
        Ok(client)
    }
}

/// A `key="value"` parameter of a `WWW-Authenticate: Bearer` challenge.
pub(crate) fn bearer_param(params: &str, key: &str) -> Option<String> {
    params.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for r in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["docker.io", "quay.io:443", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull""#;
        assert_eq!(bearer_param(p, "realm").as_deref(), Some("https://auth.docker.io/token"));
        assert_eq!(bearer_param(p, "service").as_deref(), Some("registry.docker.io"));
        assert_eq!(bearer_param(p, "error"), None);
    }
}
