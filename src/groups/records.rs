//! `data.kubedojo.io/v1alpha1`: DataRecords served from a [`RecordSet`].

use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::discovery::GroupVersion;
use crate::api::endpoint::write_event_object;
use crate::api::list_options::ListOptions;
use crate::api::meta::ObjectMeta;
use crate::api::negotiate::{Output, Target, negotiate};
use crate::api::openapi::{ResourceSchema, Schemas};
use crate::api::resource::{
    ApiObject, AsyncBackend, ResourceDescriptor, ResourceProvider, ResourceSnapshot,
};
use crate::api::response::Body;
use crate::api::status::ApiError;
use crate::api::table::{AGE_COLUMN, Column, NAME_COLUMN};
use crate::api::time::age;
use crate::api::time::now_millis;
use crate::records::set::{EventType, RecordEvent, StoredRecord};
use crate::records::version::{self, Epoch, Position};
use crate::records::{RecordSet, RecordsSnapshot};

/// API group of DataRecords.
pub const GROUP: &str = "data.kubedojo.io";
/// API version of DataRecords.
pub const VERSION: &str = "v1alpha1";

const COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Source",
        type_: "string",
        format: "",
        description: "Name of the system the data comes from.",
        priority: 0,
    },
    Column {
        name: "Sync Status",
        type_: "string",
        format: "",
        description: "Whether the data is in sync with its source.",
        priority: 0,
    },
    AGE_COLUMN,
    Column {
        name: "Query",
        type_: "string",
        format: "",
        description: "The query that produced the data.",
        priority: 1,
    },
];

/// The DataRecord resource.
pub static DATARECORDS: ResourceDescriptor = ResourceDescriptor {
    group: GROUP,
    version: VERSION,
    plural: "datarecords",
    singular: "datarecord",
    kind: "DataRecord",
    list_kind: "DataRecordList",
    namespaced: true,
    verbs: &["get", "list", "watch"],
    short_names: &["dr"],
    categories: &["all", "kubedojo"],
    columns: COLUMNS,
    not_found_resource: "datarecords",
    not_found_uses_namespaced_name: false,
    lists_have_resource_version: true,
};

/// The group/version for discovery.
pub fn group_version() -> GroupVersion {
    GroupVersion {
        group: GROUP,
        version: VERSION,
        resources: vec![&DATARECORDS],
    }
}

/// Serves DataRecords from a record set, or from an asynchronous backend (a
/// PostgreSQL table) when one is configured.
pub struct DataRecordsProvider {
    set: Arc<RecordSet>,
    backend: Option<Arc<dyn AsyncBackend>>,
}

impl DataRecordsProvider {
    /// A provider over `set`.
    pub fn new(set: Arc<RecordSet>) -> Self {
        DataRecordsProvider { set, backend: None }
    }

    /// A provider whose get, list and watch are answered by `backend`.
    pub fn with_backend(set: Arc<RecordSet>, backend: Arc<dyn AsyncBackend>) -> Self {
        DataRecordsProvider {
            set,
            backend: Some(backend),
        }
    }
}

