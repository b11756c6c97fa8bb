//! A node's computed state out of one store and into another (the peer exchange of
//! `docs/ha.md` §3): the owner of a node hands its replicas what its own merge already
//! produced — the last reading of every series *and* the usage computed from it — in flat
//! arrays, so the receiver builds its entry with a handful of allocations and no rate maths,
//! instead of re-decoding and re-merging a kubelet batch.
//!
//! A state from a peer is checked before it is taken: pods strictly sorted by (namespace, name),
//! containers of each pod strictly sorted by name, every index and length in range. The merge of
//! a later scrape relies on that order.

use std::sync::Arc;

use crate::store::{
    batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints},
    node_entry::{MergeContext, NodeEntry, PodEntry, Track},
    rate::Reading,
    usage::{ContainerUsage, NodeUsage, Usage},
};

/// Longest pod, namespace or container name a state may carry (a DNS subdomain).
pub const MAX_NAME: usize = 253;

/// One series (the node, or a container): its last reading and the usage computed from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesState {
    /// Start time of the series (ms since the epoch; 0 for nodes).
    pub start_time_ms: i64,
    /// Timestamp of the last CPU sample (ms since the epoch).
    pub timestamp_ms: i64,
    /// Cumulative CPU of the last sample (nanocore-seconds): the base of the next rate.
    pub cumulative_cpu_ns: u64,
    /// Window of the usage (ms); 0 when the series has no usage.
    pub window_ms: i64,
    /// No earlier run of the series was seen (the fresh-container rule may still apply).
    pub first_run: bool,
    /// The usage served for it (CPU 0 when it has none).
    pub usage: Usage,
}

/// One pod of a [`NodeState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodState {
    /// Index into [`NodeState::namespaces`].
    pub namespace: u32,
    /// Length in bytes of its name, the next one in [`NodeState::names`].
    pub name_len: u32,
    /// Number of its containers, the next ones in [`NodeState::containers`] (at least 1).
    pub containers: u32,
}

/// One container of a [`NodeState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerState {
    /// Index into [`NodeState::container_names`].
    pub name: u32,
    /// Its series.
    pub series: SeriesState,
}

/// Everything a store holds for one node, in flat arrays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The node's own series, once it had a reading.
    pub node: Option<SeriesState>,
    /// Whether the node's usage is served (its series can have a window while the latest scrape
    /// had no node reading).
    pub node_served: bool,
    /// The distinct namespaces of its pods.
    pub namespaces: Vec<String>,
    /// The distinct names of its containers.
    pub container_names: Vec<String>,
    /// Pod names, one after the other, in pod order.
    pub names: String,
    /// Pods, sorted by (namespace, name).
    pub pods: Vec<PodState>,
    /// Containers, pod after pod, each pod's sorted by name.
    pub containers: Vec<ContainerState>,
}

