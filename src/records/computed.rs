//! DataRecords computed from the live metrics store, never written anywhere: per
//! namespace a `resource-usage` record, per node a `node-headroom-<node>` record in the
//! configured namespace. Data flows one way: store → this source → record set → API.
//!
//! Recomputed once per scrape cycle (the store's [`Store::publish_cycle`] at the end of each
//! tick, not the publishes in the middle of a long tick: issue #15, they cost ~17% of a
//! cycle) and every `--records-refresh-interval` (so a record turns `Stale` even when no
//! cycle ends); the record set turns an unchanged result into no event at all, so a
//! watcher sees MODIFIED only when a value changed. A record whose data comes from a node whose latest reading is older than two
//! resolutions (a kubelet that stopped answering) is `Stale`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::file::record_uid;
use super::sources_config::ComputedSourceConfig;
use super::types::{API_VERSION, DataRecord, DataRecordSpec, DataRecordStatus, KIND};
use super::{RecordSource, RecordsError};
use crate::api::meta::ObjectMeta;
use crate::api::quantity::{cpu_nanocores, memory_bytes};
use crate::api::time::{Time, now_millis};
use crate::cluster::ClusterView;
use crate::store::{Snapshot, Store};

/// The label every computed record carries.
pub const SOURCE_LABEL: &str = "data.kubedojo.io/source";
/// Its value.
pub const SOURCE_LABEL_VALUE: &str = "metrics";
/// The label naming what a computed record is (`resource-usage`, `node-headroom`).
pub const KIND_LABEL: &str = "data.kubedojo.io/computed";
/// The label naming a `node-headroom` record's node.
pub const NODE_LABEL: &str = "data.kubedojo.io/node";
/// Name of the per-namespace record.
pub const RESOURCE_USAGE: &str = "resource-usage";
/// Prefix of the per-node records' names.
pub const NODE_HEADROOM_PREFIX: &str = "node-headroom-";
/// How many pods the top lists hold.
pub const TOP_PODS: usize = 5;

/// What the computed source reads.
#[derive(Clone)]
pub struct MetricsInputs {
    /// The metrics store.
    pub store: Arc<Store>,
    /// Nodes (their allocatable).
    pub view: Arc<ClusterView>,
    /// The scrape resolution (staleness is two of them).
    pub resolution: Duration,
}

/// The computed records source.
pub struct ComputedSource {
    config: ComputedSourceConfig,
    inputs: MetricsInputs,
}

impl ComputedSource {
    /// A computed source over `inputs`.
    pub fn new(config: ComputedSourceConfig, inputs: MetricsInputs) -> Self {
        ComputedSource { config, inputs }
    }

    /// The records for `snapshot` at `now_ms`.
    pub fn compute(&self, snapshot: &Snapshot, now_ms: i64) -> Vec<DataRecord> {
        let stale_after_ms = (self.inputs.resolution.as_millis() as i64).saturating_mul(2);
        let is_stale = |ts: i64| now_ms.saturating_sub(ts) > stale_after_ms;
        let mut out = Vec::new();
        if self.config.resource_usage {
            for ns in snapshot.namespaces() {
                out.push(resource_usage(snapshot, ns, &is_stale));
            }
        }
        if self.config.node_headroom {
            let mut nodes = self.inputs.view.nodes();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            for node in nodes {
                let Some(alloc) = node.allocatable else {
                    continue;
                };
                let usage = snapshot.node(&node.name);
                let mut data = BTreeMap::new();
                data.insert("cpuAllocatable".into(), cpu_nanocores(alloc.cpu_nanocores));
                data.insert("memoryAllocatable".into(), memory_bytes(alloc.memory_bytes));
                let (status, synced) = match usage {
                    Some(u) => {
                        let cpu = u.usage.cpu_nanocores;
                        let mem = u.usage.memory_bytes;
                        data.insert("cpuUsage".into(), cpu_nanocores(round_cpu(cpu)));
                        data.insert("memoryUsage".into(), memory_bytes(round_mem(mem)));
                        data.insert(
                            "cpuHeadroom".into(),
                            signed(alloc.cpu_nanocores, round_cpu(cpu), cpu_nanocores),
                        );
                        data.insert(
                            "memoryHeadroom".into(),
                            signed(alloc.memory_bytes, round_mem(mem), memory_bytes),
                        );
                        data.insert(
                            "cpuHeadroomPercent".into(),
                            percent_free(alloc.cpu_nanocores, cpu),
                        );
                        data.insert(
                            "memoryHeadroomPercent".into(),
                            percent_free(alloc.memory_bytes, mem),
                        );
                        let status = if is_stale(u.timestamp_ms) {
                            "Stale"
                        } else {
                            "Current"
                        };
                        (status, Some(u.timestamp_ms))
                    }
                    // No usage (a kubelet that never answered, or a node dropped as stale).
                    None => ("Stale", None),
                };
                let mut labels = base_labels("node-headroom");
                if is_label_value(&node.name) {
                    labels.insert(NODE_LABEL.into(), node.name.clone());
                }
                out.push(record(
                    &self.config.namespace,
                    &format!("{NODE_HEADROOM_PREFIX}{}", node.name),
                    labels,
                    format!("node {}: allocatable - usage", node.name),
                    data,
                    status,
                    synced,
                ));
            }
        }
        out
    }
}

