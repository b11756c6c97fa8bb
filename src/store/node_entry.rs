//! One node's state in the store: the last reading of the node and of each container, and the
//! usages computed from them when the node's scrape landed.
//!
//! An entry is immutable once built. Each scrape builds a new entry from the previous one and the
//! new [`NodeBatch`] (a merge of two lists sorted by (namespace, name)), so the rates are
//! computed exactly once and readers holding the previous entry are never disturbed.
//!
//! "Keep the last two points" is stored as the last reading plus the rate and window computed
//! against the previous one: that is all the read path and the next scrape need, and it halves
//! the per-container state.
//!
//! Layout: three flat arrays per node (pods, containers, container tracks) instead of one
//! allocation per pod, so a scrape allocates a handful of blocks per node and freeing an old
//! entry is as cheap.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crate::store::{
    batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints},
    intern::Interner,
    rate::{Prior, Rate, Reading, Step, fresh_due_ms, step},
    usage::{ContainerUsage, NodeUsage, PodUsage, Usage},
};

/// What a merge needs from the store.
#[derive(Debug)]
pub(crate) struct MergeContext<'a> {
    /// Upper bound (exclusive) of the fresh-container rule: the metric resolution in ms.
    pub(crate) fresh_limit_ms: i64,
    /// Shared namespace and container names.
    pub(crate) interner: &'a Interner,
    /// Source of layout ids (starts at 1; 0 is never handed out).
    pub(crate) layout_ids: &'a AtomicU64,
}

impl MergeContext<'_> {
    pub(super) fn next_layout_id(&self) -> u64 {
        self.layout_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// The last reading of one series and the window of its usage (0: no usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Track {
    pub(super) reading: Reading,
    pub(super) window_ms: i64,
    /// See [`Prior::first_run`].
    pub(super) first_run: bool,
}

impl Track {
    fn new(point: &MetricsPoint, rate: Option<Rate>, first_run: bool) -> Self {
        Track {
            reading: Reading::of(point),
            window_ms: rate.map_or(0, |r| r.window_ms),
            first_run,
        }
    }

    fn prior(&self) -> Prior {
        Prior {
            reading: self.reading,
            first_run: self.first_run,
        }
    }

    pub(super) fn has_usage(&self) -> bool {
        self.window_ms > 0
    }

    /// The same base, without usage for this scrape.
    fn held(self) -> Self {
        Track {
            window_ms: 0,
            ..self
        }
    }
}

/// A usage is servable only with a real working set: metrics-server drops a container whose
/// working set is 0 (`checkContainerMetrics`), and a memory HPA would scale down on it. The CPU
/// reading stays the base of the next rate.
fn servable(point: &MetricsPoint, rate: Option<Rate>) -> Option<Rate> {
    rate.filter(|_| point.memory_bytes > 0)
}

/// What a series' new reading becomes: its track and usage rate (`Keep` handled by callers).
fn advance(
    last: Option<&Track>,
    point: &MetricsPoint,
    fresh_limit_ms: i64,
) -> Option<(Track, Option<Rate>)> {
    match step(last.map(Track::prior).as_ref(), point, fresh_limit_ms) {
        Step::Keep => None,
        Step::Hold => last.map(|t| (t.held(), None)),
        Step::Advance { rate, first_run } => {
            let rate = servable(point, rate);
            Some((Track::new(point, rate, first_run), rate))
        }
    }
}

fn usage_of(point: &MetricsPoint, rate: Option<Rate>) -> Usage {
    Usage {
        cpu_nanocores: rate.map_or(0, |r| r.cpu_nanocores),
        memory_bytes: point.memory_bytes,
    }
}

