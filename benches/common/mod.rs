//! The fake fleet of the store, API and computed-records benchmarks (`benches/store.rs`,
//! `benches/api.rs`, `benches/records.rs`): metrics-server's "Normal" scale-test shape,
//! `PODS_PER_NODE` pods × 2 containers (`app`, `istio-proxy`) per node, `DEPLOYMENTS`
//! deployments over `NAMESPACES` namespaces, one scrape cycle every `RES_MS`. A directory,
//! so Cargo does not take it for a bench target; each bench has `mod common;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kubedojo_data_api::cluster::{Allocatable, NodeInfo};
use kubedojo_data_api::store::batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints};

/// Pods on every node.
pub const PODS_PER_NODE: usize = 30;
/// Namespaces the pods are spread over.
pub const NAMESPACES: usize = 10;
/// Deployments the pods belong to.
pub const DEPLOYMENTS: usize = 100;
/// Scrape resolution, ms.
pub const RES_MS: i64 = 15_000;
/// Cycle 0's timestamp, ms.
pub const T0: i64 = 1_700_000_000_000;

/// How the usage moves from cycle to cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Every CPU rate is constant and every memory value fixed: the store's and API's
    /// steady state.
    Steady,
    /// CPU rates and memory change every cycle, so every computed record changes too.
    Moving,
}

impl Usage {
    /// Cumulative CPU of series `k` at cycle `c` (≥ 1 ms of CPU per cycle).
    fn cpu_ns(self, c: u64, k: usize) -> u64 {
        let steps = match self {
            Usage::Steady => c + 1,
            Usage::Moving => c * (c + 1) / 2 + 1,
        };
        steps * 1_000_000_000 * (k as u64 % 7 + 1)
    }

    /// Working set of container series `k` at cycle `c`.
    fn pod_memory(self, c: u64, k: usize) -> u64 {
        match self {
            Usage::Steady => 64 << 20,
            Usage::Moving => (64 << 20) + c * 1_048_576 * (k as u64 % 5 + 1),
        }
    }

    /// Working set of node `node` at cycle `c`.
    fn node_memory(self, c: u64, node: usize) -> u64 {
        match self {
            Usage::Steady => 8 << 30,
            Usage::Moving => (8 << 30) + self.pod_memory(c, node),
        }
    }
}

/// Node `node`'s name.
pub fn node_name(node: usize) -> String {
    format!("node-{node:05}")
}

/// Node `node` as the cluster view holds it: its name, a `kubernetes.io/hostname` label plus
/// `extra_labels`, the default kubelet port, ready, with `allocatable` when given.
pub fn node_info(
    node: usize,
    extra_labels: &[(&str, &str)],
    allocatable: Option<Allocatable>,
) -> NodeInfo {
    let name = node_name(node);
    let mut labels = BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.clone())]);
    labels.extend(
        extra_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    NodeInfo {
        labels: Arc::new(labels),
        name,
        addresses: Vec::new(),
        kubelet_port: 10250,
        metrics_path: None,
        ready: true,
        allocatable,
    }
}

/// Pod number `global` (of the whole fleet): "<deployment>-<replicaset hash>-<pod hash>".
pub fn pod_name(global: usize) -> String {
    format!(
        "deployment-{:03}-7d4b9c8f6-{:05x}",
        global % DEPLOYMENTS,
        (global.wrapping_mul(2_654_435_761)) & 0xf_ffff
    )
}

/// When cycle `cycle` is ingested and published (1 s after its scrapes).
pub fn now_of(cycle: i64) -> i64 {
    T0 + cycle * RES_MS + 1_000
}

/// The batch node `node` returns at scrape cycle `cycle` (every pod is stable), its pods in
/// (namespace, name) order as the decoder gives them.
pub fn batch(node: usize, cycle: i64, usage: Usage) -> NodeBatch {
    let ts = T0 + cycle * RES_MS + (node % 1_000) as i64;
    let c = cycle.unsigned_abs();
    let mut pods: Vec<PodPoints> = (0..PODS_PER_NODE)
        .map(|p| {
            let global = node * PODS_PER_NODE + p;
            let point = |k: usize| MetricsPoint {
                start_time_ms: T0 - 3_600_000,
                timestamp_ms: ts,
                cumulative_cpu_ns: usage.cpu_ns(c, global + k),
                memory_bytes: usage.pod_memory(c, global + k),
            };
            PodPoints {
                namespace: format!("namespace-{}", global % NAMESPACES),
                name: pod_name(global),
                containers: vec![
                    ContainerPoint {
                        name: "app".into(),
                        point: point(0),
                    },
                    ContainerPoint {
                        name: "istio-proxy".into(),
                        point: point(1),
                    },
                ],
            }
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    NodeBatch {
        node: Some(MetricsPoint {
            start_time_ms: 0,
            timestamp_ms: ts,
            cumulative_cpu_ns: usage.cpu_ns(c, node) * 10,
            memory_bytes: usage.node_memory(c, node),
        }),
        pods,
    }
}