impl RecordSource for ComputedSource {
    fn name(&self) -> String {
        "computed:metrics".into()
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>> {
        async move {
            let snapshot = self.inputs.store.snapshot();
            Ok(self.compute(&snapshot, now_millis()))
        }
        .boxed()
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inputs.store.subscribe_cycles())
    }
}

fn resource_usage(snapshot: &Snapshot, ns: &str, is_stale: &dyn Fn(i64) -> bool) -> DataRecord {
    let mut cpu: u64 = 0;
    let mut mem: u64 = 0;
    let mut containers = 0usize;
    let mut pods: Vec<(&str, u64, u64)> = Vec::new();
    let mut stale = false;
    let mut oldest: Option<i64> = None;
    for pod in snapshot.pods_in(ns) {
        let total = pod.total();
        cpu = cpu.saturating_add(total.cpu_nanocores);
        mem = mem.saturating_add(total.memory_bytes);
        containers += pod.containers.len();
        stale |= is_stale(pod.timestamp_ms);
        oldest = Some(oldest.map_or(pod.timestamp_ms, |o: i64| o.min(pod.timestamp_ms)));
        pods.push((pod.name, total.cpu_nanocores, total.memory_bytes));
    }
    let mut data = BTreeMap::new();
    data.insert("pods".into(), pods.len().to_string());
    data.insert("containers".into(), containers.to_string());
    data.insert("cpu".into(), cpu_nanocores(round_cpu(cpu)));
    data.insert("memory".into(), memory_bytes(round_mem(mem)));
    data.insert("topPodsByCpu".into(), top_pods(&mut pods, true));
    data.insert("topPodsByMemory".into(), top_pods(&mut pods, false));
    record(
        ns,
        RESOURCE_USAGE,
        base_labels(RESOURCE_USAGE),
        format!("sum of pod usage in namespace {ns}"),
        data,
        if stale { "Stale" } else { "Current" },
        oldest,
    )
}

/// The [`TOP_PODS`] largest pods by CPU (or memory), largest first, ties by name, as
/// `name=quantity,...`. Selects them in O(pods) and sorts only those (issue #15: sorting all
/// 3,000 pods of a namespace twice was 72% of the computed source's instructions).
fn top_pods(pods: &mut [(&str, u64, u64)], by_cpu: bool) -> String {
    let order = |a: &(&str, u64, u64), b: &(&str, u64, u64)| {
        let (x, y) = if by_cpu { (a.1, b.1) } else { (a.2, b.2) };
        y.cmp(&x).then_with(|| a.0.cmp(b.0))
    };
    if pods.len() > TOP_PODS {
        pods.select_nth_unstable_by(TOP_PODS - 1, order);
    }
    let shown = pods.len().min(TOP_PODS);
    let head = &mut pods[..shown];
    head.sort_by(order);
    head.iter()
        .map(|pod| top_entry(pod, by_cpu))
        .collect::<Vec<_>>()
        .join(",")
}

/// One pod of a top list: `name=quantity`, its rounded CPU or memory.
fn top_entry(&(name, cpu, mem): &(&str, u64, u64), by_cpu: bool) -> String {
    if by_cpu {
        format!("{name}={}", cpu_nanocores(round_cpu(cpu)))
    } else {
        format!("{name}={}", memory_bytes(round_mem(mem)))
    }
}

/// CPU rounded to whole millicores, as `kubectl top` shows it: sub-millicore jitter between
/// two scrapes is not a change worth a MODIFIED event.
fn round_cpu(nanocores: u64) -> u64 {
    nanocores.saturating_add(500_000) / 1_000_000 * 1_000_000
}