/// One pod of a node. Its containers are `containers[first..first + len]` of its [`NodeEntry`].
///
/// The name lives in the node's name arena rather than in its own `Arc<str>`: dropping a
/// generation of entries then frees a few blocks per node instead of touching 150,000 scattered
/// reference counts (the dominant cost of a publish before), and it saves ~40 bytes per pod.
#[derive(Debug)]
pub(crate) struct PodEntry {
    /// Pod namespace (interned).
    pub(crate) namespace: Arc<str>,
    /// Pod name: `names[name_start..name_start + name_len]` of its [`NodeEntry`].
    pub(super) name_start: u32,
    pub(super) name_len: u32,
    /// Timestamp of the container with the earliest timestamp.
    pub(super) timestamp_ms: i64,
    /// Window of that container (0 when it has no usage).
    pub(super) window_ms: i64,
    pub(super) first: u32,
    pub(super) len: u32,
    /// Every container has a usage: the pod can be served.
    pub(crate) published: bool,
}

impl PodEntry {
    /// Timestamp of the container with the earliest timestamp.
    pub(crate) fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// Number of containers.
    pub(crate) fn container_count(&self) -> usize {
        self.len as usize
    }

    pub(super) fn range(&self) -> std::ops::Range<usize> {
        let first = self.first as usize;
        first..first + self.len as usize
    }
}

fn pod_key(pod: &PodPoints) -> (&str, &str) {
    (&pod.namespace, &pod.name)
}

/// One node's state after its latest successful scrape.
#[derive(Debug)]
pub(crate) struct NodeEntry {
    /// Node name (also the store's map key).
    pub(crate) name: Arc<str>,
    /// When the last successful scrape landed (the store's clock, ms since the epoch).
    pub(crate) last_success_ms: i64,
    /// Identifies the list of pod keys and their `published` flags: equal ids mean equal lists,
    /// so a snapshot can carry a node's pods over by index without looking at them.
    pub(crate) layout_id: u64,
    pub(super) node_track: Option<Track>,
    /// Working set of the node's last reading (0 before one).
    pub(super) node_memory_bytes: u64,
    /// The node's usage, when it has two good readings.
    pub(crate) usage: Option<NodeUsage>,
    /// Pods sorted by (namespace, name), unique.
    pub(crate) pods: Vec<PodEntry>,
    /// Pod names, one after the other.
    pub(super) names: String,
    /// Containers, pod after pod, each pod's sorted by name.
    pub(super) containers: Vec<ContainerUsage>,
    /// Container tracks, parallel to `containers`.
    pub(super) tracks: Vec<Track>,
    /// Containers of published pods.
    pub(crate) published_containers: usize,
    /// Containers with a usage (metrics-server's `storage_points{type="container"}`).
    pub(crate) container_points: usize,
    /// The earliest time (ms since the epoch) at which a container of this node that has no
    /// usage yet becomes old enough for its first rate: a scrape then serves it within one
    /// resolution of its start (see `rate::fresh_due_ms`).
    pub(crate) fresh_due_ms: Option<i64>,
}

