//! `manifests/components/sharding` grants exactly what Lease membership needs: leases in the
//! server's own namespace, no more, and turns sharding on with the downward API's identity.

use serde::Deserialize;
use serde_json::{Value, json};

fn documents(file: &str) -> Vec<Value> {
    let path = format!(
        "{}/manifests/components/sharding/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn lease_rbac_is_a_role_in_the_own_namespace_and_nothing_broader() {
    let docs = documents("rbac.yaml");
    assert_eq!(docs.len(), 2);
    let role = &docs[0];
    assert_eq!(role["kind"], "Role", "namespaced, never a ClusterRole");
    assert_eq!(role["metadata"]["namespace"], "kubedojo-system");
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"]
        }])
    );
    let binding = &docs[1];
    assert_eq!(binding["kind"], "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "kubedojo-system");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kubedojo-data-api", "namespace": "kubedojo-system"}])
    );
}

#[test]
fn the_component_turns_sharding_on_with_the_pod_identity() {
    let docs = documents("kustomization.yaml");
    let patch = docs[0]["patches"][0]["patch"].as_str().unwrap();
    for needle in [
        "--peer-port=10251",
        "--scrape-replication=1",
        "fieldPath: metadata.name",
        "fieldPath: status.podIP",
        "fieldPath: metadata.namespace",
    ] {
        assert!(patch.contains(needle), "{needle} missing");
    }
    // The flags it passes are the server's.
    use clap::Parser;
    let cli = kubedojo_data_api::config::Cli::try_parse_from([
        "kubedojo-data-api",
        "--peer-port=10251",
        "--scrape-replication=1",
    ])
    .unwrap();
    assert_eq!(cli.serve.ha.peer_port, 10251);
    assert_eq!(cli.serve.ha.scrape_replication, 1);
    assert!(
        kubedojo_data_api::config::Cli::try_parse_from([
            "kubedojo-data-api",
            "--scrape-replication=0"
        ])
        .is_err()
    );
}
