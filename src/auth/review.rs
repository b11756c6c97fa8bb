//! Timeout and retry for review calls to kube-apiserver (TokenReview,
//! SubjectAccessReview), as upstream's webhook defaults: 10 s per call, backoff
//! 500 ms × 1.5 with 20 % jitter, 5 attempts.

use std::future::Future;
use std::time::Duration;

/// A failed review call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReviewError {
    /// What went wrong.
    pub message: String,
    /// Whether retrying may help (connection errors, 429, 5xx).
    pub retryable: bool,
}

impl From<kube::Error> for ReviewError {
    fn from(e: kube::Error) -> Self {
        let retryable = match &e {
            kube::Error::Api(s) => s.code == 429 || s.code >= 500,
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        };
        let message = match &e {
            kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
            other => other.to_string(),
        };
        ReviewError { message, retryable }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failing(retryable: bool) -> Result<(), ReviewError> {
        Err(ReviewError {
            message: "no".into(),
            retryable,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_retryable_errors_with_backoff() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let r = call_with_retry(&Retry::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { failing(true) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // 0.5 + 0.75 + 1.125 + 1.6875 s, plus at most 20 % jitter.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(4062) && waited <= Duration::from_millis(4875),
            "{waited:?}"
        );

        calls.store(0, Ordering::SeqCst);
        let r = call_with_retry(&Retry::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { failing(false) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_times_out() {
        let retry = Retry {
            timeout: Duration::from_secs(10),
            ..Retry::once()
        };
        let r: Result<(), _> = call_with_retry(&retry, std::future::pending).await;
        assert!(r.unwrap_err().message.contains("no answer within"));
    }
}
