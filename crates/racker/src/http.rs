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

/// Which redirects a client follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Redirects {
    /// reqwest's default: up to 10.
    #[default]
    Default,
    /// Up to this many.
    Limited(usize),
    /// None: a 3xx is the answer.
    None,
}

/// How one client differs from reqwest's defaults; every HTTP client of racker's and
/// postroj's is built from one through [`client`] or [`blocking_client`], so the
/// policy above is applied in one place and each caller's choices are spelled out.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Accept any certificate: an insecure registry, a host without CA certificates
    /// fetching over plain HTTP, a service checked on this host.
    pub accept_invalid_certs: bool,
    /// A blocking client's bound on each wait (reqwest's default: 30 s); an async
    /// client's bound on the whole request.
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// An async client's bound on each wait for a byte; blocking clients have none apart
    /// from `timeout`.
    pub read_timeout: Option<Duration>,
    pub redirects: Redirects,
    pub user_agent: Option<&'static str>,
    /// Ignore the proxy variables of the environment (the server is on this host).
    pub no_proxy: bool,
}

impl Redirects {
    fn policy(self) -> Option<reqwest::redirect::Policy> {
        match self {
            Redirects::Default => None,
            Redirects::Limited(n) => Some(reqwest::redirect::Policy::limited(n)),
            Redirects::None => Some(reqwest::redirect::Policy::none()),
        }
    }
}

/// Applies what both kinds of client take from `options`: reqwest's async and blocking
/// builders have the same methods but no trait in common.
macro_rules! with_options {
    ($builder:expr, $options:expr) => {{
        let options: &ClientOptions = $options;
        let mut builder = $builder.tls_danger_accept_invalid_certs(options.accept_invalid_certs);
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(timeout) = options.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(policy) = options.redirects.policy() {
            builder = builder.redirect(policy);
        }
        if let Some(agent) = options.user_agent {
            builder = builder.user_agent(agent);
        }
        if options.no_proxy {
            builder = builder.no_proxy();
        }
        builder
    }};
}

/// An async client with `options`.
pub fn client(options: &ClientOptions) -> reqwest::Result<reqwest::Client> {
    let mut builder = with_options!(reqwest::Client::builder(), options);
    if let Some(timeout) = options.read_timeout {
        builder = builder.read_timeout(timeout);
    }
    builder.build()
}

/// A blocking client with `options` (`read_timeout` does not apply).
pub fn blocking_client(options: &ClientOptions) -> reqwest::Result<reqwest::blocking::Client> {
    with_options!(reqwest::blocking::Client::builder(), options).build()
}

/// A blocking client for downloading `url`, every wait bounded by [`idle_timeout`] (a
/// blocking client applies its timeout to each read, not to the whole body), and
/// certificates verified wherever the host has them. Without them, an `http://` URL is
/// fetched with no verifier (what could a redirect to HTTPS prove, when its address came
/// over plain HTTP?), and an `https://` one is refused with [`NO_CA_CERTIFICATES`]. The
/// error is the reason, for the caller's own error type.
pub fn blocking_client_for(url: &str) -> Result<reqwest::blocking::Client, String> {
    let accept_invalid_certs = if ca_certificates_present() {
        false
    } else if url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://")) {
        true
    } else {
        return Err(NO_CA_CERTIFICATES.to_owned());
    };
    blocking_client(&ClientOptions {
        accept_invalid_certs,
        timeout: Some(idle_timeout()),
        connect_timeout: Some(CONNECT_TIMEOUT),
        ..ClientOptions::default()
    })
    .map_err(|e| e.to_string())
}
