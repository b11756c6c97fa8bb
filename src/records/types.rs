//! The `data.kubedojo.io/v1alpha1` DataRecord type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::meta::ObjectMeta;
use crate::api::time::Time;

/// API version of DataRecords.
pub const API_VERSION: &str = "data.kubedojo.io/v1alpha1";
/// Kind of a DataRecord.
pub const KIND: &str = "DataRecord";

/// A DataRecord: data read from an outside source or computed from live metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataRecord {
    /// Always `data.kubedojo.io/v1alpha1`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Always `DataRecord`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// Where the data comes from and the data itself.
    pub spec: DataRecordSpec,
    /// Sync state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DataRecordStatus>,
}

/// `spec` of a DataRecord.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataRecordSpec {
    /// Name of the source system.
    pub source: String,
    /// The query that produced the data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// The data, as string keys and values.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// `status` of a DataRecord.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataRecordStatus {
    /// When the data was last read from its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// `Current`, `Stale` or `Error` (the lab's words; a records file may use others).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_status: String,
    /// Observations of the record's sync (a `postgresQuery` record's `Synced`
    /// condition carries the last query error while the record is `Stale` or `Error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A `metav1.Condition`-shaped observation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The condition's type (e.g. `Synced`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

fn default_api_version() -> String {
    API_VERSION.to_string()
}

fn default_kind() -> String {
    KIND.to_string()
}

impl DataRecord {
    /// The namespace (records are always namespaced).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace_or_empty()
    }

    /// The sync status shown in tables (`Unknown` when there is none).
    pub fn sync_status(&self) -> &str {
        match &self.status {
            Some(s) if !s.sync_status.is_empty() => &s.sync_status,
            _ => "Unknown",
        }
    }
}