impl ResourceProvider for DataRecordsProvider {
    fn descriptor(&self) -> &'static ResourceDescriptor {
        &DATARECORDS
    }

    fn snapshot(&self) -> Arc<dyn ResourceSnapshot> {
        Arc::new(RecordsView(self.set.snapshot(), self.set.epoch()))
    }

    fn backend(&self) -> Option<&dyn AsyncBackend> {
        self.backend.as_deref()
    }

    fn watch(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
        accept: Option<&str>,
    ) -> Result<http::Response<Body>, ApiError> {
        let output = negotiate(accept, Target::Object, true)?;
        let initial_events = opts.send_initial_events == Some(true);
        if initial_events && opts.resource_version_match.as_deref() != Some("NotOlderThan") {
            return Err(ApiError::invalid_list_options(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        // Start: every current object as ADDED (no resourceVersion, "0", or WatchList),
        // else the events after the requested resourceVersion; a version this process
        // never handed out (another replica, before a restart, the future) gets an ERROR
        // event as kube-apiserver's watch cache sends it, so the client relists.
        let position = match opts.resource_version.as_deref() {
            None => Ok(Position::Any),
            Some(rv) => match self.set.judge(rv) {
                Err(e) if e.code == 400 => return Err(e),
                other => other,
            },
        };
        let current_rv = self.set.snapshot().resource_version.clone();
        let (rx, start, start_seq, refused) = match position {
            Ok(Position::Known(seq)) if !initial_events => {
                let (rx, replay) = self.set.watch_from(seq);
                match replay {
                    Some(events) => (rx, events, seq, None),
                    None => {
                        let rv = opts.resource_version.clone().unwrap_or_default();
                        (
                            rx,
                            Vec::new(),
                            seq,
                            Some(version::expired(&rv, &current_rv)),
                        )
                    }
                }
            }
            Err(e) => {
                let (rx, _) = self.set.subscribe();
                (rx, Vec::new(), 0, Some(e))
            }
            _ => {
                let (rx, snapshot) = self.set.subscribe();
                let added: Vec<RecordEvent> = snapshot
                    .records
                    .iter()
                    .map(|r| RecordEvent {
                        kind: EventType::Added,
                        seq: snapshot.seq,
                        record: r.clone(),
                        previous: None,
                    })
                    .collect();
                (rx, added, snapshot.seq, None)
            }
        };
        let (tx, resp) = crate::api::watch::stream();
        let filter = WatchFilter {
            namespace: namespace.map(str::to_string),
            opts: opts.clone(),
            output,
        };
        let timeout = crate::api::watch::timeout(opts.timeout_seconds);
        let bookmarks = opts.allow_watch_bookmarks;
        let epoch = self.set.epoch();
        tokio::spawn(async move {
            if let Some(e) = refused {
                let _ = tx.send(crate::api::watch::error(&e)).await;
                return;
            }
            let mut last_seq = start_seq;
            for event in &start {
                last_seq = last_seq.max(event.seq);
                if !filter.send(&tx, epoch, event).await {
                    return;
                }
            }
            if initial_events {
                let b = crate::api::watch::bookmark(
                    API_VERSION,
                    "DataRecord",
                    &epoch.version(start_seq),
                    true,
                );
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            run_live(
                rx, tx, filter, epoch, start_seq, last_seq, timeout, bookmarks,
            )
            .await;
        });
        Ok(resp)
    }
}

const API_VERSION: &str = "data.kubedojo.io/v1alpha1";

/// What a watcher asked to see.
struct WatchFilter {
    namespace: Option<String>,
    opts: ListOptions,
    output: Output,
}

impl WatchFilter {
    fn matches(&self, r: &StoredRecord) -> bool {
        let meta = &r.record.metadata;
        self.namespace
            .as_deref()
            .is_none_or(|ns| r.record.namespace() == ns)
            && self.opts.label_selector.matches(&meta.labels)
            && self.opts.field_selector.matches(meta)
    }

    /// What this watcher sees of `event`, as kube-apiserver's cacheWatcher decides it:
    /// a change that brings an object into the selector is ADDED, one that takes it out
    /// is DELETED (with the previous state at the event's version), others as they are.
    fn view(&self, epoch: Epoch, event: &RecordEvent) -> Option<(EventType, Arc<StoredRecord>)> {
        let (now_passes, before_passes) = match event.kind {
            EventType::Added => (self.matches(&event.record), false),
            EventType::Modified => (
                self.matches(&event.record),
                event.previous.as_deref().is_some_and(|p| self.matches(p)),
            ),
            EventType::Deleted => (false, self.matches(&event.record)),
        };
        match (now_passes, before_passes) {
            (true, false) => Some((EventType::Added, event.record.clone())),
            (true, true) => Some((EventType::Modified, event.record.clone())),
            (false, true) => match (event.kind, &event.previous) {
                (EventType::Modified, Some(previous)) => Some((
                    EventType::Deleted,
                    Arc::new(previous.restamped(&epoch.version(event.seq))),
                )),
                _ => Some((EventType::Deleted, event.record.clone())),
            },
            (false, false) => None,
        }
    }

    /// Sends what this watcher sees of `event`; false when the client has gone.
    async fn send(
        &self,
        tx: &crate::api::watch::EventSender,
        epoch: Epoch,
        event: &RecordEvent,
    ) -> bool {
        let Some((kind, r)) = self.view(epoch, event) else {
            return true;
        };
        let mut object = Vec::with_capacity(r.json.len() + 256);
        write_event_object(
            &mut object,
            &DATARECORDS,
            self.output,
            r.as_ref(),
            self.opts.include_object,
            now_millis(),
        );
        tx.send(crate::api::watch::event(kind.as_str(), &object))
            .await
            .is_ok()
    }
}

/// Streams live changes newer than `skip_up_to` (those are already in what was sent).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn run_live(
    mut rx: tokio::sync::broadcast::Receiver<RecordEvent>,
    tx: crate::api::watch::EventSender,
    filter: WatchFilter,
    epoch: Epoch,
    skip_up_to: u64,
    mut last_seq: u64,
    timeout: std::time::Duration,
    bookmarks: bool,
) {
    use tokio::sync::broadcast::error::RecvError;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmark_every = tokio::time::interval(std::time::Duration::from_secs(60));
    bookmark_every.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = bookmark_every.tick(), if bookmarks => {
                let b = crate::api::watch::bookmark(API_VERSION, "DataRecord", &epoch.version(last_seq), false);
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            event = rx.recv() => match event {
                Ok(e) => {
                    if e.seq <= skip_up_to {
                        continue;
                    }
                    last_seq = last_seq.max(e.seq);
                    if !filter.send(&tx, epoch, &e).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let e = ApiError::resource_version_expired(format!(
                        "too old resource version: {} (the watcher fell behind)",
                        epoch.version(last_seq)
                    ));
                    let _ = tx.send(crate::api::watch::error(&e)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

struct RecordsView(Arc<RecordsSnapshot>, Epoch);

impl ApiObject for StoredRecord {
    fn meta(&self) -> &ObjectMeta {
        &self.record.metadata
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.json);
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let r = &self.record;
        let created = r
            .metadata
            .creation_timestamp
            .map(|t| age(t.as_millis(), now_ms))
            .unwrap_or_else(|| "<unknown>".into());
        vec![
            json!(r.metadata.name),
            json!(r.spec.source),
            json!(r.sync_status()),
            json!(created),
            json!(r.spec.query),
        ]
    }
}

impl ResourceSnapshot for RecordsView {
    fn resource_version(&self) -> &str {
        &self.0.resource_version
    }

    fn check_list_version(&self, opts: &ListOptions) -> Result<(), ApiError> {
        let Some(rv) = opts.resource_version.as_deref() else {
            return Ok(());
        };
        match version::judge(rv, self.1, self.0.seq)? {
            Position::Known(seq)
                if seq != self.0.seq && opts.resource_version_match.as_deref() == Some("Exact") =>
            {
                // Only the current state is kept: an older exact version is gone.
                Err(version::expired(rv, &self.0.resource_version))
            }
            _ => Ok(()),
        }
    }

    fn get(&self, namespace: Option<&str>, name: &str, found: &mut dyn FnMut(&dyn ApiObject)) {
        let Some(ns) = namespace else { return };
        let i = self.0.lower_bound(ns, name);
        if let Some(r) = self.0.records.get(i)
            && r.record.namespace() == ns
            && r.record.metadata.name == name
        {
            found(r.as_ref());
        }
    }

    fn visit(
        &self,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        visit: &mut dyn FnMut(&dyn ApiObject) -> ControlFlow<()>,
    ) {
        let records = &self.0.records;
        let mut start = match namespace {
            Some(ns) => self.0.lower_bound(ns, ""),
            None => 0,
        };
        if let Some((ns, name)) = after {
            let i = self.0.lower_bound(ns, name);
            let skip_equal = records
                .get(i)
                .is_some_and(|r| r.record.namespace() == ns && r.record.metadata.name == name);
            start = start.max(if skip_equal { i + 1 } else { i });
        }
        for r in &records[start.min(records.len())..] {
            if namespace.is_some_and(|ns| r.record.namespace() != ns) {
                break;
            }
            if visit(r.as_ref()).is_break() {
                break;
            }
        }
    }
}

/// OpenAPI schemas of DataRecord and DataRecordList.
pub fn schemas() -> (ResourceSchema, Schemas) {
    let object = "io.kubedojo.data.v1alpha1.DataRecord".to_string();
    let list = "io.kubedojo.data.v1alpha1.DataRecordList".to_string();
    let gvk = |kind: &str| json!([{"group": GROUP, "version": VERSION, "kind": kind}]);
    let schemas = vec![
        (
            object.clone(),
            json!({
                "description": "DataRecord holds data read from an outside source (a records file, a database) or computed from live metrics.",
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                    "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                    "metadata": {"description": "Standard object's metadata.", "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                    "spec": {"description": "Where the data comes from, and the data.", "$ref": "#/definitions/io.kubedojo.data.v1alpha1.DataRecordSpec"},
                    "status": {"description": "Sync state of the data.", "$ref": "#/definitions/io.kubedojo.data.v1alpha1.DataRecordStatus"}
                },
                "x-kubernetes-group-version-kind": gvk("DataRecord"),
            }),
        ),
        (
            "io.kubedojo.data.v1alpha1.DataRecordSpec".into(),
            json!({
                "description": "DataRecordSpec names the source of a record and carries its data.",
                "type": "object",
                "required": ["source"],
                "properties": {
                    "source": {"description": "Name of the system the data is read from (e.g. a database or service).", "type": "string"},
                    "query": {"description": "The query that produced the data.", "type": "string"},
                    "data": {"description": "The data, as string keys and values.", "type": "object", "additionalProperties": {"type": "string", "default": ""}}
                }
            }),
        ),
        (
            "io.kubedojo.data.v1alpha1.DataRecordStatus".into(),
            json!({
                "description": "DataRecordStatus is the sync state of a record.",
                "type": "object",
                "properties": {
                    "lastSyncTime": {"description": "When the data was last read from its source.", "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Time"},
                    "syncStatus": {"description": "Current, Stale or Error.", "type": "string"},
                    "conditions": {"description": "Observations of the sync (the last query error of a postgresQuery record).", "type": "array", "items": {"$ref": "#/definitions/io.kubedojo.data.v1alpha1.DataRecordCondition"}}
                }
            }),
        ),
        (
            "io.kubedojo.data.v1alpha1.DataRecordCondition".into(),
            json!({
                "description": "DataRecordCondition is one observation of a record's sync.",
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"description": "Type of the condition (Synced).", "type": "string"},
                    "status": {"description": "True, False or Unknown.", "type": "string"},
                    "reason": {"description": "CamelCase reason of the last transition.", "type": "string"},
                    "message": {"description": "Human-readable detail.", "type": "string"},
                    "lastTransitionTime": {"description": "When the status last changed.", "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Time"}
                }
            }),
        ),
        (
            list.clone(),
            json!({
                "description": "DataRecordList is a list of DataRecords.",
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                    "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                    "metadata": {"description": "Standard list metadata.", "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
                    "items": {"description": "The records.", "type": "array", "items": {"$ref": format!("#/definitions/{object}")}}
                },
                "x-kubernetes-group-version-kind": gvk("DataRecordList"),
            }),
        ),
    ];
    (
        ResourceSchema {
            descriptor: &DATARECORDS,
            object_definition: object,
            list_definition: list,
        },
        schemas,
    )
}
