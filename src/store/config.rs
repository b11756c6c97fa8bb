//! Store settings.

use std::time::Duration;

/// How the store treats time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The scrape interval (`--metric-resolution`). Bounds the fresh-container rule: a container
    /// first seen at least 10 s but less than one resolution after its start is served after one
    /// scrape.
    pub metric_resolution: Duration,
    /// How long after its last successful scrape a node whose scrapes fail keeps serving its last
    /// good values (`--metric-stale-tolerance`). Its `timestamp` and `window` stay those of the
    /// last real samples, so clients see how old the data is. `Duration::ZERO` (the default) is
    /// metrics-server's behaviour: a failed scrape drops the node and its pods at once, and the
    /// HPA treats their pods as missing (conservatively) instead of acting on old values.
    ///
    /// A node that is not scraped at all (neither success nor failure, e.g. removed from the
    /// scrape set without being deleted) is dropped [`UNSCRAPED_RESOLUTIONS`] resolutions after
    /// its last success, plus this tolerance.
    pub keep_stale_for: Duration,
}

/// Resolutions after its last success at which a node that is neither scraped nor failing is
/// dropped at publish: two healthy scrapes of a node are at most two resolutions apart (start of
/// one deadline-bounded tick, end of the next), so a healthy node never expires this way.
pub const UNSCRAPED_RESOLUTIONS: u32 = 2;

impl StoreConfig {
    /// Settings for `metric_resolution` with metrics-server's staleness (none: a failed scrape
    /// drops the node at once).
    #[must_use]
    pub fn new(metric_resolution: Duration) -> Self {
        StoreConfig {
            metric_resolution,
            keep_stale_for: Duration::ZERO,
        }
    }

    /// The same settings, keeping a failing node's last values for `tolerance`.
    #[must_use]
    pub fn with_stale_tolerance(self, tolerance: Duration) -> Self {
        StoreConfig {
            keep_stale_for: tolerance,
            ..self
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

    /// When a node that is not scraped at all expires, in ms after its last success.
    pub(crate) fn unscraped_expiry_ms(&self) -> i64 {
        duration_ms(
            self.metric_resolution
                .saturating_mul(UNSCRAPED_RESOLUTIONS)
                .saturating_add(self.keep_stale_for),
        )
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_metrics_server_no_staleness() {
        let c = StoreConfig::new(Duration::from_secs(15));
        assert_eq!(c.keep_stale_for, Duration::ZERO);
        assert_eq!(
            (
                c.resolution_ms(),
                c.keep_stale_ms(),
                c.unscraped_expiry_ms()
            ),
            (15_000, 0, 30_000)
        );
        let c = c.with_stale_tolerance(Duration::from_secs(45));
        assert_eq!(
            (c.keep_stale_ms(), c.unscraped_expiry_ms()),
            (45_000, 75_000)
        );
        let huge = StoreConfig::new(Duration::MAX).with_stale_tolerance(Duration::MAX);
        assert_eq!(huge.keep_stale_ms(), i64::MAX);
        assert_eq!(huge.unscraped_expiry_ms(), i64::MAX);
    }
}
