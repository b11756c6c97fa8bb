//! Pod churn during the load window (issue #15 §3): `run --churn-rate R` creates R pods per
//! second and deletes R, in kube-apiserver and in kubelet-sim (`pods.rs`), so the fleet keeps
//! its size while its membership changes.
//!
//! The churned pods live in their own namespace (`--churn-namespace`, label `app=kd-churn`),
//! apart from the fleet's deployments, so the HPA queries keep their exact answers. A pool
//! of `P = ⌈R × lifetime⌉` of them is created before the servers start (`kd-load churn-pool`,
//! part of the fleet every server must serve); each churn step (one every 1/R s, open loop)
//! starts a new pod and deletes the oldest one, so every pod lives about `P / R` seconds.
//! Names are `c-<unix ms of the run's start>-<step>`, so sorting them is creation order
//! across runs and servers. Both servers get the same steps: the same rate, the same pool.
//!
//! While it runs, the server's churn-namespace list is polled (`--churn-poll`) to time each
//! new pod's first served usage (from its container's start, as `first_metric.rs`) and to see
//! deleted pods still served. Full pod lists are checked with the [`Tolerance`] the churn
//! allows.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::pods::{PodApi, poll_served};
use crate::summary::summary;

/// The `app` label of every churned pod.
pub const APP: &str = "kd-churn";

/// How far a list's item count may be from the fleet's and still be correct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tolerance {
    /// Items a list may lack.
    pub short: usize,
    /// Items a list may have beyond the fleet's.
    pub long: usize,
}

impl Tolerance {
    /// `slack` either way (the fixed `--slack`).
    pub fn either_way(slack: usize) -> Self {
        Tolerance {
            short: slack,
            long: slack,
        }
    }

    /// What churn at `rate` pods/s allows a full pod list, with scrape resolution `res`:
    ///
    /// - short by `⌈rate × 3 × res⌉`: a new pod is served only once a scrape holds it, and a
    ///   server that needs two points for a rate (metrics-server) needs two scrapes: up to
    ///   2 resolutions, plus the kubelet request timeout (res / 2) and the node's place in the
    ///   cycle, rounded up to 3 resolutions; meanwhile as many older pods were deleted;
    /// - long by `⌈rate × res⌉ + 1`: a deleted pod may be served until the next scrape (one
    ///   resolution), plus the one pod of a step in flight (created, not yet deleted).
    ///
    /// An empty list is an error whatever the tolerance (`load.rs`).
    pub fn for_churn(rate: f64, res: Duration) -> Self {
        if rate <= 0.0 {
            return Tolerance::default();
        }
        let per_res = rate * res.as_secs_f64();
        Tolerance {
            short: (3.0 * per_res).ceil() as usize,
            long: per_res.ceil() as usize + 1,
        }
    }

    /// Both allowances added.
    pub fn plus(self, other: Tolerance) -> Self {
        Tolerance {
            short: self.short + other.short,
            long: self.long + other.long,
        }
    }
}

/// Checks a list of `n` items against `expect`: `Err((reason, detail))` when it is empty (and
/// should not be) or outside the tolerance.
pub fn check_count(n: usize, expect: usize, tol: Tolerance) -> Result<(), (String, String)> {
    if n == 0 && expect > 0 {
        return Err(("empty list".into(), format!("0 items, expected {expect}")));
    }
    if n + tol.short < expect {
        return Err((
            "short list".into(),
            format!("{n} items, expected {expect} (at most {} fewer)", tol.short),
        ));
    }
    if n > expect + tol.long {
        return Err((
            "long list".into(),
            format!("{n} items, expected {expect} (at most {} more)", tol.long),
        ));
    }
    Ok(())
}

/// One churn step: at `at` after the start, start `create` on node number `node` and delete
/// `delete` (the oldest pod, once the pool is full).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// When, from the start.
    pub at: Duration,
    /// The new pod's name.
    pub create: String,
    /// Index of its node (round robin).
    pub node: usize,
    /// The pod deleted.
    pub delete: Option<String>,
}

