//! The shutdown sequence of k8s.io/apiserver: on SIGTERM `/readyz` fails at once
//! (check `shutdown`), the server keeps serving for `--shutdown-delay-duration` so
//! the aggregator and Service endpoints drop this replica, then the listener closes,
//! watches end and in-flight requests drain (see [`super::serve_with`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::health::Check;

/// Shared shutdown state.
#[derive(Clone, Default)]
pub struct Lifecycle {
    terminating: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Lifecycle {
    /// A running server.
    pub fn new() -> Self {
        Self::default()
    }

    /// The readiness check that fails once shutdown has begun.
    pub fn readiness_check(&self) -> Check {
        let terminating = self.terminating.clone();
        Arc::new(move || {
            if terminating.load(Ordering::Acquire) {
                Err("the server is shutting down".into())
            } else {
                Ok(())
            }
        })
    }

    /// Cancelled when the listener must close (after the delay).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// True once shutdown has begun.
    pub fn terminating(&self) -> bool {
        self.terminating.load(Ordering::Acquire)
    }

    /// Fails readiness now, keeps serving for `delay`, then stops accepting.
    pub async fn terminate(&self, delay: Duration) {
        self.terminating.store(true, Ordering::Release);
        tracing::info!(
            delay = %humantime::format_duration(delay),
            "shutdown: /readyz fails now; serving until the delay ends"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("shutdown: closing the listener, ending watches, draining requests");
        self.stop.cancel();
    }
}
