//! JWT authentication: tokens with `sub` (the uid), `scope` (space-separated),
//! `exp` (required) and, when present, `nbf`.
//!
//! - HS256 with the node's secret (what `confab up` and `confab token` use);
//! - RS256 and ES256 with the public keys of an identity provider's JWKS
//!   document, chosen by the token's `kid`: from a file (re-read when it changes)
//!   or from an https URL (fetched in the background, never on a request's path).
//!
//! `auth.issuer` and `auth.audience` are checked when set, and `exp` and `nbf`
//! allow `auth.leeway_s` of clock skew.

use confab_core::Uid;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

// The https fetch of `auth.jwks_url` lives in the gateway, which has the HTTP
// client; this crate stays small enough to fuzz.

/// Shortest HS256 secret accepted, in bytes.
pub const JWT_SECRET_BYTES_MIN: usize = 16;

/// Largest JWKS document read, in bytes.
pub const JWKS_BYTES_MAX: usize = 1024 * 1024;

/// Keys of one JWKS document kept, at most.
pub const JWKS_KEYS_MAX: usize = 256;

/// The claims confab reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The uid.
    pub sub: String,
    /// Space-separated scopes: `chat`, `admin`.
    #[serde(default)]
    pub scope: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub uid: Uid,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the token stops being accepted, in seconds since the Unix epoch:
    /// its `exp` plus `auth.leeway_s`, as at the upgrade, so that a connection
    /// lives exactly as long as its token would still be let in.
    pub exp: u64,
}

impl Caller {
    /// Whether the token grants this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the request.
    #[error("no token: send `Authorization: Bearer <jwt>` or `?token=<jwt>`")]
    Missing,
    /// The token is expired.
    #[error("token expired: get a new one")]
    Expired,
    /// The token is not valid yet (`nbf` is in the future).
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    /// The signature, the algorithm or the format is wrong.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// `sub` is not a valid uid.
    #[error("invalid token: sub is not a valid uid: {0}")]
    BadSubject(String),
    /// A needed scope is missing.
    #[error("token lacks the {0:?} scope")]
    MissingScope(&'static str),
    /// The secret is too short to be safe.
    #[error("jwt secret is {0} bytes; use at least {JWT_SECRET_BYTES_MIN}")]
    WeakSecret(usize),
    /// The JWKS document cannot be used.
    #[error("jwks {0}")]
    Jwks(String),
}

/// How tokens are checked.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// The HS256 secret; `None`: HS256 tokens are refused.
    pub hs256_secret: Option<Vec<u8>>,
    /// A JWKS document of RS256 and ES256 public keys, re-read when it changes.
    pub jwks_file: Option<PathBuf>,
    /// An https URL of a JWKS document, fetched in the background.
    pub jwks_url: Option<String>,
    /// The `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` every token must carry, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

/// The public keys of a JWKS document, by `kid`.
#[derive(Clone, Default)]
struct Jwks {
    keys: BTreeMap<String, (Algorithm, DecodingKey)>,
}

impl Jwks {
    /// Parses a JWKS document; keys that are not RS256 or ES256 verification keys
    /// with a `kid` are left out (and named in the error if none is left).
    fn parse(bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() > JWKS_BYTES_MAX {
            return Err(AuthError::Jwks(format!(
                "document is {} bytes, the limit is {JWKS_BYTES_MAX}",
                bytes.len()
            )));
        }
        let set: JwkSet = serde_json::from_slice(bytes)
            .map_err(|e| AuthError::Jwks(format!("is not a JWKS document: {e}")))?;
        let mut keys = BTreeMap::new();
        let mut skipped = Vec::new();
        for jwk in set.keys.iter().take(JWKS_KEYS_MAX) {
            let Some(kid) = jwk.common.key_id.clone() else {
                skipped.push("a key without kid".to_owned());
                continue;
            };
            let algorithm = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    skipped.push(format!("{kid} (neither RSA nor EC P-256)"));
                    continue;
                }
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, (algorithm, key));
                }
                Err(e) => skipped.push(format!("{kid} ({e})")),
            }
        }
        if keys.is_empty() {
            return Err(AuthError::Jwks(format!(
                "holds no usable RS256 or ES256 key: {}",
                if skipped.is_empty() {
                    "it is empty".to_owned()
                } else {
                    skipped.join(", ")
                }
            )));
        }
        if !skipped.is_empty() {
            warn!(skipped = %skipped.join(", "), "jwks keys left out");
        }
        Ok(Self { keys })
    }
}

