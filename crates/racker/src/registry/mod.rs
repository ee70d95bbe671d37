//! Registries (the OCI distribution API): pull images into the store, push them out,
//! and keep credentials as docker and podman do. Pulls speak HTTP themselves, bounded in
//! time and size against a hostile registry (fetch.rs, blob_reader.rs, limits.rs); push
//! goes through `oci-client`. This module decides what to fetch, feeds blobs straight
//! into the store's [`Ingest`](crate::store::Ingest), and maps failures to errors a user
//! can act on.

mod auth;
mod blob_reader;
mod config;
mod endpoint;
mod fetch;
mod limits;
mod pull;
mod push;

use std::path::PathBuf;

pub use auth::{login, logout, AuthFiles};
pub use limits::{MAX_DOCUMENT_BYTES, RETRY_DELAY_ENV};
pub use pull::{pull, PullOptions, PullOutcome, Pulled};
pub use push::{push, PushOptions};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A layer's download stopped because another layer of the same pull failed: a
    /// consequence, never the error a pull reports.
    #[error("pull cancelled: another layer failed")]
    Cancelled,
    #[error("unauthorized: {registry} refused access{detail}; log in with `racker login {registry}`")]
    Unauthorized { registry: String, detail: String },
    #[error("{reference}: not found: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("{registry}: cannot reach the registry: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("{registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("{registry}: downloading {digest} failed: {detail}")]
    Download { registry: String, digest: String, detail: String },
    #[error("{registry}: bad data: {source}")]
    Content { registry: String, source: StoreError },
    #[error(
        "{registry}: no CA certificates found on this host (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs): \
         install the ca-certificates package"
    )]
    NoCaCertificates { registry: String },
    #[error("{what}: {detail}")]
    Unsupported { what: String, detail: String },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Maps an oci-client failure to what the user needs to know about it.
pub(crate) fn classify(
    err: oci_client::errors::OciDistributionError,
    registry: &str,
    reference: &str,
) -> RegistryError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let unauthorized = |detail: String| RegistryError::Unauthorized {
        registry: registry.to_owned(),
        detail: if detail.is_empty() { String::new() } else { format!(" ({detail})") },
    };
    let not_found = |detail: String| RegistryError::NotFound { reference: reference.to_owned(), detail };
    match err {
        E::AuthenticationFailure(reason) => unauthorized(reason.trim().to_owned()),
        E::UnauthorizedError { .. } => unauthorized(String::new()),
        E::ImageManifestNotFoundError(detail) => not_found(detail),
        E::RegistryError { envelope, .. } => {
            let detail = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            match envelope.errors.first().map(|e| &e.code) {
                Some(C::ManifestUnknown | C::NameUnknown | C::NotFound | C::BlobUnknown) => not_found(detail),
                Some(C::Unauthorized | C::Denied) => unauthorized(detail),
                _ => RegistryError::Protocol { registry: registry.to_owned(), detail },
            }
        }
        E::ServerError { code: 404, message, .. } => not_found(message),
        E::ServerError { code: 401 | 403, message, .. } => unauthorized(message),
        E::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RegistryError::Unreachable { registry: registry.to_owned(), detail: crate::error::chain(&e) }
        }
        other => RegistryError::Protocol { registry: registry.to_owned(), detail: crate::error::chain(&other) },
    }
}
