//! The metrics pipeline end to end, in-process: simulated kubelets over TLS →
//! scraper → store → metrics.k8s.io, checked against the simulator's configured
//! rates, plus fault isolation and the API conventions of the metrics group.

mod common;

use std::time::{Duration, Instant};

use common::{TABLE, TestServer};
use kubedojo_data_api::sim::{Behaviour, Fleet};
use serde_json::Value;

const M: &str = "/apis/metrics.k8s.io/v1beta1";

/// Parses a canonical CPU quantity into nanocores.
fn nanocores(q: &str) -> u64 {
    let digits: String = q.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("bad cpu quantity {q}"));
    match &q[digits.len()..] {
        "n" => n,
        "u" => n * 1_000,
        "m" => n * 1_000_000,
        "" => n * 1_000_000_000,
        s => panic!("unexpected cpu suffix {s} in {q}"),
    }
}

/// Parses a canonical memory quantity into bytes.
fn bytes(q: &str) -> u64 {
    let digits: String = q.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("bad memory quantity {q}"));
    n << match &q[digits.len()..] {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        s => panic!("unexpected memory suffix {s} in {q}"),
    }
}

fn within_one_percent(got: u64, want: u64) -> bool {
    let tolerance = (want / 100).max(1_000);
    got.abs_diff(want) <= tolerance
}

fn fleet(t: &TestServer) -> std::sync::Arc<Fleet> {
    t.server
        .sim
        .as_ref()
        .expect("demo runs a simulator")
        .fleet()
        .clone()
}

