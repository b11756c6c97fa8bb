//! The cluster view: the nodes to scrape and the running pods' metadata, fed by
//! kube watchers (a real cluster) or by the kubelet simulator (demo mode). The
//! scraper reads nodes from it; the metrics API reads pod and node labels from it.

pub mod address;
pub mod backoff;
pub mod labels;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

/// Labels shared between the view and the objects built from it.
pub type Labels = Arc<BTreeMap<String, String>>;

/// What the scraper needs to know about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: Labels,
    /// `status.addresses` as (type, address), in the node's order.
    pub addresses: Vec<(String, String)>,
    /// `status.daemonEndpoints.kubeletEndpoint.port` (0 when unknown).
    pub kubelet_port: u16,
    /// The `metrics.k8s.io/resource-metrics-path` annotation, if set.
    pub metrics_path: Option<String>,
    /// Whether the node reports Ready (only changes log levels).
    pub ready: bool,
    /// `status.allocatable` CPU and memory, when the node reports them.
    pub allocatable: Option<Allocatable>,
}

/// A node's allocatable CPU and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU in nanocores.
    pub cpu_nanocores: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// A running pod's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod labels.
    pub labels: Labels,
    /// Creation time, ms since the epoch (0 when unknown).
    pub created_ms: i64,
}

/// Nodes and running pods, updated by a watcher and read by everyone else.
#[derive(Default)]
pub struct ClusterView {
    nodes: DashMap<String, Arc<NodeInfo>>,
    pods: DashMap<(String, String), Arc<PodInfo>>,
    /// One shared label map per distinct pod label set (a ReplicaSet's pods share one).
    pod_labels: labels::LabelInterner,
    nodes_synced: AtomicBool,
    pods_synced: AtomicBool,
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&self, node: NodeInfo) {
        self.nodes.insert(node.name.clone(), Arc::new(node));
    }

    /// Removes a node.
    pub fn remove_node(&self, name: &str) {
        self.nodes.remove(name);
    }

    /// Replaces all nodes (after a relist).
    pub fn replace_nodes(&self, nodes: Vec<NodeInfo>) {
        let keep: std::collections::HashSet<String> =
            nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes.retain(|k, _| keep.contains(k));
        for n in nodes {
            self.upsert_node(n);
        }
    }

    /// The shared map equal to `labels`: pods with equal labels share one (issue #15 §4).
    pub fn pod_labels(&self, labels: BTreeMap<String, String>) -> Labels {
        self.pod_labels.intern(labels)
    }

    /// Distinct pod label maps held (for tests and the memory budget).
    pub fn distinct_pod_labels(&self) -> usize {
        self.pod_labels.len()
    }

    /// Adds or replaces a running pod.
    pub fn upsert_pod(&self, namespace: &str, name: &str, pod: PodInfo) {
        self.pods
            .insert((namespace.to_string(), name.to_string()), Arc::new(pod));
    }

    /// Removes a pod.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.pods.remove(&(namespace, name) as &dyn PodKey);
    }

    /// Replaces all pods (after a relist).
    pub fn replace_pods(&self, pods: Vec<((String, String), PodInfo)>) {
        let keep: std::collections::HashSet<(String, String)> =
            pods.iter().map(|(k, _)| k.clone()).collect();
        self.pods.retain(|k, _| keep.contains(k));
        for (k, p) in pods {
            self.pods.insert(k, Arc::new(p));
        }
        self.pod_labels.sweep();
    }

    /// All nodes, sorted by name.
    pub fn nodes(&self) -> Vec<Arc<NodeInfo>> {
        let mut v: Vec<Arc<NodeInfo>> = self.nodes.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<Arc<NodeInfo>> {
        self.nodes.get(name).map(|e| e.value().clone())
    }

    /// True when the node exists.
    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// One running pod (looked up by borrowed strings: no allocation per lookup, which
    /// matters because every listed PodMetrics joins its labels through here).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        self.pods
            .get(&(namespace, name) as &dyn PodKey)
            .map(|e| e.value().clone())
    }

    /// Number of running pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Marks the node list as synced.
    pub fn set_nodes_synced(&self) {
        self.nodes_synced.store(true, Ordering::Release);
    }

    /// Marks the pod list as synced.
    pub fn set_pods_synced(&self) {
        self.pods_synced.store(true, Ordering::Release);
    }

    /// True once the initial node list has arrived (all the scraper needs).
    pub fn nodes_synced(&self) -> bool {
        self.nodes_synced.load(Ordering::Acquire)
    }

    /// True once both initial lists have arrived.
    pub fn synced(&self) -> bool {
        self.nodes_synced.load(Ordering::Acquire) && self.pods_synced.load(Ordering::Acquire)
    }
}

/// A (namespace, name) pod key that owned `(String, String)` keys and borrowed `(&str, &str)`
/// pairs both provide, so the pod map can be searched without building owned strings. Hash
/// and equality match those of `(String, String)` (field by field, as tuples hash), which
/// `Borrow` requires.
trait PodKey {
    fn key(&self) -> (&str, &str);
}

impl PodKey for (String, String) {
    fn key(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl PodKey for (&str, &str) {
    fn key(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn PodKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn PodKey + 'a) {
        self
    }
}

impl std::hash::Hash for dyn PodKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn PodKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn PodKey + '_ {}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(app: &str) -> PodInfo {
        PodInfo {
            labels: Arc::new(BTreeMap::from([("app".to_owned(), app.to_owned())])),
            created_ms: 1,
        }
    }

    #[test]
    fn pods_are_found_and_removed_by_borrowed_keys() {
        let view = ClusterView::new();
        for i in 0..200 {
            view.upsert_pod(
                &format!("ns-{}", i % 7),
                &format!("pod-{i}"),
                info(&i.to_string()),
            );
        }
        for i in 0..200 {
            let p = view.pod(&format!("ns-{}", i % 7), &format!("pod-{i}"));
            assert_eq!(p.expect("present").labels["app"], i.to_string());
            // Same name, other namespace; and the pair split differently ("ns-1"+"/x" style).
            assert!(
                view.pod(&format!("ns-{}", (i + 1) % 7), &format!("pod-{i}"))
                    .is_none()
            );
        }
        assert!(view.pod("ns-1pod", "-1").is_none());
        assert!(view.pod("ns-1", "pod-1").is_some());
        view.remove_pod("ns-1", "pod-1");
        assert!(view.pod("ns-1", "pod-1").is_none());
        assert_eq!(view.pod_count(), 199);
        view.upsert_pod("ns-1", "pod-1", info("again"));
        assert_eq!(
            view.pod("ns-1", "pod-1").expect("back").labels["app"],
            "again"
        );
    }
}
