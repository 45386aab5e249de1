//! The node's outbound HTTP client (actions, stages, the JWKS URL): rustls,
//! trusting the system's roots plus the CA certificates of `tls.ca_file`, which
//! [`trust`] sets once at start-up.

use std::sync::OnceLock;
use std::time::Duration;

/// The longest any outbound request may take; each request sets its own, shorter
/// timeout.
pub const OUTBOUND_TIMEOUT_MAX: Duration = Duration::from_secs(60);

static EXTRA_ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();

/// Trusts these PEM certificates too, for every client made after this call.
/// Call once, before the first client; a later call is refused.
pub fn trust(pem: &[u8]) -> Result<(), String> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    EXTRA_ROOTS
        .set(certificates)
        .map_err(|_| "the outbound trust was already set".to_owned())
}

/// A client whose requests give up after `timeout` unless a request says
/// otherwise.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    builder(timeout).build()
}

/// As [`client`], following no redirect: for a URL that must stay what was
/// configured (the JWKS URL must stay https, on its host).
pub fn client_without_redirects(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    builder(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout);
    for certificate in EXTRA_ROOTS.get().into_iter().flatten() {
        builder = builder.add_root_certificate(certificate.clone());
    }
    builder
}
