//! OpenAPI documents (`/openapi/v2`, `/openapi/v3` and the per group-version v3
//! documents) built from each resource's descriptor and schema, so `kubectl explain`
//! works and kube-aggregator can merge our spec.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use super::discovery::{GroupVersion, hex_upper};
use super::resource::ResourceDescriptor;

/// Schemas a group contributes: definition name → schema, using `#/definitions/` refs.
pub type Schemas = Vec<(String, Value)>;

/// A resource with the OpenAPI definition names of its object and list.
#[derive(Debug, Clone)]
pub struct ResourceSchema {
    /// The resource.
    pub descriptor: &'static ResourceDescriptor,
    /// Definition name of one object (e.g. `io.kubedojo.data.v1alpha1.DataRecord`).
    pub object_definition: String,
    /// Definition name of the list.
    pub list_definition: String,
}

/// Everything needed to render the documents.
#[derive(Debug, Default)]
pub struct OpenApiSpec {
    /// One entry per served group/version.
    pub group_versions: Vec<(String, Vec<ResourceSchema>)>,
    /// All definitions (group schemas plus the shared meta types).
    pub definitions: Map<String, Value>,
}

/// A rendered document and its hash (upper-case hex SHA-512).
#[derive(Debug, Clone)]
pub struct Rendered {
    /// JSON bytes.
    pub bytes: Vec<u8>,
    /// Hash used for ETags and `?hash=`.
    pub hash: String,
}

impl Rendered {
    fn new(doc: &Value) -> Self {
        let bytes = serde_json::to_vec(doc).expect("openapi serialises");
        let hash = hex_upper(&Sha512::digest(&bytes));
        Rendered { bytes, hash }
    }
}

/// All OpenAPI documents, rendered once at start-up.
#[derive(Debug, Clone)]
pub struct OpenApiDocs {
    /// `/openapi/v2`.
    pub v2: Rendered,
    /// `/openapi/v3` discovery.
    pub v3_root: Rendered,
    /// `apis/<group>/<version>` → document.
    pub v3: Vec<(String, Rendered)>,
}

impl OpenApiDocs {
    /// The v3 document for a path key like `apis/data.kubedojo.io/v1alpha1`.
    pub fn v3_document(&self, key: &str) -> Option<&Rendered> {
        self.v3.iter().find(|(k, _)| k == key).map(|(_, r)| r)
    }
}

/// The shared `meta/v1` definitions our schemas refer to.
pub fn meta_definitions() -> Schemas {
    let string_map =
        json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}});
    vec![
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.Time".into(),
            json!({"description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.", "type": "string", "format": "date-time"}),
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
            json!({
                "description": "ObjectMeta is metadata that all persisted resources must have.",
                "type": "object",
                "properties": {
                    "name": {"description": "Name must be unique within a namespace.", "type": "string"},
                    "namespace": {"description": "Namespace defines the space within which each name must be unique.", "type": "string"},
                    "uid": {"description": "UID is the unique in time and space value for this object.", "type": "string"},
                    "resourceVersion": {"description": "An opaque value that represents the internal version of this object.", "type": "string"},
                    "generation": {"description": "A sequence number representing a specific generation of the desired state.", "type": "integer", "format": "int64"},
                    "creationTimestamp": {"description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Time"},
                    "labels": {"description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects.", "type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "annotations": {"description": "Annotations is an unstructured key value map stored with a resource.", "type": "object", "additionalProperties": {"type": "string", "default": ""}},
                }
            }),
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta".into(),
            json!({
                "description": "ListMeta describes metadata that synthetic resources must have, including lists and various status objects.",
                "type": "object",
                "properties": {
                    "resourceVersion": {"description": "String that identifies the server's internal version of this object.", "type": "string"},
                    "continue": {"description": "continue may be set if the user set a limit on the number of items returned.", "type": "string"},
                    "remainingItemCount": {"description": "The number of subsequent items in the list which are not included in this list response.", "type": "integer", "format": "int64"},
                }
            }),
        ),
        (
            "io.k8s.apimachinery.pkg.api.resource.Quantity".into(),
            json!({"description": "Quantity is a fixed-point representation of a number.", "type": "string"}),
        ),
        ("io.k8s.kubedojo.StringMap".into(), string_map),
    ]
}