/// Memory rounded to whole KiB (metrics-server's unit).
fn round_mem(bytes: u64) -> u64 {
    bytes.saturating_add(512) / 1024 * 1024
}

/// `total - used` as a quantity, with a `-` when usage is above allocatable.
fn signed(total: u64, used: u64, fmt: fn(u64) -> String) -> String {
    if used > total {
        format!("-{}", fmt(used - total))
    } else {
        fmt(total - used)
    }
}

/// Free share of `total` in percent, one decimal (may be negative).
fn percent_free(total: u64, used: u64) -> String {
    if total == 0 {
        return "0.0".into();
    }
    let free = (total as f64 - used as f64) / total as f64 * 100.0;
    format!("{free:.1}")
}

fn base_labels(kind: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(SOURCE_LABEL.into(), SOURCE_LABEL_VALUE.into());
    labels.insert(KIND_LABEL.into(), kind.into());
    labels
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn record(
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    query: String,
    data: BTreeMap<String, String>,
    sync_status: &str,
    synced_ms: Option<i64>,
) -> DataRecord {
    DataRecord {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            uid: Some(record_uid(namespace, name)),
            generation: Some(1),
            creation_timestamp: Some(Time::now()),
            labels: Arc::new(labels),
            ..ObjectMeta::default()
        },
        spec: DataRecordSpec {
            source: SOURCE_LABEL_VALUE.into(),
            query,
            data,
        },
        status: Some(DataRecordStatus {
            last_sync_time: synced_ms.map(Time::from_millis),
            sync_status: sync_status.into(),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_and_headroom_can_go_negative() {
        assert_eq!(round_cpu(1_499_999), 1_000_000);
        assert_eq!(round_cpu(1_500_000), 2_000_000);
        assert_eq!(round_mem(1023), 1024);
        assert_eq!(signed(10, 4, |v| v.to_string()), "6");
        assert_eq!(signed(4, 10, |v| v.to_string()), "-6");
        assert_eq!(percent_free(200, 50), "75.0");
        assert_eq!(percent_free(100, 150), "-50.0");
        assert!(is_label_value("sim-node-0001"));
        assert!(!is_label_value("-x"));
    }

    /// The selection gives the list a full sort gives (ties broken by name, both orders).
    #[test]
    fn top_pods_select_what_a_full_sort_shows() {
        let names: Vec<String> = (0..300).map(|i| format!("pod-{i:03}")).collect();
        for len in [0, 1, 4, 5, 6, 300] {
            let mut pods: Vec<(&str, u64, u64)> = names[..len]
                .iter()
                .enumerate()
                // Few distinct values, so ties (and the name order) matter.
                .map(|(i, n)| {
                    (
                        n.as_str(),
                        (i as u64 * 7919 % 13) * 1_000_000,
                        (i as u64 * 104_729 % 11) << 20,
                    )
                })
                .collect();
            for by_cpu in [true, false] {
                let mut sorted = pods.clone();
                sorted.sort_by(|a, b| {
                    let (x, y) = if by_cpu { (a.1, b.1) } else { (a.2, b.2) };
                    y.cmp(&x).then_with(|| a.0.cmp(b.0))
                });
                let want = sorted
                    .iter()
                    .take(TOP_PODS)
                    .map(|pod| top_entry(pod, by_cpu))
                    .collect::<Vec<_>>()
                    .join(",");
                assert_eq!(
                    top_pods(&mut pods, by_cpu),
                    want,
                    "{len} pods, by_cpu {by_cpu}"
                );
            }
        }
    }

    /// Issue #15: the records were recomputed on every store publish, also the ones every
    /// `publish_interval` in the middle of a long scrape tick; now once per finished cycle.
    #[test]
    fn follows_finished_scrape_cycles_not_every_publish() {
        let store = Arc::new(Store::new(crate::store::StoreConfig::new(
            Duration::from_secs(15),
        )));
        let inputs = MetricsInputs {
            store: store.clone(),
            view: ClusterView::new(),
            resolution: Duration::from_secs(15),
        };
        let source = ComputedSource::new(ComputedSourceConfig::default(), inputs);
        let mut changes = source.changes().expect("a push source");
        store.publish(1_000);
        store.publish(2_000);
        assert!(
            !changes.has_changed().unwrap(),
            "a publish in the middle of a cycle recomputes the records"
        );
        store.publish_cycle(3_000);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        store.publish(4_000);
        assert!(!changes.has_changed().unwrap());
    }
}
