//! What the store publishes: usages ready to become `metrics.k8s.io/v1beta1` `NodeMetrics` and
//! `PodMetrics` (metrics-server `pkg/api/node.go`, `pkg/api/pod.go`).
//!
//! Names are `Arc<str>`: namespaces and container names are interned store-wide, and a pod keeps
//! the same name allocation from scrape to scrape, so they are cheap to clone and small.

use std::sync::Arc;

/// CPU and memory usage of a node or a container, as `metrics.k8s.io` serves it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// CPU rate in nanocores (1e-9 core), averaged over the window. 0 is a valid, idle value.
    pub cpu_nanocores: u64,
    /// Working-set memory in bytes at the timestamp (a gauge, not averaged).
    pub memory_bytes: u64,
}

impl Usage {
    /// The sum of two usages, saturating instead of overflowing.
    #[must_use]
    pub fn saturating_add(self, other: Usage) -> Usage {
        Usage {
            cpu_nanocores: self.cpu_nanocores.saturating_add(other.cpu_nanocores),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// One node's usage, the content of a `NodeMetrics` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUsage {
    /// Node name.
    pub name: Arc<str>,
    /// Timestamp of the latest CPU sample, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Time between the two CPU samples the rate was computed from, in milliseconds (> 0).
    pub window_ms: i64,
    /// The usage.
    pub usage: Usage,
}

/// One container's usage inside a [`PodUsage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerUsage {
    /// Container name.
    pub name: Arc<str>,
    /// The usage.
    pub usage: Usage,
}

/// One pod's usage, the content of a `PodMetrics` object: a view borrowed from a
/// [`Snapshot`](crate::store::Snapshot).
///
/// A view rather than an owned struct so that a node's containers live in one array: a scrape
/// then allocates a handful of blocks per node instead of one per pod, which is what dominates
/// both ingest and the freeing of the previous generation (see the store benchmarks).
///
/// A pod is published only when every container the kubelet reported for it has a usage: never a
/// partial pod that under-reports (metrics-server returns such pods, issue #1008 / PR #1781).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodUsage<'a> {
    /// Pod namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Timestamp of the container with the earliest timestamp, in milliseconds since the Unix
    /// epoch (as metrics-server does).
    pub timestamp_ms: i64,
    /// Window of that same container, in milliseconds (> 0).
    pub window_ms: i64,
    /// Every container of the pod, sorted by name.
    pub containers: &'a [ContainerUsage],
}

impl PodUsage<'_> {
    /// The sum over the pod's containers (what the HPA and `kubectl top pod` add up).
    #[must_use]
    pub fn total(&self) -> Usage {
        self.containers
            .iter()
            .fold(Usage::default(), |sum, c| sum.saturating_add(c.usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_total_sums_and_saturates() {
        let c = |name: &str, cpu, mem| ContainerUsage {
            name: name.into(),
            usage: Usage {
                cpu_nanocores: cpu,
                memory_bytes: mem,
            },
        };
        let mut containers = vec![c("a", 5, 7), c("b", 10, 20)];
        let pod = PodUsage {
            namespace: "ns",
            name: "p",
            timestamp_ms: 1,
            window_ms: 1,
            containers: &containers,
        };
        assert_eq!(
            pod.total(),
            Usage {
                cpu_nanocores: 15,
                memory_bytes: 27
            }
        );
        containers.push(c("c", u64::MAX, 1));
        let pod = PodUsage {
            namespace: "ns",
            name: "p",
            timestamp_ms: 1,
            window_ms: 1,
            containers: &containers,
        };
        assert_eq!(pod.total().cpu_nanocores, u64::MAX);
    }
}
