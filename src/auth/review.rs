//! Timeout and retry for review calls to kube-apiserver (TokenReview,
//! SubjectAccessReview), as upstream's webhook defaults: 10 s per call, backoff
//! 500 ms × 1.5 with 20 % jitter, 5 attempts.

use std::future::Future;
use std::time::Duration;

use super::token_review::ReviewError;

/// How review calls are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// Attempts in total (at least one).
    pub attempts: u32,
    /// Wait before the second attempt.
    pub initial: Duration,
    /// Growth of the wait per attempt.
    pub factor: f64,
    /// Random extra wait, as a fraction of the wait.
    pub jitter: f64,
    /// Timeout of each attempt.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            initial: Duration::from_millis(500),
            factor: 1.5,
            jitter: 0.2,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Retry {
    /// A single attempt with the default timeout (tests, or callers that retry themselves).
    pub fn once() -> Self {
        Retry {
            attempts: 1,
            ..Retry::default()
        }
    }
}

/// Runs `call` until it succeeds, fails with a non-retryable error, or the attempts
/// run out.
pub async fn call_with_retry<T, F, Fut>(retry: &Retry, mut call: F) -> Result<T, ReviewError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ReviewError>>,
{
    let mut wait = retry.initial;
    let mut attempt = 1;
    loop {
        let result = match tokio::time::timeout(retry.timeout, call()).await {
            Ok(r) => r,
            Err(_) => Err(ReviewError {
                message: format!("no answer within {:?}", retry.timeout),
                retryable: true,
            }),
        };
        match result {
            Err(e) if e.retryable && attempt < retry.attempts.max(1) => {
                let jitter = wait.mul_f64(retry.jitter * rand::random::<f64>());
                tokio::time::sleep(wait + jitter).await;
                wait = wait.mul_f64(retry.factor);
                attempt += 1;
            }
            other => return other,
        }
    }
}
