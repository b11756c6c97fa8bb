//! `manifests/rbac.yaml` grants exactly what the server and its readers need.

use serde::Deserialize;
use serde_json::{Value, json};

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/rbac.yaml"))
        .unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} missing"))
}

#[test]
fn rbac_is_minimal() {
    let docs = documents();
    assert_eq!(docs.len(), 6);
    // The lab's namespace; only the auth-reader RoleBinding lives in kube-system.
    let sa = json!([{"kind": "ServiceAccount", "name": "kubedojo-data-api", "namespace": "kubedojo-system"}]);
    let sa_named = find(&docs, "ServiceAccount", "kubedojo-data-api");
    assert_eq!(sa_named["metadata"]["namespace"], "kubedojo-system");
    let delegator = find(
        &docs,
        "ClusterRoleBinding",
        "kubedojo-data-api:system:auth-delegator",
    );
    assert_eq!(delegator["roleRef"]["name"], "system:auth-delegator");
    assert_eq!(delegator["subjects"], sa);
    let reader = find(&docs, "RoleBinding", "kubedojo-data-api-auth-reader");
    assert_eq!(reader["metadata"]["namespace"], "kube-system");
    assert_eq!(
        reader["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extension-apiserver-authentication-reader"})
    );
    assert_eq!(reader["subjects"], sa);
    assert_eq!(
        find(&docs, "ClusterRoleBinding", "system:kubedojo-data-api")["subjects"],
        sa
    );
    assert_eq!(
        find(&docs, "ClusterRole", "system:kubedojo-data-api")["rules"],
        json!([
            {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}
        ])
    );
    let agg = find(&docs, "ClusterRole", "system:kubedojo-aggregated-reader");
    for role in ["view", "edit", "admin"] {
        assert_eq!(
            agg["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{role}")],
            "true"
        );
    }
    assert_eq!(
        agg["rules"],
        json!([
            {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["data.kubedojo.io"], "resources": ["datarecords"], "verbs": ["get", "list", "watch"]}
        ])
    );
    let text = serde_json::to_string(&docs).unwrap();
    assert!(!text.contains("\"*\""), "no wildcards");
    assert!(!text.contains("secrets"), "no secrets");
}
