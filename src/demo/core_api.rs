//! Demo mode only: the read-only slice of the core API (`/api`, `/api/v1`, nodes,
//! pods, namespaces, events) that `kubectl top` and `kubectl describe` read, served
//! from the simulated cluster.

use std::collections::BTreeMap;

use http::Response;
use serde_json::{Value, json};

use crate::api::label_selector::LabelSelector;
use crate::api::list_options::ListOptions;
use crate::api::query::Query;
use crate::api::request_info::RequestInfo;
use crate::api::response::{self, Body};
use crate::api::status::ApiError;
use crate::server::ExtraRoutes;

/// Core objects of the simulated cluster.
pub struct DemoCoreApi {
    nodes: Vec<Value>,
    pods: Vec<Value>,
    namespaces: Vec<Value>,
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

impl DemoCoreApi {
    /// Serves these nodes and pods (v1 objects); namespaces are derived from the pods.
    pub fn new(nodes: Vec<Value>, pods: Vec<Value>) -> Self {
        let mut names: Vec<String> = pods
            .iter()
            .map(|p| str_at(p, "/metadata/namespace").to_string())
            .collect();
        names.extend([
            "default".to_string(),
            "kube-system".to_string(),
            "monitoring".to_string(),
        ]);
        names.sort();
        names.dedup();
        let namespaces = names
            .iter()
            .map(|n| json!({"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}))
            .collect();
        DemoCoreApi {
            nodes,
            pods,
            namespaces,
        }
    }

    fn list(kind: &str, items: Vec<&Value>) -> Response<Body> {
        let items: Vec<Value> = items.into_iter().cloned().collect();
        response::json_value(
            &json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
        )
    }

    fn one(kind: &str, obj: &Value) -> Response<Body> {
        let mut obj = obj.clone();
        obj["kind"] = json!(kind);
        obj["apiVersion"] = json!("v1");
        response::json_value(&obj)
    }

    fn resources() -> Value {
        json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": ["get", "list"], "shortNames": ["ev"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]},
            {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "verbs": ["get", "list"], "shortNames": ["no"]},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]}
        ]})
    }

    fn resource(&self, info: &RequestInfo, query: &Query) -> Result<Response<Body>, ApiError> {
        if info.verb != "get" && info.verb != "list" {
            return Err(ApiError::method_not_allowed());
        }
        let opts = ListOptions::from_query(query, false)?;
        let selector: &LabelSelector = &opts.label_selector;
        let (kind, pool): (&str, &[Value]) = match info.resource.as_str() {
            "nodes" if info.namespace.is_empty() => ("Node", &self.nodes),
            "pods" => ("Pod", &self.pods),
            "namespaces" => ("Namespace", &self.namespaces),
            "events" => ("Event", &[]),
            _ => return Err(ApiError::unknown_resource()),
        };
        let in_scope = |o: &&Value| {
            info.namespace.is_empty() || str_at(o, "/metadata/namespace") == info.namespace
        };
        if info.verb == "get" {
            return pool
                .iter()
                .filter(in_scope)
                .find(|o| str_at(o, "/metadata/name") == info.name)
                .map(|o| Self::one(kind, o))
                .ok_or_else(|| ApiError::not_found("", &info.resource, &info.name));
        }
        let items: Vec<&Value> = pool
            .iter()
            .filter(in_scope)
            .filter(|o| selector.matches(&labels_of(o)))
            .filter(|o| {
                opts.field_selector.matches(&crate::api::meta::ObjectMeta {
                    name: str_at(o, "/metadata/name").to_string(),
                    namespace: Some(str_at(o, "/metadata/namespace").to_string())
                        .filter(|s| !s.is_empty()),
                    ..Default::default()
                })
            })
            .collect();
        Ok(Self::list(kind, items))
    }
}

impl ExtraRoutes for DemoCoreApi {
    fn handle(
        &self,
        info: &RequestInfo,
        query: &Query,
        _accept: Option<&str>,
    ) -> Option<Response<Body>> {
        let path = info.path.trim_end_matches('/');
        if path == "/api" {
            return Some(response::json_value(
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ));
        }
        if path == "/api/v1" {
            return Some(response::json_value(&Self::resources()));
        }
        if info.is_resource_request && info.api_prefix == "api" {
            if info.api_version != "v1" {
                return Some(response::page_not_found());
            }
            return Some(
                self.resource(info, query)
                    .unwrap_or_else(|e| response::error(&e)),
            );
        }
        None
    }
}