fn gvk(d: &ResourceDescriptor, kind: &str) -> Value {
    json!([{"group": d.group, "version": d.version, "kind": kind}])
}

fn param(name: &str, location: &str, description: &str, type_: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "description": description, "type": type_, "uniqueItems": true, "required": required})
}

fn list_params() -> Vec<Value> {
    vec![
        param(
            "labelSelector",
            "query",
            "A selector to restrict the list of returned objects by their labels.",
            "string",
            false,
        ),
        param(
            "fieldSelector",
            "query",
            "A selector to restrict the list of returned objects by their fields (metadata.name, metadata.namespace).",
            "string",
            false,
        ),
        json!({"name": "limit", "in": "query", "description": "limit is a maximum number of responses to return for a list call.", "type": "integer", "uniqueItems": true}),
        param(
            "continue",
            "query",
            "The continue option should be set when retrieving more results from the server.",
            "string",
            false,
        ),
        param(
            "resourceVersion",
            "query",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
            "string",
            false,
        ),
    ]
}

/// Swagger 2.0 path items for one resource.
fn v2_paths(rs: &ResourceSchema, paths: &mut Map<String, Value>) {
    let d = rs.descriptor;
    let base = format!("/apis/{}/{}", d.group, d.version);
    let tag = format!("{}_{}", d.group.replace('.', "_"), d.version);
    let op = |action: &str, suffix: &str, def: &str, kind: &str| {
        json!({
            "description": format!("{action} {}", d.kind),
            "operationId": format!("{action}{}{}{suffix}", camel(d.group), d.kind),
            "produces": ["application/json"],
            "schemes": ["https"],
            "tags": [tag],
            "responses": {
                "200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{def}")}},
                "401": {"description": "Unauthorized"}
            },
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk(d, kind)[0].clone(),
        })
    };
    let ns_param = param(
        "namespace",
        "path",
        "object name and auth scope, such as for teams and projects",
        "string",
        true,
    );
    let name_param = param(
        "name",
        "path",
        &format!("name of the {}", d.kind),
        "string",
        true,
    );
    if d.namespaced {
        paths.insert(
            format!("{base}/{}", d.plural),
            json!({"get": op("list", "ForAllNamespaces", &rs.list_definition, d.list_kind), "parameters": list_params()}),
        );
        let mut ns_list_params = vec![ns_param.clone()];
        ns_list_params.extend(list_params());
        paths.insert(
            format!("{base}/namespaces/{{namespace}}/{}", d.plural),
            json!({"get": op("list", "Namespaced", &rs.list_definition, d.list_kind), "parameters": ns_list_params}),
        );
        paths.insert(
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", d.plural),
            json!({"get": op("get", "Namespaced", &rs.object_definition, d.kind), "parameters": [name_param, ns_param]}),
        );
    } else {
        paths.insert(
            format!("{base}/{}", d.plural),
            json!({"get": op("list", "", &rs.list_definition, d.list_kind), "parameters": list_params()}),
        );
        paths.insert(
            format!("{base}/{}/{{name}}", d.plural),
            json!({"get": op("get", "", &rs.object_definition, d.kind), "parameters": [name_param]}),
        );
    }
}

fn camel(group: &str) -> String {
    group
        .split('.')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// Converts a Swagger 2.0 path item to OpenAPI 3 (responses with `content`, parameters with `schema`).
fn v3_path_item(item: &Value) -> Value {
    let mut out = item.clone();
    if let Some(params) = out.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            v3_parameter(p);
        }
    }
    if let Some(get) = out.get_mut("get").and_then(Value::as_object_mut) {
        get.remove("produces");
        get.remove("schemes");
        if let Some(ok) = get
            .get_mut("responses")
            .and_then(|r| r.get_mut("200"))
            .and_then(Value::as_object_mut)
            && let Some(schema) = ok.remove("schema")
        {
            ok.insert(
                "content".into(),
                json!({"application/json": {"schema": schema}}),
            );
        }
    }
    out
}

