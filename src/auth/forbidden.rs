//! The 403 Forbidden Status exactly as kube-apiserver writes it.

use crate::api::request_info::RequestInfo;
use crate::api::status::{ApiError, StatusDetails};

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Builds the Forbidden error for `user` doing `info`, with the authorizer's reason.
pub fn forbidden(user: &str, info: &RequestInfo, reason: &str) -> ApiError {
    let mut inner = if !info.is_resource_request {
        format!(
            "User \"{user}\" cannot {} path \"{}\"",
            info.verb, info.path
        )
    } else {
        let resource = if info.subresource.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        if info.namespace.is_empty() {
            format!(
                "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
                info.verb, info.api_group
            )
        } else {
            format!(
                "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"",
                info.verb, info.api_group, info.namespace
            )
        }
    };
    if !reason.is_empty() {
        inner = format!("{inner}: {reason}");
    }
    let inner = html_escape(&inner);
    if !info.is_resource_request {
        return ApiError::forbidden(format!("forbidden: {inner}"), StatusDetails::default());
    }
    let qualified = if info.api_group.is_empty() {
        info.resource.clone()
    } else {
        format!("{}.{}", info.resource, info.api_group)
    };
    let message = if info.name.is_empty() {
        format!("{qualified} is forbidden: {inner}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {inner}", info.name)
    };
    ApiError::forbidden(
        message,
        StatusDetails {
            name: info.name.clone(),
            group: info.api_group.clone(),
            kind: info.resource.clone(),
            ..StatusDetails::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn info(path: &str) -> RequestInfo {
        RequestInfo::new(&Method::GET, path, &crate::api::query::Query::default())
    }

    #[test]
    fn messages_match_kube_apiserver() {
        let e = forbidden(
            "alice",
            &info("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"),
            "",
        );
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods.metrics.k8s.io is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"default\"","reason":"Forbidden","details":{"group":"metrics.k8s.io","kind":"pods"},"code":403}"#
        );
        let e = forbidden(
            "alice",
            &info("/apis/data.kubedojo.io/v1alpha1/namespaces/ns1/datarecords/x"),
            "",
        );
        assert_eq!(
            e.message,
            r#"datarecords.data.kubedojo.io "x" is forbidden: User "alice" cannot get resource "datarecords" in API group "data.kubedojo.io" in the namespace "ns1""#
        );
        let e = forbidden("alice", &info("/apis/metrics.k8s.io/v1beta1/nodes"), "");
        assert_eq!(
            e.message,
            r#"nodes.metrics.k8s.io is forbidden: User "alice" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#
        );
        let e = forbidden("system:anonymous", &info("/metrics"), "");
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/metrics\"","reason":"Forbidden","details":{},"code":403}"#
        );
    }
}
