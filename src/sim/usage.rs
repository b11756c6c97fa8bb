//! How a simulated container's usage moves over time: constant, or a smooth wave around
//! its base value. The CPU counter is the exact integral of the rate, so every rate a
//! scraper derives from two samples is the true mean rate between them.

use std::f64::consts::TAU;

use super::fleet::{mix, pick};

/// How usage moves over time ([`super::FleetSpec::usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum UsageModel {
    /// Every container's CPU rate and working set stay at their base values
    /// ([`super::SimContainer::cpu_nanocores`], [`super::SimContainer::memory_bytes`]):
    /// exact, time-independent figures for tests and benchmarks.
    #[default]
    Constant,
    /// Each container's CPU rate and working set follow their own sine wave around the base
    /// values (see [`Wave`]), deterministic from the seed.
    Wave,
}

/// One container's smooth usage variation: `base × (1 + amplitude × sin(2π (t − phase) / period))`,
/// for the CPU rate and (with its own amplitude and phase) the working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Wave {
    /// Period in ms (1–5 minutes).
    pub period_ms: i64,
    /// CPU amplitude in permille of the base rate (200–400: ±20–40 %).
    pub cpu_permille: u16,
    /// Phase of the CPU wave, ms (`0..period_ms`).
    pub cpu_phase_ms: i64,
    /// Working-set amplitude in permille of the base (50–150: ±5–15 %).
    pub memory_permille: u16,
    /// Phase of the memory wave, ms (`0..period_ms`).
    pub memory_phase_ms: i64,
}

impl Wave {
    /// The wave of the container with hash `h`.
    pub(crate) fn from_hash(h: u64) -> Self {
        let period_ms = pick(mix(&[h, 1]), 60_000, 300_001) as i64;
        Self {
            period_ms,
            cpu_permille: pick(mix(&[h, 2]), 200, 401) as u16,
            cpu_phase_ms: pick(mix(&[h, 3]), 0, period_ms as u64) as i64,
            memory_permille: pick(mix(&[h, 4]), 50, 151) as u16,
            memory_phase_ms: pick(mix(&[h, 5]), 0, period_ms as u64) as i64,
        }
    }

    /// The angle `2π (t − phase) / period` (reduced first, so it stays precise).
    fn angle(&self, t_ms: i64, phase_ms: i64) -> f64 {
        let period = self.period_ms.max(1);
        t_ms.saturating_sub(phase_ms).rem_euclid(period) as f64 / period as f64 * TAU
    }

    /// The CPU rate at `t_ms` for base rate `base` nanocores.
    pub fn cpu_nanocores_at(&self, base: u64, t_ms: i64) -> u64 {
        let a = f64::from(self.cpu_permille.min(999)) / 1000.0;
        (base as f64 * (1.0 + a * self.angle(t_ms, self.cpu_phase_ms).sin())).round() as u64
    }

    /// CPU time in ns above (or below, negative) the base rate's from `since_ms` to `t_ms`:
    /// `∫ base·a·sin(θ(u)) du = base·a·P/2π · (cos θ(since) − cos θ(t))`, ms·nanocores → ns.
    pub fn cpu_extra_ns(&self, base: u64, since_ms: i64, t_ms: i64) -> f64 {
        if t_ms <= since_ms {
            return 0.0;
        }
        let a = f64::from(self.cpu_permille.min(999)) / 1000.0;
        let cos = |t| self.angle(t, self.cpu_phase_ms).cos();
        base as f64 * a * self.period_ms as f64 / TAU * (cos(since_ms) - cos(t_ms)) / 1000.0
    }

    /// The working set at `t_ms` for base `base` bytes, rounded down to whole 4 KiB pages.
    pub fn memory_bytes_at(&self, base: u64, t_ms: i64) -> u64 {
        let m = f64::from(self.memory_permille.min(999)) / 1000.0;
        let v = base as f64 * (1.0 + m * self.angle(t_ms, self.memory_phase_ms).sin());
        (v as u64) / 4096 * 4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_750_000_000_000;

    #[test]
    fn waves_are_deterministic_and_within_their_ranges() {
        for h in 0..200u64 {
            let w = Wave::from_hash(h);
            assert_eq!(w, Wave::from_hash(h));
            assert!((60_000..=300_000).contains(&w.period_ms));
            assert!((200..=400).contains(&w.cpu_permille));
            assert!((50..=150).contains(&w.memory_permille));
            assert!((0..w.period_ms).contains(&w.cpu_phase_ms));
        }
        assert_ne!(Wave::from_hash(1), Wave::from_hash(2));
    }

    #[test]
    fn the_counter_extra_is_the_integral_of_the_rate() {
        let w = Wave::from_hash(7);
        let base = 250_000_000;
        // Riemann sum of (rate − base) over 90 s in 1 ms steps vs the closed form.
        let mut sum = 0.0;
        for t in T0..T0 + 90_000 {
            sum += (w.cpu_nanocores_at(base, t) as f64 - base as f64) / 1000.0;
        }
        let closed = w.cpu_extra_ns(base, T0, T0 + 90_000);
        assert!(
            (sum - closed).abs() < 1e-3 * base as f64,
            "{sum} vs {closed}"
        );
        assert_eq!(w.cpu_extra_ns(base, T0, T0 - 5), 0.0);
        // Over a whole period the wave adds nothing.
        assert!(w.cpu_extra_ns(base, T0, T0 + w.period_ms).abs() < 1.0);
    }

    #[test]
    fn rate_and_memory_move_within_the_amplitude() {
        let w = Wave::from_hash(3);
        let (base, mem) = (100_000_000u64, 64 << 20);
        let a = f64::from(w.cpu_permille) / 1000.0;
        let m = f64::from(w.memory_permille) / 1000.0;
        let mut seen = std::collections::BTreeSet::new();
        for t in (T0..T0 + w.period_ms).step_by(1000) {
            let r = w.cpu_nanocores_at(base, t) as f64;
            assert!(r >= base as f64 * (1.0 - a) - 1.0 && r <= base as f64 * (1.0 + a) + 1.0);
            let b = w.memory_bytes_at(mem, t);
            assert_eq!(b % 4096, 0);
            assert!(b as f64 >= mem as f64 * (1.0 - m) - 4096.0);
            assert!(b as f64 <= mem as f64 * (1.0 + m));
            seen.insert(b);
        }
        assert!(
            seen.len() > 30,
            "memory moves: {} distinct values",
            seen.len()
        );
    }
}
