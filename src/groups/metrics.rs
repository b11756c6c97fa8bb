//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics from the store's latest
//! snapshot, joined with node and pod labels from the cluster view, in
//! metrics-server's wire format.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::discovery::GroupVersion;
use crate::api::list_options::ListOptions;
use crate::api::meta::ObjectMeta;
use crate::api::openapi::{ResourceSchema, Schemas};
use crate::api::protobuf::Writer;
use crate::api::response::Body;
use crate::api::status::ApiError;

use super::metrics_watch::{Hub, WatchSource, fingerprint};
use crate::api::quantity::{cpu_nanocores, memory_bytes};
use crate::api::resource::{ApiObject, ResourceDescriptor, ResourceProvider, ResourceSnapshot};
use crate::api::table::{Column, NAME_COLUMN};
use crate::api::time::{Time, go_duration, now_millis};
use crate::cluster::ClusterView;
use crate::store::{PodUsage, Snapshot, Store, Usage};
use crate::telemetry::Telemetry;

/// API group.
pub const GROUP: &str = "metrics.k8s.io";
/// API version.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` of the objects.
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

const COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "cpu",
        type_: "string",
        format: "quantity",
        description: "CPU usage",
        priority: 0,
    },
    Column {
        name: "memory",
        type_: "string",
        format: "quantity",
        description: "Memory usage",
        priority: 0,
    },
    Column {
        name: "Window",
        type_: "string",
        format: "duration",
        description: "Time window used to compute usage",
        priority: 0,
    },
];

/// NodeMetrics (`nodes`, cluster-scoped).
pub static NODES: ResourceDescriptor = ResourceDescriptor {
    group: GROUP,
    version: VERSION,
    plural: "nodes",
    singular: "",
    kind: "NodeMetrics",
    list_kind: "NodeMetricsList",
    namespaced: false,
    verbs: &["get", "list", "watch"],
    short_names: &[],
    categories: &[],
    columns: COLUMNS,
    not_found_resource: "nodemetrics",
    not_found_uses_namespaced_name: false,
    lists_have_resource_version: true,
};

/// PodMetrics (`pods`, namespaced).
pub static PODS: ResourceDescriptor = ResourceDescriptor {
    group: GROUP,
    version: VERSION,
    plural: "pods",
    singular: "",
    kind: "PodMetrics",
    list_kind: "PodMetricsList",
    namespaced: true,
    verbs: &["get", "list", "watch"],
    short_names: &[],
    categories: &[],
    columns: COLUMNS,
    not_found_resource: "podmetrics",
    not_found_uses_namespaced_name: true,
    lists_have_resource_version: true,
};

/// The group/version for discovery.
pub fn group_version() -> GroupVersion {
    GroupVersion {
        group: GROUP,
        version: VERSION,
        resources: vec![&NODES, &PODS],
    }
}

#[derive(Serialize)]
struct UsageJson {
    cpu: String,
    memory: String,
}

impl From<Usage> for UsageJson {
    fn from(u: Usage) -> Self {
        UsageJson {
            cpu: cpu_nanocores(u.cpu_nanocores),
            memory: memory_bytes(u.memory_bytes),
        }
    }
}

/// `usage` map entries (`cpu` then `memory`: Go writes map keys sorted).
fn write_usage_protobuf(w: &mut Writer<'_>, field: u32, u: Usage) {
    w.quantity_entry(field, "cpu", &cpu_nanocores(u.cpu_nanocores));
    w.quantity_entry(field, "memory", &memory_bytes(u.memory_bytes));
}

fn window(ms: i64) -> String {
    go_duration(Duration::from_millis(ms.max(0) as u64))
}

/// One NodeMetrics object, built for a response.
struct NodeMetricsObject {
    meta: ObjectMeta,
    timestamp_ms: i64,
    window_ms: i64,
    usage: Usage,
}

