//! The retry delay of our kube watchers (Nodes, Pods, the authentication ConfigMap) after a
//! failed list or watch, e.g. while kube-apiserver is down.
//!
//! kube-rs's `default_backoff()` is client-go's reflector backoff (800 ms doubling to 30 s,
//! jittered, reset after 2 min without an error; client-go's reflector.go:
//! `wait.NewExponentialBackoffManager(800*time.Millisecond, 30*time.Second, 2*time.Minute,
//! 2.0, 1.0, ...)`, so [30, 60) s once backed off). After a 30 s kube-apiserver outage the
//! e2e saw our watches resume 69–84 s after the apiserver was back, and new pods stay
//! unserved that long. This one doubles from 250 ms to 4 s, adds up to 25% random jitter (so
//! at most 5 s, and replicas do not retry in step) and only resets after a minute without
//! errors: a watch reconnects within about 5 s of the apiserver's return, at no more than
//! one attempt per 4 s per watcher while it is away (3 watchers per replica).

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use rand::Rng;

/// First retry delay.
pub const INITIAL: Duration = Duration::from_millis(250);
/// Largest delay before jitter.
pub const CAP: Duration = Duration::from_secs(4);
/// Errors must stop for this long before the delay starts again from [`INITIAL`].
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// Exponential delays from [`INITIAL`] to [`CAP`], each plus up to 25% jitter.
#[derive(Clone, Debug)]
pub struct Jittered {
    next: Duration,
}

impl Default for Jittered {
    fn default() -> Self {
        Self { next: INITIAL }
    }
}

impl Iterator for Jittered {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (base * 2).min(CAP);
        let jitter = rand::rng().random_range(0.0..0.25);
        Some(base + base.mul_f64(jitter))
    }
}

impl Backoff for Jittered {
    fn reset(&mut self) {
        self.next = INITIAL;
    }
}

/// The backoff every watcher of ours uses: `stream.backoff(watch_backoff())`.
pub fn watch_backoff() -> ResetTimerBackoff<Jittered> {
    ResetTimerBackoff::new(Jittered::default(), RESET_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Jittered::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next().unwrap()).collect();
        let bases = [
            250, 500, 1_000, 2_000, 4_000, 4_000, 4_000, 4_000, 4_000, 4_000,
        ];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *d >= base && *d < base.mul_f64(1.25),
                "{d:?} vs base {base:?}"
            );
        }
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        // 30 s of outage: retries keep coming at most 5 s apart, so the first attempt after
        // the apiserver is back starts within 5 s.
        let mut b = Jittered::default();
        let mut at = Duration::ZERO;
        let mut attempts = vec![];
        while at < Duration::from_secs(40) {
            at += b.next().unwrap();
            attempts.push(at);
        }
        assert!(
            attempts
                .windows(2)
                .all(|w| w[1] - w[0] <= Duration::from_secs(5)),
            "{attempts:?}"
        );
    }

    #[test]
    fn jitter_differs_between_watchers() {
        let a: Vec<Duration> = Jittered::default().take(6).collect();
        let b: Vec<Duration> = Jittered::default().take(6).collect();
        assert_ne!(a, b, "two watchers retry in step");
    }

    #[test]
    fn reset_starts_again_from_the_first_delay() {
        let mut b = Jittered::default();
        for _ in 0..6 {
            b.next();
        }
        b.reset();
        assert!(b.next().unwrap() < Duration::from_millis(313));
    }
}
