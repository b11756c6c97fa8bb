//! Open-loop and burst load with a check of every response.
//!
//! A stream is one kind of request (HPA list, full pod list, node list) on its own client
//! (its own connections). `Rate` streams are open loop: request `i` is sent at
//! `start + i / rate` whether or not earlier ones finished, and its latency counts from that
//! scheduled time (no coordinated omission). `Burst` streams model the HPA controller's
//! resync: every `period` all requests are queued at once and `workers` closed-loop workers
//! (kube-controller-manager's `--concurrent-horizontal-pod-autoscaler-syncs`, 5) drain the
//! queue; latency counts from when a worker takes the request, and the burst's completion time
//! from the period start.
//!
//! Every response is checked: a non-2xx status, a transport error or timeout, a body that is
//! not a list, an empty list where items are expected, or a list whose item count differs
//! from the fleet's by more than the stream's [`Tolerance`] (`--slack`, plus pod churn for
//! full pod lists: `churn.rs`) is an error. Errors are counted by reason and their latencies kept apart from the successful
//! ones'. Requests scheduled during the warm-up are sent but not recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::churn::{Tolerance, check_count};
use crate::summary::summary;

/// One request of a stream and the item count a correct answer has.
#[derive(Clone, Debug)]
pub struct Request {
    /// Full URL.
    pub url: String,
    /// Items a correct list holds.
    pub expect: usize,
}

/// When a stream's requests are sent.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// Open loop, this many requests per second, cycling over the requests.
    Rate(f64),
    /// Every `period`, all requests at once, drained by `workers` closed-loop workers.
    Burst {
        /// Seconds between bursts.
        period: f64,
        /// Concurrent workers.
        workers: usize,
    },
}

/// One kind of request on its own client.
pub struct Stream {
    /// Name in the summary (`hpa`, `hpa-aggregated`, `top-pods`, `top-nodes`).
    pub kind: String,
    /// When requests are sent.
    pub schedule: Schedule,
    /// The requests (cycled over).
    pub requests: Vec<Request>,
    /// Accept header.
    pub accept: String,
    /// Its own client (own connection pool).
    pub client: reqwest::Client,
    /// How far a list's item count may be from the request's `expect`.
    pub tolerance: Tolerance,
}

/// Load window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Sent but not recorded.
    pub warmup: Duration,
    /// Recorded.
    pub duration: Duration,
}

#[derive(Default)]
struct Record {
    ok_us: Vec<u64>,
    error_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    error_examples: Vec<String>,
    bytes: u64,
    max_bytes: u64,
    content_types: BTreeMap<String, u64>,
    warmup_requests: u64,
    warmup_errors: u64,
    bursts_us: Vec<u64>,
}

type Records = Arc<Mutex<BTreeMap<String, Record>>>;