impl ApiObject for NodeMetricsObject {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        self.json(out, true);
    }

    fn write_json_item(&self, out: &mut Vec<u8>) {
        self.json(out, false);
    }

    fn write_protobuf(&self, w: &mut Writer<'_>) {
        // k8s.io/metrics v1beta1 NodeMetrics: metadata 1, timestamp 2, window 3, usage 4.
        w.object_meta(1, &self.meta);
        w.time(2, Some(self.timestamp_ms));
        w.duration_ms(3, self.window_ms.max(0));
        write_usage_protobuf(w, 4, self.usage);
    }

    fn cells(&self, _now_ms: i64) -> Vec<Value> {
        vec![
            json!(self.meta.name),
            json!(cpu_nanocores(self.usage.cpu_nanocores)),
            json!(memory_bytes(self.usage.memory_bytes)),
            json!(window(self.window_ms)),
        ]
    }
}

impl NodeMetricsObject {
    /// The JSON object; `typed` adds `kind` and `apiVersion` (not in list items).
    fn json(&self, out: &mut Vec<u8>, typed: bool) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Json<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            kind: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            api_version: Option<&'static str>,
            metadata: &'a ObjectMeta,
            timestamp: Time,
            window: String,
            usage: UsageJson,
        }
        let j = Json {
            kind: typed.then_some("NodeMetrics"),
            api_version: typed.then_some(API_VERSION),
            metadata: &self.meta,
            timestamp: Time::from_millis(self.timestamp_ms),
            window: window(self.window_ms),
            usage: self.usage.into(),
        };
        serde_json::to_writer(out, &j).expect("NodeMetrics serialises");
    }
}

/// One PodMetrics object, built for a response.
struct PodMetricsObject<'a> {
    meta: ObjectMeta,
    usage: PodUsage<'a>,
}

impl ApiObject for PodMetricsObject<'_> {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        self.json(out, true);
    }

    fn write_json_item(&self, out: &mut Vec<u8>) {
        self.json(out, false);
    }

    fn write_protobuf(&self, w: &mut Writer<'_>) {
        // k8s.io/metrics v1beta1 PodMetrics: metadata 1, timestamp 2, window 3, containers 4
        // (ContainerMetrics: name 1, usage 2).
        w.object_meta(1, &self.meta);
        w.time(2, Some(self.usage.timestamp_ms));
        w.duration_ms(3, self.usage.window_ms.max(0));
        for c in self.usage.containers {
            w.nested(4, 1, |w| {
                w.string(1, &c.name);
                write_usage_protobuf(w, 2, c.usage);
            });
        }
    }

    fn cells(&self, _now_ms: i64) -> Vec<Value> {
        let total = self.usage.total();
        vec![
            json!(self.meta.name),
            json!(cpu_nanocores(total.cpu_nanocores)),
            json!(memory_bytes(total.memory_bytes)),
            json!(window(self.usage.window_ms)),
        ]
    }
}

impl PodMetricsObject<'_> {
    /// The JSON object; `typed` adds `kind` and `apiVersion` (not in list items).
    fn json(&self, out: &mut Vec<u8>, typed: bool) {
        #[derive(Serialize)]
        struct Container<'b> {
            name: &'b str,
            usage: UsageJson,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Json<'b> {
            #[serde(skip_serializing_if = "Option::is_none")]
            kind: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            api_version: Option<&'static str>,
            metadata: &'b ObjectMeta,
            timestamp: Time,
            window: String,
            containers: Vec<Container<'b>>,
        }
        let j = Json {
            kind: typed.then_some("PodMetrics"),
            api_version: typed.then_some(API_VERSION),
            metadata: &self.meta,
            timestamp: Time::from_millis(self.usage.timestamp_ms),
            window: window(self.usage.window_ms),
            containers: self
                .usage
                .containers
                .iter()
                .map(|c| Container {
                    name: &c.name,
                    usage: c.usage.into(),
                })
                .collect(),
        };
        serde_json::to_writer(out, &j).expect("PodMetrics serialises");
    }
}

