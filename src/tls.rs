//! The host's CA certificates, as racker's HTTP clients need them. reqwest's rustls
//! verifier wants them even to build a client, so a host without the `ca-certificates`
//! package (a minimal root, a container, a freshly booted systemd host) could fetch
//! nothing at all, not even over plain HTTP. Plain HTTP needs no certificates: such
//! clients are built without a verifier there, and HTTPS ones fail with the fix named.

/// What a host without CA certificates is told when it asks for HTTPS.
pub const NO_CA_CERTIFICATES: &str =
    "no CA certificates found (SSL_CERT_FILE, SSL_CERT_DIR or the system's bundle): install the ca-certificates package";

/// Whether the host has CA certificates where rustls looks for them (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the distribution's bundle as openssl-probe finds it).
pub fn ca_certificates_present() -> bool {
    !rustls_native_certs::load_native_certs().certs.is_empty()
}

/// A client builder for downloading `url`: certificates are verified wherever the host
/// has them. Without them, an `http://` URL is fetched with no verifier (what could a
/// redirect to HTTPS prove, when its address came over plain HTTP?), and an `https://`
/// one is refused with [`NO_CA_CERTIFICATES`].
pub fn blocking_client_for(url: &str) -> Result<reqwest::blocking::ClientBuilder, &'static str> {
    let builder = reqwest::blocking::Client::builder();
    if ca_certificates_present() {
        return Ok(builder);
    }
    if url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://")) {
        return Ok(builder.danger_accept_invalid_certs(true));
    }
    Err(NO_CA_CERTIFICATES)
}