/// Checks tokens, and issues HS256 ones.
#[derive(Clone)]
pub struct Authenticator {
    hs256: Option<(DecodingKey, EncodingKey)>,
    jwks: Arc<RwLock<Jwks>>,
    options: Arc<AuthOptions>,
}

impl Authenticator {
    /// An HS256 authenticator for this secret, no leeway (what `confab token` signs
    /// with).
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        Self::with_options(AuthOptions {
            hs256_secret: Some(secret.to_vec()),
            ..AuthOptions::default()
        })
    }

    /// An authenticator with these options. A JWKS file must load now; a JWKS
    /// URL is fetched by the caller (see [`Authenticator::jwks_updater`]).
    pub fn with_options(options: AuthOptions) -> Result<Self, AuthError> {
        let hs256 = match &options.hs256_secret {
            Some(secret) if secret.len() < JWT_SECRET_BYTES_MIN => {
                return Err(AuthError::WeakSecret(secret.len()));
            }
            Some(secret) => Some((
                DecodingKey::from_secret(secret),
                EncodingKey::from_secret(secret),
            )),
            None => None,
        };
        let jwks = match &options.jwks_file {
            Some(path) => read_jwks_file(path)?,
            None => Jwks::default(),
        };
        if let Some(url) = &options.jwks_url
            && !url.starts_with("https://")
        {
            return Err(AuthError::Jwks(format!(
                "url {url:?} is not https: the keys that admit every user must not travel in the clear"
            )));
        }
        Ok(Self {
            hs256,
            jwks: Arc::new(RwLock::new(jwks)),
            options: Arc::new(options),
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        if self.options.issuer.is_some() {
            required.push("iss");
        }
        if self.options.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = self.options.leeway_s;
        validation.validate_nbf = true;
        match &self.options.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.options.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation
    }

    /// Verifies a token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("bad header: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 => match &self.hs256 {
                Some((key, _)) => key.clone(),
                None => {
                    return Err(AuthError::Invalid(
                        "HS256 tokens are not accepted here: use the identity provider's".into(),
                    ));
                }
            },
            Algorithm::RS256 | Algorithm::ES256 => {
                let Some(kid) = &header.kid else {
                    return Err(AuthError::Invalid(format!(
                        "{:?} token without kid",
                        header.alg
                    )));
                };
                let jwks = self.jwks.read().unwrap_or_else(|e| e.into_inner());
                match jwks.keys.get(kid) {
                    Some((algorithm, key)) if *algorithm == header.alg => key.clone(),
                    Some((algorithm, _)) => {
                        return Err(AuthError::Invalid(format!(
                            "key {kid:?} is for {algorithm:?}, the token says {:?}",
                            header.alg
                        )));
                    }
                    None => return Err(AuthError::Invalid(format!("no key with kid {kid:?}"))),
                }
            }
            other => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {other:?} is not accepted: use HS256, RS256 or ES256"
                )));
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(header.alg))
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        let uid = Uid::new(claims.sub).map_err(|e| AuthError::BadSubject(e.to_string()))?;
        Ok(Caller {
            uid,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            exp: claims.exp.saturating_add(self.options.leeway_s),
        })
    }

    /// Verifies a token and requires a scope.
    pub fn verify_scope(&self, token: &str, scope: &'static str) -> Result<Caller, AuthError> {
        let caller = self.verify(token)?;
        if !caller.has_scope(scope) {
            return Err(AuthError::MissingScope(scope));
        }
        Ok(caller)
    }

    /// Signs an HS256 token.
    ///
    /// # Panics
    /// If this authenticator has no HS256 secret.
    pub fn issue(&self, claims: &Claims) -> String {
        let (_, key) = self.hs256.as_ref().expect("issuing needs the HS256 secret");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .expect("hs256 signing does not fail")
    }

    /// Keys known from the JWKS, by kid.
    pub fn jwks_kids(&self) -> Vec<String> {
        let jwks = self.jwks.read().unwrap_or_else(|e| e.into_inner());
        jwks.keys.keys().cloned().collect()
    }

    /// Follows the JWKS file until the authenticator is dropped: re-read within
    /// `poll` of a change; a document that does not parse is logged and the keys
    /// before it stay.
    pub fn follow_jwks_file(&self, poll: Duration) {
        let Some(path) = self.options.jwks_file.clone() else {
            return;
        };
        let me = self.clone_weakly();
        tokio::spawn(async move {
            let mut seen = modified(&path);
            loop {
                tokio::time::sleep(poll).await;
                if me.0.strong_count() == 0 {
                    return;
                }
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match read_jwks_file(&path) {
                    Ok(jwks) => me.replace_jwks(jwks, "file"),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "jwks file not reloaded; keeping the keys before it")
                    }
                }
            }
        });
    }

    /// The JWKS URL, if one is configured (the caller fetches it, in the
    /// background, and hands the document to [`JwksUpdater::replace`]).
    pub fn jwks_url(&self) -> Option<&str> {
        self.options.jwks_url.as_deref()
    }

    /// What replaces the keys from a fetched document, held by the fetching task;
    /// it stops working once every authenticator is dropped.
    pub fn jwks_updater(&self) -> JwksUpdater {
        JwksUpdater(self.clone_weakly())
    }

    /// A handle that shares the keys (tasks hold it; `follow_jwks`'s tasks stop
    /// once every other handle is gone).
    fn clone_weakly(&self) -> WeakKeys {
        WeakKeys(Arc::downgrade(&self.jwks))
    }
}

