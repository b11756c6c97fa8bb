//! The audit log through real HTTPS requests: an `audit.k8s.io/v1` Policy file decides
//! what is written, and every written line is an `audit.k8s.io/v1` Event with the user,
//! verb, objectRef, response code and the aggregator's Audit-ID.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kubedojo_data_api::auth::{AuthChain, StaticTokenAuthenticator, StaticUsers, UserInfo};
use kubedojo_data_api::runtime::{AppParts, build_app, load_records};
use kubedojo_data_api::server::audit::{AuditArgs, AuditLog};
use kubedojo_data_api::server::pki::CertificateAuthority;
use kubedojo_data_api::server::tls::{
    MinTlsVersion, StaticCert, certified_key_from_pem, server_config,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
  - level: None
    verbs: ["get"]
    resources:
      - group: data.kubedojo.io
        resources: ["datarecords"]
        resourceNames: ["feature-flags"]
  - level: Metadata
    omitStages: ["RequestReceived"]
    verbs: ["watch"]
  - level: Metadata
"#;

struct Server {
    base: String,
    client: reqwest::Client,
    log: std::path::PathBuf,
    audit: Arc<AuditLog>,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The audit flags for `policy` written into `dir`, the log at `dir/audit.log`, every
/// other flag at its default, then changed by `edit`: the one set-up every test shares.
fn audit_args(dir: &std::path::Path, policy: &str, edit: impl FnOnce(&mut AuditArgs)) -> AuditArgs {
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let mut args = AuditArgs {
        audit_log_path: Some(dir.join("audit.log").display().to_string()),
        audit_policy_file: Some(policy_file),
        ..AuditArgs::default()
    };
    edit(&mut args);
    args
}

impl Server {
    async fn start() -> Self {
        Self::start_with(POLICY, |_| {}).await
    }

    /// A server auditing with `policy` and the flags `edit` sets.
    async fn start_with(policy: &str, edit: impl FnOnce(&mut AuditArgs)) -> Self {
        common::crypto();
        let dir = tempfile::tempdir().unwrap();
        let args = audit_args(dir.path(), policy, edit);
        let log = std::path::PathBuf::from(args.audit_log_path.clone().unwrap_or_default());
        let audit = AuditLog::from_args(&args)
            .unwrap()
            .expect("a policy and a plugin enable auditing");
        let alice = UserInfo {
            name: "alice".into(),
            uid: "uid-1".into(),
            groups: vec!["devs".into()],
            ..UserInfo::default()
        };
        let chain = AuthChain::new(
            vec![Arc::new(StaticTokenAuthenticator::new(vec![(
                "alice-token".into(),
                alice,
            )]))],
            vec![Arc::new(StaticUsers(vec!["alice".into()]))],
            false,
        );
        let records = load_records(None, None).await.unwrap();
        let app =
            Arc::new(build_app(AppParts::new(records, chain)).with_audit(Some(audit.clone())));
        let ca = CertificateAuthority::new("ca").unwrap();
        let pair = ca.serving_cert("server", &["localhost".into()]).unwrap();
        let key = certified_key_from_pem(&pair.cert_pem, &pair.key_pem).unwrap();
        let tls = server_config(
            Arc::new(StaticCert(Arc::new(key))),
            None,
            MinTlsVersion::Tls12,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(kubedojo_data_api::server::serve(
            listener,
            Arc::new(tls),
            app,
            shutdown.clone(),
        ));
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
            .user_agent("audit-test/1.0")
            .build()
            .unwrap();
        Server {
            base,
            client,
            log,
            audit,
            _dir: dir,
            shutdown,
        }
    }

    async fn get(&self, path: &str, token: &str, audit_id: Option<&str>) -> u16 {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("X-Forwarded-For", "10.1.2.3");
        if let Some(id) = audit_id {
            req = req.header("Audit-ID", id);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let _ = resp.bytes().await.unwrap();
        code
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    async fn events_for(&self, id: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events: Vec<Value> = self
                .events()
                .into_iter()
                .filter(|e| e["auditID"] == id)
                .collect();
            if events.len() >= count || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const LIST: &str = "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords";

#[tokio::test]
async fn a_list_is_audited_at_metadata_with_both_stages() {
    let s = Server::start().await;
    assert_eq!(
        s.get(&format!("{LIST}?limit=1"), "alice-token", Some("id-list"))
            .await,
        200
    );
    let events = s.events_for("id-list", 2).await;
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["RequestReceived", "ResponseComplete"],
        "{events:?}"
    );
    let e = &events[1];
    assert_eq!(e["kind"], "Event");
    assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(e["level"], "Metadata");
    assert_eq!(e["verb"], "list");
    assert_eq!(e["requestURI"], format!("{LIST}?limit=1"));
    assert_eq!(e["user"]["username"], "alice");
    assert_eq!(e["user"]["uid"], "uid-1");
    assert_eq!(
        e["user"]["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );
    assert_eq!(e["sourceIPs"], serde_json::json!(["10.1.2.3", "127.0.0.1"]));
    assert_eq!(e["userAgent"], "audit-test/1.0");
    assert_eq!(
        e["objectRef"],
        serde_json::json!({"resource": "datarecords", "namespace": "default",
            "apiGroup": "data.kubedojo.io", "apiVersion": "v1alpha1"})
    );
    assert_eq!(e["responseStatus"]["code"], 200);
    assert!(events[0].get("responseStatus").is_none());
    // metav1.MicroTime, and the received timestamp is the same in both.
    let received = e["requestReceivedTimestamp"].as_str().unwrap();
    assert_eq!(
        received.len(),
        "2026-01-01T00:00:00.000000Z".len(),
        "{received}"
    );
    assert_eq!(events[0]["requestReceivedTimestamp"], received);
    assert!(e["stageTimestamp"].as_str().unwrap() >= received);
}

#[tokio::test]
async fn policy_none_writes_nothing_and_failures_are_audited_with_their_code() {
    let s = Server::start().await;
    assert_eq!(
        s.get("/healthz", "alice-token", Some("id-health")).await,
        200
    );
    assert_eq!(
        s.get(
            &format!("{LIST}/feature-flags"),
            "alice-token",
            Some("id-none")
        )
        .await,
        200
    );
    assert_eq!(
        s.get(&format!("{LIST}/nope"), "alice-token", Some("id-404"))
            .await,
        404
    );
    assert_eq!(s.get(LIST, "wrong-token", Some("id-401")).await, 401);
    let not_found = s.events_for("id-404", 2).await;
    assert_eq!(not_found[1]["responseStatus"]["code"], 404);
    assert_eq!(not_found[1]["objectRef"]["name"], "nope");
    assert_eq!(not_found[1]["verb"], "get");
    let unauthorized = s.events_for("id-401", 2).await;
    assert_eq!(unauthorized[1]["responseStatus"]["code"], 401);
    assert_eq!(unauthorized[1]["user"], serde_json::json!({}));
    let all = s.events();
    assert!(
        all.iter()
            .all(|e| e["auditID"] != "id-health" && e["auditID"] != "id-none"),
        "{all:?}"
    );
    // Without an Audit-ID header the server makes one up (a UUID).
    assert_eq!(
        s.get(&format!("{LIST}?x=own-id"), "alice-token", None)
            .await,
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let own = loop {
        let found = s
            .events()
            .into_iter()
            .find(|e| e["requestURI"] == format!("{LIST}?x=own-id"));
        if let Some(e) = found {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = own["auditID"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn a_watch_writes_response_started_then_complete_when_it_ends() {
    let s = Server::start().await;
    let path = format!("{LIST}?watch=1&timeoutSeconds=1");
    assert_eq!(s.get(&path, "alice-token", Some("id-watch")).await, 200);
    let events = s.events_for("id-watch", 2).await;
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    // RequestReceived is omitted by the rule.
    assert_eq!(
        stages,
        ["ResponseStarted", "ResponseComplete"],
        "{events:?}"
    );
    assert_eq!(events[0]["verb"], "watch");
    let started = events[0]["stageTimestamp"].as_str().unwrap();
    let complete = events[1]["stageTimestamp"].as_str().unwrap();
    assert!(complete > started, "{started} {complete}");
}

#[test]
fn flags_without_a_policy_audit_nothing_and_unsupported_formats_are_errors() {
    let none = AuditLog::from_args(&AuditArgs {
        audit_log_path: Some("-".into()),
        ..AuditArgs::default()
    })
    .unwrap();
    assert!(none.is_none());
    let e = AuditLog::from_args(&AuditArgs {
        audit_log_format: "legacy".into(),
        ..AuditArgs::default()
    })
    .unwrap_err();
    assert!(e.contains("--audit-log-format"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    for (edit, want) in [
        (
            (|a: &mut AuditArgs| a.audit_log_mode = "sync".into()) as fn(&mut AuditArgs),
            "--audit-log-mode",
        ),
        (
            |a| {
                a.audit_log_mode = "batch".into();
                a.audit_log_batch_max_size = 0;
            },
            "--audit-log-batch-max-size",
        ),
        (
            |a| {
                a.audit_log_truncate_enabled = true;
                a.audit_log_truncate_max_batch_size = 10;
            },
            "--audit-log-truncate-max-batch-size",
        ),
        (
            |a| a.webhook.audit_webhook_config_file = Some("/no/such/kubeconfig".into()),
            "--audit-webhook-config-file /no/such/kubeconfig",
        ),
        (
            |a| {
                a.webhook.audit_webhook_config_file = Some("/k".into());
                a.webhook.audit_webhook_version = "audit.k8s.io/v1beta1".into();
            },
            "--audit-webhook-version",
        ),
    ] {
        let e = AuditLog::from_args(&audit_args(dir.path(), POLICY, edit)).unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// Writes `count` list events straight through the machinery (no HTTPS: fast).
fn write_events(audit: &Arc<AuditLog>, count: usize) {
    use kubedojo_data_api::api::query::Query;
    use kubedojo_data_api::api::request_info::RequestInfo;
    use kubedojo_data_api::server::audit::AuditRequest;
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    for i in 0..count {
        let mut event = audit
            .begin(AuditRequest {
                audit_id: format!("id-{i}"),
                request_uri: path.into(),
                info: RequestInfo::new(&http::Method::GET, path, &Query::default()),
                user: Some(UserInfo {
                    name: "alice".into(),
                    ..UserInfo::default()
                }),
                source_ips: vec!["127.0.0.1".into()],
                user_agent: "test".into(),
                received: "2026-12-03T07:00:00.000000Z".into(),
            })
            .unwrap()
            .expect("the policy audits lists at Metadata");
        event.response(200, false);
    }
}

/// Every line of every file in `dir` but the policy (gunzipping `.gz` files): the
/// files' sizes on disk and their audit IDs.
fn read_logs(dir: &std::path::Path) -> (Vec<(std::path::PathBuf, u64)>, Vec<String>) {
    use std::io::Read;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("policy.yaml"))
        .collect();
    files.sort();
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        sizes.push((f.clone(), raw.len() as u64));
        let text = if f.extension().is_some_and(|e| e == "gz") {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut out)
                .unwrap_or_else(|e| panic!("{f:?} is not gzip: {e}"));
            out
        } else {
            String::from_utf8(raw).unwrap()
        };
        assert!(text.len() as u64 <= 1024 * 1024, "{f:?}: {}", text.len());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            ids.push(v["auditID"].as_str().unwrap().to_string());
        }
    }
    (sizes, ids)
}

/// `--audit-log-maxsize` (MB) and `--audit-log-maxbackup` rotate the file as
/// kube-apiserver does: no file above the limit, only the newest backups kept, every line
/// of every file a whole event.
#[test]
fn the_audit_log_rotates_by_size_and_keeps_max_backup_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::from_args(&audit_args(dir.path(), POLICY, |a| {
        a.audit_log_maxsize = 1;
        a.audit_log_maxbackup = 2;
    }))
    .unwrap()
    .unwrap();
    write_events(&audit, 8_000);
    let (files, ids) = read_logs(dir.path());
    assert_eq!(files.len(), 3, "audit.log and two backups: {files:?}");
    assert!(
        ids.contains(&"id-7999".to_string()),
        "the newest event is kept"
    );
    assert!(
        !ids.contains(&"id-0".to_string()),
        "the oldest file was removed"
    );
}

/// `--audit-log-compress`: the old files are `<name>.gz`, readable by gzip, with no
/// uncompressed copy left, and still only `--audit-log-maxbackup` of them.
#[test]
fn rotated_files_are_gzipped_with_compress() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::from_args(&audit_args(dir.path(), POLICY, |a| {
        a.audit_log_maxsize = 1;
        a.audit_log_maxbackup = 2;
        a.audit_log_compress = true;
    }))
    .unwrap()
    .unwrap();
    write_events(&audit, 8_000);
    audit.shutdown();
    let (files, ids) = read_logs(dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".log.gz")).count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"audit.log".to_string()));
    // JSON lines compress well: each backup is a fraction of the 1 MiB it holds.
    for (p, size) in &files {
        if p.extension().is_some_and(|e| e == "gz") {
            assert!(*size < 200 * 1024, "{p:?}: {size}");
        }
    }
    assert!(ids.contains(&"id-7999".to_string()));
    assert!(!ids.contains(&"id-0".to_string()));
    // Every event from the oldest kept one on is there, in order.
    let first: usize = ids[0].strip_prefix("id-").unwrap().parse().unwrap();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.strip_prefix("id-").unwrap().parse::<usize>().unwrap());
    // Two events (RequestReceived, ResponseComplete) per request.
    sorted.dedup();
    let want: Vec<String> = (first..8_000).map(|i| format!("id-{i}")).collect();
    assert_eq!(sorted, want);
}

const BODIES: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: RequestResponse
    resources:
      - group: data.kubedojo.io
        resources: ["datarecords"]
  - level: Request
    resources:
      - group: metrics.k8s.io
  - level: Metadata
"#;

impl Server {
    async fn send(&self, req: reqwest::RequestBuilder, audit_id: &str) -> (u16, Vec<u8>) {
        let resp = req
            .bearer_auth("alice-token")
            .header("Audit-ID", audit_id)
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        (code, resp.bytes().await.unwrap().to_vec())
    }
}

/// `RequestResponse`: a list's `responseObject` is the body served; a request with a
/// JSON body has it as `requestObject`. `Request` keeps the request body only; watches
/// never carry their stream.
#[tokio::test]
async fn request_and_request_response_levels_record_the_bodies() {
    let s = Server::start_with(BODIES, |_| {}).await;
    let (code, body) = s
        .send(s.client.get(format!("{}{LIST}", s.base)), "id-list")
        .await;
    assert_eq!(code, 200);
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert!(!served["items"].as_array().unwrap().is_empty());
    let events = s.events_for("id-list", 1).await;
    assert_eq!(events[0]["level"], "RequestResponse");
    assert_eq!(
        events[0]["responseObject"], served,
        "the served body, as JSON"
    );
    assert!(
        events[0].get("requestObject").is_none(),
        "a GET has no body"
    );

    let object = serde_json::json!({"apiVersion": "data.kubedojo.io/v1alpha1", "kind": "DataRecord",
        "metadata": {"name": "new", "namespace": "default"}, "spec": {"data": {"k": "v"}}});
    let (code, body) = s
        .send(
            s.client.post(format!("{}{LIST}", s.base)).json(&object),
            "id-post",
        )
        .await;
    assert_eq!(code, 405, "the server is read-only");
    let status: Value = serde_json::from_slice(&body).unwrap();
    let events = s.events_for("id-post", 1).await;
    assert_eq!(events[0]["verb"], "create");
    assert_eq!(events[0]["requestObject"], object);
    assert_eq!(events[0]["responseObject"], status, "the Status served");

    // Request level: the request body only.
    let pods = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    let (_, _) = s
        .send(
            s.client
                .patch(format!("{}{pods}/p", s.base))
                .header("Content-Type", "application/merge-patch+json")
                .body(r#"{"a":1}"#),
            "id-patch",
        )
        .await;
    let events = s.events_for("id-patch", 1).await;
    assert_eq!(events[0]["level"], "Request");
    assert_eq!(events[0]["requestObject"], serde_json::json!({"a": 1}));
    assert!(events[0].get("responseObject").is_none());

    // A watch: ResponseStarted and ResponseComplete, no stream in either.
    let (code, _) = s
        .send(
            s.client
                .get(format!("{}{LIST}?watch=1&timeoutSeconds=1", s.base)),
            "id-watch",
        )
        .await;
    assert_eq!(code, 200);
    let events = s.events_for("id-watch", 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events.iter().all(|e| e.get("responseObject").is_none()),
        "{events:?}"
    );
}

/// `--audit-log-truncate-*`: an event over the size limit loses its objects and is
/// annotated `audit.k8s.io/truncated: "true"`; small ones keep theirs.
#[tokio::test]
async fn events_over_the_size_limit_are_truncated_and_annotated() {
    let s = Server::start_with(BODIES, |a| {
        a.audit_log_truncate_enabled = true;
        a.audit_log_truncate_max_event_size = 1_000;
    })
    .await;
    let (code, body) = s
        .send(s.client.get(format!("{}{LIST}", s.base)), "id-big")
        .await;
    assert_eq!(code, 200);
    assert!(
        body.len() > 1_000,
        "the list is larger than the limit: {}",
        body.len()
    );
    let (code, small) = s
        .send(s.client.get(format!("{}{LIST}/nope", s.base)), "id-small")
        .await;
    assert_eq!(code, 404);
    let big = &s.events_for("id-big", 1).await[0];
    assert!(big.get("responseObject").is_none(), "{big}");
    assert_eq!(big["annotations"]["audit.k8s.io/truncated"], "true");
    assert_eq!(big["responseStatus"]["code"], 200, "the metadata is kept");
    let small_event = &s.events_for("id-small", 1).await[0];
    assert_eq!(
        small_event["responseObject"],
        serde_json::from_slice::<Value>(&small).unwrap()
    );
    assert!(small_event.get("annotations").is_none());
}

/// `blocking-strict`: an event that cannot be written at RequestReceived fails the
/// request with 500, as upstream; `blocking` only counts the failure.
#[tokio::test]
async fn blocking_strict_fails_the_request_when_the_log_cannot_be_written() {
    use kubedojo_data_api::server::audit::metrics;
    let full = std::path::Path::new("/dev/full");
    assert!(
        full.exists(),
        "this test writes to /dev/full (ENOSPC on every write)"
    );
    let strict = Server::start_with(POLICY, |a| {
        a.audit_log_path = Some("/dev/full".into());
        a.audit_log_mode = "blocking-strict".into();
    })
    .await;
    let errors = metrics::errors_of("log");
    let (code, body) = strict
        .send(
            strict.client.get(format!("{}{LIST}", strict.base)),
            "id-strict",
        )
        .await;
    assert_eq!(code, 500);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("failed to store audit event"), "{text}");
    assert!(
        metrics::errors_of("log") > errors,
        "the failed write is counted"
    );

    let blocking = Server::start_with(POLICY, |a| {
        a.audit_log_path = Some("/dev/full".into());
        a.audit_log_mode = "blocking".into();
    })
    .await;
    let errors = metrics::errors_of("log");
    let (code, _) = blocking
        .send(
            blocking.client.get(format!("{}{LIST}", blocking.base)),
            "id-blocking",
        )
        .await;
    assert_eq!(code, 200, "blocking mode serves the request");
    assert!(
        metrics::errors_of("log") >= errors + 2,
        "both stages failed and were counted"
    );
}

/// Batch mode in process: events are written by the background thread, and
/// `shutdown` writes what is still buffered.
#[tokio::test]
async fn batch_mode_writes_every_event_by_shutdown() {
    let s = Server::start_with(POLICY, |a| {
        a.audit_log_mode = "batch".into();
        a.audit_log_batch_max_size = 1_000;
        a.audit_log_batch_max_wait = Duration::from_secs(3600);
    })
    .await;
    for i in 0..20 {
        assert_eq!(
            s.get(LIST, "alice-token", Some(&format!("b-{i}"))).await,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.events().is_empty(), "an hour's wait: still buffered");
    let audit = s.audit.clone();
    tokio::task::spawn_blocking(move || audit.shutdown())
        .await
        .unwrap();
    let events = s.events();
    assert_eq!(
        events.len(),
        40,
        "RequestReceived and ResponseComplete of each"
    );
    // After shutdown events are written at once.
    assert_eq!(s.get(LIST, "alice-token", Some("late")).await, 200);
    assert_eq!(s.events_for("late", 2).await.len(), 2);
}

/// A loopback HTTPS audit webhook (a certificate of a test CA): records each POST's
/// `Authorization` header and JSON body.
struct Receiver {
    lists: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener, ca: &CertificateAuthority) -> Self {
        use http_body_util::BodyExt;
        let pair = ca.serving_cert("hook", &["localhost".into()]).unwrap();
        let key = certified_key_from_pem(&pair.cert_pem, &pair.key_pem).unwrap();
        let tls = server_config(
            Arc::new(StaticCert(Arc::new(key))),
            None,
            MinTlsVersion::Tls12,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let lists = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (seen, stopped) = (lists.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = stopped.cancelled() => return,
                    r = listener.accept() => r.unwrap().0,
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let list: Value = serde_json::from_slice(&body).unwrap();
                                seen.lock().unwrap().push((auth, list));
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                                ))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Receiver { lists, stop }
    }

    /// The audit IDs received so far, waiting up to `within` for `count` of them.
    async fn ids(&self, count: usize, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ids: Vec<String> = self
                .lists
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(_, l)| l["items"].as_array().unwrap().clone())
                .map(|e| e["auditID"].as_str().unwrap().to_string())
                .collect();
            if ids.len() >= count || tokio::time::Instant::now() > deadline {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A kubeconfig for the webhook at `port`: the CA's certificate, a bearer token.
fn webhook_kubeconfig(
    dir: &std::path::Path,
    port: u16,
    ca: &CertificateAuthority,
) -> std::path::PathBuf {
    use base64::Engine;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: hook\n  cluster:\n    server: https://localhost:{port}/audit\n    certificate-authority-data: {ca_data}\nusers:\n- name: api\n  user:\n    token: hook-token\ncontexts:\n- name: hook\n  context: {{cluster: hook, user: api}}\ncurrent-context: hook\n"
    );
    let path = dir.join("webhook.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// The webhook plugin next to the log one (upstream unions them): EventLists over
/// verified TLS with the kubeconfig's token, every event in both.
#[tokio::test]
async fn the_webhook_receives_event_lists_alongside_the_log() {
    common::crypto();
    let hook_dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("hook-ca").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::start(listener, &ca).await;
    let kubeconfig = webhook_kubeconfig(hook_dir.path(), port, &ca);
    let s = Server::start_with(POLICY, |a| {
        a.webhook.audit_webhook_config_file = Some(kubeconfig);
        a.webhook.audit_webhook_batch_max_wait = Duration::from_millis(100);
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            s.get(LIST, "alice-token", Some(&format!("w-{i}"))).await,
            200
        );
    }
    let ids = receiver.ids(6, Duration::from_secs(10)).await;
    let mut want: Vec<String> = (0..3)
        .flat_map(|i| [format!("w-{i}"), format!("w-{i}")])
        .collect();
    let mut got = ids.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for (auth, list) in receiver.lists.lock().unwrap().iter() {
        assert_eq!(auth, "Bearer hook-token");
        assert_eq!(list["kind"], "EventList");
        assert_eq!(list["apiVersion"], "audit.k8s.io/v1");
        for e in list["items"].as_array().unwrap() {
            assert_eq!(e["kind"], "Event");
            assert_eq!(e["user"]["username"], "alice");
        }
    }
    assert_eq!(
        s.events_for("w-2", 2).await.len(),
        2,
        "the log has them too"
    );
}

/// A webhook that is down when the batch is sent gets it once it is back, after the
/// backoff (`--audit-webhook-initial-backoff`, then 1.5 times longer).
#[tokio::test]
async fn a_webhook_that_comes_back_gets_the_events_after_backoff() {
    common::crypto();
    let hook_dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("hook-ca").unwrap();
    // A free port with nothing listening yet: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let kubeconfig = webhook_kubeconfig(hook_dir.path(), port, &ca);
    let s = Server::start_with(POLICY, |a| {
        a.audit_log_path = None;
        a.webhook.audit_webhook_config_file = Some(kubeconfig);
        a.webhook.audit_webhook_batch_max_wait = Duration::from_millis(50);
        a.webhook.audit_webhook_initial_backoff = Duration::from_millis(400);
    })
    .await;
    let sent = std::time::Instant::now();
    assert_eq!(s.get(LIST, "alice-token", Some("down-1")).await, 200);
    assert_eq!(s.get(LIST, "alice-token", Some("down-2")).await, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let receiver = Receiver::start(listener, &ca).await;
    let ids = receiver.ids(4, Duration::from_secs(15)).await;
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, ["down-1", "down-1", "down-2", "down-2"], "{ids:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(600),
        "delivered only after the receiver came back"
    );
}

/// Batch mode in the real binary: events stay buffered (an hour's max wait), the
/// self-metrics count them, and SIGTERM writes every one before the process exits.
#[tokio::test]
async fn batch_mode_loses_no_event_at_sigterm() {
    use std::io::BufRead;
    common::crypto();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("audit.log");
    let kubeconfig = dir.path().join("demo.kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubedojo-data-api"))
        .args([
            "demo",
            "--secure-port",
            "0",
            "--nodes",
            "1",
            "--pods-per-node",
            "1",
        ])
        .args(["--token", "demo-token", "--audit-log-mode=batch"])
        .args([
            "--audit-log-batch-max-size=1000",
            "--audit-log-batch-max-wait=1h",
        ])
        .arg(format!("--audit-policy-file={}", policy.display()))
        .arg(format!("--audit-log-path={}", log.display()))
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let first = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        // Keep draining so the demo never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        first
    })
    .await
    .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("{first}"))
        .trim_end_matches([',', '.', ';'])
        .to_string();
    let kc: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    let ca_b64 = kc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let n = 25;
    for i in 0..n {
        let resp = client
            .get(format!("{base}{LIST}"))
            .bearer_auth("demo-token")
            .header("Audit-ID", format!("sig-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth("demo-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("apiserver_audit_event_total "))
        .unwrap_or_else(|| panic!("no apiserver_audit_event_total in /metrics"))
        .trim()
        .parse()
        .unwrap();
    assert!(counted >= (2 * n) as f64, "{counted}");
    let before = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        before.is_empty(),
        "batch mode with an hour's wait buffered them"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let ours = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            e["auditID"]
                .as_str()
                .is_some_and(|id| id.starts_with("sig-"))
        })
        .count();
    assert_eq!(
        ours,
        2 * n,
        "RequestReceived and ResponseComplete of every request"
    );
}

/// Kills the child process if the test ends before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `--audit-webhook-mode=blocking-strict`: a webhook that cannot take `RequestReceived`
/// (after every retry) fails the request with 500; in `blocking` mode the events are
/// delivered before the response is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_blocking_modes_deliver_before_the_response_or_fail_it() {
    common::crypto();
    let hook_dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new("hook-ca").unwrap();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let kubeconfig = webhook_kubeconfig(hook_dir.path(), down, &ca);
    let strict = Server::start_with(POLICY, |a| {
        a.audit_log_path = None;
        a.webhook.audit_webhook_config_file = Some(kubeconfig);
        a.webhook.audit_webhook_mode = "blocking-strict".into();
        a.webhook.audit_webhook_initial_backoff = Duration::from_millis(10);
    })
    .await;
    let (code, body) = strict
        .send(
            strict.client.get(format!("{}{LIST}", strict.base)),
            "strict-1",
        )
        .await;
    assert_eq!(code, 500, "{}", String::from_utf8_lossy(&body));

    let up_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::start(listener, &ca).await;
    let kubeconfig = webhook_kubeconfig(up_dir.path(), port, &ca);
    let blocking = Server::start_with(POLICY, |a| {
        a.audit_log_path = None;
        a.webhook.audit_webhook_config_file = Some(kubeconfig);
        a.webhook.audit_webhook_mode = "blocking".into();
    })
    .await;
    let (code, _) = blocking
        .send(
            blocking.client.get(format!("{}{LIST}", blocking.base)),
            "block-1",
        )
        .await;
    assert_eq!(code, 200);
    // RequestReceived was delivered before the handler ran; no waiting needed.
    let ids = receiver.ids(1, Duration::ZERO).await;
    assert!(ids.contains(&"block-1".to_string()), "{ids:?}");
    assert_eq!(receiver.ids(2, Duration::from_secs(5)).await.len(), 2);
}
