//! What a group supplies for each resource it serves: a static descriptor and a
//! provider of consistent, sorted snapshots of its objects.

use std::ops::ControlFlow;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::list_options::ListOptions;
use super::meta::ObjectMeta;
use super::response::Body;
use super::status::ApiError;
use super::table::Column;

/// Static facts about a served resource: names, scope, verbs, columns.
#[derive(Debug)]
pub struct ResourceDescriptor {
    /// API group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural resource name (URL segment).
    pub plural: &'static str,
    /// Singular name (empty when the group leaves it empty, as metrics.k8s.io does).
    pub singular: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Kind of a list.
    pub list_kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs, sorted ascending.
    pub verbs: &'static [&'static str],
    /// Short names (`dr`).
    pub short_names: &'static [&'static str],
    /// Categories (`all`, `kubedojo`).
    pub categories: &'static [&'static str],
    /// Table columns (Name first).
    pub columns: &'static [Column],
    /// Resource named in 404 messages (`datarecords`, `podmetrics`).
    pub not_found_resource: &'static str,
    /// When true a missing namespaced object is reported as `"<ns>/<name>"` (metrics-server).
    pub not_found_uses_namespaced_name: bool,
    /// Whether lists carry `metadata.resourceVersion`.
    pub lists_have_resource_version: bool,
}

impl ResourceDescriptor {
    /// `<group>/<version>`.
    pub fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// True when the resource supports `watch`.
    pub fn watchable(&self) -> bool {
        self.verbs.contains(&"watch")
    }

    /// The 404 Status for a missing object.
    pub fn not_found(&self, namespace: Option<&str>, name: &str) -> ApiError {
        let shown = match namespace {
            Some(ns) if self.not_found_uses_namespaced_name => format!("{ns}/{name}"),
            _ => name.to_string(),
        };
        ApiError::not_found(self.group, self.not_found_resource, &shown)
    }
}

/// An object that can be served: metadata, its JSON form and its Table cells.
pub trait ApiObject {
    /// The object's metadata (selectors, paging and PartialObjectMetadata use it).
    fn meta(&self) -> &ObjectMeta;
    /// Appends the full JSON object, with `kind` and `apiVersion`, to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
    /// Appends the object as a JSON list item. Built-in types (metrics.k8s.io) leave out
    /// `kind` and `apiVersion` there, as kube-apiserver and metrics-server do; the default
    /// keeps them (custom resources).
    fn write_json_item(&self, out: &mut Vec<u8>) {
        self.write_json(out);
    }
    /// Writes the object's protobuf message fields (no envelope). Called only for resources
    /// whose provider answers true to [`ResourceProvider::protobuf`].
    fn write_protobuf(&self, _w: &mut super::protobuf::Writer<'_>) {}
    /// The Table cells for this object, one per descriptor column.
    fn cells(&self, now_ms: i64) -> Vec<serde_json::Value>;
}

/// A consistent view of a resource's objects at one resourceVersion.
pub trait ResourceSnapshot: Send + Sync {
    /// The list resourceVersion of this snapshot.
    fn resource_version(&self) -> &str;
    /// Refuses a list whose `resourceVersion` this snapshot cannot answer for (410
    /// `Expired`, 504 `ResourceVersionTooLarge`). The default accepts any, as
    /// metrics-server ignores `resourceVersion`.
    fn check_list_version(&self, _opts: &ListOptions) -> Result<(), ApiError> {
        Ok(())
    }
    /// Calls `found` with the named object, if it exists.
    fn get(&self, namespace: Option<&str>, name: &str, found: &mut dyn FnMut(&dyn ApiObject));
    /// Visits objects in (namespace, name) order, limited to `namespace` when given and
    /// starting strictly after the key `after` when given, until `visit` breaks.
    fn visit(
        &self,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        visit: &mut dyn FnMut(&dyn ApiObject) -> ControlFlow<()>,
    );
}

/// Supplies snapshots of one resource.
pub trait ResourceProvider: Send + Sync {
    /// The resource's static description.
    fn descriptor(&self) -> &'static ResourceDescriptor;
    /// The current snapshot (cheap: an `Arc` clone).
    fn snapshot(&self) -> Arc<dyn ResourceSnapshot>;
    /// A backend that answers get, list and watch asynchronously (a database) instead
    /// of from [`ResourceProvider::snapshot`]; `None` (the default) serves snapshots.
    fn backend(&self) -> Option<&dyn AsyncBackend> {
        None
    }

    /// True when objects can be written as protobuf ([`ApiObject::write_protobuf`]).
    fn protobuf(&self) -> bool {
        false
    }
    /// True when a continue token may resume on a newer snapshot (or another replica) by its
    /// key instead of getting 410 Expired: for data where every object stands alone and the
    /// version changes at every publish (metrics), a consistent snapshot across pages is
    /// neither possible across replicas nor useful.
    fn continue_across_snapshots(&self) -> bool {
        false
    }
    /// Serves a watch; resources without `watch` in their verbs keep the default 405.
    fn watch(
        &self,
        _namespace: Option<&str>,
        _opts: &ListOptions,
        _accept: Option<&str>,
    ) -> Result<http::Response<Body>, ApiError> {
        let d = self.descriptor();
        Err(ApiError::watch_not_supported(d.group, d.plural))
    }
}

/// An object served by an [`AsyncBackend`].
pub type SharedObject = Arc<dyn ApiObject + Send + Sync>;

/// One page of a list answered by an [`AsyncBackend`].
pub struct ListPage {
    /// The list's resourceVersion.
    pub resource_version: String,
    /// The items, in (namespace, name) order.
    pub items: Vec<SharedObject>,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
}

/// Get, list and watch answered asynchronously, for objects that do not live in
/// memory (rows of a database table). Errors are `metav1.Status` values (a database
/// that is down is a 503 with `Retry-After`).
pub trait AsyncBackend: Send + Sync {
    /// The named object, or `None`.
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedObject>, ApiError>>;
    /// One page (or all) of the objects matching `opts`.
    fn list<'a>(
        &'a self,
        namespace: Option<&'a str>,
        opts: &'a ListOptions,
    ) -> BoxFuture<'a, Result<ListPage, ApiError>>;
    /// A watch stream.
    fn watch<'a>(
        &'a self,
        namespace: Option<&'a str>,
        opts: &'a ListOptions,
        accept: Option<&'a str>,
    ) -> BoxFuture<'a, Result<http::Response<Body>, ApiError>>;
}