/// Waits until every simulated node and pod has metrics.
async fn wait_for_metrics(t: &TestServer) {
    let f = fleet(t);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, nodes) = t.get_json(&format!("{M}/nodes"), None).await;
        let (_, pods) = t.get_json(&format!("{M}/pods"), None).await;
        let n = nodes["items"].as_array().map_or(0, Vec::len);
        let p = pods["items"].as_array().map_or(0, Vec::len);
        if n == f.nodes.len() && p == f.pod_count() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never complete: {n} nodes, {p} pods"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn node_and_pod_usage_match_the_simulator() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let f = fleet(&t);

    let (code, nodes) = t.get_json(&format!("{M}/nodes"), None).await;
    assert_eq!(code, 200);
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["apiVersion"], "metrics.k8s.io/v1beta1");
    for (item, node) in nodes["items"].as_array().unwrap().iter().zip(&f.nodes) {
        assert_eq!(item["metadata"]["name"], node.name.as_str());
        assert_eq!(
            item["metadata"]["labels"]["kubernetes.io/hostname"],
            node.name.as_str()
        );
        let cpu = nanocores(item["usage"]["cpu"].as_str().unwrap());
        assert!(
            within_one_percent(cpu, node.cpu_nanocores),
            "{}: cpu {cpu} vs {}",
            node.name,
            node.cpu_nanocores
        );
        assert_eq!(
            bytes(item["usage"]["memory"].as_str().unwrap()),
            node.memory_bytes
        );
        assert!(item["window"].as_str().unwrap().ends_with('s'));
        assert!(item["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    let (_, pods) = t.get_json(&format!("{M}/pods"), None).await;
    let items = pods["items"].as_array().unwrap();
    let mut keys: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["metadata"]["namespace"].as_str().unwrap().to_string(),
                i["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let sorted = {
        let mut k = keys.clone();
        k.sort();
        k
    };
    assert_eq!(keys, sorted, "pods must be sorted by namespace/name");
    for item in items {
        let ns = item["metadata"]["namespace"].as_str().unwrap();
        let name = item["metadata"]["name"].as_str().unwrap();
        let (_, pod) = f
            .pods()
            .find(|(_, p)| &*p.namespace == ns && p.name == name)
            .expect("pod exists in the fleet");
        assert_eq!(item["metadata"]["labels"]["app"], &*pod.app);
        let containers = item["containers"].as_array().unwrap();
        assert_eq!(
            containers.len(),
            pod.containers.len(),
            "{ns}/{name}: never a partial pod"
        );
        let names: Vec<&str> = containers
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        assert_eq!(names, sorted_names, "containers are sorted by name");
        for c in containers {
            let sim = pod
                .containers
                .iter()
                .find(|s| c["name"] == *s.name)
                .expect("container exists in the fleet");
            let cpu = nanocores(c["usage"]["cpu"].as_str().unwrap());
            assert!(
                within_one_percent(cpu, sim.cpu_nanocores),
                "{ns}/{name}/{}: cpu {cpu} vs {}",
                sim.name,
                sim.cpu_nanocores
            );
            assert_eq!(
                bytes(c["usage"]["memory"].as_str().unwrap()),
                sim.memory_bytes
            );
        }
    }
    keys.dedup();
    assert_eq!(keys.len(), f.pod_count());
}

#[tokio::test]
async fn hpa_query_selects_by_namespace_and_labels() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let f = fleet(&t);
    let (_, pod) = f.pods().next().map(|(n, p)| (n, p.clone())).unwrap();
    let (ns, app) = (pod.namespace.to_string(), pod.app.to_string());
    let mut want: Vec<String> = f
        .pods()
        .filter(|(_, p)| *p.namespace == ns && *p.app == app)
        .map(|(_, p)| p.name.clone())
        .collect();
    want.sort();
    // The HPA controller's query in JSON (its protobuf form: tests/metrics_protobuf.rs).
    let (code, list) = t
        .get_json(
            &format!("{M}/namespaces/{ns}/pods?labelSelector=app%3D{app}"),
            Some("application/json, application/vnd.kubernetes.protobuf"),
        )
        .await;
    assert_eq!(code, 200);
    let got: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);

    let (_, all) = t
        .get_json(&format!("{M}/pods?labelSelector=app%3D{app}"), None)
        .await;
    let n = f.pods().filter(|(_, p)| *p.app == app).count();
    assert_eq!(all["items"].as_array().unwrap().len(), n);

    let (_, one) = t
        .get_json(
            &format!("{M}/pods?fieldSelector=metadata.name%3D{}", pod.name),
            None,
        )
        .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn metrics_errors_and_tables() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let f = fleet(&t);
    let (code, s) = t
        .get_json(&format!("{M}/namespaces/default/pods/nope"), None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(
        s["message"],
        "podmetrics.metrics.k8s.io \"default/nope\" not found"
    );
    let (code, s) = t.get_json(&format!("{M}/nodes/nope"), None).await;
    assert_eq!(code, 404);
    assert_eq!(
        s["message"],
        "nodemetrics.metrics.k8s.io \"nope\" not found"
    );
    let (code, s) = t
        .get_json(&format!("{M}/pods?fieldSelector=spec.nodeName%3Dx"), None)
        .await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    // Watch (tests/metrics_watch.rs) validates its options like a list.
    let (code, s) = t
        .get_json(&format!("{M}/pods?watch=true&sendInitialEvents=true"), None)
        .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    let (code, _) = t
        .get_json(&format!("{M}/namespaces/default/nodes"), None)
        .await;
    assert_eq!(code, 404);

    let node = &f.nodes[0].name;
    let (code, one) = t.get_json(&format!("{M}/nodes/{node}"), None).await;
    assert_eq!(code, 200);
    assert_eq!(one["kind"], "NodeMetrics");

    let (code, table) = t.get_json(&format!("{M}/pods"), Some(TABLE)).await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, vec!["Name", "cpu", "memory", "Window"]);
    assert_eq!(table["rows"].as_array().unwrap().len(), f.pod_count());

    let (code, v2) = t.get_json("/openapi/v2", None).await;
    assert_eq!(code, 200);
    assert!(v2["definitions"]["io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics"].is_object());
}

