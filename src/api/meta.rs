//! The subset of `metav1.ObjectMeta` our objects carry, and `TypeMeta` helpers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::time::Time;

/// Standard object metadata (`metav1.ObjectMeta`), limited to the fields we serve.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name, unique within its namespace.
    #[serde(default)]
    pub name: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Unique id of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Sequence number of the desired state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the object was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// Labels used by label selectors (shared, so objects built per request copy no maps).
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub labels: Arc<BTreeMap<String, String>>,
    /// Non-identifying annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn is_empty_map(m: &Arc<BTreeMap<String, String>>) -> bool {
    m.is_empty()
}

impl ObjectMeta {
    /// The namespace, or `""` for cluster-scoped objects.
    pub fn namespace_or_empty(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// Writes `{"kind":..,"apiVersion":..,"metadata":<meta>}` as a `PartialObjectMetadata`.
pub fn write_partial_object_metadata(out: &mut Vec<u8>, meta_version: &str, meta: &ObjectMeta) {
    out.extend_from_slice(b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/");
    out.extend_from_slice(meta_version.as_bytes());
    out.extend_from_slice(b"\",\"metadata\":");
    serde_json::to_writer(&mut *out, meta).expect("ObjectMeta serialises");
    out.push(b'}');
}
