//! API-layer benchmarks (issue #7): what a request costs once it reaches the metrics providers
//! (`src/groups/metrics.rs`) and the generic list handler (`src/api/endpoint.rs::list`), i.e.
//! store snapshot + cluster-view label join + selector + serialisation, without TLS/HTTP.
//!
//! World: metrics-server's "Normal" scale scenario, 1,000 and 5,000 nodes × 30 pods × 2
//! containers, 100 deployments over 10 namespaces (as `benches/store.rs`), two scrape cycles
//! published; every pod is in the cluster view with `app=<deployment>` and
//! `pod-template-hash` labels.
//!
//! - `hpa_list`: the HPA's query, `GET /apis/metrics.k8s.io/v1beta1/namespaces/namespace-3/pods?
//!   labelSelector=app=deployment-013` (one deployment: 300 pods at 1,000 nodes, 1,500 at 5,000);
//! - `namespace_list`: one namespace, no selector (15,000 pods at 5,000 nodes);
//! - `all_pods_json` / `all_pods_table`: `kubectl top pod -A` (150,000 pods at 5,000 nodes), as
//!   a PodMetricsList and as a `meta.k8s.io/v1` Table (kubectl's `get` path);
//! - `all_nodes_json`: `kubectl top node`;
//! - `hpa_list_protobuf`, `all_pods_protobuf`, `all_nodes_protobuf`: the same lists with the
//!   HPA's / `kubectl top`'s `Accept: application/vnd.kubernetes.protobuf, */*` (issue #12).
//!
//! Each returns the body size, printed once per world by `sizes` (first bench).
//!
//! Run: `cargo bench --bench api` (release).

use std::{collections::BTreeMap, sync::Arc, sync::OnceLock, time::Duration};

use divan::{Bencher, black_box};
use kubedojo_data_api::{
    api::{endpoint, list_options::ListOptions},
    cluster::{ClusterView, PodInfo},
    groups::metrics::{NodeMetricsProvider, PodMetricsProvider, Sources},
    store::{Store, StoreConfig},
};

mod common;
use common::{
    DEPLOYMENTS, NAMESPACES, PODS_PER_NODE, RES_MS, T0, Usage, batch, node_info, node_name, now_of,
    pod_name,
};

const SIZES: [usize; 2] = [1_000, 5_000];
const JSON: &str = "application/json";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";

fn main() {
    divan::main();
}

struct World {
    pods: PodMetricsProvider,
    nodes: NodeMetricsProvider,
}

fn build(nodes: usize) -> World {
    let store = Arc::new(Store::new(StoreConfig::new(Duration::from_millis(
        RES_MS.unsigned_abs(),
    ))));
    for c in 0..2 {
        let now = now_of(c);
        for n in 0..nodes {
            store.ingest(&node_name(n), batch(n, c, Usage::Steady), now);
        }
        store.publish(now);
    }
    let cluster = ClusterView::new();
    for n in 0..nodes {
        cluster.upsert_node(node_info(n, &[("kubernetes.io/os", "linux")], None));
    }
    // Pods of one deployment share one label map (as the watcher's interning would not, this
    // is the cheaper case for memory, not for the join).
    for g in 0..nodes * PODS_PER_NODE {
        let labels = Arc::new(BTreeMap::from([
            (
                "app".to_owned(),
                format!("deployment-{:03}", g % DEPLOYMENTS),
            ),
            ("pod-template-hash".to_owned(), "7d4b9c8f6".to_owned()),
        ]));
        cluster.upsert_pod(
            &format!("namespace-{}", g % NAMESPACES),
            &pod_name(g),
            PodInfo {
                labels,
                created_ms: T0,
            },
        );
    }
    let sources = Sources {
        store,
        cluster,
        telemetry: None,
        watch_history_bytes: kubedojo_data_api::groups::metrics_watch::HISTORY_BYTES,
    };
    World {
        pods: PodMetricsProvider::new(sources.clone()),
        nodes: NodeMetricsProvider::new(sources),
    }
}

fn world(nodes: usize) -> &'static World {
    static SMALL: OnceLock<World> = OnceLock::new();
    static LARGE: OnceLock<World> = OnceLock::new();
    let cell = if nodes == SIZES[0] { &SMALL } else { &LARGE };
    cell.get_or_init(|| build(nodes))
}

fn opts(query: &[(&str, &str)]) -> ListOptions {
    let q = kubedojo_data_api::api::query::Query::from_pairs(query.iter().copied());
    ListOptions::from_query(&q, false).expect("valid query")
}