/// Why a [`NodeState`] was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid node state: {0}")]
pub struct StateError(pub &'static str);

impl NodeState {
    /// Every series has a usage (the node's is served).
    pub fn fully_rated(&self) -> bool {
        (self.node.is_none() || self.node_served)
            && self.containers.iter().all(|c| c.series.window_ms > 0)
    }

    /// The last readings as a kubelet batch (call only on a state that passed [`check`]).
    fn to_batch(&self) -> NodeBatch {
        let point = |s: &SeriesState| MetricsPoint {
            start_time_ms: s.start_time_ms,
            timestamp_ms: s.timestamp_ms,
            cumulative_cpu_ns: s.cumulative_cpu_ns,
            memory_bytes: s.usage.memory_bytes,
        };
        let name = |table: &[String], i: u32| table.get(i as usize).cloned().unwrap_or_default();
        let (mut at, mut first) = (0usize, 0usize);
        let pods = self
            .pods
            .iter()
            .map(|p| {
                let len = p.name_len as usize;
                let n = p.containers as usize;
                let pod = PodPoints {
                    namespace: name(&self.namespaces, p.namespace),
                    name: self.names.get(at..at + len).unwrap_or_default().to_string(),
                    containers: self
                        .containers
                        .get(first..first + n)
                        .unwrap_or(&[])
                        .iter()
                        .map(|c| ContainerPoint {
                            name: name(&self.container_names, c.name),
                            point: point(&c.series),
                        })
                        .collect(),
                };
                at += len;
                first += n;
                pod
            })
            .collect();
        NodeBatch {
            node: self.node.as_ref().map(point),
            pods,
        }
    }

    /// The newest sample timestamp of any series (0 for an empty state).
    pub fn newest_ms(&self) -> i64 {
        self.containers
            .iter()
            .map(|c| c.series.timestamp_ms)
            .chain(self.node.map(|n| n.timestamp_ms))
            .max()
            .unwrap_or(0)
    }
}

fn series(track: &Track, usage: Usage) -> SeriesState {
    SeriesState {
        start_time_ms: track.reading.start_time_ms,
        timestamp_ms: track.reading.timestamp_ms,
        cumulative_cpu_ns: track.reading.cumulative_cpu_ns,
        window_ms: track.window_ms,
        first_run: track.first_run,
        usage,
    }
}

fn track(s: &SeriesState) -> Track {
    Track {
        reading: Reading {
            start_time_ms: s.start_time_ms,
            timestamp_ms: s.timestamp_ms,
            cumulative_cpu_ns: s.cumulative_cpu_ns,
        },
        window_ms: s.window_ms.max(0),
        first_run: s.first_run,
    }
}

/// Index of `name` in `table`, appended when new (tables hold a handful of names per node).
fn index_of(table: &mut Vec<String>, name: &str) -> u32 {
    let i = match table.iter().position(|t| t == name) {
        Some(i) => i,
        None => {
            table.push(name.to_string());
            table.len() - 1
        }
    };
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl NodeEntry {
    /// This entry as a [`NodeState`].
    pub(crate) fn export(&self) -> NodeState {
        let mut state = NodeState {
            node: self.node_track.as_ref().map(|t| {
                series(
                    t,
                    Usage {
                        cpu_nanocores: self.usage.as_ref().map_or(0, |u| u.usage.cpu_nanocores),
                        memory_bytes: self.node_memory_bytes,
                    },
                )
            }),
            node_served: self.usage.is_some(),
            namespaces: Vec::new(),
            container_names: Vec::new(),
            names: self.names.clone(),
            pods: Vec::with_capacity(self.pods.len()),
            containers: Vec::with_capacity(self.containers.len()),
        };
        for pod in &self.pods {
            state.pods.push(PodState {
                namespace: index_of(&mut state.namespaces, &pod.namespace),
                name_len: pod.name_len,
                containers: pod.len,
            });
        }
        for (c, t) in self.containers.iter().zip(&self.tracks) {
            state.containers.push(ContainerState {
                name: index_of(&mut state.container_names, &c.name),
                series: series(t, c.usage),
            });
        }
        state
    }

    /// The newest sample timestamp of any series.
    pub(crate) fn newest_ms(&self) -> i64 {
        self.tracks
            .iter()
            .map(|t| t.reading.timestamp_ms)
            .chain(self.node_track.map(|t| t.reading.timestamp_ms))
            .max()
            .unwrap_or(0)
    }

    /// The entry another store computed, after checking it: taken as it is (no rate maths)
    /// when every series in it has a usage or this store has nothing before it; otherwise its
    /// readings are merged with `prev` as a scrape's would be, so a series the owner could not
    /// rate yet (an owner that just started, or just took the node over without its history)
    /// still gets the rate this store can compute from its own previous reading. Keeps `prev`'s
    /// layout id when the pod keys and their served flags are the same.
    pub(crate) fn adopt(
        prev: Option<&NodeEntry>,
        node: &str,
        state: &NodeState,
        now_ms: i64,
        ctx: &MergeContext<'_>,
    ) -> Result<NodeEntry, StateError> {
        check(state)?;
        if prev.is_some() && !state.fully_rated() {
            return Ok(NodeEntry::merge(prev, node, &state.to_batch(), now_ms, ctx));
        }
        let name = prev.map_or_else(|| Arc::from(node), |p| Arc::clone(&p.name));
        let namespaces: Vec<Arc<str>> = state
            .namespaces
            .iter()
            .map(|n| ctx.interner.intern(n))
            .collect();
        let container_names: Vec<Arc<str>> = state
            .container_names
            .iter()
            .map(|n| ctx.interner.intern(n))
            .collect();
        let usage = match (&state.node, state.node_served) {
            (Some(s), true) if s.window_ms > 0 => Some(NodeUsage {
                name: Arc::clone(&name),
                timestamp_ms: s.timestamp_ms,
                window_ms: s.window_ms,
                usage: s.usage,
            }),
            _ => None,
        };
        let mut next = NodeEntry {
            name,
            last_success_ms: now_ms,
            layout_id: 0,
            node_track: state.node.as_ref().map(track),
            node_memory_bytes: state.node.map_or(0, |n| n.usage.memory_bytes),
            usage,
            pods: Vec::with_capacity(state.pods.len()),
            names: state.names.clone(),
            containers: Vec::with_capacity(state.containers.len()),
            tracks: Vec::with_capacity(state.containers.len()),
            published_containers: 0,
            container_points: 0,
            fresh_due_ms: None,
        };
        for c in &state.containers {
            // `check` made every index valid.
            let Some(cname) = container_names.get(c.name as usize) else {
                return Err(StateError("container name index"));
            };
            next.containers.push(ContainerUsage {
                name: Arc::clone(cname),
                usage: c.series.usage,
            });
            next.tracks.push(track(&c.series));
        }
        let (mut name_start, mut first) = (0u32, 0u32);
        for pod in &state.pods {
            let Some(namespace) = namespaces.get(pod.namespace as usize) else {
                return Err(StateError("namespace index"));
            };
            let range = first as usize..(first + pod.containers) as usize;
            let tracks = next.tracks.get(range).unwrap_or(&[]);
            let published = tracks.iter().all(Track::has_usage);
            let earliest = tracks.iter().min_by_key(|t| t.reading.timestamp_ms);
            next.pods.push(PodEntry {
                namespace: Arc::clone(namespace),
                name_start,
                name_len: pod.name_len,
                timestamp_ms: earliest.map_or(0, |t| t.reading.timestamp_ms),
                window_ms: earliest.map_or(0, |t| t.window_ms),
                first,
                len: pod.containers,
                published,
            });
            if published {
                next.published_containers += pod.containers as usize;
            }
            name_start += pod.name_len;
            first += pod.containers;
        }
        next.container_points = next.tracks.iter().filter(|t| t.has_usage()).count();
        let same_layout = prev.is_some_and(|p| {
            p.names == next.names
                && p.pods.len() == next.pods.len()
                && p.pods.iter().zip(&next.pods).all(|(a, b)| {
                    a.name_len == b.name_len
                        && a.published == b.published
                        && a.namespace == b.namespace
                })
        });
        next.layout_id = match prev {
            Some(p) if same_layout => p.layout_id,
            _ => ctx.next_layout_id(),
        };
        Ok(next)
    }
}

/// Structure checks: every index and length in range, names valid, pods and containers in the
/// order the store keeps them.
fn check(state: &NodeState) -> Result<(), StateError> {
    let u32_len = |n: usize| u32::try_from(n).map_err(|_| StateError("too many items"));
    u32_len(state.containers.len())?;
    u32_len(state.names.len())?;
    let names_n = u32_len(state.namespaces.len())?;
    let cnames_n = u32_len(state.container_names.len())?;
    if state
        .namespaces
        .iter()
        .chain(&state.container_names)
        .any(|n| n.is_empty() || n.len() > MAX_NAME)
    {
        return Err(StateError("name length"));
    }
    if state.containers.iter().any(|c| c.name >= cnames_n) {
        return Err(StateError("container name index"));
    }
    let (mut name_at, mut first) = (0usize, 0usize);
    let mut last: Option<(&str, &str)> = None;
    for pod in &state.pods {
        if pod.namespace >= names_n {
            return Err(StateError("namespace index"));
        }
        let len = pod.name_len as usize;
        if len == 0 || len > MAX_NAME {
            return Err(StateError("pod name length"));
        }
        let name = state
            .names
            .get(name_at..name_at + len)
            .ok_or(StateError("pod name out of range"))?;
        name_at += len;
        let key = (state.namespaces[pod.namespace as usize].as_str(), name);
        if last.is_some_and(|l| l >= key) {
            return Err(StateError("pods not sorted"));
        }
        last = Some(key);
        let n = pod.containers as usize;
        if n == 0 {
            return Err(StateError("pod without containers"));
        }
        let containers = state
            .containers
            .get(first..first + n)
            .ok_or(StateError("containers out of range"))?;
        first += n;
        let sorted = containers.windows(2).all(|w| {
            state.container_names[w[0].name as usize] < state.container_names[w[1].name as usize]
        });
        if !sorted {
            return Err(StateError("containers not sorted"));
        }
    }
    if name_at != state.names.len() {
        return Err(StateError("pod names left over"));
    }
    if first != state.containers.len() {
        return Err(StateError("containers left over"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::{
        Store, StoreConfig,
        batch::{ContainerPoint, MetricsPoint, NodeBatch, PodPoints},
    };

    const T0: i64 = 1_700_000_000_000;
    const RES: i64 = 15_000;

    fn store() -> Store {
        Store::new(StoreConfig::new(Duration::from_millis(RES as u64)))
    }

    fn point(start: i64, ts: i64, cpu: u64) -> MetricsPoint {
        MetricsPoint {
            start_time_ms: start,
            timestamp_ms: ts,
            cumulative_cpu_ns: cpu,
            memory_bytes: 64 << 20,
        }
    }

    /// Pods p0..p{n} in namespaces a/b, containers app + sidecar; pod 1's sidecar restarted at
    /// `restart` (no usage on the scrape that sees it).
    fn batch(ts: i64, cpu: u64, pods: usize) -> NodeBatch {
        let mut pods: Vec<PodPoints> = (0..pods)
            .map(|i| PodPoints {
                namespace: if i % 2 == 0 { "a" } else { "b" }.into(),
                name: format!("p{i}"),
                containers: ["app", "sidecar"]
                    .iter()
                    .map(|c| ContainerPoint {
                        name: (*c).into(),
                        point: point(T0 - 3_600_000, ts, cpu * (i as u64 + 1)),
                    })
                    .collect(),
            })
            .collect();
        pods.sort_by(|x, y| (&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)));
        NodeBatch {
            node: Some(point(0, ts, cpu * 100)),
            pods,
        }
    }

    fn pods_of(s: &Store, now: i64) -> Vec<String> {
        let snap = s.publish(now);
        snap.pods()
            .map(|p| {
                format!(
                    "{}/{} {:?} {} {}",
                    p.namespace,
                    p.name,
                    p.total(),
                    p.timestamp_ms,
                    p.window_ms
                )
            })
            .collect()
    }

    /// An owner's state taken by another store serves exactly what the owner serves, and the
    /// receiver's next own scrape (the node moved to it) rates against it.
    #[test]
    fn an_adopted_state_serves_what_the_owner_serves_and_rates_continue() {
        let owner = store();
        let other = store();
        owner.ingest("n1", batch(T0, 1_000_000_000, 5), T0);
        let s1 = owner.export("n1").unwrap();
        assert_eq!(other.adopt("n1", &s1, T0 + 10), Ok(true));
        owner.ingest("n1", batch(T0 + RES, 2_000_000_000, 5), T0 + RES);
        let s2 = owner.export("n1").unwrap();
        assert_eq!(other.adopt("n1", &s2, T0 + RES + 10), Ok(true));
        let theirs = pods_of(&owner, T0 + RES + 20);
        assert_eq!(theirs.len(), 5);
        assert_eq!(pods_of(&other, T0 + RES + 20), theirs);
        assert_eq!(
            owner.snapshot().node("n1").map(|n| n.usage),
            other.snapshot().node("n1").map(|n| n.usage)
        );
        assert!(other.snapshot().node("n1").is_some());
        // The node moves to `other`: its own scrape rates against the adopted readings.
        other.ingest("n1", batch(T0 + 2 * RES, 3_000_000_000, 5), T0 + 2 * RES);
        owner.ingest("n1", batch(T0 + 2 * RES, 3_000_000_000, 5), T0 + 2 * RES);
        assert_eq!(
            pods_of(&other, T0 + 2 * RES + 20),
            pods_of(&owner, T0 + 2 * RES + 20)
        );
    }

    /// An owner without history (restarted, or it took the node over with an empty store)
    /// sends readings it could not rate yet: a receiver that has the previous readings rates
    /// them itself, so the pods do not drop out for a tick on every replica.
    #[test]
    fn an_unrated_state_is_rated_against_the_receivers_own_previous_reading() {
        let old_owner = store();
        let other = store();
        old_owner.ingest("n1", batch(T0, 1_000_000_000, 4), T0);
        old_owner.ingest("n1", batch(T0 + RES, 2_000_000_000, 4), T0 + RES);
        assert_eq!(
            other.adopt("n1", &old_owner.export("n1").unwrap(), T0 + RES),
            Ok(true)
        );
        let fresh_owner = store();
        fresh_owner.ingest("n1", batch(T0 + 2 * RES, 3_000_000_000, 4), T0 + 2 * RES);
        let unrated = fresh_owner.export("n1").unwrap();
        assert!(!unrated.fully_rated());
        assert_eq!(pods_of(&fresh_owner, T0 + 2 * RES + 20).len(), 0);
        assert_eq!(other.adopt("n1", &unrated, T0 + 2 * RES), Ok(true));
        old_owner.ingest("n1", batch(T0 + 2 * RES, 3_000_000_000, 4), T0 + 2 * RES);
        let served = pods_of(&other, T0 + 2 * RES + 20);
        assert_eq!(served.len(), 4);
        assert_eq!(served, pods_of(&old_owner, T0 + 2 * RES + 20));
        assert_eq!(
            other.snapshot().node("n1").map(|n| n.usage),
            old_owner.snapshot().node("n1").map(|n| n.usage),
            "the node too (its working set travels with the state)"
        );
    }

    #[test]
    fn an_older_state_is_ignored_and_an_equal_layout_keeps_its_id() {
        let owner = store();
        let other = store();
        owner.ingest("n1", batch(T0, 1_000_000_000, 3), T0);
        let old = owner.export("n1").unwrap();
        owner.ingest("n1", batch(T0 + RES, 2_000_000_000, 3), T0 + RES);
        let new = owner.export("n1").unwrap();
        owner.ingest("n1", batch(T0 + 2 * RES, 3_000_000_000, 3), T0 + 2 * RES);
        let newer = owner.export("n1").unwrap();
        assert_eq!(other.adopt("n1", &new, T0), Ok(true));
        assert_eq!(
            other.adopt("n1", &old, T0),
            Ok(false),
            "older than what is held"
        );
        let id = other.layout_id("n1").unwrap();
        assert_eq!(other.adopt("n1", &newer, T0), Ok(true));
        assert_eq!(other.layout_id("n1").unwrap(), id, "same pods, same flags");
        let fewer = {
            owner.ingest("n1", batch(T0 + 3 * RES, 4_000_000_000, 2), T0 + 3 * RES);
            owner.export("n1").unwrap()
        };
        assert_eq!(other.adopt("n1", &fewer, T0), Ok(true));
        assert_ne!(other.layout_id("n1").unwrap(), id);
    }

    #[test]
    fn malformed_states_change_nothing() {
        let owner = store();
        owner.ingest("n1", batch(T0, 1_000_000_000, 4), T0);
        let good = owner.export("n1").unwrap();
        type Fault = Box<dyn Fn(&mut super::NodeState)>;
        let cases: Vec<(&str, Fault)> = vec![
            ("pods not sorted", Box::new(|s| s.pods.swap(1, 2))),
            (
                "containers not sorted",
                Box::new(|s| s.containers.swap(0, 1)),
            ),
            ("namespace index", Box::new(|s| s.pods[0].namespace = 9)),
            (
                "container name index",
                Box::new(|s| s.containers[0].name = 9),
            ),
            (
                "pod name out of range",
                Box::new(|s| s.pods[3].name_len += 1),
            ),
            ("pod names left over", Box::new(|s| s.names.push('x'))),
            (
                "containers left over",
                Box::new(|s| s.pods[3].containers = 1),
            ),
            (
                "containers out of range",
                Box::new(|s| s.pods[3].containers = 3),
            ),
            (
                "pod without containers",
                Box::new(|s| s.pods[0].containers = 0),
            ),
            ("name length", Box::new(|s| s.namespaces[0] = String::new())),
        ];
        for (why, break_it) in cases {
            let other = store();
            let mut bad = good.clone();
            break_it(&mut bad);
            assert_eq!(
                other.adopt("n1", &bad, T0),
                Err(super::StateError(why)),
                "{why}"
            );
            assert_eq!(other.tracked_nodes(), 0, "{why}");
        }
    }
}
