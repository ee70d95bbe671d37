//! What every HTTP client of racker's shares: a deadline for silence, and the host's CA
//! certificates. A server that accepts and never answers must not hold a pull or a
//! download forever. reqwest's rustls verifier wants certificates even to build a client,
//! so a host without the `ca-certificates` package (a minimal root, a container, a
//! freshly booted systemd host) could fetch nothing at all, not even over plain HTTP.
//! Plain HTTP needs no certificates: such clients are built without a verifier there,
//! and HTTPS ones fail with the fix named.

use std::time::Duration;

/// Environment variable: seconds without a byte after which a request fails
/// (connecting, waiting for an answer, or in the middle of a body); default 120.
pub const IDLE_TIMEOUT_ENV: &str = "RACKER_HTTP_IDLE_TIMEOUT";
/// Connecting takes no longer than this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request may wait for a byte: [`IDLE_TIMEOUT_ENV`], or 120 s.
pub fn idle_timeout() -> Duration {
    let seconds = std::env::var(IDLE_TIMEOUT_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok());
    Duration::from_secs(seconds.filter(|&s| s > 0).unwrap_or(120))
}

/// What a host without CA certificates is told when it asks for HTTPS.
pub const NO_CA_CERTIFICATES: &str =
    "no CA certificates found (SSL_CERT_FILE, SSL_CERT_DIR or the system's bundle): install the ca-certificates package";

/// Whether the host has CA certificates where rustls looks for them (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the distribution's bundle as openssl-probe finds it). Asked once
/// per process: loading parses the whole bundle, and a pull asks for each client it builds.
pub fn ca_certificates_present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRESENT.get_or_init(|| !rustls_native_certs::load_native_certs().certs.is_empty())
}

/// A client builder for downloading `url`, every wait bounded by [`idle_timeout`] (a
/// blocking client applies its timeout to each read, not to the whole body), and
/// certificates verified wherever the host has them. Without them, an `http://` URL is fetched with no verifier (what could a
/// redirect to HTTPS prove, when its address came over plain HTTP?), and an `https://`
/// one is refused with [`NO_CA_CERTIFICATES`].
pub fn blocking_client_for(url: &str) -> Result<reqwest::blocking::ClientBuilder, &'static str> {
    let builder = reqwest::blocking::Client::builder().timeout(idle_timeout()).connect_timeout(CONNECT_TIMEOUT);
    if ca_certificates_present() {
        return Ok(builder);
    }
    if url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://")) {
        return Ok(builder.danger_accept_invalid_certs(true));
    }
    Err(NO_CA_CERTIFICATES)
}
