//! The API as a client sees it over HTTPS: discovery, OpenAPI, every error code,
//! selectors, paging, Table and PartialObjectMetadata.

mod common;

use common::read_events;
use common::{TABLE, TestServer};
use serde_json::Value;

const DR: &str = "/apis/data.kubedojo.io/v1alpha1";
/// Leaves out the records computed from metrics (the demo serves them beside the lab's).
const NOT_COMPUTED: &str = "labelSelector=%21data.kubedojo.io%2Fsource";

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn discovery_documents() {
    let t = TestServer::start(None).await;
    let (code, apis) = t.get_json("/apis", Some("application/json")).await;
    assert_eq!(code, 200);
    assert_eq!(apis["kind"], "APIGroupList");
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, vec!["metrics.k8s.io", "data.kubedojo.io"]);
    assert_eq!(
        apis["groups"][1]["preferredVersion"]["groupVersion"],
        "data.kubedojo.io/v1alpha1"
    );

    let (code, group) = t.get_json("/apis/data.kubedojo.io", None).await;
    assert_eq!((code, group["kind"].as_str()), (200, Some("APIGroup")));

    let (code, rl) = t.get_json(DR, None).await;
    assert_eq!(code, 200);
    assert_eq!(rl["kind"], "APIResourceList");
    let r = &rl["resources"][0];
    assert_eq!(r["name"], "datarecords");
    assert_eq!(r["singularName"], "datarecord");
    assert_eq!(r["namespaced"], true);
    assert_eq!(r["kind"], "DataRecord");
    assert_eq!(r["shortNames"], serde_json::json!(["dr"]));
    assert_eq!(r["categories"], serde_json::json!(["all", "kubedojo"]));
    assert_eq!(r["verbs"], serde_json::json!(["get", "list", "watch"]));

    // Aggregated discovery with ETag and 304.
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let resp = t.get("/apis", Some(accept)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 130, "{etag}");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    let data = &doc["items"][1];
    assert_eq!(data["metadata"]["name"], "data.kubedojo.io");
    let res = &data["versions"][0]["resources"][0];
    assert_eq!(res["resource"], "datarecords");
    assert_eq!(res["responseKind"]["kind"], "DataRecord");
    assert_eq!(res["scope"], "Namespaced");
    assert_eq!(res["shortNames"], serde_json::json!(["dr"]));
    assert_eq!(data["versions"][0]["freshness"], "Current");
    let metrics = &doc["items"][0];
    assert_eq!(metrics["metadata"]["name"], "metrics.k8s.io");
    let kinds: Vec<(&str, &str, &str)> = metrics["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap(),
                r["responseKind"]["kind"].as_str().unwrap(),
                r["scope"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("nodes", "NodeMetrics", "Cluster"),
            ("pods", "PodMetrics", "Namespaced")
        ]
    );
    let resp = t
        .client
        .get(format!("{}/apis", t.base))
        .bearer_auth(&t.server.token)
        .header("Accept", accept)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    let (code, v) = t.get_json("/version", None).await;
    assert_eq!(code, 200);
    assert!(v["gitVersion"].as_str().unwrap().starts_with('v'));
}

