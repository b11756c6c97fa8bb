//! CPU rate maths: nanocores between two cumulative CPU readings of one series (a node or a
//! container).
//!
//! Mirrors metrics-server `pkg/storage/types.go` (`resourceUsage`) and the rules of
//! `pkg/storage/node.go` / `pkg/storage/pod.go`, with these deliberate differences:
//!
//! - the rate is computed once, when a scrape lands, not on every read;
//! - a reading whose timestamp is not after the stored one is not a new point: the stored state
//!   is kept as it is (metrics-server sometimes keeps an older `prev` and rates against it);
//! - **same run** is metrics-server's test: the new start time is before the stored reading's
//!   timestamp (`newContainer.StartTime.Before(lastContainer.Timestamp)`), so start-time jitter
//!   between scrapes is not a restart. A start time that moved *earlier* is accepted as jitter
//!   too (metrics-server then refuses the rate with "unexpected decrease in startTime"): a
//!   restart can only move it later;
//! - **zero readings are not readings** (metrics-server's `checkContainerMetrics` drops a
//!   container whose cumulative CPU or working set is 0): a cumulative CPU of 0 is the
//!   kubelet's placeholder before the first stats, so it never becomes the base of a rate
//!   ([`Step::Hold`] keeps the last real reading as the base); a 0 working set gives no
//!   servable usage for that scrape (decided by the caller, the CPU reading stays valid);
//! - **first rates** (metrics-server's fresh-container rule: 10 s ≤ sample − start <
//!   resolution, rated against `{start, cpu 0}`) are given only to a container's *first run* as
//!   seen by this store: never after a restart (the new run's counter may not have begun at its
//!   reported start), and never when an earlier reading of the same container was taken before
//!   its reported start time. metrics-server applies the rule even when it holds a real previous
//!   reading; here it replaces the rate against the stored reading only when that reading was
//!   taken in the container's first 10 s (so a follow-up scrape at age ≥ 10 s gets the honest
//!   rate over its whole life instead of a tiny window), using the earliest start time
//!   reported for the run. What cannot be detected: a start time reported *later* than the
//!   counter really began inflates a first rate by that delay ÷ the container's age (≤ 10% for
//!   a one-second error at the 10 s minimum age), and a container whose very first reading
//!   already carries a counter from before its reported start looks like a busy start-up. A
//!   counter from before the start time is caught whenever the store holds a reading of the
//!   container taken at or before that start, or the start time moves later by more than
//!   [`START_JITTER_MS`];
//! - the result is rounded down, so a rate never exceeds the exact Δcpu / Δt.

use crate::store::batch::MetricsPoint;

/// A container first seen less than this long after its start is not rated from its start time
/// (metrics-server's `freshContainerMinMetricsResolution`): the first seconds are start-up noise
/// over a tiny window.
pub(crate) const FRESH_CONTAINER_MIN_AGE_MS: i64 = 10_000;

/// How much later than the stored one a start time may be reported and still count as the
/// first run seen (kubelets round start times to the second). Moving later by more is not a
/// restart by metrics-server's rule as long as it stays before the stored sample, but the run's
/// counter may then predate the new start time, so it ends the first run: no first rate.
pub(crate) const START_JITTER_MS: i64 = 1_000;

/// The CPU part of the last accepted reading of one series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Start time of the series in ms since the epoch (0 = unknown, always so for nodes).
    pub(crate) start_time_ms: i64,
    /// Timestamp of the CPU sample in ms since the epoch.
    pub(crate) timestamp_ms: i64,
    /// Cumulative CPU time in nanocore-seconds (0: a placeholder, never a rate base).
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

    /// A real reading: the counter has started (a 0 is the kubelet's placeholder).
    pub(crate) fn is_real(&self) -> bool {
        self.cumulative_cpu_ns > 0
    }
}