#[tokio::test]
async fn a_bad_kubelet_affects_only_its_node() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let sim = t.server.sim.as_ref().unwrap();
    let f = fleet(&t);
    let node_ts = |nodes: &Value, name: &str| -> Option<String> {
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == name)
            .map(|i| i["timestamp"].as_str().unwrap().to_string())
    };
    for behaviour in [Behaviour::Garbage, Behaviour::Status(500), Behaviour::Hang] {
        sim.set_behaviour(0, behaviour.clone()).await.unwrap();
        let (_, before) = t.get_json(&format!("{M}/nodes"), None).await;
        let healthy_before = node_ts(&before, &f.nodes[1].name).unwrap();
        // Poll (timestamps have one-second precision and ticks slow down on a busy machine).
        let deadline = Instant::now() + Duration::from_secs(10);
        let (after, healthy_after) = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (_, after) = t.get_json(&format!("{M}/nodes"), None).await;
            let ts = node_ts(&after, &f.nodes[1].name).expect("healthy node still served");
            if ts != healthy_before || Instant::now() > deadline {
                break (after, ts);
            }
        };
        assert_ne!(
            healthy_before, healthy_after,
            "{behaviour:?}: healthy nodes keep updating"
        );
        assert!(node_ts(&after, &f.nodes[2].name).is_some());
        sim.set_behaviour(0, Behaviour::Normal).await.unwrap();
        wait_for_metrics(&t).await;
    }
    let metrics = t.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("metrics_server_kubelet_request_total{success=\"false\"}"),
        "{metrics}"
    );
    for name in [
        "metrics_server_kubelet_request_duration_seconds",
        "metrics_server_kubelet_last_request_time_seconds",
        "metrics_server_manager_tick_duration_seconds",
        "metrics_server_storage_points",
        "metrics_server_api_metric_freshness_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

/// Defect 8: with the default `--metric-stale-tolerance=0s` a node whose scrape fails drops out
/// at once with its pods, as metrics-server does (the HPA then treats them conservatively).
#[tokio::test]
async fn a_dead_node_drops_out_at_its_first_failed_scrape() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let sim = t.server.sim.as_ref().unwrap();
    let f = fleet(&t);
    let dead = f.nodes[0].name.clone();
    sim.set_behaviour(0, Behaviour::Down).await.unwrap();
    // One resolution (1 s) plus a publish: gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, _) = t.get_json(&format!("{M}/nodes/{dead}"), None).await;
        if code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dead node was still served 5 s after it went down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, pods) = t.get_json(&format!("{M}/pods"), None).await;
    let dead_pods = f.nodes[0].pods.len();
    assert_eq!(
        pods["items"].as_array().unwrap().len(),
        f.pod_count() - dead_pods
    );
    // Discovery and readiness never depend on kubelets.
    let (code, _) = t.get_json(M, None).await;
    assert_eq!(code, 200);
    assert_eq!(t.get("/readyz", None).await.status(), 200);
}

