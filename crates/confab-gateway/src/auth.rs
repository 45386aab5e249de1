//! JWT authentication: HS256 tokens with `sub` (the uid), `scope` (space-separated)
//! and `exp` (required).

use confab_core::Uid;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest HS256 secret accepted, in bytes.
pub const JWT_SECRET_BYTES_MIN: usize = 16;

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
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub uid: Uid,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the token expires, in seconds since the Unix epoch.
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
}

/// Checks and issues HS256 tokens with one secret.
#[derive(Clone)]
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Authenticator {
    /// An authenticator for this secret.
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < JWT_SECRET_BYTES_MIN {
            return Err(AuthError::WeakSecret(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        Ok(Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        })
    }

    /// Verifies a token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        let uid = Uid::new(claims.sub).map_err(|e| AuthError::BadSubject(e.to_string()))?;
        Ok(Caller {
            uid,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            exp: claims.exp,
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

    /// Signs a token.
    pub fn issue(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("hs256 signing does not fail")
    }
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
        }
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
}