impl NodeEntry {
    /// The entry after a successful scrape of `node` that returned `batch` at `now_ms`.
    ///
    /// Pods and containers missing from `batch` are dropped (they are gone); the node's own
    /// reading, if missing, leaves the node without usage but keeps its last reading.
    pub(crate) fn merge(
        prev: Option<&NodeEntry>,
        node: &str,
        batch: &NodeBatch,
        now_ms: i64,
        ctx: &MergeContext<'_>,
    ) -> NodeEntry {
        let name = prev.map_or_else(|| Arc::from(node), |p| Arc::clone(&p.name));
        let (node_track, usage) = merge_node(prev, &name, batch.node.as_ref());

        let batch_pods = sorted_unique(&batch.pods, pod_key);
        let old_pods = prev.map_or(&[][..], |p| &p.pods[..]);
        // Exact in practice: the batch's containers, before the (rare) de-duplication.
        let capacity = batch.pods.iter().map(|p| p.containers.len()).sum();
        let mut next = NodeEntry {
            name,
            last_success_ms: now_ms,
            layout_id: 0,
            node_track,
            node_memory_bytes: batch.node.map_or_else(
                || prev.map_or(0, |p| p.node_memory_bytes),
                |p| p.memory_bytes,
            ),
            usage,
            pods: Vec::with_capacity(batch_pods.len()),
            names: String::with_capacity(batch_pods.iter().map(|p| p.name.len()).sum()),
            containers: Vec::with_capacity(capacity),
            tracks: Vec::with_capacity(capacity),
            published_containers: 0,
            container_points: 0,
            fresh_due_ms: None,
        };
        let mut same_layout = prev.is_some();
        let mut old_index = 0;
        let mut scratch: Vec<&ContainerPoint> = Vec::new();

        for pod in batch_pods {
            scratch.clear();
            sorted_unique_into(&pod.containers, |c| c.name.as_str(), &mut scratch);
            if scratch.is_empty() {
                continue;
            }
            let key = pod_key(pod);
            while let (Some(prev), Some(old)) = (prev, old_pods.get(old_index))
                && prev.key(old) < key
            {
                old_index += 1;
                same_layout = false;
            }
            let old = match (prev, old_pods.get(old_index)) {
                (Some(prev), Some(old)) if prev.key(old) == key => {
                    old_index += 1;
                    Some((prev, old))
                }
                _ => {
                    same_layout = false;
                    None
                }
            };
            let Some(published) = next.push_pod(pod, &scratch, old, ctx) else {
                same_layout = false;
                continue;
            };
            if old.is_some_and(|(_, old)| old.published != published) {
                same_layout = false;
            }
        }
        if old_index < old_pods.len() {
            same_layout = false;
        }

        next.published_containers = next
            .pods
            .iter()
            .filter(|p| p.published)
            .map(|p| p.len as usize)
            .sum();
        next.container_points = next.tracks.iter().filter(|t| t.has_usage()).count();
        next.layout_id = match prev {
            Some(prev) if same_layout => prev.layout_id,
            _ => ctx.next_layout_id(),
        };
        next
    }

    /// A pod's name.
    pub(crate) fn name(&self, pod: &PodEntry) -> &str {
        let start = pod.name_start as usize;
        self.names
            .get(start..start + pod.name_len as usize)
            .unwrap_or_default()
    }

