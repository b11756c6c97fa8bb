//! Watch on metrics.k8s.io against the in-process demo (simulated kubelets, 1 s resolution):
//! the raw event stream, and kube-rs' watcher keeping an exact copy of the store.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TABLE, TestServer};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kubedojo_data_api::sim::Behaviour;
use serde_json::Value;

const M: &str = "/apis/metrics.k8s.io/v1beta1";

async fn wait_for_metrics(t: &TestServer) {
    let f = t.server.sim.as_ref().unwrap().fleet().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, pods) = t.get_json(&format!("{M}/pods"), None).await;
        let (_, nodes) = t.get_json(&format!("{M}/nodes"), None).await;
        if pods["items"].as_array().map_or(0, Vec::len) == f.pod_count()
            && nodes["items"].as_array().map_or(0, Vec::len) == f.nodes.len()
        {
            return;
        }
        assert!(Instant::now() < deadline, "metrics never complete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads watch events for `for_` (or until the server ends the stream).
async fn events(
    t: &TestServer,
    path: &str,
    accept: Option<&str>,
    for_: Duration,
) -> (u16, Vec<Value>) {
    let mut resp = t.get(path, accept).await;
    let code = resp.status().as_u16();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + for_;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        buf.extend_from_slice(&chunk);
    }
    let events = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (code, events)
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_with_selectors() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let f = t.server.sim.as_ref().unwrap().fleet().clone();

    // Discovery: both resources can be watched.
    let (_, rl) = t.get_json(M, None).await;
    for r in rl["resources"].as_array().unwrap() {
        assert_eq!(
            r["verbs"],
            serde_json::json!(["get", "list", "watch"]),
            "{r}"
        );
    }
    // Lists carry a resourceVersion with this process's epoch.
    let (_, list) = t.get_json(&format!("{M}/pods"), None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rv.contains('-'), "{rv}");

    // All pods: every pod ADDED, then MODIFIED as scrapes land (1 s resolution).
    let (code, ev) = events(
        &t,
        &format!("{M}/pods?watch=true&timeoutSeconds=4"),
        None,
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(code, 200);
    let added = of_type(&ev, "ADDED");
    assert_eq!(added.len(), f.pod_count(), "{ev:?}");
    assert_eq!(added[0]["object"]["kind"], "PodMetrics");
    assert_eq!(added[0]["object"]["apiVersion"], "metrics.k8s.io/v1beta1");
    assert!(added[0]["object"]["containers"].is_array());
    let modified = of_type(&ev, "MODIFIED");
    assert!(
        modified.len() >= f.pod_count(),
        "each pod changes at every scrape: {} MODIFIED",
        modified.len()
    );
    // At most one MODIFIED per pod per published snapshot: consecutive MODIFIEDs of one pod
    // differ in what is served.
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for e in &ev {
        let key = format!(
            "{}/{}",
            e["object"]["metadata"]["namespace"], e["object"]["metadata"]["name"]
        );
        let mut served = e["object"].clone();
        served["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("creationTimestamp");
        if e["type"] == "MODIFIED" {
            assert_ne!(last.get(&key), Some(&served), "a MODIFIED without a change");
        }
        last.insert(key, served);
    }

    // One namespace and a label selector, on the /watch/ path.
    let (_, first) = t.get_json(&format!("{M}/pods"), None).await;
    let item = &first["items"][0];
    let ns = item["metadata"]["namespace"].as_str().unwrap();
    let app = item["metadata"]["labels"]["app"].as_str().unwrap();
    let want: Vec<&str> = f
        .pods()
        .filter(|(_, p)| *p.namespace == *ns && *p.app == *app)
        .map(|(_, p)| p.name.as_str())
        .collect();
    let (code, ev) = events(
        &t,
        &format!("{M}/watch/namespaces/{ns}/pods?labelSelector=app%3D{app}&timeoutSeconds=2"),
        None,
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(code, 200);
    assert!(!ev.is_empty());
    for e in &ev {
        assert_eq!(e["object"]["metadata"]["namespace"], ns, "{e}");
        assert_eq!(e["object"]["metadata"]["labels"]["app"], app, "{e}");
    }
    let mut names: Vec<&str> = of_type(&ev, "ADDED")
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut want = want;
    want.sort();
    assert_eq!(names, want);

    // A field selector on nodes, and the WatchList bookmark.
    let node = &f.nodes[1].name;
    let (_, ev) = events(
        &t,
        &format!(
            "{M}/nodes?watch=1&fieldSelector=metadata.name%3D{node}&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"
        ),
        None,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["kind"], "NodeMetrics");
    assert_eq!(ev[0]["object"]["metadata"]["name"], node.as_str());
    assert_eq!(ev[1]["type"], "BOOKMARK");
    assert_eq!(
        ev[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(
        ev.iter()
            .all(|e| e["type"] == "BOOKMARK" || e["object"]["metadata"]["name"] == node.as_str())
    );

    // kubectl get -w asks for a Table.
    let (_, ev) = events(
        &t,
        &format!("{M}/nodes?watch=true&timeoutSeconds=1"),
        Some(TABLE),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(ev[0]["object"]["kind"], "Table");
    assert_eq!(ev[0]["object"]["rows"].as_array().unwrap().len(), 1);

    // A resourceVersion of another process (or replica): 410, the client relists.
    let (code, ev) = events(
        &t,
        &format!("{M}/pods?watch=true&resourceVersion=1700000000000-00000000"),
        None,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    // A recent one of this process resumes without ADDED.
    let (_, list) = t.get_json(&format!("{M}/nodes"), None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let (_, ev) = events(
        &t,
        &format!("{M}/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=3"),
        None,
        Duration::from_secs(6),
    )
    .await;
    assert!(of_type(&ev, "ERROR").is_empty(), "{ev:?}");
    assert!(!of_type(&ev, "MODIFIED").is_empty(), "{ev:?}");

    // A node that stops answering leaves the store: its NodeMetrics and pods are DELETED.
    let sim = t.server.sim.as_ref().unwrap();
    let gone = f.nodes[0].name.clone();
    let watch = tokio::spawn({
        let client = t.client.clone();
        let url = format!("{}{M}/pods?watch=true&timeoutSeconds=12", t.base);
        let token = t.server.token.clone();
        async move {
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            resp.text().await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.set_behaviour(0, Behaviour::Status(500)).await.unwrap();
    let text = watch.await.unwrap();
    let deleted: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "DELETED")
        .collect();
    let on_gone = f.pods().filter(|(n, _)| n.name == gone).count();
    assert_eq!(deleted.len(), on_gone, "{text}");
}

#[tokio::test]
async fn kube_rs_watcher_keeps_an_exact_copy() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&t.server.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    );
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let writer2 = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let reader2 = writer2.as_reader();
    let stream = reflector::reflector(writer2, watcher(api, watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let task = tokio::spawn(stream);
    reader2.wait_until_ready().await.unwrap();

    // Across several ticks, the reflector's copy equals a fresh list (served content:
    // timestamp, window, containers, labels).
    let served = |o: &Value| -> Value {
        let mut o = o.clone();
        let m = o["metadata"].as_object_mut().unwrap();
        m.retain(|k, _| k == "name" || k == "namespace" || k == "labels");
        o.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "kind" && k != "apiVersion");
        o
    };
    let mut matched_versions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while matched_versions.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the reflector never matched 3 lists"
        );
        let (_, list) = t.get_json(&format!("{M}/pods"), None).await;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut want: Vec<Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(served)
            .collect();
        want.sort_by_key(|o| o["metadata"]["name"].to_string());
        // The hub polls every 250 ms: allow it a moment to catch up with this list.
        let mut ok = false;
        for _ in 0..8 {
            let mut got: Vec<Value> = reader2
                .state()
                .iter()
                .map(|o| served(&serde_json::to_value(&**o).unwrap()))
                .collect();
            got.sort_by_key(|o| o["metadata"]["name"].to_string());
            if got == want {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ok && matched_versions.last() != Some(&rv) {
            matched_versions.push(rv);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    task.abort();
}
