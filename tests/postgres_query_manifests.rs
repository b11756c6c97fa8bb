//! `manifests/components/postgres-query` grants exactly what the postgresQuery source
//! needs (get, list and watch of its one definitions ConfigMap, in the server's
//! namespace), and the sources config, flags, mounts and RBAC it ships agree with each
//! other and with the server's own parsers. tests/chart/run.sh renders the component
//! with `kubectl kustomize` and compares it with the chart's output.

use clap::Parser;
use kubedojo_data_api::records::sources_config::{SecretRef, SourceConfig, SourcesConfig};
use serde::Deserialize;
use serde_json::{Value, json};

fn documents(path: &str) -> Vec<Value> {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn component(file: &str) -> Vec<Value> {
    documents(&format!("manifests/components/postgres-query/{file}"))
}

const SA: &str = "kubedojo-data-api";
const NS: &str = "kubedojo-system";
const QUERIES: &str = "kubedojo-data-api-queries";

#[test]
fn the_role_reads_the_one_definitions_configmap_and_nothing_else() {
    let docs = component("rbac.yaml");
    assert_eq!(docs.len(), 2);
    let role = &docs[0];
    assert_eq!(role["kind"], "Role", "namespaced, never a ClusterRole");
    assert_eq!(role["metadata"]["namespace"], NS);
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [QUERIES],
            "verbs": ["get", "list", "watch"]
        }])
    );
    let binding = &docs[1];
    assert_eq!(binding["kind"], "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], NS);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": SA, "namespace": NS}])
    );
    // The component grants nothing else: no other RBAC object in its resources.
    let kustomization = &component("kustomization.yaml")[0];
    assert_eq!(
        kustomization["resources"],
        json!(["sources.yaml", "rbac.yaml"])
    );
    let sources = component("sources.yaml");
    assert!(sources.iter().all(|d| d["kind"] == "ConfigMap"));
}

/// The JSON patch ops the component applies to the Deployment.
fn patch_ops() -> Vec<Value> {
    let kustomization = &component("kustomization.yaml")[0];
    let patches = kustomization["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0]["target"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment", "name": SA})
    );
    serde_yaml_ng::from_str(patches[0]["patch"].as_str().unwrap()).unwrap()
}

#[test]
fn the_sources_config_flag_mounts_and_role_name_the_same_things() {
    // The sources config is one the server accepts.
    let cm = &component("sources.yaml")[0];
    assert_eq!(
        (&cm["metadata"]["name"], &cm["metadata"]["namespace"]),
        (&json!("kubedojo-data-api-sources"), &json!(NS))
    );
    let text = cm["data"]["sources.yaml"].as_str().unwrap();
    let config = SourcesConfig::parse("sources.yaml", text).unwrap();
    let kinds: Vec<&str> = config.sources.iter().map(SourceConfig::kind).collect();
    assert_eq!(kinds, ["file", "postgresQuery", "computed"]);
    let SourceConfig::PostgresQuery(query) = &config.sources[1] else {
        unreachable!()
    };
    assert!(
        query.records.is_empty(),
        "the definitions are the ConfigMap's"
    );
    let defs = query.config_map.as_ref().expect("a definitions ConfigMap");
    assert_eq!(
        (
            defs.namespace.as_str(),
            defs.name.as_str(),
            defs.key.as_str()
        ),
        (NS, QUERIES, "records.yaml"),
        "the ConfigMap the Role names"
    );
    assert_eq!(config.connections.len(), 1);
    let conn = &config.connections[0];
    assert_eq!(conn.name, query.connection);
    let SecretRef::File(dsn) = &conn.dsn_from else {
        panic!("the DSN comes from the mounted Secret: {:?}", conn.dsn_from)
    };

    // The Deployment patch: the flag, the two mounts and their volumes.
    let ops = patch_ops();
    assert!(ops.iter().all(|o| o["op"] == "add"));
    let container = "/spec/template/spec/containers/0";
    let flag = ops
        .iter()
        .find(|o| o["path"] == format!("{container}/args/3"))
        .expect("the --sources-config flag");
    let flag = flag["value"].as_str().unwrap();
    let mounts: Vec<&Value> = ops
        .iter()
        .filter(|o| o["path"] == format!("{container}/volumeMounts/-"))
        .map(|o| &o["value"])
        .collect();
    let volumes: Vec<&Value> = ops
        .iter()
        .filter(|o| o["path"] == "/spec/template/spec/volumes/-")
        .map(|o| &o["value"])
        .collect();
    assert_eq!(ops.len(), 1 + mounts.len() + volumes.len(), "{ops:?}");
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("mount {name}"))
    };
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    assert_eq!(mounts.len(), 2);
    assert_eq!(volumes.len(), 2);
    for m in &mounts {
        assert_eq!(m["readOnly"], true, "{m}");
    }
    // --sources-config reads sources.yaml from the mounted sources ConfigMap.
    let sources_dir = mount("sources")["mountPath"].as_str().unwrap();
    assert_eq!(flag, format!("--sources-config={sources_dir}/sources.yaml"));
    assert_eq!(
        volume("sources")["configMap"],
        json!({"name": "kubedojo-data-api-sources"})
    );
    // The DSN file is the Secret's key `dsn`, owner-read only, in the postgres-dsn mount.
    let dsn_dir = mount("postgres-dsn")["mountPath"].as_str().unwrap();
    assert_eq!(dsn, &std::path::Path::new(dsn_dir).join("dsn"));
    let mut secret = volume("postgres-dsn")["secret"].clone();
    // `0400`: YAML 1.1's octal, as kubectl reads it (serde_yaml_ng keeps the text).
    let mode = secret["defaultMode"].take();
    assert!(mode == json!(0o400) || mode == json!("0400"), "{mode}");
    assert_eq!(
        secret,
        json!({
            "secretName": "kubedojo-data-api-postgres",
            "defaultMode": null,
            "items": [{"key": "dsn", "path": "dsn"}]
        })
    );

    // The base Deployment's flags with the component's are the server's, and no flag
    // carries the DSN.
    let deployment = &documents("manifests/deployment.yaml")[0];
    let mut args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    args.insert(3, flag.to_string());
    assert!(!args.iter().any(|a| a.contains("postgres")), "{args:?}");
    let cli = kubedojo_data_api::config::Cli::try_parse_from(
        std::iter::once("kubedojo-data-api".to_string()).chain(args),
    )
    .unwrap();
    assert_eq!(
        cli.serve.common.sources_config.as_deref(),
        Some(std::path::Path::new(&format!("{sources_dir}/sources.yaml")))
    );
}