#[tokio::test]
async fn http2_is_negotiated() {
    let t = TestServer::start(None).await;
    let resp = t.get("/apis", None).await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn lists_and_gets() {
    let t = TestServer::start(None).await;
    let (code, all) = t
        .get_json(&format!("{DR}/datarecords?{NOT_COMPUTED}"), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(all["kind"], "DataRecordList");
    assert_eq!(all["apiVersion"], "data.kubedojo.io/v1alpha1");
    assert!(all["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        names(&all),
        vec![
            "default/feature-flags",
            "default/user-config",
            "monitoring/metrics-config"
        ]
    );
    let (_, ns) = t
        .get_json(
            &format!("{DR}/namespaces/default/datarecords?{NOT_COMPUTED}"),
            None,
        )
        .await;
    assert_eq!(
        names(&ns),
        vec!["default/feature-flags", "default/user-config"]
    );
    let (_, empty) = t
        .get_json(&format!("{DR}/namespaces/nothing/datarecords"), None)
        .await;
    assert_eq!(empty["items"], serde_json::json!([]));

    let (code, one) = t
        .get_json(
            &format!("{DR}/namespaces/default/datarecords/user-config"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(one["kind"], "DataRecord");
    assert_eq!(one["apiVersion"], "data.kubedojo.io/v1alpha1");
    assert_eq!(one["spec"]["source"], "postgres");
    assert_eq!(
        one["spec"]["query"],
        "SELECT * FROM config WHERE env='production'"
    );
    assert_eq!(
        one["spec"]["data"],
        serde_json::json!({"max_connections": "100", "timeout_ms": "5000", "log_level": "info"})
    );
    assert_eq!(one["status"]["syncStatus"], "Current");
    assert_eq!(
        one["metadata"]["uid"],
        "a1b2c3d4-0001-0001-0001-000000000001"
    );
    assert!(one["metadata"]["creationTimestamp"].is_string());
}

#[tokio::test]
async fn error_statuses() {
    let t = TestServer::start(None).await;
    let (code, s) = t
        .get_json(&format!("{DR}/namespaces/default/datarecords/nope"), None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "NotFound");
    assert_eq!(
        s["message"],
        "datarecords.data.kubedojo.io \"nope\" not found"
    );
    assert_eq!(
        s["details"],
        serde_json::json!({"name": "nope", "group": "data.kubedojo.io", "kind": "datarecords"})
    );

    let (code, s) = t.get_json(&format!("{DR}/widgets"), None).await;
    assert_eq!(
        (code, s["message"].as_str()),
        (
            404,
            Some("the server could not find the requested resource")
        )
    );

    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let resp = t
            .client
            .request(
                method.clone(),
                format!("{}{DR}/namespaces/default/datarecords/user-config", t.base),
            )
            .bearer_auth(&t.server.token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        let s: Value = resp.json().await.unwrap();
        assert_eq!(s["reason"], "MethodNotAllowed");
    }

    let (code, s) = t
        .get_json(
            &format!("{DR}/datarecords"),
            Some("application/vnd.kubernetes.protobuf"),
        )
        .await;
    assert_eq!((code, s["reason"].as_str()), (406, Some("NotAcceptable")));
    let (code, _) = t
        .get_json(
            &format!("{DR}/datarecords"),
            Some("application/vnd.kubernetes.protobuf, */*"),
        )
        .await;
    assert_eq!(code, 200);

    let (code, s) = t
        .get_json(
            &format!("{DR}/datarecords?labelSelector=app%20in%20x"),
            None,
        )
        .await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    let (code, s) = t
        .get_json(
            &format!("{DR}/datarecords?fieldSelector=spec.source%3Dx"),
            None,
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        s["message"],
        "\"spec.source\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    );
    let (code, _) = t
        .get_json(&format!("{DR}/datarecords?continue=garbage"), None)
        .await;
    assert_eq!(code, 400);
    // Metrics can be watched (tests/metrics_watch.rs); a bad watch request is 422.
    let (code, s) = t
        .get_json(
            "/apis/metrics.k8s.io/v1beta1/pods?watch=true&sendInitialEvents=true",
            None,
        )
        .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));

    // Unknown paths outside our groups get Go's plain 404.
    let resp = t.get("/nothing-here", None).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "404 page not found\n");
}

#[tokio::test]
async fn authentication_is_required() {
    let t = TestServer::start(None).await;
    let url = format!("{}{DR}/datarecords", t.base);
    let anonymous = t.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
    let s: Value = anonymous.json().await.unwrap();
    assert_eq!(s["reason"], "Forbidden");
    assert!(s["message"].as_str().unwrap().contains("system:anonymous"));

    let wrong = t
        .client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let s: Value = wrong.json().await.unwrap();
    assert_eq!(
        s,
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
    );

    // Health endpoints are open to anyone.
    let health = t
        .client
        .get(format!("{}/healthz", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (health.status().as_u16(), health.text().await.unwrap()),
        (200, "ok".to_string())
    );
}

/// Three records with labels (the lab's own have none).
const LABELLED: &str = "
- metadata: {name: user-config, namespace: default, labels: {app: user-service, tier: config}}
  spec: {source: postgres}
- metadata: {name: feature-flags, namespace: default, labels: {app: feature-service, tier: config}}
  spec: {source: redis}
- metadata: {name: metrics-config, namespace: monitoring, labels: {app: prometheus, tier: monitoring}}
  spec: {source: consul}
";

#[tokio::test]
async fn label_and_field_selectors() {
    let t = TestServer::start(Some(LABELLED)).await;
    let cases = [
        (
            "labelSelector=tier%3Dconfig",
            vec!["default/feature-flags", "default/user-config"],
        ),
        (
            "labelSelector=tier%3D%3Dmonitoring",
            vec!["monitoring/metrics-config"],
        ),
        (
            "labelSelector=app%21%3Dprometheus",
            vec!["default/feature-flags", "default/user-config"],
        ),
        (
            "labelSelector=app%20in%20(user-service%2Cprometheus)",
            vec!["default/user-config", "monitoring/metrics-config"],
        ),
        (
            "labelSelector=app%20notin%20(user-service)",
            vec!["default/feature-flags", "monitoring/metrics-config"],
        ),
        (
            "labelSelector=tier",
            vec![
                "default/feature-flags",
                "default/user-config",
                "monitoring/metrics-config",
            ],
        ),
        ("labelSelector=%21tier", vec![]),
        (
            "fieldSelector=metadata.name%3Duser-config",
            vec!["default/user-config"],
        ),
        (
            "fieldSelector=metadata.namespace%3Dmonitoring",
            vec!["monitoring/metrics-config"],
        ),
        (
            "fieldSelector=metadata.namespace%21%3Ddefault",
            vec!["monitoring/metrics-config"],
        ),
    ];
    for (q, want) in cases {
        let (code, list) = t.get_json(&format!("{DR}/datarecords?{q}"), None).await;
        assert_eq!(code, 200, "{q}");
        assert_eq!(names(&list), want, "{q}");
    }
}

#[tokio::test]
async fn pagination_with_continue_and_expiry() {
    let records: String = (0..5)
        .map(|i| {
            format!(
                "- metadata: {{name: r{i}, namespace: ns{}}}\n  spec: {{source: s}}\n",
                i % 2
            )
        })
        .collect();
    let t = TestServer::start(Some(&records)).await;
    let mut seen = Vec::new();
    let mut path = format!("{DR}/datarecords?limit=2");
    let mut pages = 0;
    loop {
        let (code, page) = t.get_json(&path, None).await;
        assert_eq!(code, 200);
        pages += 1;
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(tok) => {
                assert!(page["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                path = format!("{DR}/datarecords?limit=2&continue={tok}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec!["ns0/r0", "ns0/r2", "ns0/r4", "ns1/r1", "ns1/r3"]);

    // A token from an older resourceVersion is 410 Gone with a resumable token.
    let (_, first) = t.get_json(&format!("{DR}/datarecords?limit=2"), None).await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    std::fs::write(
        t.dir.path().join("records.yaml"),
        format!("{records}- metadata: {{name: new}}\n  spec: {{source: s}}\n"),
    )
    .unwrap();
    let mut expired = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (code, s) = t
            .get_json(&format!("{DR}/datarecords?limit=2&continue={token}"), None)
            .await;
        if code == 410 {
            expired = Some(s);
            break;
        }
    }
    let s = expired.expect("the continue token never expired after the records changed");
    assert_eq!(s["reason"], "Expired");
    assert!(s["metadata"]["continue"].is_string());
}

#[tokio::test]
async fn table_output() {
    let t = TestServer::start(None).await;
    let (code, table) = t.get_json(&format!("{DR}/datarecords"), Some(TABLE)).await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, vec!["Name", "Source", "Sync Status", "Age", "Query"]);
    assert_eq!(table["columnDefinitions"][4]["priority"], 1);
    for c in table["columnDefinitions"].as_array().unwrap() {
        for k in ["name", "type", "format", "description", "priority"] {
            assert!(c.get(k).is_some(), "column lacks {k}");
        }
    }
    let row = &table["rows"][0];
    assert_eq!(row["cells"][0], "feature-flags");
    assert_eq!(row["cells"][1], "redis");
    assert_eq!(row["cells"][2], "Current");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "default");

    let (_, t2) = t
        .get_json(
            &format!("{DR}/datarecords?includeObject=Object"),
            Some(TABLE),
        )
        .await;
    assert_eq!(t2["rows"][0]["object"]["kind"], "DataRecord");
    let (_, t3) = t
        .get_json(&format!("{DR}/datarecords?includeObject=None"), Some(TABLE))
        .await;
    assert!(t3["rows"][0]["object"].is_null());
    let (code, _) = t
        .get_json(
            &format!("{DR}/datarecords?includeObject=Everything"),
            Some(TABLE),
        )
        .await;
    assert_eq!(code, 400);
    let (_, one) = t
        .get_json(
            &format!("{DR}/namespaces/default/datarecords/user-config"),
            Some(TABLE),
        )
        .await;
    assert_eq!(one["kind"], "Table");
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn partial_object_metadata() {
    let t = TestServer::start(None).await;
    let list_accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (code, list) = t
        .get_json(
            &format!("{DR}/datarecords?{NOT_COMPUTED}"),
            Some(list_accept),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert!(list["items"][0].get("spec").is_none());
    assert_eq!(list["items"].as_array().unwrap().len(), 3);

    let one_accept =
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
    let (code, one) = t
        .get_json(
            &format!("{DR}/namespaces/default/datarecords/user-config"),
            Some(one_accept),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert_eq!(one["metadata"]["name"], "user-config");

    let (code, _) = t
        .get_json(
            &format!("{DR}/datarecords"),
            Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        )
        .await;
    assert_eq!(code, 406);
}

#[tokio::test]
async fn openapi_documents() {
    let t = TestServer::start(None).await;
    let (code, v2) = t.get_json("/openapi/v2", None).await;
    assert_eq!(code, 200);
    assert_eq!(v2["swagger"], "2.0");
    let def = &v2["definitions"]["io.kubedojo.data.v1alpha1.DataRecord"];
    assert_eq!(
        def["x-kubernetes-group-version-kind"][0]["kind"],
        "DataRecord"
    );
    assert!(v2["paths"]["/apis/data.kubedojo.io/v1alpha1/namespaces/{namespace}/datarecords/{name}"]["get"].is_object());
    // Every $ref resolves.
    let text = v2.to_string();
    for piece in text.split("\"$ref\":\"#/definitions/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(
            v2["definitions"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }

    let (code, root) = t.get_json("/openapi/v3", None).await;
    assert_eq!(code, 200);
    let url = root["paths"]["apis/data.kubedojo.io/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("/openapi/v3/apis/data.kubedojo.io/v1alpha1?hash="));
    let resp = t.get(&url, Some("application/json")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, immutable");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.0");
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["io.kubedojo.data.v1alpha1.DataRecordSpec"]["properties"]["source"].is_object()
    );
    assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
    assert!(!doc.to_string().contains("#/definitions/"));
}

#[tokio::test]
async fn health_endpoints() {
    let t = TestServer::start(None).await;
    // Readiness follows the first scrapes (1s resolution here).
    let mut ready = false;
    for _ in 0..100 {
        if t.get("/readyz", None).await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "never became ready");
    for path in ["/healthz", "/livez", "/readyz"] {
        let resp = t.get(path, None).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    let verbose = t.get("/readyz?verbose", None).await.text().await.unwrap();
    assert!(verbose.contains("[+]ping ok"), "{verbose}");
    assert!(verbose.contains("[+]records-loaded ok"), "{verbose}");
    assert!(verbose.contains("[+]metric-storage-ready ok"), "{verbose}");
    assert!(verbose.contains("[+]metric-informer-sync ok"), "{verbose}");
    let live = t.get("/livez?verbose", None).await.text().await.unwrap();
    assert!(live.contains("[+]metric-collection-timely ok"), "{live}");
    assert!(verbose.ends_with("readyz check passed\n"), "{verbose}");
    assert_eq!(t.get("/readyz/ping", None).await.status(), 200);
    assert_eq!(t.get("/readyz/nope", None).await.status(), 404);
}

#[tokio::test]
async fn bad_records_file_fails_start_up_with_a_clear_message() {
    common::crypto();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "- metadata: {name: a}\n  spec: {source: s, data: {k: [1, 2]}}\n",
    )
    .unwrap();
    let args = common::demo_args(dir.path(), Some(file.clone()));
    let err = match kubedojo_data_api::demo::start(&args).await {
        Ok(_) => panic!("a bad records file must fail start-up"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("record 0 (\"a\")") && err.contains("spec.data.k"),
        "{err}"
    );
}

fn event_summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn watch_streams_changes_to_records() {
    let records =
        "- metadata: {name: a}\n  spec: {source: s}\n- metadata: {name: b}\n  spec: {source: s}\n";
    let t = TestServer::start(Some(records)).await;
    let mut resp = t
        .get(
            &format!("{DR}/namespaces/default/datarecords?watch=true&timeoutSeconds=20"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let initial = read_events(&mut resp, 2).await;
    assert_eq!(
        event_summary(&initial),
        vec![("ADDED".into(), "a".into()), ("ADDED".into(), "b".into())]
    );
    assert_eq!(initial[0]["object"]["kind"], "DataRecord");
    let rv = initial[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // Change a, delete b, add c: the file source is re-read every 100ms in tests.
    std::fs::write(
        t.dir.path().join("records.yaml"),
        "- metadata: {name: a}\n  spec: {source: changed}\n- metadata: {name: c}\n  spec: {source: s}\n",
    )
    .unwrap();
    let mut changes = read_events(&mut resp, 3).await;
    changes.sort_by_key(|e| {
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    });
    assert_eq!(
        event_summary(&changes),
        vec![
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into()),
            ("ADDED".into(), "c".into())
        ]
    );
    assert_eq!(changes[0]["object"]["spec"]["source"], "changed");
    let new_rv = changes[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    assert_ne!(new_rv, rv);

    // Resuming from the first resourceVersion replays only what came after it.
    let mut resumed = t
        .get(
            &format!(
                "{DR}/namespaces/default/datarecords?watch=1&resourceVersion={rv}&timeoutSeconds=1"
            ),
            None,
        )
        .await;
    let mut replay = read_events(&mut resumed, 10).await;
    replay.sort_by_key(|e| {
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    });
    assert_eq!(
        event_summary(&replay),
        vec![
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into()),
            ("ADDED".into(), "c".into())
        ]
    );
}

#[tokio::test]
async fn watch_list_and_validation() {
    let t = TestServer::start(None).await;
    let path = format!(
        "{DR}/datarecords?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1&{NOT_COMPUTED}"
    );
    let mut resp = t.get(&path, None).await;
    assert_eq!(resp.status(), 200);
    let events = read_events(&mut resp, 10).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["ADDED", "ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(
        events[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(events[3]["object"]["kind"], "DataRecord");

    let (code, s) = t
        .get_json(
            &format!("{DR}/datarecords?watch=true&sendInitialEvents=true"),
            None,
        )
        .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    let (code, s) = t
        .get_json(&format!("{DR}/datarecords?sendInitialEvents=true"), None)
        .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    let (code, _) = t
        .get_json(
            &format!("{DR}/datarecords?watch=true&resourceVersion=abc"),
            None,
        )
        .await;
    assert_eq!(code, 400);

    // kubectl get -w asks for Tables: each event's object is a Table with one row.
    let mut table = t
        .get(
            &format!(
                "{DR}/namespaces/monitoring/datarecords?watch=true&timeoutSeconds=1&{NOT_COMPUTED}"
            ),
            Some(TABLE),
        )
        .await;
    let events = read_events(&mut table, 10).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(events[0]["object"]["rows"][0]["cells"][0], "metrics-config");

    // A field selector and the deprecated /watch/ path.
    let mut one = t
        .get(
            &format!("{DR}/watch/namespaces/default/datarecords/user-config?timeoutSeconds=1"),
            None,
        )
        .await;
    let events = read_events(&mut one, 10).await;
    assert_eq!(
        event_summary(&events),
        vec![("ADDED".into(), "user-config".into())]
    );
    // A selector pinning the name keeps its other terms (kube-apiserver's ListResource):
    // user-config is in default, not in monitoring.
    let mut none = t
        .get(
            &format!(
                "{DR}/datarecords?watch=true&timeoutSeconds=1&fieldSelector=metadata.name%3Duser-config%2Cmetadata.namespace%3Dmonitoring"
            ),
            None,
        )
        .await;
    assert_eq!(
        event_summary(&read_events(&mut none, 10).await),
        Vec::<(String, String)>::new()
    );
    // With the /watch/ path's name, a selector must pin that name.
    let (code, _) = t
        .get_json(
            &format!(
                "{DR}/watch/namespaces/default/datarecords/user-config?fieldSelector=metadata.namespace%3Ddefault"
            ),
            None,
        )
        .await;
    assert_eq!(code, 400);
}
