//! The metrics store: the last readings of every node and container, the CPU rates computed from
//! them once per scrape, and immutable snapshots for the API.
//!
//! Mirrors metrics-server's `pkg/storage` (`storage.go`, `node.go`, `pod.go`, `types.go`) in
//! what it serves, and fixes its known weaknesses:
//!
//! | metrics-server | here |
//! |---|---|
//! | one global `RWMutex`; every `Store` rebuilds all maps | sharded `DashMap<node, Arc<NodeEntry>>`, each node merged in place as its scrape lands |
//! | rates recomputed on every read | rates computed once at ingest (`rate.rs`) |
//! | reads take the lock | readers load an `Arc<Snapshot>` lock-free (`ArcSwap`); publish is O(pods) |
//! | one failed scrape drops a node and its pods | the same by default; [`StoreConfig::keep_stale_for`] (`--metric-stale-tolerance`) keeps the last good values, with their real timestamp |
//! | a container with a CPU counter decrease is skipped, the pod served partial | a pod is served only when **all** its containers have a usage |
//! | container order random | containers sorted by name, pods by (namespace, name) |
//!
//! Rules per series (the node, each container), see [`Store::ingest`]:
//! - usage = Δcpu / Δt between the two CPU sample timestamps, window = Δt;
//! - a counter decrease or a restart (start time at or after the stored sample) never gives
//!   usage; the series needs two good readings again. A container in its first run seen
//!   10 s ≤ age < resolution after its start is rated against its start (metrics-server's
//!   fresh-container rule); [`Store::ingest`] says when a younger one will qualify;
//! - a cumulative CPU of 0 (the kubelet's placeholder) is never a rate's base, and a 0 working
//!   set is never served (metrics-server drops both);
//! - a reading whose timestamp is not after the stored one is not a new point;
//! - an idle container (0 nanocores: a counter that does not move) is valid.
//!
//! Readers get [`PodUsage`] as a view borrowed from the snapshot: a node's pods, containers and
//! pod names live in a few flat arrays per node, so a scrape allocates ~7 blocks per node and
//! the store holds ~118 bytes per container (5,000 nodes × 30 pods × 2 containers: ~35 MB, see
//! `benches/store.rs`; up to twice that during a tick, while the published snapshot still holds
//! the previous generation).
//!
//! The store knows nothing of HTTP, kube or the scraper: the scraper calls [`Store::ingest`] /
//! [`Store::mark_failed`] per node and [`Store::publish`] after each tick (and periodically during
//! a long one); the cluster view calls [`Store::retain_nodes`]; the API reads [`Store::snapshot`].

pub mod batch;
mod config;
mod intern;
mod metrics_store;
mod node_entry;
mod rate;
mod snapshot;
pub mod transfer;
mod usage;

pub use config::StoreConfig;
pub use metrics_store::Store;
pub use snapshot::{Pods, Snapshot, StoragePoints};
pub use usage::{ContainerUsage, NodeUsage, PodUsage, Usage};
