//! `data.kubedojo.io/v1alpha1`: DataRecords served from a [`RecordSet`].

use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::discovery::GroupVersion;
use crate::api::meta::ObjectMeta;
use crate::api::openapi::{ResourceSchema, Schemas};
use crate::api::resource::{ApiObject, ResourceDescriptor, ResourceProvider, ResourceSnapshot};
use crate::api::table::{AGE_COLUMN, Column, NAME_COLUMN};
use crate::api::time::age;
use crate::records::{RecordSet, RecordsSnapshot, set::StoredRecord};

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
    verbs: &["get", "list"],
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

/// Serves DataRecords from a record set.
pub struct DataRecordsProvider {
    set: Arc<RecordSet>,
}

impl DataRecordsProvider {
    /// A provider over `set`.
    pub fn new(set: Arc<RecordSet>) -> Self {
        DataRecordsProvider { set }
    }
}

impl ResourceProvider for DataRecordsProvider {
    fn descriptor(&self) -> &'static ResourceDescriptor {
        &DATARECORDS
    }

    fn snapshot(&self) -> Arc<dyn ResourceSnapshot> {
        Arc::new(RecordsView(self.set.snapshot()))
    }
}

struct RecordsView(Arc<RecordsSnapshot>);

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
                    "syncStatus": {"description": "Synced, Pending or Failed.", "type": "string"}
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
