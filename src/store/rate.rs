//! CPU rate maths: nanocores between two cumulative CPU readings of one series (a node or a
//! container).
//!
//! Mirrors metrics-server `pkg/storage/types.go` (`resourceUsage`) and the rules of
//! `pkg/storage/node.go` / `pkg/storage/pod.go`, with these deliberate differences:
//!
//! - the rate is computed once, when a scrape lands, not on every read;
//! - a reading whose timestamp is not after the stored one is not a new point: the stored state
//!   is kept as it is (metrics-server sometimes keeps an older `prev` and rates against it);
//! - the fresh-container rule applies only when there is no usable previous reading (first
//!   sighting or restart). metrics-server applies it first, so during a long resolution it rates
//!   against the start time even when a real previous reading exists;
//! - the result is rounded down, so a rate never exceeds the exact Δcpu / Δt.

use crate::store::batch::MetricsPoint;

/// A container first seen less than this long after its start is not rated from its start time
/// (metrics-server's `freshContainerMinMetricsResolution`): the first seconds are start-up noise
/// over a tiny window.
pub(crate) const FRESH_CONTAINER_MIN_AGE_MS: i64 = 10_000;

/// The CPU part of the last accepted reading of one series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Start time of the series in ms since the epoch (0 = unknown, always so for nodes).
    pub(crate) start_time_ms: i64,
    /// Timestamp of the CPU sample in ms since the epoch.
    pub(crate) timestamp_ms: i64,
    /// Cumulative CPU time in nanocore-seconds.
    pub(crate) cumulative_cpu_ns: u64,
}

impl Reading {
    /// The CPU part of a kubelet point.
    pub(crate) fn of(point: &MetricsPoint) -> Self {
        Reading {
            start_time_ms: point.start_time_ms,
            timestamp_ms: point.timestamp_ms,
            cumulative_cpu_ns: point.cumulative_cpu_ns,
        }
    }
}

/// A CPU rate between two readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Δcpu / Δt in nanocores, rounded down, saturated at `u64::MAX`.
    pub(crate) cpu_nanocores: u64,
    /// Δt in milliseconds, always > 0.
    pub(crate) window_ms: i64,
}

/// What a new reading does to a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The reading is not newer than the stored one: keep the stored reading and usage as they are.
    Keep,
    /// The reading becomes the stored one, with the rate against the previous one when there is a
    /// valid one (`None`: no usage for this series until it has two good points again).
    Advance(Option<Rate>),
}

/// The rate from `prev` to `next`: `None` when time does not move forward or the counter went
/// down (a reset is never turned into usage).
pub(crate) fn cpu_rate(prev: Reading, next: Reading) -> Option<Rate> {
    let window_ms = next
        .timestamp_ms
        .checked_sub(prev.timestamp_ms)
        .filter(|w| *w > 0)?;
    let delta_ns = next.cumulative_cpu_ns.checked_sub(prev.cumulative_cpu_ns)?;
    // nanocores = Δcpu_ns / Δt_s = Δcpu_ns × 1000 / Δt_ms; u128 cannot overflow here.
    let nanocores = u128::from(delta_ns) * 1_000 / u128::from(window_ms.unsigned_abs());
    Some(Rate {
        cpu_nanocores: u64::try_from(nanocores).unwrap_or(u64::MAX),
        window_ms,
    })
}

/// metrics-server's fresh-container rule: a container seen for the first time (or just restarted)
/// whose sample is at least [`FRESH_CONTAINER_MIN_AGE_MS`] but less than `fresh_limit_ms` (the
/// metric resolution) after its start is rated against a synthetic reading `{start, cpu 0}`, so
/// it is served after one scrape. A `fresh_limit_ms` of 0 disables the rule (nodes).
pub(crate) fn fresh_rate(point: &MetricsPoint, fresh_limit_ms: i64) -> Option<Rate> {
    if point.start_time_ms <= 0 {
        return None;
    }
    let age_ms = point.timestamp_ms.checked_sub(point.start_time_ms)?;
    if !(FRESH_CONTAINER_MIN_AGE_MS..fresh_limit_ms).contains(&age_ms) {
        return None;
    }
    let started = Reading {
        start_time_ms: point.start_time_ms,
        timestamp_ms: point.start_time_ms,
        cumulative_cpu_ns: 0,
    };
    cpu_rate(started, Reading::of(point))
}

