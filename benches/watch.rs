//! Watch fan-out on `metrics.k8s.io` (issue 12 §5): what one scrape tick costs per watcher of
//! all pods, without TLS/HTTP (the hub, the watcher tasks and the response channels, read to
//! the end of the tick as hyper reads them).
//!
//! World: 1,000 nodes × 30 pods (`benches/common`), every pod in the cluster view with its
//! `app` label; two cycles published, the pods' hub started, a third cycle published and
//! turned into a tick (30,000 MODIFIED events, every pod's sample timestamp changed). A
//! sample starts N watches (N = 1, 100) from the second cycle's resourceVersion, so each
//! replays that tick as a live watcher sends it (the same `send_tick`), and reads each body
//! until it has the whole tick.
//!
//! - `one_tick`: the wall time of a sample (divan; the counter is watchers, so the
//!   throughput is watcher-ticks per second);
//! - printed first, `cpu per watcher per tick`: the thread's CPU time of a sample (the runtime
//!   is current-thread, so all of the work is on it; from `/proc/thread-self/schedstat`, in
//!   ns) divided by N and by the rounds of N watchers a sample runs (at least 300 ms of
//!   them), the median of `CPU_SAMPLES` samples.
//!
//! Run: `cargo bench --bench watch`.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use divan::{Bencher, counter::ItemsCount};
use http_body_util::BodyExt;
use kubedojo_data_api::{
    api::{list_options::ListOptions, resource::ResourceProvider},
    cluster::{ClusterView, PodInfo},
    groups::metrics::{PodMetricsProvider, Sources},
    store::{Store, StoreConfig},
};

mod common;
use common::{
    DEPLOYMENTS, NAMESPACES, PODS_PER_NODE, RES_MS, Usage, batch, node_info, node_name, now_of,
    pod_name,
};

const NODES: usize = 1_000;
const WATCHERS: [usize; 2] = [1, 100];
const CPU_SAMPLES: usize = 7;
/// A CPU sample runs rounds of N watchers for at least this long.
const MIN_SAMPLE: Duration = Duration::from_millis(300);

struct World {
    rt: tokio::runtime::Runtime,
    pods: PodMetricsProvider,
    /// The resourceVersion the tick starts from.
    from: String,
    /// The tick's bytes, as one watcher reads them.
    tick_bytes: usize,
}

static WORLD: LazyLock<World> = LazyLock::new(build);

fn main() {
    let w = &*WORLD;
    eprintln!(
        "{} pods, one tick = {:.1} MB per watcher",
        NODES * PODS_PER_NODE,
        w.tick_bytes as f64 / 1e6
    );
    for n in WATCHERS {
        let mut per_watcher: Vec<u64> = (0..CPU_SAMPLES)
            .map(|_| {
                // Rounds of N watchers until the sample is long enough for the scheduler's
                // accounting (updated at its ticks, every few ms).
                let (t0, start) = (thread_cpu_ns(), Instant::now());
                let mut rounds = 0;
                while rounds == 0 || start.elapsed() < MIN_SAMPLE {
                    w.rt.block_on(fan_out(w, n));
                    rounds += 1;
                }
                (thread_cpu_ns() - t0) / (n * rounds) as u64
            })
            .collect();
        per_watcher.sort_unstable();
        eprintln!(
            "cpu per watcher per tick, {n} watchers: median {:.2} ms (n = {CPU_SAMPLES}, min {:.2}, max {:.2})",
            per_watcher[CPU_SAMPLES / 2] as f64 / 1e6,
            per_watcher[0] as f64 / 1e6,
            per_watcher[CPU_SAMPLES - 1] as f64 / 1e6,
        );
    }
    divan::main();
}

/// This thread's CPU time so far, ns (the scheduler's `sum_exec_runtime`).
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field")
}

fn build() -> World {
    let store = Arc::new(Store::new(StoreConfig::new(Duration::from_millis(
        RES_MS.unsigned_abs(),
    ))));
    let cluster = ClusterView::new();
    for n in 0..NODES {
        cluster.upsert_node(node_info(n, &[], None));
    }
    for g in 0..NODES * PODS_PER_NODE {
        let labels = Arc::new(BTreeMap::from([(
            "app".to_owned(),
            format!("deployment-{:03}", g % DEPLOYMENTS),
        )]));
        cluster.upsert_pod(
            &format!("namespace-{}", g % NAMESPACES),
            &pod_name(g),
            PodInfo {
                labels,
                created_ms: common::T0,
            },
        );
    }
    let publish = |c: i64| {
        for n in 0..NODES {
            store.ingest(&node_name(n), batch(n, c, Usage::Steady), now_of(c));
        }
        store.publish(now_of(c));
    };
    publish(0);
    publish(1);
    let pods = PodMetricsProvider::new(Sources {
        store: store.clone(),
        cluster,
        telemetry: None,
        watch_history_bytes: kubedojo_data_api::groups::metrics_watch::HISTORY_BYTES,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let from = pods.snapshot().resource_version().to_string();
    let tick_bytes = rt.block_on(async {
        // The first watch starts the hub (its state is the base); the hub then makes the
        // third cycle a tick within its 250 ms poll.
        drop(pods.watch(None, &opts(None), Some("application/json")));
        publish(2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let resp = pods.watch(None, &opts(Some(&from)), Some("application/json"));
        let mut body = resp.expect("a watch").into_body();
        let (mut lines, mut bytes) = (0, 0);
        while lines < NODES * PODS_PER_NODE {
            let data: Bytes = body
                .frame()
                .await
                .expect("the tick")
                .expect("infallible")
                .into_data()
                .expect("data");
            assert!(data.starts_with(br#"{"type":"MODIFIED""#));
            lines += data.iter().filter(|b| **b == b'\n').count();
            bytes += data.len();
        }
        assert_eq!(lines, NODES * PODS_PER_NODE, "one tick, whole events");
        bytes
    });
    World {
        rt,
        pods,
        from,
        tick_bytes,
    }
}

fn opts(rv: Option<&str>) -> ListOptions {
    ListOptions {
        resource_version: rv.map(str::to_string),
        timeout_seconds: Some(3600),
        ..ListOptions::default()
    }
}

/// `n` watches replay the tick; each body is read until it has the whole tick.
async fn fan_out(w: &World, n: usize) {
    let bodies = (0..n).map(|_| {
        let resp = w
            .pods
            .watch(None, &opts(Some(&w.from)), Some("application/json"))
            .expect("a watch");
        async move {
            let mut body = resp.into_body();
            let mut got = 0;
            while got < w.tick_bytes {
                let f = body.frame().await.expect("the tick").expect("infallible");
                got += f.into_data().map_or(0, |d| d.len());
            }
        }
    });
    futures::future::join_all(bodies).await;
}

#[divan::bench(args = WATCHERS, sample_count = 5, sample_size = 1)]
fn one_tick(bencher: Bencher<'_, '_>, n: usize) {
    let w = &*WORLD;
    bencher
        .counter(ItemsCount::new(n))
        .bench_local(|| w.rt.block_on(fan_out(w, n)));
}
