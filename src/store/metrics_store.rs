//! [`Store`]: the sharded write side (one `Arc<NodeEntry>` per node in a `DashMap`) and the
//! published read side (an `ArcSwap<Snapshot>`).

use std::sync::{Arc, Mutex, PoisonError, atomic::AtomicU64};

use arc_swap::ArcSwap;
use dashmap::{DashMap, mapref::entry::Entry};

use crate::store::{
    batch::NodeBatch,
    config::StoreConfig,
    intern::Interner,
    node_entry::{MergeContext, NodeEntry},
    snapshot::{Snapshot, StoragePoints},
    transfer::{NodeState, StateError},
};

/// The metrics store. Share it behind an `Arc`; every method takes `&self`.
///
/// Writers ([`ingest`](Self::ingest), [`mark_failed`](Self::mark_failed),
/// [`retain_nodes`](Self::retain_nodes)) touch one node's entry under a short shard lock and
/// never block readers. Readers only ever see what [`publish`](Self::publish) swapped in.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    resolution_ms: i64,
    keep_stale_ms: i64,
    unscraped_expiry_ms: i64,
    entries: DashMap<Arc<str>, Arc<NodeEntry>>,
    current: ArcSwap<Snapshot>,
    interner: Interner,
    layout_ids: AtomicU64,
    /// Serialises publishes, so snapshots never go back in time, and holds the snapshot replaced
    /// by the last publish while readers still held it (see [`Store::publish`]). Never held
    /// across an await (the store has none) and never taken by readers.
    publishing: Mutex<Option<Arc<Snapshot>>>,
    /// Counts publishes, for readers that follow them.
    published: tokio::sync::watch::Sender<u64>,
    /// Counts the publishes that end a scrape cycle ([`Store::publish_cycle`]), for readers that
    /// want one update per cycle (the computed DataRecords).
    cycles: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// An empty store; [`snapshot`](Self::snapshot) returns an empty snapshot until the first
    /// [`publish`](Self::publish).
    #[must_use]
    pub fn new(config: StoreConfig) -> Self {
        Store {
            config,
            resolution_ms: config.resolution_ms(),
            keep_stale_ms: config.keep_stale_ms(),
            unscraped_expiry_ms: config.unscraped_expiry_ms(),
            entries: DashMap::new(),
            current: ArcSwap::from_pointee(Snapshot::empty(0)),
            interner: Interner::default(),
            layout_ids: AtomicU64::new(1),
            publishing: Mutex::new(None),
            published: tokio::sync::watch::Sender::new(0),
            cycles: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The settings this store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Records a successful scrape of `node` at `now_ms` (ms since the epoch, the caller's
    /// clock), merging it with the node's previous state and computing usages right away.
    ///
    /// Per series (the node, each container): a reading not after the stored one changes
    /// nothing; a counter that went down or a changed start time gives no usage until the next
    /// good reading (except the fresh-container rule); otherwise the usage is Δcpu/Δt over the
    /// real window between the two CPU timestamps. Pods and containers missing from `batch` are
    /// dropped. Visible to readers after the next [`publish`](Self::publish).
    ///
    /// Returns when a container of this node that has no usage yet becomes old enough for its
    /// first rate (ms since the epoch), so the scraper can scrape the node again then instead
    /// of a resolution later.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the scraper hands its batch over; it is freed here, off the API's path"
    )]
    pub fn ingest(&self, node: &str, batch: NodeBatch, now_ms: i64) -> Option<i64> {
        let ctx = MergeContext {
            fresh_limit_ms: self.resolution_ms,
            interner: &self.interner,
            layout_ids: &self.layout_ids,
        };
        // Optimistic read-merge-swap: the merge runs without any lock held; if the node's entry
        // changed meanwhile (a concurrent ingest of the same node, a removal), merge again.
        loop {
            let prev = self.entries.get(node).map(|e| Arc::clone(e.value()));
            let next = Arc::new(NodeEntry::merge(
                prev.as_deref(),
                node,
                &batch,
                now_ms,
                &ctx,
            ));
            let fresh_due = next.fresh_due_ms;
            if self.swap_in(node, prev.as_ref(), next) {
                return fresh_due;
            }
        }
    }

    /// `node`'s current state, for the replicas that do not scrape it (`docs/ha.md` §3).
    pub fn export(&self, node: &str) -> Option<NodeState> {
        let entry = self.entries.get(node).map(|e| Arc::clone(e.value()))?;
        Some(entry.export())
    }

    /// Takes `node`'s state as another replica's store computed it (usages included, so no rate
    /// maths here), landed at `now_ms` (this store's clock). A state older than what the store
    /// holds (its newest sample is before the stored one's) is ignored: `Ok(false)`. A state
    /// that fails the structure checks changes nothing: `Err`.
    pub fn adopt(&self, node: &str, state: &NodeState, now_ms: i64) -> Result<bool, StateError> {
        let ctx = MergeContext {
            fresh_limit_ms: self.resolution_ms,
            interner: &self.interner,
            layout_ids: &self.layout_ids,
        };
        let newest = state.newest_ms();
        loop {
            let prev = self.entries.get(node).map(|e| Arc::clone(e.value()));
            if prev.as_ref().is_some_and(|p| p.newest_ms() > newest) {
                return Ok(false);
            }
            let next = Arc::new(NodeEntry::adopt(
                prev.as_deref(),
                node,
                state,
                now_ms,
                &ctx,
            )?);
            if self.swap_in(node, prev.as_ref(), next) {
                return Ok(true);
            }
        }
    }

    /// Puts `next` in place of `prev` (absent: `None`) unless the slot changed meanwhile.
    fn swap_in(&self, node: &str, prev: Option<&Arc<NodeEntry>>, next: Arc<NodeEntry>) -> bool {
        match prev {
            Some(prev) => {
                let replaced = match self.entries.get_mut(node) {
                    Some(mut slot) if Arc::ptr_eq(slot.value(), prev) => {
                        Some(std::mem::replace(slot.value_mut(), next))
                    }
                    _ => None,
                };
                // The shard lock is released here; the replaced entry is dropped after it.
                replaced.is_some()
            }
            None => match self.entries.entry(Arc::clone(&next.name)) {
                Entry::Vacant(slot) => {
                    slot.insert(next);
                    true
                }
                Entry::Occupied(_) => false,
            },
        }
    }

    /// Records a failed scrape of `node` at `now_ms`: the node and its pods are dropped, unless
    /// its last success is within `keep_stale_for` (`--metric-stale-tolerance`, default 0:
    /// dropped at once, as metrics-server does).
    pub fn mark_failed(&self, node: &str, now_ms: i64) {
        let removed = self.entries.remove_if(node, |_, entry| {
            self.keep_stale_ms == 0
                || now_ms.saturating_sub(entry.last_success_ms) > self.keep_stale_ms
        });
        drop(removed);
    }

    /// Drops every node for which `keep` returns false (nodes deleted from the cluster).
    /// `keep` runs under a shard lock: it must not call back into the store.
    pub fn retain_nodes(&self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|name, _| keep(name));
    }

    /// Expires stale nodes, builds a new snapshot from the current entries and swaps it in for
    /// readers. Returns the published snapshot.
    ///
    /// Cost: O(nodes + pods) with no per-pod allocation and no rate maths; pods whose node kept
    /// the same pod set are carried over by index. Freeing the node entries that ingests
    /// replaced since the previous publish also lands here, not on a reader: if a reader still
    /// holds the replaced snapshot, the store keeps it until the next publish, so the reader's
    /// drop is never the last one.
    pub fn publish(&self, now_ms: i64) -> Arc<Snapshot> {
        let mut retired = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Readers of the snapshot kept by the previous publish are long done.
        drop(retired.take());
        // Read locks only; the rare expired node is removed afterwards (if still expired).
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut expired = Vec::new();
        for e in &self.entries {
            if self.is_expired(e.value(), now_ms) {
                expired.push(Arc::clone(e.key()));
            } else {
                entries.push(Arc::clone(e.value()));
            }
        }
        for name in expired {
            let removed = self
                .entries
                .remove_if(&name, |_, entry| self.is_expired(entry, now_ms));
            drop(removed);
        }
        let next = Arc::new(Snapshot::build(&self.current.load(), entries, now_ms));
        // `swap` settles readers' borrowed loads, so the count below is exact for this moment.
        let replaced = self.current.swap(Arc::clone(&next));
        if Arc::strong_count(&replaced) > 1 {
            *retired = Some(replaced);
        } else {
            drop(replaced);
        }
        drop(retired);
        self.interner.prune();
        self.published.send_modify(|n| *n = n.wrapping_add(1));
        next
    }

    /// [`publish`](Self::publish) at the end of a scrape cycle: also tells the
    /// [`subscribe_cycles`](Self::subscribe_cycles) receivers. The publishes in the middle of a
    /// long cycle (and a follow-up scrape's) use `publish` and do not.
    pub fn publish_cycle(&self, now_ms: i64) -> Arc<Snapshot> {
        let snapshot = self.publish(now_ms);
        self.cycles.send_modify(|n| *n = n.wrapping_add(1));
        snapshot
    }

    /// A receiver that sees a new value after every [`publish_cycle`](Self::publish_cycle).
    pub fn subscribe_cycles(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cycles.subscribe()
    }

    /// A receiver that sees a new value after every [`publish`](Self::publish).
    pub fn subscribe_publishes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The latest published snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Whether the latest snapshot serves at least one node's usage: the store part of readiness.
    /// Pods may legitimately be zero (a cluster running nothing but its nodes).
    pub fn has_complete_data(&self) -> bool {
        self.current.load().node_count() > 0
    }

    /// Series with a usage in the latest snapshot, for `storage_points{type="node"|"container"}`.
    pub fn storage_points(&self) -> StoragePoints {
        self.current.load().storage_points()
    }

    /// The layout id of `node`'s entry (tests of the carry-over by index).
    #[cfg(test)]
    pub(crate) fn layout_id(&self, node: &str) -> Option<u64> {
        self.entries.get(node).map(|e| e.layout_id)
    }

    /// Number of nodes with data in the write side right now (published or not).
    pub fn tracked_nodes(&self) -> usize {
        self.entries.len()
    }

    /// A node neither scraped successfully nor failed for longer than a healthy node ever goes
    /// between two scrapes, plus the stale tolerance.
    fn is_expired(&self, entry: &NodeEntry, now_ms: i64) -> bool {
        now_ms.saturating_sub(entry.last_success_ms) > self.unscraped_expiry_ms
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use proptest::prelude::*;

    use super::*;
    use crate::store::{
        batch::{ContainerPoint, MetricsPoint, PodPoints},
        usage::{ContainerUsage, NodeUsage, PodUsage, Usage},
    };

    const RES: i64 = 15_000;
    const T0: i64 = 1_700_000_000_000;
    const LONG_AGO: i64 = T0 - 86_400_000;
    const MIB: u64 = 1 << 20;
    const SEC: u64 = 1_000_000_000;

    fn store() -> Store {
        Store::new(StoreConfig::new(Duration::from_millis(RES as u64)))
    }

    fn pt(start: i64, ts: i64, cpu: u64, mem: u64) -> MetricsPoint {
        MetricsPoint {
            start_time_ms: start,
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu,
            memory_bytes: mem,
        }
    }

    fn c(name: &str, point: MetricsPoint) -> ContainerPoint {
        ContainerPoint {
            name: name.into(),
            point,
        }
    }

    fn pod(ns: &str, name: &str, containers: Vec<ContainerPoint>) -> PodPoints {
        PodPoints {
            namespace: ns.into(),
            name: name.into(),
            containers,
        }
    }

    fn node_pt(ts: i64, cpu: u64) -> MetricsPoint {
        pt(0, ts, cpu, 1 << 30)
    }

    /// One pod `default/web` with containers `app` and `sidecar`, started long ago, with the
    /// node's own reading; `app` at `ts`, `sidecar` 500 ms later.
    fn web(ts: i64, app_cpu: u64, sidecar_cpu: u64) -> NodeBatch {
        NodeBatch {
            node: Some(node_pt(ts, app_cpu + sidecar_cpu + 100 * SEC)),
            pods: vec![pod(
                "default",
                "web",
                vec![
                    c("app", pt(LONG_AGO, ts, app_cpu, 100 * MIB)),
                    c("sidecar", pt(LONG_AGO, ts + 500, sidecar_cpu, 20 * MIB)),
                ],
            )],
        }
    }

    fn usage(cpu: u64, mem: u64) -> Usage {
        Usage {
            cpu_nanocores: cpu,
            memory_bytes: mem,
        }
    }

    fn cpu_of(snap: &Snapshot, ns: &str, name: &str) -> Option<Vec<u64>> {
        snap.pod(ns, name)
            .map(|p| p.containers.iter().map(|c| c.usage.cpu_nanocores).collect())
    }

    #[test]
    fn store_and_snapshot_are_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Store>();
        shareable::<Snapshot>();
        shareable::<Arc<Snapshot>>();
    }

    #[test]
    fn two_scrapes_give_exact_usage_and_window() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, 2 * SEC), T0);
        let snap = s.publish(T0);
        assert_eq!((snap.node_count(), snap.pod_count()), (0, 0));
        assert!(!s.has_complete_data());

        // app: +1.5 cpu-s over 15 s; sidecar: +0.77 cpu-s over 15.4 s (its own timestamps).
        let mut b = web(T0 + 15_000, 10 * SEC + 1_500_000_000, 2 * SEC + 770_000_000);
        b.pods[0].containers[1].point.timestamp_ms = T0 + 500 + 15_400;
        let node_cpu = b.node.unwrap().cumulative_cpu_ns;
        s.ingest("n1", b, T0 + RES);
        let snap = s.publish(T0 + RES);
        assert!(s.has_complete_data());
        assert_eq!(
            snap.nodes(),
            [NodeUsage {
                name: "n1".into(),
                timestamp_ms: T0 + 15_000,
                window_ms: 15_000,
                // Δ = 2.27 cpu-s over 15 s.
                usage: usage((node_cpu - 112 * SEC) * 1000 / 15_000, 1 << 30),
            }]
        );
        assert_eq!(snap.nodes()[0].usage.cpu_nanocores, 151_333_333);
        let pod = snap.pod("default", "web").unwrap();
        assert_eq!(
            pod,
            PodUsage {
                namespace: "default",
                name: "web",
                // The container with the earliest timestamp: app.
                timestamp_ms: T0 + 15_000,
                window_ms: 15_000,
                containers: &[
                    ContainerUsage {
                        name: "app".into(),
                        usage: usage(100_000_000, 100 * MIB)
                    },
                    ContainerUsage {
                        name: "sidecar".into(),
                        usage: usage(50_000_000, 20 * MIB)
                    },
                ],
            }
        );
        assert_eq!(snap.container_count(), 2);
        assert_eq!(
            s.storage_points(),
            StoragePoints {
                node: 1,
                container: 2
            }
        );
    }

    #[test]
    fn counter_decrease_hides_pod_until_next_good_point() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        assert_eq!(
            cpu_of(&s.publish(T0 + RES), "default", "web"),
            Some(vec![66_666_666, 0])
        );

        // app's counter goes down: no usage for it, so no partial pod either.
        let mut b = web(T0 + 2 * RES, 3 * SEC, 2 * SEC);
        b.node = Some(node_pt(T0 + 2 * RES, 200 * SEC));
        s.ingest("n1", b, T0 + 2 * RES);
        let snap = s.publish(T0 + 2 * RES);
        assert_eq!(snap.pod("default", "web"), None);
        assert_eq!(snap.pod_count(), 0);
        assert_eq!(
            snap.storage_points().container,
            1,
            "sidecar still has a usage"
        );
        assert_eq!(snap.node_count(), 1);

        // Next good point: rated against the post-decrease reading.
        s.ingest(
            "n1",
            web(T0 + 3 * RES, 4_500_000_000, 2 * SEC),
            T0 + 3 * RES,
        );
        assert_eq!(
            cpu_of(&s.publish(T0 + 3 * RES), "default", "web"),
            Some(vec![100_000_000, 0])
        );
    }

    #[test]
    fn restart_with_changed_start_time() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        s.publish(T0 + RES);

        // app restarted after the previous sample (its start time is after it): no usage this
        // cycle, even though its new counter happens to be higher.
        let t2 = T0 + 2 * RES;
        let restarted_at = T0 + RES + 1_000;
        let mut b = web(t2, 12 * SEC, SEC);
        b.pods[0].containers[0].point.start_time_ms = restarted_at;
        s.ingest("n1", b, t2);
        assert_eq!(s.publish(t2).pod("default", "web"), None);

        let t3 = T0 + 3 * RES;
        let mut b = web(t3, 12 * SEC + 300_000_000, SEC);
        b.pods[0].containers[0].point.start_time_ms = restarted_at;
        s.ingest("n1", b, t3);
        assert_eq!(
            cpu_of(&s.publish(t3), "default", "web"),
            Some(vec![20_000_000, 0])
        );

        // Restarted 12 s before the sample (inside the fresh window): a restart never gets a
        // first rate from its start time (its counter may have kept running), so not served.
        let t4 = T0 + 4 * RES;
        let mut b = web(t4, 600_000_000, SEC);
        b.pods[0].containers[0].point.start_time_ms = t4 - 12_000;
        s.ingest("n1", b, t4);
        assert_eq!(s.publish(t4).pod("default", "web"), None);
    }

    /// Defect 6: start times that jitter between scrapes (but stay before the last sample) are
    /// the same run: the pod stays served.
    #[test]
    fn start_time_jitter_keeps_the_pod_served() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        let t2 = T0 + 2 * RES;
        let mut b = web(t2, 12 * SEC, SEC);
        b.pods[0].containers[0].point.start_time_ms = LONG_AGO + 1_000;
        b.pods[0].containers[1].point.start_time_ms = LONG_AGO - 1_000;
        s.ingest("n1", b, t2);
        assert_eq!(
            cpu_of(&s.publish(t2), "default", "web"),
            Some(vec![66_666_666, 0])
        );
    }

    #[test]
    fn fresh_pod_is_served_after_one_scrape() {
        let s = store();
        s.ingest(
            "n1",
            NodeBatch {
                node: None,
                pods: vec![
                    pod(
                        "ns",
                        "fresh",
                        vec![c("app", pt(T0 - 11_000, T0, 2_200_000_000, MIB))],
                    ),
                    pod(
                        "ns",
                        "too-young",
                        vec![c("app", pt(T0 - 9_000, T0, SEC, MIB))],
                    ),
                    pod("ns", "old", vec![c("app", pt(LONG_AGO, T0, SEC, MIB))]),
                ],
            },
            T0,
        );
        let snap = s.publish(T0);
        let names: Vec<&str> = snap.pods().map(|p| p.name).collect();
        assert_eq!(names, ["fresh"]);
        assert_eq!(cpu_of(&snap, "ns", "fresh"), Some(vec![200_000_000]));
        assert_eq!(snap.pod("ns", "fresh").unwrap().window_ms, 11_000);
        // Pods may be served before any node: readiness waits for a node.
        assert!(!s.has_complete_data());
    }

    #[test]
    fn container_started_long_ago_needs_two_scrapes() {
        let s = store();
        let b = |ts, cpu| NodeBatch {
            node: Some(node_pt(ts, cpu)),
            pods: vec![pod("ns", "p", vec![c("app", pt(LONG_AGO, ts, cpu, MIB))])],
        };
        s.ingest("n1", b(T0, SEC), T0);
        assert_eq!(s.publish(T0).pod_count(), 0);
        s.ingest("n1", b(T0 + RES, 2 * SEC), T0 + RES);
        let snap = s.publish(T0 + RES);
        assert_eq!(cpu_of(&snap, "ns", "p"), Some(vec![66_666_666]));
        assert_eq!(
            snap.node("n1").map(|n| n.usage.cpu_nanocores),
            Some(66_666_666)
        );
    }

    /// Defect 8: by default (metrics-server) a failed scrape drops the node and its pods at
    /// once; a node neither scraped nor failing expires two resolutions after its last success.
    #[test]
    fn failed_scrape_drops_the_node_at_once_by_default() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        s.ingest("n2", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n2", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        assert_eq!(s.publish(T0 + RES).node_count(), 2);
        s.mark_failed("n1", T0 + RES + 1);
        let snap = s.publish(T0 + RES + 1);
        assert_eq!(snap.node("n1"), None);
        assert_eq!(snap.node_count(), 1);
        assert_eq!(snap.tracked_node_count(), 1);
        // n2 is not scraped at all: kept through two resolutions, then dropped.
        assert_eq!(s.publish(T0 + 3 * RES).node_count(), 1);
        assert_eq!(s.publish(T0 + 3 * RES + 1).node_count(), 0);
        // Back after a failure: a first sighting again (two scrapes, as metrics-server).
        s.ingest("n1", web(T0 + 4 * RES, 14 * SEC, SEC), T0 + 4 * RES);
        assert_eq!(s.publish(T0 + 4 * RES).node_count(), 0);
    }

    #[test]
    fn missed_scrapes_keep_old_values_then_drop() {
        const KEEP: i64 = 3 * RES; // --metric-stale-tolerance=45s
        let s = Store::new(
            StoreConfig::new(Duration::from_millis(RES as u64))
                .with_stale_tolerance(Duration::from_millis(KEEP as u64)),
        );
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        let before = s.publish(T0 + RES);
        let last_success = T0 + RES;

        // Failed scrapes: the node and its pod stay, with the old timestamps, up to KEEP.
        for now in [
            last_success + RES,
            last_success + 2 * RES,
            last_success + KEEP,
        ] {
            s.mark_failed("n1", now);
            let snap = s.publish(now);
            assert_eq!(snap.nodes(), before.nodes());
            assert_eq!(snap.pod("default", "web"), before.pod("default", "web"));
            assert_eq!(snap.pod("default", "web").unwrap().timestamp_ms, T0 + RES);
        }
        // Past keep_stale_for: dropped by the next failure, or at publish two resolutions later.
        s.mark_failed("n1", last_success + KEEP + 1);
        let snap = s.publish(last_success + KEEP + 1);
        assert_eq!(
            (
                snap.node_count(),
                snap.pod_count(),
                snap.tracked_node_count()
            ),
            (0, 0, 0)
        );
        assert!(!s.has_complete_data());

        // mark_failed past the allowance drops at once.
        s.ingest("n2", web(T0, 10 * SEC, SEC), T0);
        s.mark_failed("n2", T0 + KEEP);
        assert_eq!(s.tracked_nodes(), 1);
        s.mark_failed("n2", T0 + KEEP + 1);
        assert_eq!(s.tracked_nodes(), 0);
        s.mark_failed("unknown", T0);
    }

    #[test]
    fn keep_stale_for_is_configurable() {
        let s = Store::new(StoreConfig {
            metric_resolution: Duration::from_millis(RES as u64),
            keep_stale_for: Duration::from_millis(RES as u64),
        });
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        s.mark_failed("n1", T0 + 2 * RES);
        assert_eq!(s.publish(T0 + 2 * RES).node_count(), 1);
        s.mark_failed("n1", T0 + 2 * RES + 1);
        assert_eq!(s.publish(T0 + 2 * RES + 1).node_count(), 0);
        assert_eq!(s.config().keep_stale_for, Duration::from_millis(RES as u64));
    }

    #[test]
    fn success_after_a_miss_rates_over_the_real_gap() {
        let s = Store::new(
            StoreConfig::new(Duration::from_millis(RES as u64))
                .with_stale_tolerance(Duration::from_millis(2 * RES as u64)),
        );
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        s.mark_failed("n1", T0 + 2 * RES);
        s.ingest("n1", web(T0 + 3 * RES, 14 * SEC, SEC), T0 + 3 * RES);
        let snap = s.publish(T0 + 3 * RES);
        let pod = snap.pod("default", "web").unwrap();
        assert_eq!(pod.window_ms, 2 * RES);
        assert_eq!(pod.containers[0].usage.cpu_nanocores, 100_000_000);
    }

    #[test]
    fn node_restart_gives_no_bogus_rate() {
        let s = store();
        let b = |ts, cpu| NodeBatch {
            node: Some(node_pt(ts, cpu)),
            pods: vec![],
        };
        s.ingest("n1", b(T0, 1_000 * SEC), T0);
        s.ingest("n1", b(T0 + RES, 1_003 * SEC), T0 + RES);
        let snap = s.publish(T0 + RES);
        assert_eq!(snap.node("n1").unwrap().usage.cpu_nanocores, 200_000_000);
        assert!(s.has_complete_data(), "no pods is fine");

        // Reboot: the counter restarts near zero.
        s.ingest("n1", b(T0 + 2 * RES, 5 * SEC), T0 + 2 * RES);
        let snap = s.publish(T0 + 2 * RES);
        assert_eq!(snap.node("n1"), None);
        assert_eq!(snap.storage_points().node, 0);
        assert_eq!(snap.tracked_node_count(), 1);

        s.ingest("n1", b(T0 + 3 * RES, 6_500_000_000), T0 + 3 * RES);
        let snap = s.publish(T0 + 3 * RES);
        assert_eq!(snap.node("n1").unwrap().usage.cpu_nanocores, 100_000_000);
    }

    #[test]
    fn missing_node_reading_hides_node_but_keeps_its_last_reading() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        let mut b = web(T0 + 2 * RES, 12 * SEC, SEC);
        b.node = None;
        s.ingest("n1", b, T0 + 2 * RES);
        let snap = s.publish(T0 + 2 * RES);
        assert_eq!(snap.node("n1"), None);
        assert_eq!(snap.pod_count(), 1);
        // Next reading rates against the last one seen (two resolutions back).
        s.ingest("n1", web(T0 + 3 * RES, 13 * SEC, SEC), T0 + 3 * RES);
        let snap = s.publish(T0 + 3 * RES);
        assert_eq!(snap.node("n1").map(|n| n.window_ms), Some(2 * RES));
    }

    #[test]
    fn removed_pods_and_containers_are_dropped() {
        let s = store();
        let b = |ts: i64, cpu: u64, pods: &[(&str, &[&str])]| NodeBatch {
            node: Some(node_pt(ts, cpu)),
            pods: pods
                .iter()
                .map(|(name, cs)| {
                    pod(
                        "ns",
                        name,
                        cs.iter()
                            .map(|n| c(n, pt(LONG_AGO, ts, cpu, MIB)))
                            .collect(),
                    )
                })
                .collect(),
        };
        let full: &[(&str, &[&str])] = &[("a", &["app", "side"]), ("b", &["app"])];
        s.ingest("n1", b(T0, SEC, full), T0);
        s.ingest("n1", b(T0 + RES, 2 * SEC, full), T0 + RES);
        assert_eq!(s.publish(T0 + RES).pod_count(), 2);

        // b is gone, a lost its sidecar: a is still complete with the containers it has.
        s.ingest(
            "n1",
            b(T0 + 2 * RES, 3 * SEC, &[("a", &["app"])]),
            T0 + 2 * RES,
        );
        let snap = s.publish(T0 + 2 * RES);
        let pods: Vec<(&str, usize)> = snap.pods().map(|p| (p.name, p.containers.len())).collect();
        assert_eq!(pods, [("a", 1)]);
        assert_eq!(snap.container_count(), 1);

        // A new container in a: not served until the new one has a usage (never partial).
        let grown: &[(&str, &[&str])] = &[("a", &["app", "new"])];
        s.ingest("n1", b(T0 + 3 * RES, 4 * SEC, grown), T0 + 3 * RES);
        assert_eq!(s.publish(T0 + 3 * RES).pod_count(), 0);
        s.ingest("n1", b(T0 + 4 * RES, 5 * SEC, grown), T0 + 4 * RES);
        assert_eq!(s.publish(T0 + 4 * RES).container_count(), 2);
    }

    #[test]
    fn points_not_newer_keep_state() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 11 * SEC, SEC), T0 + RES);
        let good = s.publish(T0 + RES);

        // The kubelet serves the same (cached) timestamps with other values, then older ones.
        s.ingest("n1", web(T0 + RES, 99 * SEC, SEC), T0 + 2 * RES);
        let snap = s.publish(T0 + 2 * RES);
        assert_eq!(snap.pod("default", "web"), good.pod("default", "web"));
        assert_eq!(snap.nodes(), good.nodes());
        s.ingest("n1", web(T0 + RES - 1, 99 * SEC, SEC), T0 + 3 * RES);
        let snap = s.publish(T0 + 3 * RES);
        assert_eq!(snap.pod("default", "web"), good.pod("default", "web"));

        // The next real point is rated against the last real one, not the bogus ones.
        s.ingest("n1", web(T0 + 2 * RES, 12 * SEC, SEC), T0 + 4 * RES);
        let snap = s.publish(T0 + 4 * RES);
        assert_eq!(cpu_of(&snap, "default", "web"), Some(vec![66_666_666, 0]));
        assert_eq!(snap.pod("default", "web").unwrap().window_ms, RES);
    }

    #[test]
    fn idle_container_is_served_with_zero_cpu() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, 3), T0);
        s.ingest("n1", web(T0 + RES, 10 * SEC, 3), T0 + RES);
        let snap = s.publish(T0 + RES);
        assert_eq!(cpu_of(&snap, "default", "web"), Some(vec![0, 0]));
        assert_eq!(
            snap.pod("default", "web").unwrap().total().memory_bytes,
            120 * MIB
        );
    }

    /// Defect 5: a placeholder 0 followed by the real counter with the same start time must
    /// not put the container's whole lifetime CPU into one window.
    #[test]
    fn placeholder_zero_cpu_never_becomes_usage() {
        let s = store();
        // An hour-old container whose kubelet reports a placeholder first, then its counter
        // (3,600 cpu-seconds: one core for an hour).
        let b = |ts: i64, cpu: u64| NodeBatch {
            node: Some(node_pt(ts, 100 * SEC + ts.unsigned_abs() / 1000)),
            pods: vec![pod(
                "ns",
                "p",
                vec![c("app", pt(T0 - 3_600_000, ts, cpu, MIB))],
            )],
        };
        s.ingest("n1", b(T0, 0), T0);
        s.ingest("n1", b(T0 + RES, 3_600 * SEC), T0 + RES);
        assert_eq!(
            s.publish(T0 + RES).pod("ns", "p"),
            None,
            "no rate from a placeholder"
        );
        s.ingest("n1", b(T0 + 2 * RES, 3_615 * SEC), T0 + 2 * RES);
        assert_eq!(
            cpu_of(&s.publish(T0 + 2 * RES), "ns", "p"),
            Some(vec![1_000_000_000])
        );
        // A placeholder after real readings hides the pod for that scrape only; the next real
        // reading is rated against the last real one.
        s.ingest("n1", b(T0 + 3 * RES, 0), T0 + 3 * RES);
        assert_eq!(s.publish(T0 + 3 * RES).pod("ns", "p"), None);
        s.ingest("n1", b(T0 + 4 * RES, 3_645 * SEC), T0 + 4 * RES);
        let snap = s.publish(T0 + 4 * RES);
        assert_eq!(cpu_of(&snap, "ns", "p"), Some(vec![1_000_000_000]));
        assert_eq!(snap.pod("ns", "p").unwrap().window_ms, 2 * RES);
    }

    /// Defect 5: a 0 working set is not real memory (a memory HPA would scale down on it).
    #[test]
    fn zero_working_set_is_not_served() {
        let s = store();
        s.ingest("n1", web(T0, 10 * SEC, SEC), T0);
        let mut b = web(T0 + RES, 11 * SEC, 2 * SEC);
        b.pods[0].containers[1].point.memory_bytes = 0;
        b.node.as_mut().unwrap().memory_bytes = 0;
        s.ingest("n1", b, T0 + RES);
        let snap = s.publish(T0 + RES);
        assert_eq!(snap.pod("default", "web"), None);
        assert_eq!(snap.node("n1"), None);
        // The CPU readings stay valid bases: served on the next scrape.
        s.ingest("n1", web(T0 + 2 * RES, 12 * SEC, 3 * SEC), T0 + 2 * RES);
        let snap = s.publish(T0 + 2 * RES);
        assert_eq!(
            cpu_of(&snap, "default", "web"),
            Some(vec![66_666_666, 66_666_666])
        );
        assert!(snap.node("n1").is_some());
    }

    /// §4: ingest tells the scraper when a young container can get its first rate.
    #[test]
    fn ingest_reports_when_a_young_container_is_due() {
        let s = store();
        let young = NodeBatch {
            node: Some(node_pt(T0, 100 * SEC)),
            pods: vec![pod(
                "ns",
                "new",
                vec![c("app", pt(T0 - 2_000, T0, SEC / 10, MIB))],
            )],
        };
        assert_eq!(s.ingest("n1", young, T0), Some(T0 + 8_000));
        assert_eq!(s.ingest("n2", web(T0, 10 * SEC, SEC), T0), None);
    }

    #[test]
    fn retain_nodes_drops_deleted_nodes() {
        let s = store();
        for n in ["n1", "n2", "n3"] {
            s.ingest(n, web(T0, SEC, SEC), T0);
            s.ingest(n, web(T0 + RES, 2 * SEC, SEC), T0 + RES);
        }
        assert_eq!(s.publish(T0 + RES).node_count(), 3);
        s.retain_nodes(|n| n != "n2");
        let snap = s.publish(T0 + RES);
        let names: Vec<&str> = snap.nodes().iter().map(|n| &*n.name).collect();
        assert_eq!(names, ["n1", "n3"]);
        // Same pod name on n1 and n3 (identical timestamps): one copy, from n1.
        assert_eq!(snap.pod_count(), 1);
    }

    #[test]
    fn duplicate_pod_on_two_nodes_keeps_the_newest() {
        let s = store();
        // web-0 ran on n1; n1 is failing (kept stale) while web-0 now runs on n2.
        s.ingest("n1", web(T0, SEC, SEC), T0);
        s.ingest("n1", web(T0 + RES, 2 * SEC, SEC), T0 + RES);
        s.publish(T0 + RES);
        s.ingest("n2", web(T0 + RES + 10, 5 * SEC, SEC), T0 + RES + 10);
        s.ingest(
            "n2",
            web(T0 + 2 * RES + 10, 8 * SEC, SEC),
            T0 + 2 * RES + 10,
        );
        let snap = s.publish(T0 + 2 * RES + 10);
        assert_eq!(snap.pod_count(), 1);
        assert_eq!(snap.container_count(), 2);
        assert_eq!(cpu_of(&snap, "default", "web"), Some(vec![200_000_000, 0]));
        // Still right on the next publish (both nodes re-examined), and when n2 drops it.
        let snap = s.publish(T0 + 2 * RES + 20);
        assert_eq!(cpu_of(&snap, "default", "web"), Some(vec![200_000_000, 0]));
        s.ingest("n2", NodeBatch::default(), T0 + 3 * RES);
        let snap = s.publish(T0 + 3 * RES);
        assert_eq!(cpu_of(&snap, "default", "web"), Some(vec![66_666_666, 0]));
    }

    #[test]
    fn snapshot_order_and_namespace_lookup() {
        let s = store();
        let names = [
            ("kube-system", "dns"),
            ("default", "b"),
            ("default", "a"),
            ("zeta", "x"),
        ];
        for (i, node) in ["n3", "n1", "n2"].iter().enumerate() {
            let batch = |ts: i64, cpu: u64| NodeBatch {
                node: Some(node_pt(ts, cpu)),
                pods: names
                    .iter()
                    .map(|(ns, name)| {
                        let name = format!("{name}-{i}");
                        pod(ns, &name, vec![c("c", pt(LONG_AGO, ts, cpu, MIB))])
                    })
                    .collect(),
            };
            s.ingest(node, batch(T0, SEC), T0);
            s.ingest(node, batch(T0 + RES, 2 * SEC), T0 + RES);
        }
        let snap = s.publish(T0 + RES);
        let nodes: Vec<&str> = snap.nodes().iter().map(|n| &*n.name).collect();
        assert_eq!(nodes, ["n1", "n2", "n3"]);
        let all: Vec<(&str, &str)> = snap.pods().map(|p| (p.namespace, p.name)).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 12);
        assert_eq!(
            snap.namespaces().collect::<Vec<_>>(),
            ["default", "kube-system", "zeta"]
        );
        let default: Vec<&str> = snap.pods_in("default").map(|p| p.name).collect();
        assert_eq!(default, ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]);
        assert_eq!(snap.pods_in("default").len(), 6);
        assert_eq!(snap.pods_in("nope").len(), 0);
        assert_eq!(snap.pods_in("").len(), 0);
        assert_eq!(snap.pod("zeta", "x-2").map(|p| p.name), Some("x-2"));
        assert_eq!(snap.pod("zeta", "x-3"), None);
        assert_eq!(snap.pod("default", "x-2"), None);
        assert_eq!(snap.node("n2").map(|n| &*n.name), Some("n2"));
        assert_eq!(snap.node("n4"), None);
        // Iterator helpers: reverse, nth, exact size.
        assert_eq!(snap.pods().next_back().map(|p| p.name), Some("x-2"));
        assert_eq!(snap.pods().nth(11).map(|p| p.name), Some("x-2"));
        assert_eq!(snap.pods().nth(12), None);
        assert_eq!(snap.pods().rev().count(), 12);
        assert_eq!(
            (
                snap.pod_count(),
                snap.container_count(),
                snap.namespace_count()
            ),
            (12, 12, 3)
        );
        assert_eq!(snap.published_at_ms(), T0 + RES);
    }

    #[test]
    fn unused_names_are_pruned_at_publish() {
        let s = store();
        s.ingest("n1", web(T0, SEC, SEC), T0);
        s.publish(T0);
        assert_eq!(s.interner.len(), 3, "default, app, sidecar");
        s.retain_nodes(|_| false);
        s.publish(T0);
        // The previous snapshot held the old entry until this publish replaced it.
        s.publish(T0);
        assert_eq!(s.interner.len(), 0);
    }

    #[test]
    fn replaced_snapshot_held_by_a_reader_is_freed_by_the_publisher() {
        let s = store();
        s.ingest("n1", web(T0, SEC, SEC), T0);
        let first = s.publish(T0);
        // A reader holds `first` across the next publish: the store keeps a reference, so the
        // reader's drop is not the one that frees it.
        let reader = s.snapshot();
        drop(first);
        let second = s.publish(T0 + 1);
        assert_eq!(Arc::strong_count(&reader), 2);
        drop(reader);
        // Not held by anyone when it is replaced: freed by that publish at once.
        let weak = Arc::downgrade(&second);
        drop(second);
        s.publish(T0 + 2);
        assert_eq!(weak.strong_count(), 0);
    }

    /// Several scraper threads ingest while readers load snapshots and a publisher publishes.
    #[test]
    fn concurrent_ingest_publish_and_read() {
        const WRITERS: usize = 4;
        const NODES_PER_WRITER: usize = 25;
        const CYCLES: i64 = 12;
        let s = store();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let mut writers = Vec::new();
            for w in 0..WRITERS {
                let s = &s;
                writers.push(scope.spawn(move || {
                    for cycle in 0..CYCLES {
                        let ts = T0 + cycle * RES;
                        for n in 0..NODES_PER_WRITER {
                            let node = format!("node-{w}-{n}");
                            let cpu = (cycle as u64 + 1) * SEC;
                            let batch = NodeBatch {
                                node: Some(node_pt(ts, cpu)),
                                pods: (0..10)
                                    .map(|p| {
                                        let ns = format!("ns-{}", p % 3);
                                        let name = format!("pod-{w}-{n}-{p}");
                                        pod(
                                            &ns,
                                            &name,
                                            vec![
                                                c("a", pt(LONG_AGO, ts, cpu, MIB)),
                                                c("b", pt(LONG_AGO, ts, cpu / 2, MIB)),
                                            ],
                                        )
                                    })
                                    .collect(),
                            };
                            s.ingest(&node, batch, ts);
                        }
                    }
                }));
            }
            let publisher = scope.spawn(|| {
                let mut published = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    s.publish(T0 + RES);
                    published += 1;
                    std::thread::yield_now();
                }
                published
            });
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let mut checked = 0;
                        loop {
                            let finished = done.load(std::sync::atomic::Ordering::Relaxed);
                            let snap = s.snapshot();
                            let pods: Vec<PodUsage<'_>> = snap.pods().collect();
                            assert_eq!(pods.len(), snap.pod_count());
                            assert!(pods.windows(2).all(|w| {
                                (&w[0].namespace, &w[0].name) < (&w[1].namespace, &w[1].name)
                            }));
                            assert!(pods.iter().all(|p| p.containers.len() == 2));
                            let by_ns: usize =
                                snap.namespaces().map(|ns| snap.pods_in(ns).len()).sum();
                            assert_eq!(by_ns, pods.len());
                            assert_eq!(snap.container_count(), 2 * pods.len());
                            assert!(snap.nodes().windows(2).all(|w| w[0].name < w[1].name));
                            checked += 1;
                            if finished {
                                break checked;
                            }
                            std::thread::yield_now();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            publisher.join().unwrap();
            for r in readers {
                assert!(r.join().unwrap() > 0);
            }
        });
        let snap = s.publish(T0 + CYCLES * RES);
        assert_eq!(snap.node_count(), WRITERS * NODES_PER_WRITER);
        assert_eq!(snap.pod_count(), WRITERS * NODES_PER_WRITER * 10);
        assert_eq!(snap.namespace_count(), 3);
        // Constant rates: a = 1 cpu-s per resolution, b half of it.
        for p in snap.pods() {
            assert_eq!(p.containers[0].usage.cpu_nanocores, 66_666_666);
            assert_eq!(p.containers[1].usage.cpu_nanocores, 33_333_333);
        }
    }

    /// A pod's usage, owned.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Owned {
        namespace: String,
        name: String,
        timestamp_ms: i64,
        window_ms: i64,
        containers: Vec<ContainerUsage>,
    }

    impl From<PodUsage<'_>> for Owned {
        fn from(p: PodUsage<'_>) -> Self {
            Owned {
                namespace: p.namespace.into(),
                name: p.name.into(),
                timestamp_ms: p.timestamp_ms,
                window_ms: p.window_ms,
                containers: p.containers.to_vec(),
            }
        }
    }

    /// The expected snapshot content, computed naively from the store's entries.
    fn model(s: &Store) -> (Vec<NodeUsage>, Vec<Owned>) {
        let mut entries: Vec<Arc<NodeEntry>> =
            s.entries.iter().map(|e| Arc::clone(e.value())).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let nodes = entries.iter().filter_map(|e| e.usage.clone()).collect();
        let mut pods: BTreeMap<(String, String), Owned> = BTreeMap::new();
        for e in &entries {
            for (i, _) in e.pods.iter().enumerate().filter(|(_, p)| p.published) {
                let p = Owned::from(e.pod_usage(i).unwrap());
                let key = (p.namespace.clone(), p.name.clone());
                match pods.get(&key) {
                    // Keep the latest timestamp; on a tie the node seen first (name order).
                    Some(have) if have.timestamp_ms >= p.timestamp_ms => {}
                    _ => {
                        pods.insert(key, p);
                    }
                }
            }
        }
        (nodes, pods.into_values().collect())
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Scrape node `node`: pods as (namespace, name, container count, restarted).
        Ingest(u8, Vec<(u8, u8, u8, bool)>),
        Fail(u8),
        Delete(u8),
        Publish,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..6, prop::collection::vec((0u8..3, 0u8..8, 1u8..3, prop::bool::weighted(0.15)), 0..10))
                .prop_map(|(n, pods)| Op::Ingest(n, pods)),
            1 => (0u8..6).prop_map(Op::Fail),
            1 => (0u8..6).prop_map(Op::Delete),
            3 => Just(Op::Publish),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Incremental publishing (carrying pods over by index) always yields exactly what a
        /// naive rebuild from the entries gives: nodes, pods (deduplicated), lookups, counts.
        #[test]
        fn incremental_publish_matches_naive_model(ops in prop::collection::vec(op(), 1..60)) {
            let s = store();
            for (step, op) in ops.into_iter().enumerate() {
                // Two steps per resolution: timestamps tie across nodes and repeat per node.
                let ts = T0 + (step as i64 / 2) * RES;
                match op {
                    Op::Ingest(n, pods) => {
                        let batch = NodeBatch {
                            node: Some(node_pt(ts, ts.unsigned_abs())),
                            pods: pods.iter().map(|&(ns, name, containers, restarted)| {
                                let start = if restarted { ts - 60_000 } else { LONG_AGO };
                                let cs = (0..containers)
                                    .map(|i| c(&format!("c{i}"), pt(start, ts, ts.unsigned_abs() * u64::from(name + 1), MIB)))
                                    .collect();
                                pod(&format!("ns{ns}"), &format!("p{name}"), cs)
                            }).collect(),
                        };
                        s.ingest(&format!("n{n}"), batch, ts);
                    }
                    Op::Fail(n) => s.mark_failed(&format!("n{n}"), ts),
                    Op::Delete(n) => s.retain_nodes(|name| name != format!("n{n}")),
                    Op::Publish => {
                        let snap = s.publish(ts);
                        let (nodes, pods) = model(&s);
                        prop_assert_eq!(snap.nodes(), &nodes[..]);
                        let got: Vec<Owned> = snap.pods().map(Owned::from).collect();
                        prop_assert_eq!(&got, &pods);
                        prop_assert_eq!(snap.pod_count(), pods.len());
                        prop_assert_eq!(
                            snap.container_count(),
                            pods.iter().map(|p| p.containers.len()).sum::<usize>()
                        );
                        for ns in 0..3 {
                            let ns = format!("ns{ns}");
                            let want: Vec<Owned> = pods.iter().filter(|p| p.namespace == ns).cloned().collect();
                            let have: Vec<Owned> = snap.pods_in(&ns).map(Owned::from).collect();
                            prop_assert_eq!(have, want);
                            for name in 0..8 {
                                let name = format!("p{name}");
                                let want = pods.iter().find(|p| *p.namespace == *ns && *p.name == *name);
                                let have = snap.pod(&ns, &name).map(Owned::from);
                                prop_assert_eq!(have.as_ref(), want);
                            }
                        }
                        // And the same as building from nothing.
                        let entries = s.entries.iter().map(|e| Arc::clone(e.value())).collect();
                        let scratch = Snapshot::build(&Snapshot::empty(0), entries, ts);
                        let again: Vec<Owned> = scratch.pods().map(Owned::from).collect();
                        prop_assert_eq!(&again, &pods);
                    }
                }
            }
        }
    }
}