struct WeakKeys(std::sync::Weak<RwLock<Jwks>>);

/// Replaces an authenticator's JWKS keys with a fetched document's.
pub struct JwksUpdater(WeakKeys);

impl JwksUpdater {
    /// Parses `document` and, if it holds a usable key, replaces the keys; a
    /// document that does not parse leaves the keys before it.
    pub fn replace(&self, document: &[u8], from: &str) -> Result<(), AuthError> {
        let jwks = Jwks::parse(document)?;
        self.0.replace_jwks(jwks, from);
        Ok(())
    }

    /// Whether an authenticator still uses the keys.
    pub fn is_live(&self) -> bool {
        self.0.0.strong_count() > 0
    }
}

impl WeakKeys {
    fn replace_jwks(&self, jwks: Jwks, from: &str) {
        let Some(keys) = self.0.upgrade() else { return };
        let kids: Vec<_> = jwks.keys.keys().cloned().collect();
        *keys.write().unwrap_or_else(|e| e.into_inner()) = jwks;
        info!(from, kids = %kids.join(","), "jwks loaded");
    }
}

fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_jwks_file(path: &Path) -> Result<Jwks, AuthError> {
    let bytes = std::fs::read(path)
        .map_err(|e| AuthError::Jwks(format!("file {}: {e}", path.display())))?;
    Jwks::parse(&bytes).map_err(|e| AuthError::Jwks(format!("file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(sub: &str, scope: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            scope: scope.into(),
            exp,
            nbf: None,
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    const FAR: u64 = 4_000_000_000;

    #[test]
    fn a_good_token_names_its_caller() {
        let auth = Authenticator::new(SECRET).unwrap();
        let token = auth.issue(&claims("alice", "chat admin", FAR));
        let caller = auth.verify_scope(&token, "chat").unwrap();
        assert_eq!(caller.uid.as_str(), "alice");
        assert!(caller.has_scope("admin"));
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let auth = Authenticator::new(SECRET).unwrap();
        let other = Authenticator::new(b"another-secret-of-32-bytes-long!").unwrap();
        let signed_elsewhere = other.issue(&claims("alice", "chat", FAR));
        assert!(matches!(
            auth.verify(&signed_elsewhere),
            Err(AuthError::Invalid(_))
        ));
        let expired = auth.issue(&claims("alice", "chat", 1_000));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        let no_chat = auth.issue(&claims("alice", "admin", FAR));
        assert_eq!(
            auth.verify_scope(&no_chat, "chat"),
            Err(AuthError::MissingScope("chat"))
        );
        for sub in [String::new(), "x".repeat(10_000)] {
            let token = auth.issue(&claims(&sub, "chat", FAR));
            assert!(matches!(auth.verify(&token), Err(AuthError::BadSubject(_))));
        }
        assert!(matches!(
            auth.verify("not.a.jwt"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            Authenticator::new(b"short"),
            Err(AuthError::WeakSecret(5))
        ));
    }

    #[test]
    fn nbf_is_honoured_with_the_leeway() {
        let auth = Authenticator::with_options(AuthOptions {
            hs256_secret: Some(SECRET.to_vec()),
            leeway_s: 30,
            ..AuthOptions::default()
        })
        .unwrap();
        let later = |nbf| Claims {
            nbf: Some(nbf),
            ..claims("alice", "chat admin", FAR)
        };
        let in_an_hour = auth.issue(&later(now() + 3600));
        assert_eq!(auth.verify(&in_an_hour), Err(AuthError::NotYetValid));
        // Within the leeway: a clock 10 s behind the issuer's still admits it.
        let in_ten_seconds = auth.issue(&later(now() + 10));
        assert!(auth.verify(&in_ten_seconds).is_ok());
        // The leeway applies to exp too, and no further.
        let exp = now() - 10;
        let expired_just_now = auth.issue(&claims("alice", "chat", exp));
        let caller = auth.verify(&expired_just_now).unwrap();
        // A connection it opens lives as long as the token would still be
        // let in: to exp plus the leeway, not closed at once as expired.
        assert_eq!(caller.exp, exp + 30);
        let expired_long_ago = auth.issue(&claims("alice", "chat", now() - 300));
        assert_eq!(auth.verify(&expired_long_ago), Err(AuthError::Expired));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_set() {
        let auth = Authenticator::with_options(AuthOptions {
            hs256_secret: Some(SECRET.to_vec()),
            issuer: Some("https://id.example".into()),
            audience: Some("confab".into()),
            ..AuthOptions::default()
        })
        .unwrap();
        let key = EncodingKey::from_secret(SECRET);
        let sign = |extra: serde_json::Value| {
            let mut body = serde_json::json!({"sub": "alice", "scope": "chat", "exp": FAR});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &key).unwrap()
        };
        let good = sign(serde_json::json!({"iss": "https://id.example", "aud": "confab"}));
        assert!(auth.verify(&good).is_ok());
        for bad in [
            serde_json::json!({"iss": "https://evil.example", "aud": "confab"}),
            serde_json::json!({"iss": "https://id.example", "aud": "other"}),
            serde_json::json!({"aud": "confab"}),
            serde_json::json!({"iss": "https://id.example"}),
        ] {
            assert!(
                matches!(auth.verify(&sign(bad.clone())), Err(AuthError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_algorithms_and_unknown_keys_are_refused() {
        let auth = Authenticator::new(SECRET).unwrap();
        // alg none, and an RS256 token for a kid no JWKS holds.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoiY2hhdCIsImV4cCI6NDAwMDAwMDAwMH0.";
        assert!(matches!(auth.verify(none), Err(AuthError::Invalid(_))));
        let rs256 = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNvbWVvbmUifQ.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoiY2hhdCIsImV4cCI6NDAwMDAwMDAwMH0.c2ln";
        match auth.verify(rs256) {
            Err(AuthError::Invalid(message)) => assert!(message.contains("no key"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_jwks_document_must_hold_a_usable_key() {
        for bad in [
            &b"not json"[..],
            br#"{"keys": []}"#,
            br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}"#,
        ] {
            assert!(matches!(Jwks::parse(bad), Err(AuthError::Jwks(_))));
        }
        let huge = vec![b' '; JWKS_BYTES_MAX + 1];
        assert!(matches!(Jwks::parse(&huge), Err(AuthError::Jwks(_))));
        assert!(matches!(
            Authenticator::with_options(AuthOptions {
                jwks_url: Some("http://id.example/jwks".into()),
                ..AuthOptions::default()
            }),
            Err(AuthError::Jwks(_))
        ));
    }
}
