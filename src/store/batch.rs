//! What one kubelet scrape hands to the store: the contract between `scrape` and `store`.

/// One reading of a node or a container, as the kubelet reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MetricsPoint {
    /// Container start time in milliseconds since the Unix epoch; 0 for nodes (unknown).
    pub start_time_ms: i64,
    /// Timestamp of the CPU sample in milliseconds since the Unix epoch (the scrape's
    /// request time when the kubelet sent none). CPU rates are computed between these.
    pub timestamp_ms: i64,
    /// Cumulative CPU time in nanocore-seconds (the kubelet's seconds value × 1e9).
    pub cumulative_cpu_ns: u64,
    /// Working-set memory in bytes.
    pub memory_bytes: u64,
}

/// One container's reading inside a [`PodPoints`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPoint {
    /// Container name.
    pub name: String,
    /// The reading.
    pub point: MetricsPoint,
}

/// Every container of one pod, as reported by its node's kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPoints {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// All containers of the pod that had both a CPU and a memory sample, sorted by name.
    pub containers: Vec<ContainerPoint>,
}

/// Everything one successful kubelet scrape produced for its node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeBatch {
    /// The node's own reading, when the kubelet reported both CPU and memory for it.
    pub node: Option<MetricsPoint>,
    /// Complete pods only (a pod with any container lacking CPU or memory is left out),
    /// sorted by (namespace, name).
    pub pods: Vec<PodPoints>,
}
