//! Feeds the [`ClusterView`] from kube-apiserver: full (trimmed) Nodes and
//! metadata-only running Pods, with the kube crate's watcher and our backoff
//! ([`super::backoff`]: back within ~5 s of a kube-apiserver outage's end).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::address::METRICS_PATH_ANNOTATION;
use super::backoff::watch_backoff;
use super::{ClusterView, NodeInfo, PodInfo};

/// Converts a Node into what the scraper needs.
pub fn node_info(node: &Node) -> Option<NodeInfo> {
    let name = node.metadata.name.clone()?;
    let status = node.status.as_ref();
    let addresses = status
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .map(|x| (x.type_.clone(), x.address.clone()))
                .collect()
        })
        .unwrap_or_default();
    let kubelet_port = status
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| u16::try_from(e.port).unwrap_or(0))
        .unwrap_or(0);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let metrics_path = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(METRICS_PATH_ANNOTATION))
        .cloned();
    let allocatable = status.and_then(|s| s.allocatable.as_ref()).and_then(|a| {
        let cpu = crate::api::quantity::parse_nanos(&a.get("cpu")?.0)?;
        let memory = crate::api::quantity::parse_units(&a.get("memory")?.0)?;
        Some(super::Allocatable {
            cpu_nanocores: cpu,
            memory_bytes: memory,
        })
    });
    Some(NodeInfo {
        name,
        labels: Arc::new(node.metadata.labels.clone().unwrap_or_default()),
        addresses,
        kubelet_port,
        metrics_path,
        ready,
        allocatable,
    })
}

fn pod_info(
    view: &ClusterView,
    meta: PartialObjectMeta<Pod>,
) -> Option<((String, String), PodInfo)> {
    let mut metadata = meta.metadata;
    let name = metadata.name.take()?;
    let namespace = metadata.namespace.take()?;
    let labels: BTreeMap<String, String> = metadata.labels.take().unwrap_or_default();
    let created_ms = metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    Some((
        (namespace, name),
        PodInfo {
            labels: view.pod_labels(labels),
            created_ms,
        },
    ))
}

/// Watches Nodes (matching `node_selector`) until the task is dropped.
pub async fn watch_nodes(
    client: kube::Client,
    view: Arc<ClusterView>,
    node_selector: Option<String>,
) {
    let mut config = watcher::Config::default().any_semantic();
    if let Some(sel) = node_selector.filter(|s| !s.is_empty()) {
        config = config.labels(&sel);
    }
    let stream = watcher::watcher(Api::<Node>::all(client), config).backoff(watch_backoff());
    futures::pin_mut!(stream);
    let mut relist: Vec<NodeInfo> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(n)) => relist.extend(node_info(&n)),
            Ok(Event::InitDone) => {
                tracing::info!(nodes = relist.len(), "node list synced");
                view.replace_nodes(std::mem::take(&mut relist));
                view.set_nodes_synced();
            }
            Ok(Event::Apply(n)) => {
                if let Some(info) = node_info(&n) {
                    view.upsert_node(info);
                }
            }
            Ok(Event::Delete(n)) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    view.remove_node(name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
        }
    }
}

/// Watches running Pods as metadata only until the task is dropped.
pub async fn watch_pods(client: kube::Client, view: Arc<ClusterView>) {
    let config = watcher::Config::default()
        .any_semantic()
        .fields("status.phase=Running");
    let stream = watcher::watcher(Api::<PartialObjectMeta<Pod>>::all(client), config)
        .backoff(watch_backoff());
    futures::pin_mut!(stream);
    let mut relist = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(p)) => relist.extend(pod_info(&view, p)),
            Ok(Event::InitDone) => {
                tracing::info!(pods = relist.len(), "pod list synced");
                view.replace_pods(std::mem::take(&mut relist));
                view.set_pods_synced();
            }
            Ok(Event::Apply(p)) => {
                if let Some(((ns, name), info)) = pod_info(&view, p) {
                    view.upsert_pod(&ns, &name, info);
                }
            }
            Ok(Event::Delete(p)) => {
                if let (Some(ns), Some(name)) =
                    (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
                {
                    view.remove_pod(ns, name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}