fn object_meta(
    name: &str,
    namespace: Option<&str>,
    labels: crate::cluster::Labels,
    now_ms: i64,
) -> ObjectMeta {
    ObjectMeta {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        creation_timestamp: Some(Time::from_millis(now_ms)),
        labels,
        ..ObjectMeta::default()
    }
}

/// The consistent view behind one request: a store snapshot plus the cluster view.
struct MetricsView {
    snapshot: Arc<Snapshot>,
    cluster: Arc<ClusterView>,
    telemetry: Option<Arc<Telemetry>>,
    resource_version: String,
    now_ms: i64,
}

impl MetricsView {
    fn new(sources: &Sources) -> Self {
        let snapshot = sources.store.snapshot();
        MetricsView {
            resource_version: super::metrics_watch::resource_version(snapshot.published_at_ms()),
            snapshot,
            cluster: sources.cluster.clone(),
            telemetry: sources.telemetry.clone(),
            now_ms: now_millis(),
        }
    }

    fn observe_freshness(&self, timestamp_ms: i64) {
        if let Some(t) = &self.telemetry {
            t.api_metric_freshness
                .observe((self.now_ms - timestamp_ms).max(0) as f64 / 1000.0);
        }
    }

    fn pod_object<'a>(&self, usage: PodUsage<'a>) -> Option<PodMetricsObject<'a>> {
        let pod = self.cluster.pod(usage.namespace, usage.name)?;
        self.observe_freshness(usage.timestamp_ms);
        Some(PodMetricsObject {
            meta: object_meta(
                usage.name,
                Some(usage.namespace),
                pod.labels.clone(),
                self.now_ms,
            ),
            usage,
        })
    }
}

/// Where metrics objects come from: the store, labels from the cluster view, and
/// the freshness self-metric.
#[derive(Clone)]
pub struct Sources {
    /// The metrics store.
    pub store: Arc<Store>,
    /// Node and pod labels.
    pub cluster: Arc<ClusterView>,
    /// Self-metrics (freshness of served metrics).
    pub telemetry: Option<Arc<Telemetry>>,
    /// The watch hubs' history bound in bytes (`--watch-history-bytes`).
    pub watch_history_bytes: usize,
}

/// Serves NodeMetrics.
pub struct NodeMetricsProvider {
    sources: Sources,
    hub: Arc<Hub>,
}

impl NodeMetricsProvider {
    /// A provider over `sources`, with its watch hub.
    pub fn new(sources: Sources) -> Self {
        let quiet = Sources {
            telemetry: None,
            ..sources.clone()
        };
        NodeMetricsProvider {
            hub: Arc::new(Hub::with_history_bytes(
                Arc::new(NodeSource(quiet)),
                &NODES,
                sources.watch_history_bytes,
            )),
            sources,
        }
    }
}

/// What the NodeMetrics watch hub scans (no freshness self-metric: scans are not requests).
struct NodeSource(Sources);

impl WatchSource for NodeSource {
    fn published_at(&self) -> i64 {
        self.0.store.snapshot().published_at_ms()
    }

    fn scan(&self, visit: &mut dyn FnMut(u64, &dyn ApiObject)) -> i64 {
        let view = NodesView(MetricsView::new(&self.0));
        for usage in view.0.snapshot.nodes() {
            if let Some(obj) = view.object(&usage.name) {
                let fp = fingerprint((
                    usage.timestamp_ms,
                    usage.window_ms,
                    usage.usage,
                    &*obj.meta.labels,
                ));
                visit(fp, &obj);
            }
        }
        view.0.snapshot.published_at_ms()
    }
}

struct NodesView(MetricsView);

