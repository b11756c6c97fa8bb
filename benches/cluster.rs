//! Cluster view memory per node (issue #15 §4): what the view retains for 30 running pods per
//! node, with each pod's label map its own allocation (as the watcher kept them before) and
//! with equal maps shared (`ClusterView::pod_labels`, a ReplicaSet's pods share one).
//!
//! - `footprint_own_maps` / `footprint_interned`: build a view of N nodes × 30 pods and return
//!   it, so divan's allocation counters (alloc + grow − dealloc − shrink) are what the view
//!   retains; divide by N for bytes per node. Pods get Kubernetes-style labels (`app`,
//!   `pod-template-hash`, `app.kubernetes.io/part-of`) from deployments of 5–50 pods, as the
//!   harness's fleet does.
//!
//! Run: `cargo bench --bench cluster` (release).

use std::collections::BTreeMap;
use std::sync::Arc;

use divan::{AllocProfiler, Bencher};
use kubedojo_data_api::cluster::{ClusterView, PodInfo};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const PODS_PER_NODE: usize = 30;
/// Mean deployment size of the harness's 5–50 pod deployments.
const DEPLOYMENT_PODS: usize = 27;
const SIZES: [usize; 2] = [1_000, 5_000];

fn main() {
    divan::main();
}

/// (namespace, name, labels) of every pod of a fleet of `nodes` nodes.
fn pods(nodes: usize) -> Vec<(String, String, BTreeMap<String, String>)> {
    let namespaces = (nodes / 20).max(3);
    (0..nodes * PODS_PER_NODE)
        .map(|i| {
            let deployment = i / DEPLOYMENT_PODS;
            let labels = BTreeMap::from([
                ("app".to_owned(), format!("deployment-{deployment:05}")),
                ("pod-template-hash".to_owned(), "7d4b9c8f6".to_owned()),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "kubedojo".to_owned(),
                ),
            ]);
            (
                format!("namespace-{:03}", deployment % namespaces),
                format!("deployment-{deployment:05}-7d4b9c8f6-{:05x}", i & 0xf_ffff),
                labels,
            )
        })
        .collect()
}

#[divan::bench(args = SIZES, sample_count = 3, sample_size = 1)]
fn footprint_own_maps(bencher: Bencher<'_, '_>, nodes: usize) {
    bencher
        .with_inputs(|| pods(nodes))
        .bench_local_refs(|pods| {
            let view = ClusterView::new();
            for (ns, name, labels) in pods.iter() {
                let pod = PodInfo {
                    labels: Arc::new(labels.clone()),
                    created_ms: 1,
                };
                view.upsert_pod(ns, name, pod);
            }
            view
        });
}

#[divan::bench(args = SIZES, sample_count = 3, sample_size = 1)]
fn footprint_interned(bencher: Bencher<'_, '_>, nodes: usize) {
    bencher
        .with_inputs(|| pods(nodes))
        .bench_local_refs(|pods| {
            let view = ClusterView::new();
            for (ns, name, labels) in pods.iter() {
                let pod = PodInfo {
                    labels: view.pod_labels(labels.clone()),
                    created_ms: 1,
                };
                view.upsert_pod(ns, name, pod);
            }
            view
        });
}