/// What the store remembers of one series between scrapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prior {
    /// The last accepted reading.
    pub(crate) reading: Reading,
    /// No earlier run of this series was seen (no restart, no reading from before its start):
    /// the fresh-container rule may still give it a first rate.
    pub(crate) first_run: bool,
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
    /// The reading is a placeholder (cumulative CPU 0) and the stored reading is real: keep the
    /// stored reading as the base of the next rate, but serve no usage for this scrape.
    Hold,
    /// The reading becomes the stored one, with the rate against the previous one when there is a
    /// valid one (`None`: no usage for this series until it has two good points again).
    Advance {
        /// The usage rate, if honest.
        rate: Option<Rate>,
        /// Whether the series is still in its first seen run (see [`Prior::first_run`]).
        first_run: bool,
    },
}

/// The rate from `prev` to `next`: `None` when time does not move forward, the base is a
/// placeholder, or the counter went down (a reset is never turned into usage).
pub(crate) fn cpu_rate(prev: Reading, next: Reading) -> Option<Rate> {
    if !prev.is_real() {
        return None;
    }
    rate_between(prev, next)
}

fn rate_between(prev: Reading, next: Reading) -> Option<Rate> {
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

/// Age of the sample: timestamp − start time, when the start time is known.
fn age_ms(point: &MetricsPoint) -> Option<i64> {
    if point.start_time_ms <= 0 {
        return None;
    }
    point.timestamp_ms.checked_sub(point.start_time_ms)
}

/// metrics-server's fresh-container rule: a container whose sample is at least
/// [`FRESH_CONTAINER_MIN_AGE_MS`] but less than `fresh_limit_ms` (the metric resolution) after
/// its start is rated against a synthetic reading `{start, cpu 0}`, so it is served after one
/// scrape. A `fresh_limit_ms` of 0 disables the rule (nodes). Callers apply it to a first run
/// only.
pub(crate) fn fresh_rate(point: &MetricsPoint, fresh_limit_ms: i64) -> Option<Rate> {
    let age = age_ms(point)?;
    if !(FRESH_CONTAINER_MIN_AGE_MS..fresh_limit_ms).contains(&age) || !Reading::of(point).is_real()
    {
        return None;
    }
    let started = Reading {
        start_time_ms: point.start_time_ms,
        timestamp_ms: point.start_time_ms,
        cumulative_cpu_ns: 0,
    };
    rate_between(started, Reading::of(point))
}

/// When a container that has no usage yet will be old enough for the fresh-container rule
/// (start + [`FRESH_CONTAINER_MIN_AGE_MS`]), if that is still inside its fresh window: a scrape
/// then serves it a resolution earlier than the next regular one would. `None` for nodes
/// (`fresh_limit_ms` 0), unknown start times and containers already past the minimum age.
pub(crate) fn fresh_due_ms(point: &MetricsPoint, fresh_limit_ms: i64) -> Option<i64> {
    let age = age_ms(point)?;
    if !(0..FRESH_CONTAINER_MIN_AGE_MS).contains(&age)
        || fresh_limit_ms <= FRESH_CONTAINER_MIN_AGE_MS
    {
        return None;
    }
    point.start_time_ms.checked_add(FRESH_CONTAINER_MIN_AGE_MS)
}

/// What `point` does to a series whose stored state is `last`.
///
/// - a placeholder stored reading (CPU 0) counts as no reading;
/// - `point` not after the stored reading (timestamp ≤): [`Step::Keep`];
/// - `point` is a placeholder (CPU 0): [`Step::Hold`] (or, with no real stored reading, an
///   [`Step::Advance`] without rate, so it is never a base);
/// - same run (start time unknown, or before the stored reading's timestamp): the rate against
///   the stored reading (none if the counter went down, which also ends the first run), or the
///   first rate from the start time when the stored reading is from the first 10 s of a first
///   run;
/// - a restart (start time at or after the stored reading's timestamp): no rate, first run over;
/// - first sighting: only the fresh-container rule can give a rate.
pub(crate) fn step(last: Option<&Prior>, point: &MetricsPoint, fresh_limit_ms: i64) -> Step {
    let next = Reading::of(point);
    // Any earlier reading (a placeholder included) taken at or before the reported start time
    // means this is not the run we first saw: its counter may not have begun at that start.
    let first_run = last.is_none_or(|l| {
        l.first_run
            && next.start_time_ms < l.reading.timestamp_ms
            && (l.reading.start_time_ms <= 0
                || next.start_time_ms <= l.reading.start_time_ms.saturating_add(START_JITTER_MS))
    });
    let Some(last) = last.filter(|l| l.reading.is_real()) else {
        let rate = if first_run {
            fresh_rate(point, fresh_limit_ms)
        } else {
            None
        };
        return Step::Advance { rate, first_run };
    };
    if next.timestamp_ms <= last.reading.timestamp_ms {
        return Step::Keep;
    }
    if !next.is_real() {
        return Step::Hold;
    }
    let same_run = next.start_time_ms < last.reading.timestamp_ms;
    if !same_run {
        return Step::Advance {
            rate: None,
            first_run: false,
        };
    }
    let Some(rate) = cpu_rate(last.reading, next) else {
        // The counter went down without a new start time: a reset, never usage.
        return Step::Advance {
            rate: None,
            first_run: false,
        };
    };
    // The earliest start time reported for this run: a start time reported later than the
    // counter began would shorten the window and inflate the rate.
    let start = match last.reading.start_time_ms {
        s if s > 0 => s.min(next.start_time_ms),
        _ => next.start_time_ms,
    };
    let stored_age = last.reading.timestamp_ms.saturating_sub(start);
    let rate = if first_run && start > 0 && stored_age < FRESH_CONTAINER_MIN_AGE_MS {
        let from_start = MetricsPoint {
            start_time_ms: start,
            ..*point
        };
        fresh_rate(&from_start, fresh_limit_ms).unwrap_or(rate)
    } else {
        rate
    };
    Step::Advance {
        rate: Some(rate),
        first_run,
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

    fn prior(start: i64, ts: i64, cpu: u64) -> Prior {
        Prior {
            reading: reading(start, ts, cpu),
            first_run: true,
        }
    }

    fn rate(cpu_nanocores: u64, window_ms: i64) -> Option<Rate> {
        Some(Rate {
            cpu_nanocores,
            window_ms,
        })
    }

    fn advance(rate: Option<Rate>, first_run: bool) -> Step {
        Step::Advance { rate, first_run }
    }

    #[test]
    fn rate_is_delta_cpu_over_delta_t() {
        // 1.5 cpu-seconds over 15 s = 0.1 core = 100,000,000 nanocores.
        let r = cpu_rate(reading(0, T0, 1), reading(0, T0 + 15_000, 1_500_000_001));
        assert_eq!(r, rate(100_000_000, 15_000));
        // Window is the real Δt of the CPU timestamps, not the resolution: 17.913 s.
        let r = cpu_rate(
            reading(0, T0, 5_000_000_000),
            reading(0, T0 + 17_913, 5_000_000_000 + 17_913_000_000),
        );
        assert_eq!(r, rate(1_000_000_000, 17_913));
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
        assert_eq!(r, rate(0, RES));
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
            cpu_rate(reading(0, i64::MIN, 1), reading(0, i64::MAX, 2)),
            None
        );
        // Huge Δcpu over 1 ms saturates.
        let r = cpu_rate(reading(0, 0, 1), reading(0, 1, u64::MAX)).unwrap();
        assert_eq!(r.cpu_nanocores, u64::MAX);
        // Start-time arithmetic overflow.
        assert_eq!(fresh_rate(&point(1, i64::MIN, 5), RES), None);
        assert_eq!(fresh_rate(&point(i64::MAX, i64::MIN, 5), RES), None);
        assert_eq!(fresh_due_ms(&point(i64::MAX, i64::MAX, 5), RES), None);
        let last = prior(i64::MAX, i64::MIN + 1, 1);
        let _ = step(Some(&last), &point(i64::MIN, i64::MAX, u64::MAX), RES);
    }

    #[test]
    fn step_keeps_state_for_points_not_newer() {
        let last = prior(T0 - 60_000, T0, 100);
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
        let last = prior(T0 - 60_000, T0, 1_000_000_000);
        assert_eq!(
            step(
                Some(&last),
                &point(T0 - 60_000, T0 + 10_000, 3_000_000_000),
                RES
            ),
            advance(rate(200_000_000, 10_000), true)
        );
    }

    /// Defect 6: the start time the kubelet reports jitters between scrapes (cAdvisor rounds
    /// it); as long as it is before the stored reading, it is the same run.
    #[test]
    fn start_time_jitter_is_not_a_restart() {
        let last = prior(T0 - 60_000, T0, 1_000_000_000);
        let later = point(T0 - 59_000, T0 + 10_000, 3_000_000_000);
        assert_eq!(
            step(Some(&last), &later, RES),
            advance(rate(200_000_000, 10_000), true)
        );
        let earlier = point(T0 - 61_000, T0 + 10_000, 3_000_000_000);
        assert_eq!(
            step(Some(&last), &earlier, RES),
            advance(rate(200_000_000, 10_000), true)
        );
        // Just before the stored timestamp: still the same run (metrics-server's `Before`).
        let seen_restart = Prior {
            first_run: false,
            ..last
        };
        let edge = point(T0 - 1, T0 + 10_000, 3_000_000_000);
        assert_eq!(
            step(Some(&seen_restart), &edge, RES),
            advance(rate(200_000_000, 10_000), false)
        );
    }

    #[test]
    fn step_counter_decrease_advances_without_rate() {
        let last = prior(0, T0, 1_000);
        assert_eq!(
            step(Some(&last), &point(0, T0 + RES, 10), RES),
            advance(None, false)
        );
    }

    #[test]
    fn restart_gives_no_rate_not_even_a_first_one() {
        let last = prior(T0 - 600_000, T0, 9_000_000_000);
        // Restarted 30 s before the sample: too old for the 15 s fresh window.
        let p = point(T0 + 15_000 - 30_000 + 1, T0 + 15_000, 1_000_000_000);
        assert_eq!(step(Some(&last), &p, RES), advance(None, false));
        // Restarted at the stored timestamp, with a counter that went up.
        let p = point(T0, T0 + 15_000, 9_500_000_000);
        assert_eq!(step(Some(&last), &p, RES), advance(None, false));
        // Restarted 12 s before the sample (inside the fresh window): still no first rate, its
        // counter may have kept running across the restart.
        let p = point(T0 + 3_000, T0 + 15_000, 600_000_000);
        assert_eq!(step(Some(&last), &p, RES), advance(None, false));
        // The run after the restart is rated normally from its second reading.
        let after = Prior {
            reading: Reading::of(&p),
            first_run: false,
        };
        let p2 = point(T0 + 3_000, T0 + 30_000, 2_100_000_000);
        assert_eq!(
            step(Some(&after), &p2, RES),
            advance(rate(100_000_000, 15_000), false)
        );
    }

    /// Defect 5: a cumulative CPU of 0 is the kubelet's placeholder; rated as a base, the next
    /// real reading would put the container's whole lifetime CPU inside one window.
    #[test]
    fn placeholder_zero_is_never_a_base() {
        let start = T0 - 3_600_000;
        // First sighting is a placeholder: no rate, and the next real reading is a first
        // sighting again (an hour-old container: no fresh rule either).
        let first = step(None, &point(start, T0, 0), RES);
        assert_eq!(first, advance(None, true));
        let held = prior(start, T0, 0);
        let real = point(start, T0 + RES, 3_600_000_000_000);
        assert_eq!(step(Some(&held), &real, RES), advance(None, true));
        // A placeholder after real readings: the real reading stays the base.
        let last = prior(start, T0, 1_000_000_000);
        assert_eq!(
            step(Some(&last), &point(start, T0 + RES, 0), RES),
            Step::Hold
        );
        // Placeholder for a container in its fresh window, then its real reading: first rate.
        let young = prior(T0 - 2_000, T0, 0);
        assert_eq!(
            step(
                Some(&young),
                &point(T0 - 2_000, T0 + 10_000, 1_200_000_000),
                RES
            ),
            advance(rate(100_000_000, 12_000), true)
        );
    }

    #[test]
    fn fresh_window_bounds() {
        let at = |age: i64| fresh_rate(&point(T0 - age, T0, 1_000_000_000), RES);
        assert_eq!(at(9_999), None);
        assert_eq!(at(10_000), rate(100_000_000, 10_000));
        assert!(at(14_999).is_some());
        assert_eq!(at(15_000), None);
        // Started long ago, first seen now: needs two scrapes.
        assert_eq!(
            step(None, &point(T0 - 3_600_000, T0, 5), RES),
            advance(None, true)
        );
        // First seen 12 s after its start: served at once.
        assert_eq!(
            step(None, &point(T0 - 12_000, T0, 1_200_000_000), RES),
            advance(rate(100_000_000, 12_000), true)
        );
        // Unknown start time (nodes), a resolution ≤ 10 s, or a start after the sample: no rule.
        assert_eq!(fresh_rate(&point(0, 12_000, 5), RES), None);
        assert_eq!(fresh_rate(&point(T0 - 10_000, T0, 5), 10_000), None);
        assert_eq!(fresh_rate(&point(T0 - 12_000, T0, 5), 0), None);
        assert_eq!(fresh_rate(&point(T0 + 12_000, T0, 5), RES), None);
    }

    /// The fresh-container condition is metrics-server's, term by term
    /// (kubernetes-sigs/metrics-server `pkg/storage/pod.go`, `podStorage.Store`, at 5ed5d3a):
    /// `StartTime.Before(Timestamp) && Timestamp.Sub(StartTime) < metricResolution &&
    /// Timestamp.Sub(StartTime) >= freshContainerMinMetricsResolution` (10 s). Checked at and
    /// around every boundary for several resolutions, including ones at or under 10 s where the
    /// window is empty. (metrics-server also needs a known start time: a zero `StartTime` is
    /// 1 Jan year 1, never inside the window; ours is 0 = unknown.)
    #[test]
    fn fresh_condition_is_metrics_server_pod_go() {
        let go_rule = |start: i64, ts: i64, res: i64| {
            start < ts && ts - start < res && ts - start >= FRESH_CONTAINER_MIN_AGE_MS
        };
        for res in [1_000, 9_999, 10_000, 10_001, 15_000, 30_000, 60_000] {
            for age in [
                -1, 0, 1, 9_999, 10_000, 10_001, 14_999, 15_000, 15_001, 29_999, 30_000, 59_999,
                60_000, 60_001,
            ] {
                let p = point(T0 - age, T0, 1_000_000_000);
                assert_eq!(
                    fresh_rate(&p, res).is_some(),
                    go_rule(T0 - age, T0, res),
                    "resolution {res} ms, age {age} ms"
                );
            }
        }
        // Unknown start (metrics-server: zero time, so age is ~2,000 years: outside).
        assert_eq!(fresh_rate(&point(0, T0, 1_000_000_000), 60_000), None);
    }

    /// §4: a container first seen in its first 10 s is due a follow-up scrape at start + 10 s,
    /// whose sample is then rated over the container's whole life, not the few seconds since
    /// the first sample.
    #[test]
    fn follow_up_after_a_too_young_first_sighting_rates_from_start() {
        let start = T0 - 4_000;
        let first = point(start, T0, 400_000_000);
        assert_eq!(step(None, &first, RES), advance(None, true));
        assert_eq!(fresh_due_ms(&first, RES), Some(start + 10_000));
        let last = Prior {
            reading: Reading::of(&first),
            first_run: true,
        };
        // Follow-up at age 10.5 s: 1.05 cpu-s since start = 0.1 core over 10.5 s.
        let follow_up = point(start, start + 10_500, 1_050_000_000);
        assert_eq!(
            step(Some(&last), &follow_up, RES),
            advance(rate(100_000_000, 10_500), true)
        );
        // Not in a first run (restart seen before): the plain rate against the stored reading.
        let restarted = Prior {
            first_run: false,
            ..last
        };
        assert_eq!(
            step(Some(&restarted), &follow_up, RES),
            advance(rate(100_000_000, 6_500), false)
        );
        // Past the minimum age, unknown start, nodes, short resolutions: nothing due.
        assert_eq!(fresh_due_ms(&point(start, start + 10_000, 1), RES), None);
        assert_eq!(fresh_due_ms(&point(0, T0, 1), RES), None);
        assert_eq!(fresh_due_ms(&first, 0), None);
        assert_eq!(fresh_due_ms(&first, 10_000), None);
        assert_eq!(fresh_due_ms(&point(T0 + 1, T0, 1), RES), None);
    }

    /// Exact Δcpu/Δt in nanocores as a real number.
    fn exact(prev: Reading, next: Reading) -> f64 {
        (next.cumulative_cpu_ns - prev.cumulative_cpu_ns) as f64 * 1e9
            / ((next.timestamp_ms - prev.timestamp_ms) as f64 * 1e6)
    }

    /// Applies `step` the way the store does and returns the new state and the rate.
    fn apply(last: Option<Prior>, p: &MetricsPoint) -> (Option<Prior>, Option<Rate>) {
        match step(last.as_ref(), p, RES) {
            Step::Keep | Step::Hold => (last, None),
            Step::Advance { rate, first_run } => (
                Some(Prior {
                    reading: Reading::of(p),
                    first_run,
                }),
                rate,
            ),
        }
    }

    /// Most CPU a simulated container can use: 4 cores.
    const MAX_NANOCORES: u64 = 4_000_000_000;

    /// How a simulated kubelet reports one scrape.
    #[derive(Clone, Copy, Debug)]
    enum Report {
        /// The true reading.
        Real,
        /// The placeholder: cumulative CPU 0.
        Placeholder,
        /// The container restarted `ago` ms before this sample; its new counter either starts
        /// at 0 (cgroup recreated) or keeps the old run's total (counter began before the
        /// reported start time).
        Restart { ago: i64, carried: bool },
        /// The same timestamp as the previous report (a cached kubelet answer).
        Repeat,
    }

    fn report() -> impl Strategy<Value = Report> {
        prop_oneof![
            6 => Just(Report::Real),
            2 => Just(Report::Placeholder),
            1 => (1i64..20_000, any::<bool>()).prop_map(|(ago, carried)| Report::Restart { ago, carried }),
            1 => Just(Report::Repeat),
        ]
    }

    proptest! {
        /// Monotone counters and increasing timestamps: every point after the first gets a rate
        /// that is Δcpu/Δt rounded down, over the exact Δt.
        #[test]
        fn monotone_series_rate_is_exact(
            first_cpu in 1u64..1_000_000_000_000_000,
            steps in prop::collection::vec((1i64..600_000, 0u64..64_000_000_000_000), 1..40),
        ) {
            let start = T0 - 3_600_000;
            let mut last = prior(start, T0, first_cpu);
            for (dt, dcpu) in steps {
                let p = point(start, last.reading.timestamp_ms + dt, last.reading.cumulative_cpu_ns + dcpu);
                let Step::Advance { rate: Some(rate), first_run: true } = step(Some(&last), &p, RES) else {
                    return Err(TestCaseError::fail("monotone point must give a rate"));
                };
                let next = Reading::of(&p);
                prop_assert_eq!(rate.window_ms, dt);
                let want = u128::from(dcpu) * 1000 / u128::from(dt.unsigned_abs());
                prop_assert_eq!(u128::from(rate.cpu_nanocores), want);
                let err = exact(last.reading, next) - rate.cpu_nanocores as f64;
                // Rounding down: 0 ≤ exact − rate < 1 (plus float noise on huge values).
                prop_assert!(err > -1e-6 * exact(last.reading, next).max(1.0), "err {}", err);
                prop_assert!(err < 1.0 + 1e-9 * exact(last.reading, next), "err {}", err);
                last = Prior { reading: next, first_run: true };
            }
        }

        /// A simulated container whose true usage never exceeds [`MAX_NANOCORES`], running for
        /// a long time before it is first seen, reported with placeholders, restarts (some with
        /// a counter that keeps the old run's total), jittering start times and cached answers:
        /// no rate ever exceeds the true maximum, and each rate is exactly the true usage over
        /// its window when the window starts at a real reading or at an honest start.
        ///
        /// Before the fixes this failed on a placeholder followed by the real counter (the whole
        /// lifetime's CPU inside one window) and on a carried counter after a restart inside the
        /// fresh window.
        #[test]
        fn no_invented_usage(
            lived_before_ms in prop_oneof![Just(0i64), 0i64..3_600_000],
            events in prop::collection::vec(
                // Reported start times jitter earlier than the true start (the cgroup counter
                // begins before the process the start time reports; see the module doc for a
                // start reported later).
                (500i64..20_000, 0u64..=MAX_NANOCORES, report(), -400i64..=0),
                1..60,
            ),
        ) {
            // The true state of the container.
            let mut start = T0 - lived_before_ms;
            let mut honest_start = true; // the counter began at `start`
            let mut ts = T0;
            let mut total: u64 = 0; // true CPU ns of the current counter
            // Seed the counter with the CPU used before the first sample (at most the maximum).
            total += (u128::from(MAX_NANOCORES) * u128::from(lived_before_ms.unsigned_abs()) / 2_000) as u64;
            let mut state: Option<Prior> = None;
            let mut history: Vec<(i64, u64)> = vec![(ts, total)];
            let mut last_reported: Option<MetricsPoint> = None;
            // Start times reported for the current counter (a first rate may start at any).
            let mut reported_starts: Vec<i64> = Vec::new();
            for (dt, nanocores, how, jitter) in events {
                let p = match how {
                    Report::Repeat => match last_reported { Some(p) => p, None => continue },
                    _ => {
                        ts += dt;
                        total += (u128::from(nanocores) * u128::from(dt.unsigned_abs()) / 1_000) as u64;
                        if let Report::Restart { ago, carried } = how {
                            // A counter older than the start time in the very first report is
                            // indistinguishable from a busy start (see the module doc); every
                            // later one is caught by the readings from before that start.
                            let carried = carried && last_reported.is_some();
                            start = ts - ago.min(dt - 1).max(1);
                            honest_start = !carried;
                            if !carried {
                                // Only the time since the restart counts.
                                total = (u128::from(nanocores) * u128::from((ts - start).unsigned_abs()) / 1_000) as u64;
                                history.clear();
                                reported_starts.clear();
                            }
                        }
                        history.push((ts, total));
                        let cpu = if matches!(how, Report::Placeholder) { 0 } else { total };
                        let reported = start + jitter.min(ts - start - 1);
                        reported_starts.push(reported);
                        point(reported, ts, cpu)
                    }
                };
                last_reported = Some(p);
                let (next, rate) = apply(state, &p);
                state = next;
                let Some(rate) = rate else { continue };
                prop_assert!(
                    rate.cpu_nanocores <= MAX_NANOCORES,
                    "invented usage: {} nanocores over {} ms", rate.cpu_nanocores, rate.window_ms
                );
                // Exactness: the window starts at a sample we know the truth of, or at an honest
                // start (counter 0).
                let from = p.timestamp_ms - rate.window_ms;
                let base = history.iter().find(|(t, _)| *t == from).map(|(_, c)| *c)
                    .or((honest_start && reported_starts.contains(&from)).then_some(0));
                if let Some(base) = base {
                    let want = u128::from(p.cumulative_cpu_ns - base) * 1000
                        / u128::from(rate.window_ms.unsigned_abs());
                    prop_assert_eq!(u128::from(rate.cpu_nanocores), want);
                }
            }
        }
    }
}
