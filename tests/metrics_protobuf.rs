//! metrics.k8s.io in protobuf, checked with the real Go types: every document we write is
//! decoded by `kd-pbdecode` (tests/tools/pbdecode, built against k8s.io/metrics and
//! k8s.io/apimachinery at the pinned version by tests/e2e/pbdecode.sh), which also re-encodes it
//! with Go's generated marshallers: the bytes must be identical, and the decoded object must
//! equal our JSON answer for the same request.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::Value;

const M: &str = "/apis/metrics.k8s.io/v1beta1";
/// What kube-controller-manager's metrics client sends.
const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `$KD_PBDECODE`, else built (once, cached) by tests/e2e/pbdecode.sh.
fn pbdecode_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KD_PBDECODE") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/pbdecode.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/e2e/pbdecode.sh");
    assert!(out.status.success(), "tests/e2e/pbdecode.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Decodes with the Go types; fails unless Go re-encodes to the same bytes.
fn go_decode(bin: &PathBuf, bytes: &[u8]) -> Value {
    if let Ok(dir) = std::env::var("KD_PBDECODE_DUMP") {
        std::fs::write(format!("{dir}/ours.pb"), bytes).unwrap();
    }
    let mut child = Command::new(bin)
        .arg("-strict")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kd-pbdecode");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kd-pbdecode rejected our bytes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reencodedIdentical"], true);
    doc
}