    /// A pod's (namespace, name).
    pub(crate) fn key<'a>(&'a self, pod: &'a PodEntry) -> (&'a str, &'a str) {
        (&pod.namespace, self.name(pod))
    }

    /// The servable view of pod `index`.
    pub(crate) fn pod_usage(&self, index: usize) -> Option<PodUsage<'_>> {
        let pod = self.pods.get(index)?;
        Some(PodUsage {
            namespace: &pod.namespace,
            name: self.name(pod),
            timestamp_ms: pod.timestamp_ms,
            window_ms: pod.window_ms,
            containers: self.containers.get(pod.range()).unwrap_or(&[]),
        })
    }

    /// Number of pods that can be served.
    #[cfg(test)]
    pub(crate) fn published_pods(&self) -> usize {
        self.pods.iter().filter(|p| p.published).count()
    }

    /// Appends one pod of the batch, merged with its previous state; returns whether it can be
    /// served, or `None` if it was skipped (more containers than the layout can index).
    fn push_pod(
        &mut self,
        pod: &PodPoints,
        containers: &[&ContainerPoint],
        old: Option<(&NodeEntry, &PodEntry)>,
        ctx: &MergeContext<'_>,
    ) -> Option<bool> {
        let first = u32::try_from(self.containers.len()).ok()?;
        let len = u32::try_from(containers.len()).ok()?;
        first.checked_add(len)?;
        let name_start = u32::try_from(self.names.len()).ok()?;
        let name_len = u32::try_from(pod.name.len()).ok()?;
        name_start.checked_add(name_len)?;
        let (old_containers, old_tracks) = old.map_or((&[][..], &[][..]), |(entry, pod)| {
            (
                entry.containers.get(pod.range()).unwrap_or(&[]),
                entry.tracks.get(pod.range()).unwrap_or(&[]),
            )
        });
        let mut old_index = 0;
        for container in containers {
            while let Some(old) = old_containers.get(old_index)
                && *old.name < *container.name
            {
                old_index += 1;
            }
            let matched = match (old_containers.get(old_index), old_tracks.get(old_index)) {
                (Some(old), Some(track)) if *old.name == *container.name => {
                    old_index += 1;
                    Some((old, track))
                }
                _ => None,
            };
            let point = &container.point;
            let (usage, track) = match matched {
                Some((old, track)) => match advance(Some(track), point, ctx.fresh_limit_ms) {
                    None => (old.clone(), *track),
                    Some((next, rate)) => (
                        ContainerUsage {
                            name: Arc::clone(&old.name),
                            usage: usage_of(point, rate),
                        },
                        next,
                    ),
                },
                None => {
                    let (track, rate) = advance(None, point, ctx.fresh_limit_ms)
                        .unwrap_or((Track::new(point, None, true), None));
                    (
                        ContainerUsage {
                            name: ctx.interner.intern(&container.name),
                            usage: usage_of(point, rate),
                        },
                        track,
                    )
                }
            };
            if !track.has_usage() && track.first_run {
                let due = fresh_due_ms(point, ctx.fresh_limit_ms);
                self.fresh_due_ms = match (self.fresh_due_ms, due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            self.containers.push(usage);
            self.tracks.push(track);
        }

        let pod_tracks = self.tracks.get(first as usize..).unwrap_or(&[]);
        let published = pod_tracks.iter().all(Track::has_usage);
        // Timestamp and window of the container with the earliest timestamp (metrics-server).
        let earliest = pod_tracks.iter().min_by_key(|t| t.reading.timestamp_ms);
        let namespace = match old {
            Some((_, old)) => Arc::clone(&old.namespace),
            None => ctx.interner.intern(&pod.namespace),
        };
        self.names.push_str(&pod.name);
        self.pods.push(PodEntry {
            namespace,
            name_start,
            name_len,
            timestamp_ms: earliest.map_or(0, |t| t.reading.timestamp_ms),
            window_ms: earliest.map_or(0, |t| t.window_ms),
            first,
            len,
            published,
        });
        Some(published)
    }
}

fn merge_node(
    prev: Option<&NodeEntry>,
    name: &Arc<str>,
    point: Option<&MetricsPoint>,
) -> (Option<Track>, Option<NodeUsage>) {
    let prev_track = prev.and_then(|p| p.node_track);
    let Some(point) = point else {
        return (prev_track, None);
    };
    // Nodes have no start time: no fresh rule (limit 0); a reboot shows as a counter decrease.
    // A 0 CPU counter or working set is no reading (metrics-server drops such a node point).
    match advance(prev_track.as_ref(), point, 0) {
        None => (prev_track, prev.and_then(|p| p.usage.clone())),
        Some((track, rate)) => (
            Some(track),
            rate.map(|r| NodeUsage {
                name: Arc::clone(name),
                timestamp_ms: point.timestamp_ms,
                window_ms: r.window_ms,
                usage: usage_of(point, Some(r)),
            }),
        ),
    }
}

/// `items` in strictly increasing `key` order, first occurrence kept. The batch contract already
/// promises sorted input; this only costs a scan unless a producer breaks it.
fn sorted_unique<'a, T, K: Ord + 'a>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<&'a T> {
    let mut out = Vec::with_capacity(items.len());
    sorted_unique_into(items, key, &mut out);
    out
}