impl ResourceProvider for NodeMetricsProvider {
    fn descriptor(&self) -> &'static ResourceDescriptor {
        &NODES
    }

    fn snapshot(&self) -> Arc<dyn ResourceSnapshot> {
        Arc::new(NodesView(MetricsView::new(&self.sources)))
    }

    fn watch(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
        accept: Option<&str>,
    ) -> Result<http::Response<Body>, ApiError> {
        self.hub.watch(namespace, opts, accept)
    }

    fn protobuf(&self) -> bool {
        true
    }

    fn continue_across_snapshots(&self) -> bool {
        true
    }
}

impl NodesView {
    fn object(&self, name: &str) -> Option<NodeMetricsObject> {
        let v = &self.0;
        let usage = v.snapshot.node(name)?;
        let node = v.cluster.node(name)?;
        v.observe_freshness(usage.timestamp_ms);
        Some(NodeMetricsObject {
            meta: object_meta(name, None, node.labels.clone(), v.now_ms),
            timestamp_ms: usage.timestamp_ms,
            window_ms: usage.window_ms,
            usage: usage.usage,
        })
    }
}

impl ResourceSnapshot for NodesView {
    fn resource_version(&self) -> &str {
        &self.0.resource_version
    }

    fn get(&self, _namespace: Option<&str>, name: &str, found: &mut dyn FnMut(&dyn ApiObject)) {
        if let Some(obj) = self.object(name) {
            found(&obj);
        }
    }

    fn visit(
        &self,
        _namespace: Option<&str>,
        after: Option<(&str, &str)>,
        visit: &mut dyn FnMut(&dyn ApiObject) -> ControlFlow<()>,
    ) {
        for usage in self.0.snapshot.nodes() {
            if after.is_some_and(|(_, name)| &*usage.name <= name) {
                continue;
            }
            if let Some(obj) = self.object(&usage.name)
                && visit(&obj).is_break()
            {
                break;
            }
        }
    }
}

/// Serves PodMetrics.
pub struct PodMetricsProvider {
    sources: Sources,
    hub: Arc<Hub>,
}

impl PodMetricsProvider {
    /// A provider over `sources`, with its watch hub.
    pub fn new(sources: Sources) -> Self {
        let quiet = Sources {
            telemetry: None,
            ..sources.clone()
        };
        PodMetricsProvider {
            hub: Arc::new(Hub::with_history_bytes(
                Arc::new(PodSource(quiet)),
                &PODS,
                sources.watch_history_bytes,
            )),
            sources,
        }
    }
}

/// What the PodMetrics watch hub scans.
struct PodSource(Sources);

impl WatchSource for PodSource {
    fn published_at(&self) -> i64 {
        self.0.store.snapshot().published_at_ms()
    }

    fn scan(&self, visit: &mut dyn FnMut(u64, &dyn ApiObject)) -> i64 {
        let view = MetricsView::new(&self.0);
        for usage in view.snapshot.pods() {
            if let Some(obj) = view.pod_object(usage) {
                let containers: Vec<(&str, Usage)> = usage
                    .containers
                    .iter()
                    .map(|c| (&*c.name, c.usage))
                    .collect();
                let fp = fingerprint((
                    usage.timestamp_ms,
                    usage.window_ms,
                    containers,
                    &*obj.meta.labels,
                ));
                visit(fp, &obj);
            }
        }
        view.snapshot.published_at_ms()
    }
}

struct PodsView(MetricsView);

impl ResourceProvider for PodMetricsProvider {
    fn descriptor(&self) -> &'static ResourceDescriptor {
        &PODS
    }

    fn snapshot(&self) -> Arc<dyn ResourceSnapshot> {
        Arc::new(PodsView(MetricsView::new(&self.sources)))
    }

    fn watch(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
        accept: Option<&str>,
    ) -> Result<http::Response<Body>, ApiError> {
        self.hub.watch(namespace, opts, accept)
    }

    fn protobuf(&self) -> bool {
        true
    }

    fn continue_across_snapshots(&self) -> bool {
        true
    }
}

impl ResourceSnapshot for PodsView {
    fn resource_version(&self) -> &str {
        &self.0.resource_version
    }

