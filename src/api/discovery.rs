//! Discovery documents: legacy (`APIGroupList`, `APIGroup`, `APIResourceList`) and
//! aggregated (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`). They are static:
//! served before any data exists and whatever the state of the scraper.

use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use super::negotiate::parse_accept;
use super::resource::ResourceDescriptor;

/// One API group/version and the resources we serve in it.
#[derive(Debug)]
pub struct GroupVersion {
    /// Group name.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Resources, in the order discovery lists them.
    pub resources: Vec<&'static ResourceDescriptor>,
}

impl GroupVersion {
    /// `<group>/<version>`.
    pub fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    fn version_for_discovery(&self) -> Value {
        json!({"groupVersion": self.group_version(), "version": self.version})
    }

    /// The `APIGroup` document for `/apis/<group>`.
    pub fn api_group(&self) -> Value {
        json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": self.group,
            "versions": [self.version_for_discovery()],
            "preferredVersion": self.version_for_discovery(),
        })
    }

    /// The `APIResourceList` for `/apis/<group>/<version>`.
    pub fn api_resource_list(&self) -> Value {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .map(|r| {
                let mut v = json!({
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": r.verbs,
                });
                if !r.short_names.is_empty() {
                    v["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    v["categories"] = json!(r.categories);
                }
                v
            })
            .collect();
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": self.group_version(),
            "resources": resources,
        })
    }

    fn aggregated_entry(&self) -> Value {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .map(|r| {
                let mut v = json!({
                    "resource": r.plural,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": r.verbs,
                });
                if !r.short_names.is_empty() {
                    v["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    v["categories"] = json!(r.categories);
                }
                v
            })
            .collect();
        json!({
            "metadata": {"name": self.group},
            "versions": [{"version": self.version, "resources": resources, "freshness": "Current"}],
        })
    }
}

/// The legacy `APIGroupList` for `/apis`.
pub fn api_group_list(groups: &[GroupVersion]) -> Value {
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "name": g.group,
                "versions": [g.version_for_discovery()],
                "preferredVersion": g.version_for_discovery(),
            })
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Media type of the aggregated discovery document.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The aggregated discovery document and its ETag (quoted upper-case hex SHA-512).
pub fn aggregated(groups: &[GroupVersion]) -> (Vec<u8>, String) {
    let items: Vec<Value> = groups.iter().map(GroupVersion::aggregated_entry).collect();
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    let bytes = serde_json::to_vec(&doc).expect("discovery serialises");
    let etag = format!("\"{}\"", hex_upper(&Sha512::digest(&bytes)));
    (bytes, etag)
}

/// Upper-case hex of a digest.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// True when the `Accept` header asks for the aggregated v2 document.
pub fn wants_aggregated(accept: Option<&str>) -> bool {
    let Some(h) = accept else { return false };
    for r in parse_accept(h) {
        if !r.accepts_json() {
            continue;
        }
        let aggregated = r.param("g") == Some("apidiscovery.k8s.io")
            && r.param("v") == Some("v2")
            && r.param("as") == Some("APIGroupDiscoveryList");
        if aggregated {
            return true;
        }
        if r.param("as").is_none() {
            // A plain JSON clause ranked first: legacy document.
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_selects_document() {
        assert!(wants_aggregated(Some(AGGREGATED_CONTENT_TYPE)));
        assert!(wants_aggregated(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json"
        )));
        assert!(wants_aggregated(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )));
        assert!(!wants_aggregated(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_aggregated(Some("application/json")));
        assert!(!wants_aggregated(None));
    }
}
