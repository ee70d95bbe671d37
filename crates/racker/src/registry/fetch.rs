//! The HTTP of a pull, spoken with reqwest directly rather than through oci-client, whose
//! reads are unbounded (a manifest, a token or an error body is read whole, however long)
//! and whose client cannot even be built on a host without CA certificates. Here every
//! body is read only up to what racker will accept, every wait for a byte ends after the
//! idle timeout, and each failure says whether trying again could help.

use oci_client::secrets::RegistryAuth;
use oci_client::Reference as OciReference;
use oci_spec::image::MediaType;
use reqwest::{header, Response, StatusCode};

use super::endpoint::{bearer_param, Session};
use super::limits::MAX_DOCUMENT_BYTES;
use super::{RegistryError, Result};

/// How much of an error answer's body is read for its message.
const ERROR_BODY_BYTES: usize = 4096;
/// A token answer is a small JSON document.
const MAX_TOKEN_BYTES: u64 = 1 << 20;

/// Why a request failed, before it is known what the request was for.
pub(crate) enum Failure {
    NotFound(String),
    Unauthorized(String),
    /// Network trouble, a timeout, a 5xx or 429: another attempt may succeed.
    Transient(String),
    /// Anything else, redirect loops included: another attempt would fail alike.
    Fatal(String),
}

impl Failure {
    pub fn retryable(&self) -> bool {
        matches!(self, Failure::Transient(_))
    }

    pub fn detail(&self) -> &str {
        match self {
            Failure::NotFound(d) | Failure::Unauthorized(d) | Failure::Transient(d) | Failure::Fatal(d) => d,
        }
    }

    /// The error for a request about `what` (a reference, `blob sha256:…`).
    pub fn into_error(self, registry: &str, what: &str) -> RegistryError {
        let registry = registry.to_owned();
        match self {
            Failure::NotFound(detail) => RegistryError::NotFound { reference: what.to_owned(), detail },
            Failure::Unauthorized(detail) => RegistryError::Unauthorized { registry, detail: format!(" ({detail})") },
            Failure::Transient(detail) => RegistryError::Unreachable { registry, detail: format!("{what}: {detail}") },
            Failure::Fatal(detail) => RegistryError::Protocol { registry, detail: format!("{what}: {detail}") },
        }
    }
}

impl Session {
    fn base_url(&self, reference: &OciReference) -> String {
        let scheme = if self.endpoint.https { "https" } else { "http" };
        format!("{scheme}://{}", reference.resolve_registry())
    }

    /// Authenticates the pull as docker does: `GET /v2/`; a `Bearer` challenge sends the
    /// user's credentials (if any) to the token realm it names, for a token to pull
    /// `reference`'s repository; a `Basic` one makes every request carry them.
    pub fn authenticate(&self, reference: &OciReference) -> Result<()> {
        let token = self
            .runtime
            .block_on(self.fetch_token(reference))
            .map_err(|f| f.into_error(&self.endpoint.registry, "authenticating (GET /v2/ and the token realm)"))?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        Ok(())
    }