/// Body length of a response (the providers answer with one in-memory buffer).
fn body_len(resp: http::Response<kubedojo_data_api::api::response::Body>) -> u64 {
    hyper::body::Body::size_hint(resp.body())
        .exact()
        .unwrap_or(0)
}

/// Prints the response sizes once (not timed).
#[divan::bench(args = SIZES, sample_count = 1, sample_size = 1)]
fn sizes(nodes: usize) {
    let w = world(nodes);
    let hpa = opts(&[("labelSelector", "app=deployment-013")]);
    let all = ListOptions::default();
    let now = T0;
    let report = [
        (
            "hpa_list",
            endpoint::list(&w.pods, Some("namespace-3"), &hpa, Some(JSON), now),
        ),
        (
            "namespace_list",
            endpoint::list(&w.pods, Some("namespace-3"), &all, Some(JSON), now),
        ),
        (
            "all_pods_json",
            endpoint::list(&w.pods, None, &all, Some(JSON), now),
        ),
        (
            "all_pods_table",
            endpoint::list(&w.pods, None, &all, Some(TABLE), now),
        ),
        (
            "all_nodes_json",
            endpoint::list(&w.nodes, None, &all, Some(JSON), now),
        ),
        (
            "hpa_list_protobuf",
            endpoint::list(&w.pods, Some("namespace-3"), &hpa, Some(PROTOBUF), now),
        ),
        (
            "all_pods_protobuf",
            endpoint::list(&w.pods, None, &all, Some(PROTOBUF), now),
        ),
        (
            "all_nodes_protobuf",
            endpoint::list(&w.nodes, None, &all, Some(PROTOBUF), now),
        ),
    ];
    for (name, r) in report {
        let r = r.expect("list succeeds");
        eprintln!("[api bench] {nodes} nodes: {name} = {} bytes", body_len(r));
    }
}

/// The HPA's query: one deployment's pods in one namespace, by label selector.
#[divan::bench(args = SIZES)]
fn hpa_list(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = opts(&[("labelSelector", "app=deployment-013")]);
    bencher.bench(|| {
        body_len(
            endpoint::list(&w.pods, black_box(Some("namespace-3")), &o, Some(JSON), T0)
                .expect("list"),
        )
    });
}

/// One namespace (10% of the pods), no selector.
#[divan::bench(args = SIZES, sample_count = 20)]
fn namespace_list(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = ListOptions::default();
    bencher.bench(|| {
        body_len(
            endpoint::list(&w.pods, black_box(Some("namespace-3")), &o, Some(JSON), T0)
                .expect("list"),
        )
    });
}

/// `kubectl top pod -A`: every pod as a PodMetricsList.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn all_pods_json(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = ListOptions::default();
    bencher.bench(|| body_len(endpoint::list(&w.pods, None, &o, Some(JSON), T0).expect("list")));
}

/// `kubectl get podmetrics -A`: every pod as a Table (kubectl's server-side printing).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn all_pods_table(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = ListOptions::default();
    bencher.bench(|| body_len(endpoint::list(&w.pods, None, &o, Some(TABLE), T0).expect("list")));
}

/// `kubectl top node`: every node.
#[divan::bench(args = SIZES, sample_count = 20)]
fn all_nodes_json(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = ListOptions::default();
    bencher.bench(|| body_len(endpoint::list(&w.nodes, None, &o, Some(JSON), T0).expect("list")));
}

/// The HPA's query in protobuf (what kube-controller-manager asks for).
#[divan::bench(args = SIZES)]
fn hpa_list_protobuf(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = opts(&[("labelSelector", "app=deployment-013")]);
    bencher.bench(|| {
        body_len(
            endpoint::list(
                &w.pods,
                black_box(Some("namespace-3")),
                &o,
                Some(PROTOBUF),
                T0,
            )
            .expect("list"),
        )
    });
}

/// `kubectl top pod -A` in protobuf (kubectl's default).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn all_pods_protobuf(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = ListOptions::default();
    bencher
        .bench(|| body_len(endpoint::list(&w.pods, None, &o, Some(PROTOBUF), T0).expect("list")));
}

/// `kubectl top node` in protobuf.
#[divan::bench(args = SIZES, sample_count = 20)]
fn all_nodes_protobuf(bencher: Bencher<'_, '_>, nodes: usize) {
    let w = world(nodes);
    let o = ListOptions::default();
    bencher
        .bench(|| body_len(endpoint::list(&w.nodes, None, &o, Some(PROTOBUF), T0).expect("list")));
}
