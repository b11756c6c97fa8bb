//! What a correct server must answer: the fleet's node and pod counts and its deployments
//! (namespace, `app` label, pod count), read once from kubelet-sim's `--objects-out` List.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The expected answers (written by `kd-load targets`, read by `kd-load run`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Targets {
    /// Nodes a server must list.
    pub nodes: usize,
    /// Pods a server must list.
    pub pods: usize,
    /// `(namespace, app, pods)` of every deployment, sorted.
    pub deployments: Vec<(String, String, usize)>,
}

#[derive(Deserialize)]
struct List {
    items: Vec<Object>,
}

#[derive(Deserialize)]
struct Object {
    kind: String,
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default, rename = "nodeName")]
    node_name: String,
}

impl Targets {
    /// Reads the List at `path`; nodes in `exclude` (their kubelet fails on purpose) and their
    /// pods are not expected.
    pub fn from_objects(path: &Path, exclude: &[String]) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let list: List = serde_json::from_slice(&bytes).context("objects List")?;
        Ok(Self::from_list(list, exclude))
    }

    fn from_list(list: List, exclude: &[String]) -> Self {
        let mut nodes = 0;
        let mut pods = 0;
        let mut by_app: BTreeMap<(String, String), usize> = BTreeMap::new();
        for o in list.items {
            match o.kind.as_str() {
                "Node" if !exclude.contains(&o.metadata.name) => nodes += 1,
                "Pod" if !exclude.contains(&o.spec.node_name) => {
                    pods += 1;
                    if let Some(app) = o.metadata.labels.get("app") {
                        *by_app
                            .entry((o.metadata.namespace, app.clone()))
                            .or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        Self {
            nodes,
            pods,
            deployments: by_app.into_iter().map(|((n, a), c)| (n, a, c)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_nodes_and_their_pods_are_not_expected() {
        let list: List = serde_json::from_value(serde_json::json!({"items": [
            {"kind": "Namespace", "metadata": {"name": "a"}},
            {"kind": "Node", "metadata": {"name": "n1"}},
            {"kind": "Node", "metadata": {"name": "n2"}},
            {"kind": "Pod", "metadata": {"name": "p1", "namespace": "a", "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}},
            {"kind": "Pod", "metadata": {"name": "p2", "namespace": "a", "labels": {"app": "x"}}, "spec": {"nodeName": "n2"}},
            {"kind": "Pod", "metadata": {"name": "p3", "namespace": "b", "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}},
        ]}))
        .unwrap();
        let t = Targets::from_list(list, &["n2".into()]);
        assert_eq!(
            t,
            Targets {
                nodes: 1,
                pods: 2,
                deployments: vec![("a".into(), "x".into(), 1), ("b".into(), "x".into(), 1)],
            }
        );
    }
}
