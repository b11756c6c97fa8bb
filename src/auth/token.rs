//! A bearer-token authenticator over a fixed token table (demo mode's admin token).

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{AuthRequest, Authenticator, AuthnOutcome, UserInfo};

/// Authenticates `Authorization: Bearer <token>` against known tokens.
pub struct StaticTokenAuthenticator {
    tokens: Vec<(String, UserInfo)>,
}

impl StaticTokenAuthenticator {
    /// An authenticator that knows `tokens`.
    pub fn new(tokens: Vec<(String, UserInfo)>) -> Self {
        StaticTokenAuthenticator { tokens }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(req: &AuthRequest<'_>) -> Option<String> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for StaticTokenAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome> {
        let outcome = match bearer_token(req) {
            None => AuthnOutcome::NoCredentials,
            Some(token) => self
                .tokens
                .iter()
                .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
                .map(|(_, user)| AuthnOutcome::Authenticated(user.clone()))
                .unwrap_or_else(|| AuthnOutcome::Failed("invalid bearer token".into())),
        };
        futures::future::ready(outcome).boxed()
    }
}
