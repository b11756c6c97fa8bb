//! Whole-snapshot lists on the blocking pool ([`App::list_on_blocking_pool`]): a panic in
//! the encoder is the same 500 as anywhere else, and never leaks an encoding slot.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::{App, ConnInfo};
use crate::api::discovery::GroupVersion;
use crate::api::openapi::OpenApiSpec;
use crate::api::resource::{ApiObject, ResourceDescriptor, ResourceProvider, ResourceSnapshot};
use crate::auth::{AlwaysAllowGroups, AuthChain, UNAUTHENTICATED_GROUP};
use crate::server::health::Health;

static THINGS: ResourceDescriptor = ResourceDescriptor {
    group: "test.kubedojo.io",
    version: "v1",
    plural: "things",
    singular: "thing",
    kind: "Thing",
    list_kind: "ThingList",
    namespaced: true,
    verbs: &["get", "list"],
    short_names: &[],
    categories: &[],
    columns: &[],
    not_found_resource: "things",
    not_found_uses_namespaced_name: false,
    lists_have_resource_version: true,
};

/// A resource whose every scan panics (a bug in an encoder).
struct Panicking;

impl ResourceSnapshot for Panicking {
    fn resource_version(&self) -> &str {
        "1"
    }
    fn get(&self, _: Option<&str>, _: &str, _: &mut dyn FnMut(&dyn ApiObject)) {}
    fn visit(
        &self,
        _: Option<&str>,
        _: Option<(&str, &str)>,
        _: &mut dyn FnMut(&dyn ApiObject) -> ControlFlow<()>,
    ) {
        panic!("test encoder bug");
    }
}

impl ResourceProvider for Panicking {
    fn descriptor(&self) -> &'static ResourceDescriptor {
        &THINGS
    }
    fn snapshot(&self) -> Arc<dyn ResourceSnapshot> {
        Arc::new(Panicking)
    }
}

fn app() -> App {
    let groups = vec![GroupVersion {
        group: THINGS.group,
        version: THINGS.version,
        resources: vec![&THINGS],
    }];
    let openapi = OpenApiSpec {
        group_versions: vec![],
        definitions: serde_json::Map::new(),
    }
    .render("test", "v0");
    let everyone = AlwaysAllowGroups(vec![UNAUTHENTICATED_GROUP.to_string()]);
    let auth = AuthChain::new(vec![], vec![Arc::new(everyone)], true);
    App::new(
        groups,
        vec![Arc::new(Panicking)],
        openapi,
        auth,
        Health::new(),
        vec![],
    )
}

async fn get(app: &App, path: &str) -> (u16, serde_json::Value) {
    let req = http::Request::get(path)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = app.handle(req, &ConnInfo::default()).await;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn a_panic_while_encoding_a_whole_snapshot_list_is_a_500_and_frees_its_slot() {
    let app = app();
    let slots = app.whole_lists.available_permits();
    // More panicking lists than there are slots: a leaked slot would make the last ones wait
    // for ever.
    for _ in 0..slots + 2 {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            get(&app, "/apis/test.kubedojo.io/v1/things"),
        )
        .await
        .expect("a whole-snapshot list after a panicking one is answered");
        assert_eq!(answer.0, 500, "{}", answer.1);
        assert_eq!(answer.1["reason"], "InternalError", "{}", answer.1);
    }
    assert_eq!(app.whole_lists.available_permits(), slots);
    // The namespaced list is encoded on the worker: the same answer.
    let (code, status) = get(&app, "/apis/test.kubedojo.io/v1/namespaces/a/things").await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (500, Some("InternalError"))
    );
}

#[test]
fn only_lists_without_a_namespace_scan_the_whole_snapshot() {
    use crate::api::endpoint::list_scope;
    use crate::api::list_options::ListOptions;
    use crate::api::query::Query;
    let opts = |q: &str| ListOptions::from_query(&Query::parse(Some(q)), false).unwrap();
    let scans_every_namespace = |ns: Option<&str>, o: &ListOptions| list_scope(ns, o).is_none();
    assert!(scans_every_namespace(None, &opts("")));
    assert!(scans_every_namespace(
        None,
        &opts("labelSelector=app%3Dweb")
    ));
    assert!(scans_every_namespace(
        None,
        &opts("fieldSelector=metadata.namespace!%3Da")
    ));
    assert!(!scans_every_namespace(Some("a"), &opts("")));
    assert!(!scans_every_namespace(
        None,
        &opts("fieldSelector=metadata.namespace%3Da")
    ));
}
