//! Bearer tokens checked by kube-apiserver (`TokenReview`), with positive and
//! negative results cached by token hash for `--authentication-token-webhook-cache-ttl`.
//! A rejected token or a failed review is a 401, never anonymous; failures are not
//! cached.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use super::cache::TtlCache;
use super::review::{Retry, ReviewError, call_with_retry};
use super::token::bearer_token;
use super::{AuthRequest, Authenticator, AuthnOutcome, UserInfo};

/// What kube-apiserver said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    /// The token belongs to this user.
    Authenticated(UserInfo),
    /// The token is not valid (with kube-apiserver's error text, if any).
    Rejected(String),
}

/// Something that reviews tokens (kube-apiserver, or a test double).
pub trait TokenReviewer: Send + Sync {
    /// Reviews one token; `Err` when the review itself failed.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<TokenVerdict, ReviewError>>;
}

/// `TokenReview` through the kube client.
pub struct KubeTokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl KubeTokenReviewer {
    /// Reviews with `client`; `audiences` are sent only when non-empty.
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        KubeTokenReviewer { client, audiences }
    }
}

/// Converts a TokenReview answer into a verdict.
pub fn verdict(review: &TokenReview) -> TokenVerdict {
    let Some(status) = &review.status else {
        return TokenVerdict::Rejected("token review returned no status".into());
    };
    if status.authenticated != Some(true) {
        return TokenVerdict::Rejected(status.error.clone().unwrap_or_default());
    }
    let user = status.user.clone().unwrap_or_default();
    TokenVerdict::Authenticated(UserInfo {
        name: user.username.unwrap_or_default(),
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default().into_iter().collect(),
    })
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<TokenVerdict, ReviewError>> {
        async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
                },
                ..TokenReview::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let answer = api.create(&PostParams::default(), &review).await?;
            Ok(verdict(&answer))
        }
        .boxed()
    }
}

/// Authenticates bearer tokens with a [`TokenReviewer`], cached.
pub struct TokenReviewAuthenticator {
    reviewer: Arc<dyn TokenReviewer>,
    cache: TtlCache<[u8; 32], TokenVerdict>,
    ttl: Duration,
    salt: [u8; 32],
    retry: Retry,
}

impl TokenReviewAuthenticator {
    /// Caches results (authenticated and rejected) for `ttl`; zero disables caching.
    pub fn new(reviewer: Arc<dyn TokenReviewer>, ttl: Duration) -> Self {
        TokenReviewAuthenticator {
            reviewer,
            cache: TtlCache::new(10_000),
            ttl,
            salt: rand::random(),
            retry: Retry::default(),
        }
    }

    /// Uses `retry` for failed review calls instead of upstream's default backoff.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    fn key(&self, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(token.as_bytes());
        h.finalize().into()
    }

    async fn check(&self, token: String) -> AuthnOutcome {
        let key = self.key(&token);
        let verdict = match self.cache.get(&key) {
            Some(v) => v,
            None => {
                let result = call_with_retry(&self.retry, || self.reviewer.review(&token)).await;
                match result {
                    Ok(v) => {
                        self.cache.insert(key, v.clone(), self.ttl);
                        v
                    }
                    Err(e) => return AuthnOutcome::Failed(format!("token review failed: {e}")),
                }
            }
        };
        match verdict {
            TokenVerdict::Authenticated(user) if !user.name.is_empty() => {
                AuthnOutcome::Authenticated(user)
            }
            TokenVerdict::Authenticated(_) => {
                AuthnOutcome::Failed("token review returned no user name".into())
            }
            TokenVerdict::Rejected(why) if why.is_empty() => {
                AuthnOutcome::Failed("invalid bearer token".into())
            }
            TokenVerdict::Rejected(why) => {
                AuthnOutcome::Failed(format!("invalid bearer token, {why}"))
            }
        }
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, AuthnOutcome> {
        match bearer_token(req) {
            None => futures::future::ready(AuthnOutcome::NoCredentials).boxed(),
            Some(token) => self.check(token).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        fail: bool,
    }

    impl TokenReviewer for Counting {
        fn review<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<TokenVerdict, ReviewError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let r = if self.fail {
                Err(ReviewError {
                    message: "boom".into(),
                    retryable: true,
                })
            } else if token == "good" {
                Ok(TokenVerdict::Authenticated(UserInfo {
                    name: "alice".into(),
                    ..Default::default()
                }))
            } else {
                Ok(TokenVerdict::Rejected(String::new()))
            };
            futures::future::ready(r).boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn results_are_cached_for_the_ttl_but_errors_are_not() {
        let reviewer = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let a = TokenReviewAuthenticator::new(reviewer.clone(), Duration::from_secs(10));
        for _ in 0..3 {
            assert!(
                matches!(a.check("good".into()).await, AuthnOutcome::Authenticated(u) if u.name == "alice")
            );
            assert_eq!(
                a.check("bad".into()).await,
                AuthnOutcome::Failed("invalid bearer token".into())
            );
        }
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(10)).await;
        a.check("good".into()).await;
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 3);

        let failing = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail: true,
        });
        let a = TokenReviewAuthenticator::new(failing.clone(), Duration::from_secs(10));
        assert!(matches!(
            a.check("good".into()).await,
            AuthnOutcome::Failed(_)
        ));
        assert_eq!(
            failing.calls.load(Ordering::SeqCst),
            5,
            "retried as upstream"
        );
        assert!(matches!(
            a.check("good".into()).await,
            AuthnOutcome::Failed(_)
        ));
        assert_eq!(
            failing.calls.load(Ordering::SeqCst),
            10,
            "errors are not cached"
        );
    }
}