/// The churn schedule: the pods alive, oldest first, and the next step.
pub struct Churner {
    rate: f64,
    pool: usize,
    prefix: String,
    nodes: usize,
    alive: VecDeque<String>,
    next: u64,
}

impl Churner {
    /// Churn at `rate` pods/s over `nodes` nodes keeping `pool` pods alive; `alive` are the
    /// churned pods there already (sorted: oldest first); new names start with `prefix`.
    pub fn new(rate: f64, pool: usize, prefix: String, nodes: usize, alive: Vec<String>) -> Self {
        Churner {
            rate,
            pool,
            prefix,
            nodes: nodes.max(1),
            alive: alive.into(),
            next: 0,
        }
    }

    /// The name of step `k`'s pod (zero-padded: names sort in creation order).
    pub fn name(prefix: &str, k: u64) -> String {
        format!("{prefix}-{k:06}")
    }

    /// The next step; `None` once it would be at or after `until`.
    pub fn step(&mut self, until: Duration) -> Option<Step> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return None;
        }
        let at = Duration::from_secs_f64(self.next as f64 / self.rate);
        if at >= until {
            return None;
        }
        let create = Self::name(&self.prefix, self.next);
        let node = (self.next % self.nodes as u64) as usize;
        self.next += 1;
        self.alive.push_back(create.clone());
        let delete = if self.alive.len() > self.pool {
            self.alive.pop_front()
        } else {
            None
        };
        Some(Step {
            at,
            create,
            node,
            delete,
        })
    }
}

/// What one churn run needs.
pub struct Plan {
    /// kube-apiserver and the control endpoint.
    pub pods: PodApi,
    /// The server under test's base URL (its churn-namespace list is polled).
    pub server: String,
    /// Node names (new pods go round robin).
    pub nodes: Vec<String>,
    /// Namespace of the churned pods.
    pub namespace: String,
    /// Pods created (and deleted) per second.
    pub rate: f64,
    /// Churned pods kept alive.
    pub pool: usize,
    /// Poll period of the churn-namespace list.
    pub poll: Duration,
    /// The servers' scrape resolution: a pod that lived 3 of them and was never served
    /// counts as `unserved_old` (the window of [`Tolerance::for_churn`]).
    pub resolution: Duration,
}

/// What the steps and polls saw.
#[derive(Default)]
struct Book {
    started: HashMap<String, Instant>,
    deleted: HashMap<String, Instant>,
    first_served: HashMap<String, Instant>,
    /// Pod → latest list received after its delete was sent that still served it.
    served_after_delete: HashMap<String, Instant>,
    create_failed: Vec<String>,
    delete_failed: Vec<String>,
}