/// Runs every stream for `warmup + duration`; returns the JSON summary.
pub async fn run(streams: Vec<Stream>, window: Window) -> Value {
    let records: Records = Arc::default();
    let start = Instant::now() + Duration::from_millis(50);
    let measured_from = start + window.warmup;
    let end = measured_from + window.duration;
    let mut tasks = Vec::new();
    for s in streams {
        if s.requests.is_empty() {
            continue;
        }
        records.lock().unwrap().entry(s.kind.clone()).or_default();
        let records = records.clone();
        tasks.push(tokio::spawn(async move {
            match s.schedule {
                Schedule::Rate(rate) if rate > 0.0 => {
                    open_loop(s, rate, start, measured_from, end, records).await
                }
                Schedule::Rate(_) => {}
                Schedule::Burst { period, workers } => {
                    bursts(s, period, workers, start, measured_from, end, records).await
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = start.elapsed().as_secs_f64();
    let all = records.lock().unwrap();
    let mut out = serde_json::Map::new();
    for (kind, r) in all.iter() {
        let errors: u64 = r.errors.values().sum();
        let ok = r.ok_us.len() as u64;
        out.insert(
            kind.clone(),
            json!({
                "requests": ok + errors,
                "ok": summary(&r.ok_us),
                "errors": errors,
                "errors_by_reason": r.errors,
                "error_latency": summary(&r.error_us),
                "error_examples": r.error_examples,
                "mean_bytes": r.bytes.checked_div(ok).unwrap_or(0),
                "max_bytes": r.max_bytes,
                "content_types": r.content_types,
                "warmup_requests": r.warmup_requests,
                "warmup_errors": r.warmup_errors,
                "bursts": (!r.bursts_us.is_empty()).then(|| summary(&r.bursts_us)),
            }),
        );
    }
    out.insert("wall_seconds".into(), json!(wall));
    out.insert(
        "measured_seconds".into(),
        json!(window.duration.as_secs_f64()),
    );
    Value::Object(out)
}

async fn open_loop(
    s: Stream,
    rate: f64,
    start: Instant,
    measured_from: Instant,
    end: Instant,
    records: Records,
) {
    let s = Arc::new(s);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut inflight = Vec::new();
    for i in 0u64.. {
        let at = start + period.mul_f64(i as f64);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let (s, records) = (s.clone(), records.clone());
        inflight.push(tokio::spawn(async move {
            let req = &s.requests[i as usize % s.requests.len()];
            let outcome = send(&s, req).await;
            let us = at.elapsed().as_micros() as u64;
            record(&records, &s.kind, at >= measured_from, us, outcome);
        }));
    }
    for t in inflight {
        let _ = t.await;
    }
}

async fn bursts(
    s: Stream,
    period: f64,
    workers: usize,
    start: Instant,
    measured_from: Instant,
    end: Instant,
    records: Records,
) {
    let s = Arc::new(s);
    let period = Duration::from_secs_f64(period);
    for k in 0u32.. {
        let at = start + period * k;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let measured = at >= measured_from;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut pool = Vec::new();
        for _ in 0..workers.max(1) {
            let (s, records, next) = (s.clone(), records.clone(), next.clone());
            pool.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(req) = s.requests.get(i) else { break };
                    let t = Instant::now();
                    let outcome = send(&s, req).await;
                    record(
                        &records,
                        &s.kind,
                        measured,
                        t.elapsed().as_micros() as u64,
                        outcome,
                    );
                }
            }));
        }
        for w in pool {
            let _ = w.await;
        }
        if measured {
            let mut all = records.lock().unwrap();
            let r = all.entry(s.kind.clone()).or_default();
            r.bursts_us.push(at.elapsed().as_micros() as u64);
        }
    }
}

/// A checked response: `Ok((bytes, content type))` or `Err((reason, detail))`.
type Outcome = Result<(usize, String), (String, String)>;

async fn send(s: &Stream, req: &Request) -> Outcome {
    let resp = s
        .client
        .get(&req.url)
        .header("Accept", &s.accept)
        .send()
        .await
        .map_err(|e| (transport_reason(&e), e.to_string()))?;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp
        .bytes()
        .await
        .map_err(|e| (transport_reason(&e), e.to_string()))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err((format!("http {}", status.as_u16()), text));
    }
    let n = super::count::items(&ctype, &body).map_err(|e| ("not a list".to_owned(), e))?;
    check_count(n, req.expect, s.tolerance)
        .map_err(|(reason, detail)| (reason, format!("{}: {detail}", req.url)))?;
    let short_type = ctype.split(';').next().unwrap_or("").trim().to_owned();
    Ok((body.len(), short_type))
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

fn record(records: &Records, kind: &str, measured: bool, us: u64, outcome: Outcome) {
    let mut all = records.lock().unwrap();
    let r = all.entry(kind.to_owned()).or_default();
    if !measured {
        r.warmup_requests += 1;
        r.warmup_errors += u64::from(outcome.is_err());
        return;
    }
    match outcome {
        Ok((bytes, ctype)) => {
            r.ok_us.push(us);
            r.bytes += bytes as u64;
            r.max_bytes = r.max_bytes.max(bytes as u64);
            *r.content_types.entry(ctype).or_default() += 1;
        }
        Err((reason, detail)) => {
            r.error_us.push(us);
            *r.errors.entry(reason.clone()).or_default() += 1;
            if r.error_examples.len() < 5 {
                r.error_examples.push(format!("{reason}: {detail}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_only_where_the_sample_supports_them() {
        let s = summary(&(1..=999).map(|v| v * 1000).collect::<Vec<_>>());
        assert_eq!(s["n"], 999);
        assert_eq!(s["p50_ms"], 500.0);
        assert_eq!(s["p90_ms"], 900.0);
        assert!(s["p99_ms"].is_null(), "999 values cannot give a p99");
        assert_eq!(s["max_ms"], 999.0);
        let s = summary(&(1..=1000).map(|v| v * 1000).collect::<Vec<_>>());
        assert_eq!(s["p99_ms"], 990.0);
        let s = summary(&[5000; 19]);
        assert!(s["p50_ms"].is_null());
        assert_eq!(s["max_ms"], 5.0);
        assert!(summary(&[])["max_ms"].is_null());
    }
}