    fn get(&self, namespace: Option<&str>, name: &str, found: &mut dyn FnMut(&dyn ApiObject)) {
        let Some(ns) = namespace else { return };
        if let Some(obj) = self
            .0
            .snapshot
            .pod(ns, name)
            .and_then(|u| self.0.pod_object(u))
        {
            found(&obj);
        }
    }

    fn visit(
        &self,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        visit: &mut dyn FnMut(&dyn ApiObject) -> ControlFlow<()>,
    ) {
        let pods = match namespace {
            Some(ns) => self.0.snapshot.pods_in(ns),
            None => self.0.snapshot.pods(),
        };
        for usage in pods {
            if after.is_some_and(|key| (usage.namespace, usage.name) <= key) {
                continue;
            }
            if let Some(obj) = self.0.pod_object(usage)
                && visit(&obj).is_break()
            {
                break;
            }
        }
    }
}

/// OpenAPI schemas of NodeMetrics, PodMetrics and their lists.
pub fn schemas() -> Vec<(ResourceSchema, Schemas)> {
    let prefix = "io.k8s.metrics.pkg.apis.metrics.v1beta1";
    let gvk = |kind: &str| json!([{"group": GROUP, "version": VERSION, "kind": kind}]);
    let usage = json!({"description": "The memory and CPU usage.", "type": "object", "additionalProperties": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"}});
    let common = |desc: &str| {
        json!({
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"description": "Standard object's metadata.", "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "timestamp": {"description": format!("The following fields define time interval from which metrics were collected from the interval [Timestamp-Window, Timestamp]. {desc}"), "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Time"},
            "window": {"description": "Window is the time window used to compute usage.", "type": "string"},
        })
    };
    let mut node_props = common("");
    node_props["usage"] = usage.clone();
    let mut pod_props = common("");
    pod_props["containers"] = json!({"description": "Metrics for all containers are collected within the same time window.", "type": "array", "items": {"$ref": format!("#/definitions/{prefix}.ContainerMetrics")}});
    let list = |item: &str, kind: &str| {
        json!({
            "description": format!("{kind} is a list of {item}."),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
                "items": {"type": "array", "items": {"$ref": format!("#/definitions/{prefix}.{item}")}},
            },
            "x-kubernetes-group-version-kind": gvk(kind),
        })
    };
    let defs: Schemas = vec![
        (
            format!("{prefix}.NodeMetrics"),
            json!({"description": "NodeMetrics sets resource usage metrics of a node.", "type": "object", "required": ["timestamp", "window", "usage"], "properties": node_props, "x-kubernetes-group-version-kind": gvk("NodeMetrics")}),
        ),
        (
            format!("{prefix}.PodMetrics"),
            json!({"description": "PodMetrics sets resource usage metrics of a pod.", "type": "object", "required": ["timestamp", "window", "containers"], "properties": pod_props, "x-kubernetes-group-version-kind": gvk("PodMetrics")}),
        ),
        (
            format!("{prefix}.ContainerMetrics"),
            json!({"description": "ContainerMetrics sets resource usage metrics of a container.", "type": "object", "required": ["name", "usage"], "properties": {"name": {"description": "Container name corresponding to the one from pod.spec.containers.", "type": "string"}, "usage": usage}}),
        ),
        (
            format!("{prefix}.NodeMetricsList"),
            list("NodeMetrics", "NodeMetricsList"),
        ),
        (
            format!("{prefix}.PodMetricsList"),
            list("PodMetrics", "PodMetricsList"),
        ),
    ];
    vec![
        (
            ResourceSchema {
                descriptor: &NODES,
                object_definition: format!("{prefix}.NodeMetrics"),
                list_definition: format!("{prefix}.NodeMetricsList"),
            },
            defs,
        ),
        (
            ResourceSchema {
                descriptor: &PODS,
                object_definition: format!("{prefix}.PodMetrics"),
                list_definition: format!("{prefix}.PodMetricsList"),
            },
            Vec::new(),
        ),
    ]
}
