//! An identity provider's signing keys, for the JWKS tests: made by `openssl`,
//! with their public half as a JWK and tokens signed by them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::Path;
use std::process::Command;

/// A private key and its JWK.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl SigningKey {
    /// A fresh P-256 key (ES256), its files in `dir`.
    pub fn es256(dir: &Path, kid: &str) -> Self {
        let pem = format!("{kid}.pem");
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &pem,
            ],
        );
        let pkcs8 = openssl(
            dir,
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER",
            ],
        );
        let public = openssl(dir, &["ec", "-in", &pem, "-pubout", "-outform", "DER"]);
        // The last 65 bytes of the SubjectPublicKeyInfo: 0x04, x, y.
        let point = &public[public.len() - 65..];
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pkcs8),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    /// A fresh 2048-bit RSA key (RS256), its files in `dir`.
    pub fn rs256(dir: &Path, kid: &str) -> Self {
        let pem = format!("{kid}.pem");
        openssl(dir, &["genrsa", "-traditional", "-out", &pem, "2048"]);
        let pkcs1 = openssl(
            dir,
            &["rsa", "-in", &pem, "-traditional", "-outform", "DER"],
        );
        let modulus = String::from_utf8(openssl(dir, &["rsa", "-in", &pem, "-noout", "-modulus"]))
            .expect("hex");
        let modulus = modulus.trim().trim_start_matches("Modulus=");
        let n = hex::decode(modulus).expect("the modulus is hex");
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&pkcs1),
            jwk: serde_json::json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB",
            }),
        }
    }

    /// Its public half as a JWK.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// A token with these claims, signed by it, its kid in the header.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing works")
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}