fn v3_parameter(p: &mut Value) {
    if let Some(obj) = p.as_object_mut() {
        let type_ = obj.remove("type").unwrap_or(json!("string"));
        obj.remove("uniqueItems");
        obj.insert("schema".into(), json!({"type": type_, "uniqueItems": true}));
    }
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "$ref" {
                    if let Value::String(s) = val {
                        *s = s.replace("#/definitions/", "#/components/schemas/");
                    }
                } else {
                    rewrite_refs(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Collects the definitions reachable from `roots` via `$ref`.
fn reachable(defs: &Map<String, Value>, roots: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut stack: Vec<String> = roots.to_vec();
    while let Some(name) = stack.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(schema) = defs.get(&name) else {
            continue;
        };
        collect_refs(schema, &mut stack);
        out.insert(name, schema.clone());
    }
    out
}

fn collect_refs(v: &Value, into: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match (k.as_str(), val) {
                    ("$ref", Value::String(s)) => {
                        if let Some(n) = s.strip_prefix("#/definitions/") {
                            into.push(n.to_string());
                        }
                    }
                    _ => collect_refs(val, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, into)),
        _ => {}
    }
}

impl OpenApiSpec {
    /// Renders the v2, v3 discovery and per group-version v3 documents.
    pub fn render(&self, title: &str, version: &str) -> OpenApiDocs {
        let mut paths = Map::new();
        for (_, resources) in &self.group_versions {
            for rs in resources {
                v2_paths(rs, &mut paths);
            }
        }
        let v2 = json!({
            "swagger": "2.0",
            "info": {"title": title, "version": version},
            "paths": paths,
            "definitions": self.definitions,
        });
        let mut v3 = Vec::new();
        let mut root_paths = Map::new();
        for (gv, resources) in &self.group_versions {
            let mut gv_paths = Map::new();
            for rs in resources {
                v2_paths(rs, &mut gv_paths);
            }
            let gv_paths: Map<String, Value> = gv_paths
                .iter()
                .map(|(k, v)| (k.clone(), v3_path_item(v)))
                .collect();
            let roots: Vec<String> = resources
                .iter()
                .flat_map(|r| [r.object_definition.clone(), r.list_definition.clone()])
                .collect();
            let mut doc = json!({
                "openapi": "3.0.0",
                "info": {"title": title, "version": version},
                "paths": gv_paths,
                "components": {"schemas": reachable(&self.definitions, &roots)},
            });
            rewrite_refs(&mut doc);
            let rendered = Rendered::new(&doc);
            let key = format!("apis/{gv}");
            root_paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", rendered.hash)}),
            );
            v3.push((key, rendered));
        }
        OpenApiDocs {
            v2: Rendered::new(&v2),
            v3_root: Rendered::new(&json!({"paths": root_paths})),
            v3,
        }
    }
}

/// Builds a spec from the served group/versions and their schemas.
pub fn spec_for(
    group_versions: &[GroupVersion],
    resources: Vec<ResourceSchema>,
    schemas: Schemas,
) -> OpenApiSpec {
    let mut definitions = Map::new();
    for (name, schema) in meta_definitions().into_iter().chain(schemas) {
        definitions.insert(name, schema);
    }
    let gvs = group_versions
        .iter()
        .map(|gv| {
            let rs = resources
                .iter()
                .filter(|r| r.descriptor.group == gv.group && r.descriptor.version == gv.version)
                .cloned()
                .collect();
            (gv.group_version(), rs)
        })
        .collect();
    OpenApiSpec {
        group_versions: gvs,
        definitions,
    }
}
