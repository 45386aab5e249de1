//! Token checking: HS256 with a secret, ES256 through a JWKS; any string as a
//! bearer token.
#![no_main]

use confab_auth::{AuthOptions, Authenticator};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "fuzz-ec", "x": "dcqEd-fxXQKgP5VgNSs3hNezwsn0bwcECZp9K9SlMNM", "y": "fmFIOAsss4gIYKRidoOFDcDs11qHHOvfZ8fSXD_oVK8"}]}"#;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("confab-fuzz-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("jwks.json");
        std::fs::write(&path, JWKS).expect("the jwks file is written");
        Authenticator::with_options(AuthOptions {
            hs256_secret: Some(b"fuzz-secret-0123456789abcdef".to_vec()),
            jwks_file: Some(path),
            issuer: Some("https://id.example".into()),
            audience: Some("confab".into()),
            leeway_s: 30,
            ..AuthOptions::default()
        })
        .expect("the fuzz authenticator builds")
    })
}

fuzz_target!(|token: &str| {
    if let Ok(caller) = authenticator().verify(token) {
        // Only a token signed with the secret (or the JWKS's key) passes; the
        // fuzzer cannot forge one, so reaching here is a finding.
        panic!("a forged token was accepted: {caller:?}");
    }
});
