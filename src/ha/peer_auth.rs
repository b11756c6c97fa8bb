//! Who may fetch a shard: the bearer token a peer presents, checked by TokenReview against
//! this replica's own ServiceAccount (in a cluster), or compared with a shared secret (`demo`
//! and tests). Either way no credential means no data.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::auth::{AuthRequest, Authenticator, AuthnOutcome};

/// Why a peer request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// No or invalid credentials (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Valid credentials of someone else (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// Checks a peer's bearer token.
pub trait PeerAuthenticator: Send + Sync {
    /// `Ok` when `token` belongs to a peer replica.
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), PeerAuthError>>;
}

/// A shared secret (demo, tests), compared in constant time.
pub struct SharedSecret(pub String);

impl PeerAuthenticator for SharedSecret {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), PeerAuthError>> {
        let ok = constant_time_eq(
            &Sha256::digest(token.as_bytes()),
            &Sha256::digest(self.0.as_bytes()),
        );
        async move {
            if ok {
                Ok(())
            } else {
                Err(PeerAuthError::Unauthorized("invalid peer token".into()))
            }
        }
        .boxed()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A ServiceAccount token reviewed by kube-apiserver (through the API's cached TokenReview
/// authenticator); the user must be exactly `identity`, this replica's own ServiceAccount.
pub struct ServiceAccountPeers {
    /// The TokenReview authenticator.
    pub authenticator: Arc<dyn Authenticator>,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub identity: String,
}

impl PeerAuthenticator for ServiceAccountPeers {
    fn check<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), PeerAuthError>> {
        async move {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| PeerAuthError::Unauthorized("malformed token".into()))?;
            headers.insert(header::AUTHORIZATION, value);
            let req = AuthRequest {
                headers: &headers,
                peer_certificates: None,
            };
            match self.authenticator.authenticate(&req).await {
                AuthnOutcome::Authenticated(user) if user.name == self.identity => Ok(()),
                AuthnOutcome::Authenticated(user) => Err(PeerAuthError::Forbidden(format!(
                    "{} is not {}",
                    user.name, self.identity
                ))),
                AuthnOutcome::NoCredentials => {
                    Err(PeerAuthError::Unauthorized("no credentials".into()))
                }
                AuthnOutcome::Failed(why) => Err(PeerAuthError::Unauthorized(why)),
            }
        }
        .boxed()
    }
}

/// The `sub` claim of a ServiceAccount token (this replica's own, from its mounted file):
/// `system:serviceaccount:<namespace>:<name>`. The token is not verified here; it is our own.
pub fn token_subject(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_secret() {
        let s = SharedSecret("s3cret".into());
        assert!(s.check("s3cret").await.is_ok());
        assert!(s.check("s3cre").await.is_err());
        assert!(s.check("").await.is_err());
    }

    #[test]
    fn subject_from_a_service_account_token() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(r#"{"sub":"system:serviceaccount:kubedojo-system:kubedojo-data-api"}"#)
        );
        assert_eq!(
            token_subject(&jwt).as_deref(),
            Some("system:serviceaccount:kubedojo-system:kubedojo-data-api")
        );
        assert_eq!(token_subject("not-a-jwt"), None);
    }
}
