//! Latency summaries that report a percentile only where the sample supports it
//! (shared by kd-load and kd-pgbench).

use serde_json::{Value, json};

/// `n`, mean, max and the percentiles a sample of `n` supports: p50 from 20 values, p90 from
/// 100, p99 from 1,000 (at least 10 values beyond the percentile); the others are `null`.
pub fn summary(us: &[u64]) -> Value {
    let mut l = us.to_vec();
    l.sort_unstable();
    let n = l.len();
    let q = |p: f64| -> Value {
        if (n as f64) * (1.0 - p) < 10.0 - 1e-9 {
            return Value::Null;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        json!(l[i] as f64 / 1000.0)
    };
    json!({
        "n": n,
        "mean_ms": if n == 0 { Value::Null } else { json!(l.iter().sum::<u64>() as f64 / n as f64 / 1000.0) },
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": l.last().map(|&v| v as f64 / 1000.0),
    })
}