/// What `point` does to a series whose stored reading is `last`.
///
/// - not after `last` (timestamp ≤ `last`'s): [`Step::Keep`];
/// - same start time: the rate against `last` (none if the counter went down);
/// - first sighting, or a changed start time (restart): only the fresh-container rule can give a
///   rate.
pub(crate) fn step(last: Option<&Reading>, point: &MetricsPoint, fresh_limit_ms: i64) -> Step {
    let next = Reading::of(point);
    match last {
        Some(last) if next.timestamp_ms <= last.timestamp_ms => Step::Keep,
        Some(last) if next.start_time_ms == last.start_time_ms => {
            Step::Advance(cpu_rate(*last, next))
        }
        _ => Step::Advance(fresh_rate(point, fresh_limit_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RES: i64 = 15_000;
    const T0: i64 = 1_700_000_000_000;

    fn point(start: i64, ts: i64, cpu: u64) -> MetricsPoint {
        MetricsPoint {
            start_time_ms: start,
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu,
            memory_bytes: 1,
        }
    }

    fn reading(start: i64, ts: i64, cpu: u64) -> Reading {
        Reading::of(&point(start, ts, cpu))
    }

    #[test]
    fn rate_is_delta_cpu_over_delta_t() {
        // 1.5 cpu-seconds over 15 s = 0.1 core = 100,000,000 nanocores.
        let r = cpu_rate(reading(0, T0, 0), reading(0, T0 + 15_000, 1_500_000_000));
        assert_eq!(
            r,
            Some(Rate {
                cpu_nanocores: 100_000_000,
                window_ms: 15_000
            })
        );
        // Window is the real Δt of the CPU timestamps, not the resolution: 17.913 s.
        let r = cpu_rate(
            reading(0, T0, 5_000_000_000),
            reading(0, T0 + 17_913, 5_000_000_000 + 17_913_000_000),
        );
        assert_eq!(
            r,
            Some(Rate {
                cpu_nanocores: 1_000_000_000,
                window_ms: 17_913
            })
        );
    }

    #[test]
    fn rate_rounds_down() {
        // 1 ns of CPU over 3 ms = 333.33… nanocores → 333.
        let r = cpu_rate(reading(0, T0, 10), reading(0, T0 + 3, 11)).unwrap();
        assert_eq!(r.cpu_nanocores, 333);
    }

    #[test]
    fn idle_series_has_zero_rate() {
        let r = cpu_rate(reading(0, T0, 42), reading(0, T0 + RES, 42));
        assert_eq!(
            r,
            Some(Rate {
                cpu_nanocores: 0,
                window_ms: RES
            })
        );
    }

    #[test]
    fn counter_decrease_gives_no_rate() {
        assert_eq!(
            cpu_rate(reading(0, T0, 100), reading(0, T0 + RES, 99)),
            None
        );
    }

    #[test]
    fn time_not_moving_forward_gives_no_rate() {
        assert_eq!(cpu_rate(reading(0, T0, 1), reading(0, T0, 2)), None);
        assert_eq!(cpu_rate(reading(0, T0, 1), reading(0, T0 - 1, 2)), None);
    }

    #[test]
    fn extremes_never_panic() {
        // Δt overflows i64.
        assert_eq!(
            cpu_rate(reading(0, i64::MIN, 0), reading(0, i64::MAX, 1)),
            None
        );
        // Huge Δcpu over 1 ms saturates.
        let r = cpu_rate(reading(0, 0, 0), reading(0, 1, u64::MAX)).unwrap();
        assert_eq!(r.cpu_nanocores, u64::MAX);
        // Start-time arithmetic overflow.
        assert_eq!(fresh_rate(&point(1, i64::MIN, 5), RES), None);
        assert_eq!(fresh_rate(&point(i64::MAX, i64::MIN, 5), RES), None);
    }

    #[test]
    fn step_keeps_state_for_points_not_newer() {
        let last = reading(T0 - 60_000, T0, 100);
        assert_eq!(
            step(Some(&last), &point(T0 - 60_000, T0, 200), RES),
            Step::Keep
        );
        assert_eq!(
            step(Some(&last), &point(T0 - 60_000, T0 - 5, 200), RES),
            Step::Keep
        );
    }

    #[test]
    fn step_rates_against_last_with_same_start() {
        let last = reading(T0 - 60_000, T0, 1_000_000_000);
        assert_eq!(
            step(
                Some(&last),
                &point(T0 - 60_000, T0 + 10_000, 3_000_000_000),
                RES
            ),
            Step::Advance(Some(Rate {
                cpu_nanocores: 200_000_000,
                window_ms: 10_000
            }))
        );
    }

    #[test]
    fn step_counter_decrease_advances_without_rate() {
        let last = reading(0, T0, 1_000);
        assert_eq!(
            step(Some(&last), &point(0, T0 + RES, 10), RES),
            Step::Advance(None)
        );
    }

    #[test]
    fn restart_outside_fresh_window_gives_no_rate() {
        let last = reading(T0 - 600_000, T0, 9_000_000_000);
        // Restarted 30 s before the sample: too old for the 15 s fresh window.
        let p = point(T0 + 15_000 - 30_000 + 1, T0 + 15_000, 1_000_000_000);
        assert_eq!(step(Some(&last), &p, RES), Step::Advance(None));
        // Even with a counter that went up.
        let p = point(T0 - 20_000, T0 + 15_000, 9_500_000_000);
        assert_eq!(step(Some(&last), &p, RES), Step::Advance(None));
    }

    #[test]
    fn restart_inside_fresh_window_rates_from_start() {
        let last = reading(T0 - 600_000, T0, 9_000_000_000);
        // Restarted 12 s before the sample, used 0.6 cpu-s since: 50,000,000 nanocores.
        let p = point(T0 + 3_000, T0 + 15_000, 600_000_000);
        assert_eq!(
            step(Some(&last), &p, RES),
            Step::Advance(Some(Rate {
                cpu_nanocores: 50_000_000,
                window_ms: 12_000
            }))
        );
    }

    #[test]
    fn fresh_window_bounds() {
        let at = |age: i64| fresh_rate(&point(T0 - age, T0, 1_000_000_000), RES);
        assert_eq!(at(9_999), None);
        assert_eq!(
            at(10_000),
            Some(Rate {
                cpu_nanocores: 100_000_000,
                window_ms: 10_000
            })
        );
        assert!(at(14_999).is_some());
        assert_eq!(at(15_000), None);
        // Started long ago, first seen now: needs two scrapes.
        assert_eq!(
            step(None, &point(T0 - 3_600_000, T0, 5), RES),
            Step::Advance(None)
        );
        // Unknown start time (nodes) or a resolution ≤ 10 s: no fresh rule.
        assert_eq!(fresh_rate(&point(0, 12_000, 5), RES), None);
        assert_eq!(fresh_rate(&point(T0 - 10_000, T0, 5), 10_000), None);
        assert_eq!(fresh_rate(&point(T0 - 12_000, T0, 5), 0), None);
    }

    /// Exact Δcpu/Δt in nanocores as a real number.
    fn exact(prev: Reading, next: Reading) -> f64 {
        (next.cumulative_cpu_ns - prev.cumulative_cpu_ns) as f64 * 1e9
            / ((next.timestamp_ms - prev.timestamp_ms) as f64 * 1e6)
    }

    proptest! {
        /// Monotone counters and increasing timestamps: every point after the first gets a rate
        /// that is Δcpu/Δt rounded down, over the exact Δt.
        #[test]
        fn monotone_series_rate_is_exact(
            first_cpu in 0u64..1_000_000_000_000_000,
            steps in prop::collection::vec((1i64..600_000, 0u64..64_000_000_000_000), 1..40),
        ) {
            let start = T0 - 3_600_000;
            let mut last = reading(start, T0, first_cpu);
            for (dt, dcpu) in steps {
                let p = point(start, last.timestamp_ms + dt, last.cumulative_cpu_ns + dcpu);
                let Step::Advance(Some(rate)) = step(Some(&last), &p, RES) else {
                    return Err(TestCaseError::fail("monotone point must give a rate"));
                };
                let next = Reading::of(&p);
                prop_assert_eq!(rate.window_ms, dt);
                let want = u128::from(dcpu) * 1000 / u128::from(dt.unsigned_abs());
                prop_assert_eq!(u128::from(rate.cpu_nanocores), want);
                let err = exact(last, next) - rate.cpu_nanocores as f64;
                // Rounding down: 0 ≤ exact − rate < 1 (plus float noise on huge values).
                prop_assert!(err > -1e-6 * exact(last, next).max(1.0), "err {}", err);
                prop_assert!(err < 1.0 + 1e-9 * exact(last, next), "err {}", err);
                last = next;
            }
        }

        /// Any input sequence (decreasing counters, restarts, stuck or backwards clocks): a rate
        /// is only ever produced between two readings of the same run (same start time, time
        /// moving forward, counter not decreasing) or by the fresh rule, and it never exceeds
        /// Δcpu/Δt of that pair.
        #[test]
        fn no_invented_usage(
            points in prop::collection::vec(
                (0i64..4, -20_000i64..40_000, 0u64..4, 0u64..2_000_000_000_000),
                1..60,
            ),
        ) {
            let mut last: Option<Reading> = None;
            let mut ts = T0;
            let mut cpu = 0u64;
            for (start_pick, dt, cpu_mode, amount) in points {
                ts = ts.saturating_add(dt);
                cpu = match cpu_mode {
                    0 => cpu.saturating_add(amount),
                    1 => cpu.saturating_sub(amount),
                    2 => amount,
                    _ => cpu,
                };
                // A few distinct start times, some of them inside the fresh window.
                let start = match start_pick {
                    0 => T0 - 3_600_000,
                    1 => ts - 12_000,
                    2 => ts - 5_000,
                    _ => 0,
                };
                let p = point(start, ts, cpu);
                let next = Reading::of(&p);
                match step(last.as_ref(), &p, RES) {
                    Step::Keep => {
                        let l = last.expect("Keep needs a stored reading");
                        prop_assert!(next.timestamp_ms <= l.timestamp_ms);
                    }
                    Step::Advance(rate) => {
                        if let Some(rate) = rate {
                            let prev = match last {
                                Some(l) if l.start_time_ms == start => l,
                                _ => Reading { start_time_ms: start, timestamp_ms: start, cumulative_cpu_ns: 0 },
                            };
                            prop_assert!(prev.timestamp_ms < next.timestamp_ms);
                            prop_assert!(prev.cumulative_cpu_ns <= next.cumulative_cpu_ns);
                            prop_assert_eq!(rate.window_ms, next.timestamp_ms - prev.timestamp_ms);
                            let delta = u128::from(next.cumulative_cpu_ns - prev.cumulative_cpu_ns);
                            let window = u128::from(rate.window_ms.unsigned_abs());
                            // rate × Δt ≤ Δcpu × 1000 < (rate + 1) × Δt: never above Δcpu/Δt.
                            prop_assert!(u128::from(rate.cpu_nanocores) * window <= delta * 1000);
                            prop_assert!((u128::from(rate.cpu_nanocores) + 1) * window > delta * 1000);
                        }
                        last = Some(next);
                    }
                }
            }
        }
    }
}