fn sorted_unique_into<'a, T, K: Ord + 'a>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
    out: &mut Vec<&'a T>,
) {
    let start = out.len();
    out.extend(items.iter());
    let slice = &mut out[start..];
    if !slice.windows(2).all(|w| key(w[0]) < key(w[1])) {
        slice.sort_by_key(|item| key(item));
        let mut unique = start;
        for i in start..out.len() {
            if i == start || key(out[i]) != key(out[unique - 1]) {
                out[unique] = out[i];
                unique += 1;
            }
        }
        out.truncate(unique);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const RES: i64 = 15_000;

    fn point(ts: i64, cpu: u64) -> MetricsPoint {
        MetricsPoint {
            start_time_ms: T0 - 3_600_000,
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu,
            memory_bytes: 1 << 20,
        }
    }

    fn pod(ns: &str, name: &str, containers: &[&str], ts: i64, cpu: u64) -> PodPoints {
        PodPoints {
            namespace: ns.into(),
            name: name.into(),
            containers: containers
                .iter()
                .map(|c| ContainerPoint {
                    name: (*c).into(),
                    point: point(ts, cpu),
                })
                .collect(),
        }
    }

    struct Ctx {
        interner: Interner,
        ids: AtomicU64,
    }

    impl Ctx {
        fn new() -> Self {
            Ctx {
                interner: Interner::default(),
                ids: AtomicU64::new(1),
            }
        }
        fn merge(&self, prev: Option<&NodeEntry>, batch: &NodeBatch) -> NodeEntry {
            let ctx = MergeContext {
                fresh_limit_ms: RES,
                interner: &self.interner,
                layout_ids: &self.ids,
            };
            NodeEntry::merge(prev, "n1", batch, 0, &ctx)
        }
    }

    fn batch(ts: i64, cpu: u64, pods: &[(&str, &str)]) -> NodeBatch {
        NodeBatch {
            node: Some(point(ts, cpu)),
            pods: pods
                .iter()
                .map(|(ns, name)| pod(ns, name, &["app", "sidecar"], ts, cpu))
                .collect(),
        }
    }

    #[test]
    fn layout_id_follows_pod_keys_and_published_flags() {
        let ctx = Ctx::new();
        let pods = [("a", "p1"), ("b", "p2")];
        let e1 = ctx.merge(None, &batch(T0, 1, &pods));
        assert_eq!(e1.published_pods(), 0);
        // Same keys, but every pod becomes published: layout changes.
        let e2 = ctx.merge(Some(&e1), &batch(T0 + RES, 1_000, &pods));
        assert_eq!(e2.published_pods(), 2);
        assert_ne!(e2.layout_id, e1.layout_id);
        // Only values change: layout kept.
        let e3 = ctx.merge(Some(&e2), &batch(T0 + 2 * RES, 2_000, &pods));
        assert_eq!(e3.layout_id, e2.layout_id);
        // A pod goes away: layout changes.
        let e4 = ctx.merge(Some(&e3), &batch(T0 + 3 * RES, 3_000, &pods[..1]));
        assert_ne!(e4.layout_id, e3.layout_id);
        assert_eq!(e4.pods.len(), 1);
        // A pod is added: layout changes (and the new pod is not published yet).
        let e5 = ctx.merge(Some(&e4), &batch(T0 + 4 * RES, 4_000, &pods));
        assert_ne!(e5.layout_id, e4.layout_id);
        assert_eq!(e5.published_pods(), 1);
    }

    /// §4: a container first seen in its first 10 s makes the node due a follow-up scrape at
    /// start + 10 s; that scrape serves it with a rate over its whole life.
    #[test]
    fn young_container_is_due_a_follow_up_scrape() {
        let ctx = Ctx::new();
        let young = |ts: i64, cpu: u64| NodeBatch {
            node: Some(point(ts, 1 << 40)),
            pods: vec![PodPoints {
                namespace: "a".into(),
                name: "new".into(),
                containers: vec![ContainerPoint {
                    name: "app".into(),
                    point: MetricsPoint {
                        start_time_ms: T0 - 3_000,
                        timestamp_ms: ts,
                        cumulative_cpu_ns: cpu,
                        memory_bytes: 1 << 20,
                    },
                }],
            }],
        };
        let e1 = ctx.merge(None, &young(T0, 300_000_000));
        assert_eq!(e1.fresh_due_ms, Some(T0 + 7_000));
        assert_eq!(e1.published_pods(), 0);
        let e2 = ctx.merge(Some(&e1), &young(T0 + 7_100, 1_010_000_000));
        assert_eq!(e2.fresh_due_ms, None);
        let pod = e2.pod_usage(0).unwrap();
        assert_eq!((pod.window_ms, pod.timestamp_ms), (10_100, T0 + 7_100));
        assert_eq!(pod.containers[0].usage.cpu_nanocores, 100_000_000);
        // Old containers are never due one.
        let e = ctx.merge(None, &batch(T0, 1, &[("a", "old")]));
        assert_eq!(e.fresh_due_ms, None);
    }

    #[test]
    fn names_are_reused_and_interned() {
        let ctx = Ctx::new();
        let pods = [("a", "p1"), ("a", "p2")];
        let e1 = ctx.merge(None, &batch(T0, 0, &pods));
        assert!(Arc::ptr_eq(&e1.pods[0].namespace, &e1.pods[1].namespace));
        assert!(Arc::ptr_eq(&e1.containers[0].name, &e1.containers[2].name));
        let e2 = ctx.merge(Some(&e1), &batch(T0 + RES, 1, &pods));
        assert!(Arc::ptr_eq(&e1.name, &e2.name));
        assert!(Arc::ptr_eq(&e1.containers[3].name, &e2.containers[3].name));
    }

    #[test]
    fn unsorted_and_duplicate_input_is_normalised() {
        let ctx = Ctx::new();
        let mut b = batch(T0, 0, &[("b", "p"), ("a", "p"), ("b", "p"), ("a", "o")]);
        b.pods[1].containers.reverse();
        let dup = b.pods[1].containers[0].clone();
        b.pods[1].containers.push(dup);
        b.pods.push(pod("c", "empty", &[], T0, 0));
        let e = ctx.merge(None, &b);
        let keys: Vec<_> = e.pods.iter().map(|p| e.key(p)).collect();
        assert_eq!(keys, [("a", "o"), ("a", "p"), ("b", "p")]);
        let pod = e.pod_usage(1).unwrap();
        let names: Vec<&str> = pod.containers.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["app", "sidecar"]);
        assert_eq!(e.tracks.len(), 6);
    }

    #[test]
    fn counts_points_and_published_containers() {
        let ctx = Ctx::new();
        let pods = [("a", "p1"), ("a", "p2")];
        let e1 = ctx.merge(None, &batch(T0, 1, &pods));
        assert_eq!((e1.container_points, e1.published_containers), (0, 0));
        let mut b = batch(T0 + RES, 10, &pods);
        b.pods[1].containers[0].point.cumulative_cpu_ns = 1; // no increase: idle, usage 0
        b.pods[1].containers[1].point.start_time_ms = T0 + 1; // restart after T0: no usage
        let e2 = ctx.merge(Some(&e1), &b);
        assert_eq!(e2.container_points, 3);
        assert_eq!(e2.published_containers, 2);
        assert!(e2.usage.is_some());
        // A 0 working set: that container has no servable usage this scrape, nor its pod.
        let mut b = batch(T0 + 2 * RES, 20, &pods);
        b.pods[0].containers[1].point.memory_bytes = 0;
        b.pods[1].containers[1].point.start_time_ms = T0 + 1;
        let e3 = ctx.merge(Some(&e2), &b);
        assert_eq!(
            e3.published_pods(),
            1,
            "p1 has a 0 working set; p2's new run is rated"
        );
        assert_eq!(e3.container_points, 3);
        // Next scrape: p1 served again at once (its CPU base was kept).
        let e4 = ctx.merge(Some(&e3), &batch(T0 + 3 * RES, 30, &pods));
        assert_eq!(e4.published_pods(), 2);
    }
}