    async fn fetch_token(&self, reference: &OciReference) -> std::result::Result<Option<String>, Failure> {
        let probe = self
            .http
            .get(format!("{}/v2/", self.base_url(reference)))
            .send()
            .await
            .map_err(|e| self.transport_failure(&e))?;
        if probe.status() != StatusCode::UNAUTHORIZED {
            return Ok(None); // open, or a registry that only checks the repository
        }
        let challenge =
            probe.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let params = match challenge.split_once(' ') {
            Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => params,
            _ => return Ok(None), // Basic: the credentials go with every request
        };
        let realm = bearer_param(params, "realm")
            .ok_or_else(|| Failure::Fatal(format!("a bearer challenge without a realm: {challenge}")))?;
        let mut query = vec![("scope", format!("repository:{}:pull", reference.repository()))];
        if let Some(service) = bearer_param(params, "service") {
            query.push(("service", service));
        }
        let mut request = self.http.get(&realm).query(&query);
        if let RegistryAuth::Basic(user, password) = &self.auth {
            // To the realm only: reqwest drops the header on a redirect elsewhere.
            request = request.basic_auth(user, Some(password)).query(&[("account", user)]);
        }
        let in_realm = |detail: String| format!("token realm {realm}: {detail}");
        let response = request.send().await.map_err(|e| self.transport_failure(&e))?;
        let response = checked(response).await.map_err(|f| match f {
            Failure::NotFound(d) => Failure::Fatal(in_realm(d)),
            f => f,
        })?;
        let body = read_bounded(response, MAX_TOKEN_BYTES, self)
            .await?
            .ok_or_else(|| Failure::Fatal(in_realm("the answer is over 1 MiB".into())))?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Failure::Fatal(in_realm(format!("not JSON: {e}"))))?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| Some(t.to_owned()))
            .ok_or_else(|| Failure::Fatal(in_realm("no token in the answer".into())))
    }

    /// `GET /v2/<repository>/<kind>/<name>` (kind: `manifests` or `blobs`), from byte
    /// `offset` on, with the session's token or credentials. Returns a successful response.
    pub async fn get(
        &self,
        reference: &OciReference,
        kind: &str,
        name: &str,
        accept: &[MediaType],
        offset: u64,
    ) -> std::result::Result<Response, Failure> {
        let url = format!("{}/v2/{}/{kind}/{name}", self.base_url(reference), reference.repository());
        let mut response = self.send(&url, accept, offset).await?;
        let token = || self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if response.status() == StatusCode::UNAUTHORIZED && token().is_some() {
            // Tokens expire (Docker Hub's after 5 minutes): a fresh one, once.
            let fresh = self.fetch_token(reference).await?;
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            response = self.send(&url, accept, offset).await?;
        }
        checked(response).await
    }

    async fn send(&self, url: &str, accept: &[MediaType], offset: u64) -> std::result::Result<Response, Failure> {
        let mut request = self.http.get(url);
        if !accept.is_empty() {
            let types: Vec<&str> = accept.iter().map(MediaType::as_ref).collect();
            request = request.header(header::ACCEPT, types.join(", "));
        }
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        // To the registry only: reqwest drops the header on redirects to another host.
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        request.send().await.map_err(|e| self.transport_failure(&e))
    }

    /// A failure below HTTP: network trouble is retryable, a redirect loop is not.
    pub fn transport_failure(&self, err: &reqwest::Error) -> Failure {
        if err.is_redirect() {
            Failure::Fatal(crate::error::chain(err))
        } else if err.is_timeout() {
            Failure::Transient(format!("no data for {} s (timed out)", self.limits.idle.as_secs()))
        } else {
            Failure::Transient(crate::error::chain(err))
        }
    }

    /// A manifest or index, whole in memory: refused unread when the registry announces
    /// more than [`MAX_DOCUMENT_BYTES`], and as soon as it sends more. `what` names it
    /// in errors.
    pub fn document(&self, reference: &OciReference, accept: &[MediaType], what: &str) -> Result<Vec<u8>> {
        let name = reference.digest().or(reference.tag()).unwrap_or("latest").to_owned();
        let registry = &self.endpoint.registry;
        self.runtime
            .block_on(async {
                let response = self.get(reference, "manifests", &name, accept, 0).await?;
                read_bounded(response, MAX_DOCUMENT_BYTES, self).await
            })
            .map_err(|f| f.into_error(registry, what))?
            .ok_or_else(|| RegistryError::Unsupported {
                what: what.to_owned(),
                detail: format!(
                    "{registry} sent more than the {} MiB racker accepts for a manifest",
                    MAX_DOCUMENT_BYTES >> 20
                ),
            })
    }
}

/// The response if it succeeded; else what the registry says went wrong.
async fn checked(response: Response) -> std::result::Result<Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail = error_message(status, response).await;
    Err(match status {
        StatusCode::NOT_FOUND => Failure::NotFound(detail),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Unauthorized(detail),
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT => {
            Failure::Transient(detail)
        }
        _ => Failure::Fatal(detail),
    })
}

/// The whole body, or None if it is (or is announced) longer than `limit`.
async fn read_bounded(
    mut response: Response,
    limit: u64,
    session: &Session,
) -> std::result::Result<Option<Vec<u8>>, Failure> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| session.transport_failure(&e))? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The status and what the registry says about it: the messages of a distribution error
/// body (`{"errors": [{"code", "message"}]}`), else the start of the body as text.
async fn error_message(status: StatusCode, mut response: Response) -> String {
    let mut body: Vec<u8> = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_BYTES - body.len())]),
            _ => break,
        }
    }
    let messages: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errors")?.as_array().cloned())
        .map(|errors| errors.iter().filter_map(|e| e.get("message")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let text: String = if messages.is_empty() {
        String::from_utf8_lossy(&body).split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
    } else {
        messages.join("; ")
    };
    if text.is_empty() {
        format!("the registry answered {status}")
    } else {
        format!("the registry answered {status}: {text}")
    }
}