/// Removes `metadata.creationTimestamp` (it is "now", per request) everywhere.
fn without_creation_times(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                    meta.remove("creationTimestamp");
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

async fn protobuf(t: &TestServer, path: &str, accept: &str) -> (u16, Vec<u8>) {
    let resp = t.get(path, Some(accept)).await;
    let code = resp.status().as_u16();
    assert_eq!(
        resp.headers()["content-type"],
        PROTOBUF,
        "{path} with Accept {accept}"
    );
    (code, resp.bytes().await.unwrap().to_vec())
}

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

/// The Go-decoded protobuf answer equals the JSON answer taken from the same snapshot (JSON
/// before and after are equal, so the protobuf one in between saw the same data).
async fn same_as_json(t: &TestServer, bin: &PathBuf, path: &str) -> Value {
    for _ in 0..20 {
        let (code_a, before) = t.get_json(path, None).await;
        let (code_p, bytes) = protobuf(t, path, HPA_ACCEPT).await;
        let (_, after) = t.get_json(path, None).await;
        let (before, after) = (
            without_creation_times(before),
            without_creation_times(after),
        );
        if before != after {
            continue;
        }
        assert_eq!(code_a, code_p, "{path}");
        let doc = go_decode(bin, &bytes);
        let mut go = without_creation_times(doc["object"].clone());
        // The Go decoder sets kind/apiVersion from the envelope on the top-level object.
        assert_eq!(go["kind"], before["kind"], "{path}");
        assert_eq!(go["apiVersion"], before["apiVersion"], "{path}");
        if go.get("metadata").is_none() {
            go["metadata"] = Value::Object(Default::default());
        }
        assert_eq!(
            go, before,
            "{path}: Go's decoding of our protobuf vs our JSON"
        );
        return doc;
    }
    panic!("{path}: the snapshot changed between every JSON pair");
}

#[tokio::test]
async fn protobuf_decodes_with_the_go_types_and_equals_json() {
    let bin = pbdecode_binary();
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let f = t.server.sim.as_ref().unwrap().fleet().clone();
    let node = f.nodes[0].name.clone();
    let (_, pods) = t.get_json(&format!("{M}/pods"), None).await;
    let first = &pods["items"][0]["metadata"];
    let (ns, pod) = (
        first["namespace"].as_str().unwrap().to_string(),
        first["name"].as_str().unwrap().to_string(),
    );
    let app = first["labels"]["app"].as_str().unwrap_or("x").to_string();

    let doc = same_as_json(&t, &bin, &format!("{M}/nodes")).await;
    assert_eq!(doc["kind"], "NodeMetricsList");
    assert_eq!(
        doc["object"]["items"].as_array().unwrap().len(),
        f.nodes.len()
    );
    // List items carry no kind/apiVersion, in JSON as in protobuf (metrics-server's shape).
    assert!(doc["object"]["items"][0].get("kind").is_none());
    // metav1.Time is whole seconds in protobuf as in JSON; the window is in nanoseconds.
    let stamp = doc["timestamps"][&node].as_str().unwrap();
    assert!(stamp.ends_with('Z') && !stamp.contains('.'), "{stamp}");
    assert!(doc["windowsNs"][&node].as_i64().unwrap() > 0);

    let doc = same_as_json(&t, &bin, &format!("{M}/pods")).await;
    assert_eq!(doc["kind"], "PodMetricsList");
    assert_eq!(
        doc["object"]["items"].as_array().unwrap().len(),
        f.pod_count()
    );
    assert!(
        !doc["object"]["items"][0]["containers"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let doc = same_as_json(&t, &bin, &format!("{M}/nodes/{node}")).await;
    assert_eq!(doc["kind"], "NodeMetrics");
    let doc = same_as_json(&t, &bin, &format!("{M}/namespaces/{ns}/pods/{pod}")).await;
    assert_eq!(doc["kind"], "PodMetrics");
    // The HPA's query: one namespace, a label selector.
    let doc = same_as_json(
        &t,
        &bin,
        &format!("{M}/namespaces/{ns}/pods?labelSelector=app%3D{app}"),
    )
    .await;
    assert!(!doc["object"]["items"].as_array().unwrap().is_empty());
    // A page: ListMeta carries the continue token and remaining count.
    let doc = same_as_json(&t, &bin, &format!("{M}/pods?limit=2")).await;
    assert_eq!(doc["object"]["items"].as_array().unwrap().len(), 2);
    assert!(doc["object"]["metadata"]["continue"].is_string());
    assert!(
        doc["object"]["metadata"]["remainingItemCount"]
            .as_i64()
            .unwrap()
            > 0
    );

    // Errors are Status in protobuf too.
    let doc = same_as_json(&t, &bin, &format!("{M}/nodes/nope")).await;
    assert_eq!(doc["kind"], "Status");
    assert_eq!(doc["object"]["code"], 404);
    assert_eq!(doc["object"]["reason"], "NotFound");
    let doc = same_as_json(&t, &bin, &format!("{M}/pods?labelSelector=%21%21")).await;
    assert_eq!(doc["object"]["code"], 400);
}

#[tokio::test]
async fn negotiation_as_kube_apiserver() {
    let t = TestServer::start(None).await;
    wait_for_metrics(&t).await;
    let nodes = format!("{M}/nodes");
    for (accept, want) in [
        (HPA_ACCEPT, PROTOBUF),
        (PROTOBUF, PROTOBUF),
        (
            "application/vnd.kubernetes.protobuf,application/json",
            PROTOBUF,
        ),
        (
            "application/json, application/vnd.kubernetes.protobuf",
            "application/json",
        ),
        (
            "application/vnd.kubernetes.protobuf;q=0.5, application/json",
            "application/json",
        ),
        ("*/*", "application/json"),
        // Transforms are JSON only: a protobuf PartialObjectMetadataList falls to the next clause.
        (
            "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            "application/json",
        ),
    ] {
        let resp = t.get(&nodes, Some(accept)).await;
        assert_eq!(resp.status().as_u16(), 200, "{accept}");
        assert_eq!(resp.headers()["content-type"], want, "{accept}");
    }
    // Neither acceptable: 406 Status in JSON.
    let (code, s) = t.get_json(&nodes, Some("text/html")).await;
    assert_eq!((code, s["reason"].as_str()), (406, Some("NotAcceptable")));
    let (code, s) = t
        .get_json(
            &nodes,
            Some("application/vnd.kubernetes.protobuf;as=Table;g=meta.k8s.io;v=v1"),
        )
        .await;
    assert_eq!((code, s["reason"].as_str()), (406, Some("NotAcceptable")));
    // Unauthenticated: a 401 Status in protobuf for a protobuf client.
    let resp = t
        .client
        .get(format!("{}{nodes}", t.base))
        .bearer_auth("wrong")
        .header("Accept", HPA_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["content-type"], PROTOBUF);
    // DataRecords have no protobuf: JSON for the HPA's header.
    let resp = t
        .get(
            "/apis/data.kubedojo.io/v1alpha1/datarecords",
            Some(HPA_ACCEPT),
        )
        .await;
    assert_eq!(resp.headers()["content-type"], "application/json");
}