/// Runs the churn for `length` from now (the load's warm-up + recorded window); returns
/// its JSON summary.
pub async fn run(plan: Plan, length: Duration) -> Value {
    let ns = plan.namespace.clone();
    let serve_within = plan.resolution * 3;
    let alive = plan.pods.sim_pods(&ns).await.unwrap_or_default();
    let pool_at_start = alive.len();
    let prefix = format!("c-{}", unix_ms());
    let mut churner = Churner::new(
        plan.rate,
        plan.pool,
        prefix,
        plan.nodes.len(),
        alive.clone(),
    );
    let book = Arc::new(Mutex::new(Book::default()));
    let done = tokio_util::sync::CancellationToken::new();
    let url = format!(
        "{}/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
        plan.server
    );
    // First served instants of every pod, and the latest list still serving a pod whose
    // delete was sent before the list was asked for.
    let seen = book.clone();
    let poller = tokio::spawn(poll_served(
        plan.pods.api.clone(),
        url,
        plan.poll,
        done.clone(),
        move |sent, received, names| {
            let mut b = seen.lock().unwrap_or_else(PoisonError::into_inner);
            for name in names {
                if b.deleted.get(&name).is_some_and(|d| *d < sent) {
                    b.served_after_delete.insert(name.clone(), received);
                }
                b.first_served.entry(name).or_insert(received);
            }
        },
    ));
    let began = Instant::now();
    let mut tasks = Vec::new();
    while let Some(step) = churner.step(length) {
        tokio::time::sleep_until((began + step.at).into()).await;
        let (pods, ns, book) = (plan.pods.clone(), ns.clone(), book.clone());
        let node = plan.nodes[step.node].clone();
        tasks.push(tokio::spawn(async move {
            let create = async {
                let r = pods.start(&ns, &step.create, &node, APP).await;
                let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
                match r {
                    Ok(sent) => {
                        b.started.insert(step.create.clone(), sent);
                    }
                    Err(e) => b.create_failed.push(format!("{}: {e}", step.create)),
                }
            };
            let delete = async {
                let Some(old) = &step.delete else { return };
                let sent = Instant::now();
                let r = pods.stop(&ns, old).await;
                let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
                match r {
                    Ok(()) => {
                        b.deleted.insert(old.clone(), sent);
                    }
                    Err(e) => b.delete_failed.push(format!("{old}: {e}")),
                }
            };
            futures::join!(create, delete);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let ended = Instant::now();
    done.cancel();
    let _ = poller.await;
    let b = book.lock().unwrap_or_else(PoisonError::into_inner);
    let mut first_us = Vec::new();
    let (mut unserved, mut unserved_old) = (0usize, 0usize);
    for (pod, start) in &b.started {
        match b.first_served.get(pod) {
            Some(t) => first_us.push(t.saturating_duration_since(*start).as_micros() as u64),
            None => {
                unserved += 1;
                let gone = b.deleted.get(pod).copied().unwrap_or(ended);
                unserved_old += usize::from(gone.duration_since(*start) >= serve_within);
            }
        }
    }
    let after_delete_us: Vec<u64> = b
        .served_after_delete
        .iter()
        .filter_map(
            |(pod, seen)| Some(seen.duration_since(*b.deleted.get(pod)?).as_micros() as u64),
        )
        .collect();
    json!({
        "rate_per_s": plan.rate,
        "pool": plan.pool,
        "pool_at_start": pool_at_start,
        "lifetime_s": plan.pool as f64 / plan.rate,
        "namespace": ns,
        "created": b.started.len(),
        "create_failed": b.create_failed.len(),
        "deleted": b.deleted.len(),
        "delete_failed": b.delete_failed.len(),
        "first_failures": b.create_failed.iter().chain(&b.delete_failed).take(5).collect::<Vec<_>>(),
        "new_pods_served": first_us.len(),
        "first_served": summary(&first_us),
        "first_served_what": "ms from the container's start (control request sent) to the first received churn-namespace list serving the pod with usage",
        "unserved": unserved,
        "unserved_old": unserved_old,
        "serve_within_s": serve_within.as_secs_f64(),
        "served_after_delete": summary(&after_delete_us),
        "poll_ms": plan.poll.as_millis() as u64,
        "wall_seconds": ended.duration_since(began).as_secs_f64(),
    })
}

/// `kd-load churn-pool`: creates namespace `ns` and as many churned pods as it takes for
/// `count` of them to run there (round robin over `nodes`), 16 at a time; fails unless every
/// one started (the pool is part of the fleet each server must serve).
pub async fn fill(
    pods: &PodApi,
    ns: &str,
    nodes: &[String],
    count: usize,
) -> anyhow::Result<Value> {
    use futures::StreamExt;
    pods.ensure_namespace(ns).await?;
    let there = pods.sim_pods(ns).await?.len();
    let prefix = format!("c-{}", unix_ms());
    let started = Instant::now();
    let results: Vec<anyhow::Result<Instant>> = futures::stream::iter((there..count).map(|k| {
        let name = Churner::name(&prefix, k as u64);
        let node = &nodes[k % nodes.len().max(1)];
        async move { pods.start(ns, &name, node, APP).await }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    let created = results.len();
    if let Some(e) = results.into_iter().find_map(Result::err) {
        anyhow::bail!("churn pool: a pod did not start: {e:#}");
    }
    Ok(
        json!({"namespace": ns, "pool": count, "there_before": there, "created": created,
        "seconds": started.elapsed().as_secs_f64()}),
    )
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_follows_rate_and_resolution() {
        let t = Tolerance::for_churn(5.0, Duration::from_secs(15));
        assert_eq!(
            t,
            Tolerance {
                short: 225,
                long: 76
            }
        );
        let t = Tolerance::for_churn(2.0, Duration::from_secs(10));
        assert_eq!(
            t,
            Tolerance {
                short: 60,
                long: 21
            }
        );
        // Fractions round up.
        let t = Tolerance::for_churn(0.1, Duration::from_secs(15));
        assert_eq!(t, Tolerance { short: 5, long: 3 });
        assert_eq!(
            Tolerance::for_churn(0.0, Duration::from_secs(15)),
            Tolerance::default()
        );
        assert_eq!(
            Tolerance::either_way(2).plus(t),
            Tolerance { short: 7, long: 5 }
        );
    }

    #[test]
    fn counts_within_the_tolerance_pass_and_others_do_not() {
        let tol = Tolerance { short: 10, long: 3 };
        assert!(check_count(100, 100, tol).is_ok());
        assert!(check_count(90, 100, tol).is_ok());
        assert!(check_count(103, 100, tol).is_ok());
        assert_eq!(check_count(89, 100, tol).unwrap_err().0, "short list");
        assert_eq!(check_count(104, 100, tol).unwrap_err().0, "long list");
        // Empty is an error even when the tolerance would cover it.
        let wide = Tolerance {
            short: 1000,
            long: 0,
        };
        assert_eq!(check_count(0, 100, wide).unwrap_err().0, "empty list");
        assert!(check_count(0, 0, Tolerance::default()).is_ok());
        // No churn: exact.
        assert_eq!(
            check_count(99, 100, Tolerance::default()).unwrap_err().0,
            "short list"
        );
        assert_eq!(
            check_count(101, 100, Tolerance::default()).unwrap_err().0,
            "long list"
        );
    }

    #[test]
    fn steps_create_and_delete_at_the_rate_keeping_the_pool() {
        let pool: Vec<String> = (0..4).map(|k| Churner::name("c-1", k)).collect();
        let mut c = Churner::new(2.0, 4, "c-2".into(), 3, pool.clone());
        let mut steps = Vec::new();
        while let Some(s) = c.step(Duration::from_secs(5)) {
            steps.push(s);
        }
        // 2/s for 5 s: steps at 0, 0.5, ..., 4.5 s.
        assert_eq!(steps.len(), 10);
        for (k, s) in steps.iter().enumerate() {
            assert_eq!(s.at, Duration::from_millis(500 * k as u64));
            assert_eq!(s.create, format!("c-2-{k:06}"));
            assert_eq!(s.node, k % 3);
        }
        // Oldest first: the pool, then the new pods in creation order, each after P / R = 2 s.
        let deleted: Vec<String> = steps.iter().filter_map(|s| s.delete.clone()).collect();
        let mut want = pool;
        want.extend((0..6).map(|k| Churner::name("c-2", k)));
        assert_eq!(deleted, want);
        assert_eq!(steps[4].delete.as_deref(), Some("c-2-000000"));
        assert_eq!(steps[4].at - steps[0].at, Duration::from_secs(2));
        // The names sort in creation order, across runs.
        let mut sorted = deleted.clone();
        sorted.sort();
        assert_eq!(sorted, deleted);
    }

    #[test]
    fn a_short_pool_fills_before_deleting() {
        let mut c = Churner::new(1.0, 3, "c".into(), 1, vec!["c-0-000000".into()]);
        let deletes: Vec<Option<String>> = std::iter::from_fn(|| c.step(Duration::from_secs(4)))
            .map(|s| s.delete)
            .collect();
        assert_eq!(
            deletes,
            vec![
                None,
                None,
                Some("c-0-000000".into()),
                Some("c-000000".into())
            ]
        );
    }

    #[test]
    fn no_rate_no_steps() {
        let mut c = Churner::new(0.0, 0, "c".into(), 1, vec![]);
        assert_eq!(c.step(Duration::from_secs(10)), None);
    }
}