/// Names of a metrics list's items as `namespace/name`.
fn keys(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or(""),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// Follows continue tokens from `first` on `servers` in turn; returns every key seen.
async fn page_through(servers: &[&TestServer], path: &str, pause: Duration) -> Vec<String> {
    let (code, mut page) = servers[0].get_json(&format!("{path}?limit=4"), None).await;
    assert_eq!(code, 200, "{page}");
    let mut seen = keys(&page);
    let mut turn = 1;
    while let Some(token) = page["metadata"]["continue"].as_str().map(str::to_string) {
        // The metrics resourceVersion changes at every publish (each tick): wait for one.
        tokio::time::sleep(pause).await;
        let t = servers[turn % servers.len()];
        turn += 1;
        let (code, next) = t
            .get_json(&format!("{path}?limit=4&continue={token}"), None)
            .await;
        assert_eq!(
            code, 200,
            "continue after a publish / on another replica: {next}"
        );
        seen.extend(keys(&next));
        page = next;
    }
    seen
}

#[tokio::test]
async fn paging_survives_publishes_and_other_replicas() {
    let a = TestServer::start(None).await;
    let b = TestServer::start(None).await;
    wait_for_metrics(&a).await;
    wait_for_metrics(&b).await;
    let (_, all) = a.get_json(&format!("{M}/pods"), None).await;
    let want = keys(&all);
    assert!(want.len() > 8, "several pages");
    // One replica, a publish between pages (kubectl pages at 500: any cluster with more pods).
    let got = page_through(&[&a], &format!("{M}/pods"), Duration::from_millis(2500)).await;
    assert_eq!(got, want);
    // Pages alternating between two replicas (the aggregator may switch connections).
    let got = page_through(&[&a, &b], &format!("{M}/pods"), Duration::ZERO).await;
    assert_eq!(got, want);
    // Nodes too.
    let (_, nodes) = a.get_json(&format!("{M}/nodes"), None).await;
    let (code, first) = a.get_json(&format!("{M}/nodes?limit=1"), None).await;
    assert_eq!(code, 200);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let (code, rest) = b
        .get_json(&format!("{M}/nodes?continue={token}"), None)
        .await;
    assert_eq!(code, 200, "{rest}");
    let mut got = keys(&first);
    got.extend(keys(&rest));
    assert_eq!(got, keys(&nodes));
}

/// Issue 13 §1.1 on every list endpoint the demo serves: a repeated `labelSelector`,
/// `fieldSelector` or `limit` applies its first value (as kube-apiserver and the
/// authorizer read it), whatever follows.
#[tokio::test]
async fn repeated_query_parameters_take_the_first_value_on_every_endpoint() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let f = fleet(&t);
    let (node, pod) = f.pods().next().map(|(n, p)| (n, p.clone())).unwrap();
    let node = node.name.clone();
    let ns = pod.namespace.to_string();
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let dr = "/apis/data.kubedojo.io/v1alpha1";
    let cases: Vec<(String, &str, Vec<String>)> = vec![
        (format!("{M}/nodes"), node.as_str(), vec![node.clone()]),
        (
            format!("{M}/pods"),
            pod.name.as_str(),
            vec![pod.name.clone()],
        ),
        (
            format!("{M}/namespaces/{ns}/pods"),
            pod.name.as_str(),
            vec![pod.name.clone()],
        ),
        ("/api/v1/nodes".into(), node.as_str(), vec![node.clone()]),
        (
            "/api/v1/pods".into(),
            pod.name.as_str(),
            vec![pod.name.clone()],
        ),
        (
            format!("{dr}/datarecords"),
            "user-config",
            vec!["user-config".into()],
        ),
        (
            format!("{dr}/namespaces/default/datarecords"),
            "user-config",
            vec!["user-config".into()],
        ),
    ];
    for (path, name, want) in &cases {
        for accept in [None, Some(TABLE)] {
            for q in [
                format!("fieldSelector=metadata.name%3D{name}&fieldSelector="),
                format!(
                    "fieldSelector=metadata.name%3D{name}&fieldSelector=metadata.name!%3D{name}"
                ),
                format!(
                    "labelSelector=&fieldSelector=metadata.name%3D{name}&labelSelector=none%3Dsuch"
                ),
            ] {
                let url = format!("{path}?{q}");
                let (code, list) = t.get_json(&url, accept).await;
                assert_eq!(code, 200, "{url}: {list}");
                if accept.is_none() {
                    assert_eq!(&names(&list), want, "{url}");
                } else if path.starts_with("/apis/") {
                    assert_eq!(
                        list["rows"].as_array().map(Vec::len),
                        Some(1),
                        "{url}: {list}"
                    );
                }
            }
            // The reverse order selects nothing (or everything), never the first's view.
            let url = format!("{path}?labelSelector=none%3Dsuch&labelSelector=");
            let (code, list) = t.get_json(&url, None).await;
            assert_eq!((code, names(&list).len()), (200, 0), "{url}");
        }
    }
    // `limit`: the first value pages; a bad later value is ignored, a bad first one is 400.
    for path in [format!("{M}/pods"), format!("{dr}/datarecords")] {
        let (code, list) = t.get_json(&format!("{path}?limit=1&limit=0"), None).await;
        assert_eq!(code, 200);
        assert_eq!(names(&list).len(), 1, "{path}");
        assert!(list["metadata"]["continue"].is_string(), "{list}");
        let (code, _) = t.get_json(&format!("{path}?limit=1&limit=x"), None).await;
        assert_eq!(code, 200);
        let (code, status) = t.get_json(&format!("{path}?limit=x&limit=1"), None).await;
        assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    }
    // A watch of records follows the first fieldSelector too.
    let resp = t
        .get(
            &format!(
                "{dr}/namespaces/default/datarecords?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Duser-config&fieldSelector="
            ),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let watched: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["object"]["metadata"]["name"].to_string()
        })
        .collect();
    assert_eq!(watched, ["\"user-config\""], "{text}");
}
