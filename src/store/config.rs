//! Store settings.

use std::time::Duration;

/// How the store treats time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The scrape interval (`--metric-resolution`). Bounds the fresh-container rule: a container
    /// first seen at least 10 s but less than one resolution after its start is served after one
    /// scrape.
    pub metric_resolution: Duration,
    /// How long after its last successful scrape a node keeps its last good values while its
    /// scrapes fail (or while it is not scraped at all). Its `timestamp` and `window` stay those
    /// of the last real samples, so clients see how old the data is. After that the node and its
    /// pods are dropped. `Duration::ZERO` drops a node at the first publish after its scrape:
    /// only for tests.
    pub keep_stale_for: Duration,
}

impl StoreConfig {
    /// How many resolutions [`StoreConfig::new`] keeps a failing node's data.
    pub const DEFAULT_STALE_RESOLUTIONS: u32 = 3;

    /// Settings for `metric_resolution`, keeping a failing node's data for
    /// [`DEFAULT_STALE_RESOLUTIONS`](Self::DEFAULT_STALE_RESOLUTIONS) resolutions after its last
    /// successful scrape.
    ///
    /// Why three: the allowance runs from the last *success*, and a node's place inside a tick
    /// moves from tick to tick (bounded concurrency, slow kubelets, jitter). Two healthy scrapes
    /// can be up to 2 resolutions apart (start of one tick, end of the next), and a single missed
    /// scrape puts up to 3 resolutions between successes. With 2 resolutions a healthy node
    /// could flicker out whenever a tick runs long, and one miss would often hide its pods;
    /// with 3, one missed scrape never does, two usually do, and served data is never older
    /// than about 3 resolutions (plus the time to the next publish). metrics-server keeps
    /// nothing: one failure hides a node's pods for 2–3 resolutions.
    #[must_use]
    pub fn new(metric_resolution: Duration) -> Self {
        StoreConfig {
            metric_resolution,
            keep_stale_for: metric_resolution.saturating_mul(Self::DEFAULT_STALE_RESOLUTIONS),
        }
    }

    /// The resolution in whole milliseconds (saturating).
    pub(crate) fn resolution_ms(&self) -> i64 {
        duration_ms(self.metric_resolution)
    }

    /// The stale allowance in whole milliseconds (saturating).
    pub(crate) fn keep_stale_ms(&self) -> i64 {
        duration_ms(self.keep_stale_for)
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_three_resolutions() {
        let c = StoreConfig::new(Duration::from_secs(15));
        assert_eq!(c.keep_stale_for, Duration::from_secs(45));
        assert_eq!((c.resolution_ms(), c.keep_stale_ms()), (15_000, 45_000));
        let huge = StoreConfig::new(Duration::MAX);
        assert_eq!(huge.keep_stale_for, Duration::MAX);
        assert_eq!(huge.keep_stale_ms(), i64::MAX);
    }
}
