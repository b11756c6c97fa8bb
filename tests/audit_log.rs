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
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    async fn start() -> Self {
        common::crypto();
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let log = dir.path().join("audit.log");
        let audit = AuditLog::from_args(&AuditArgs {
            audit_log_path: Some(log.display().to_string()),
            audit_policy_file: Some(policy),
            audit_log_format: "json".into(),
            audit_log_version: "audit.k8s.io/v1".into(),
            audit_log_mode: "blocking".into(),
            ..AuditArgs::default()
        })
        .unwrap()
        .expect("a policy and a path enable auditing");
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
        let app = Arc::new(build_app(AppParts::new(records, chain)).with_audit(Some(audit)));
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
        audit_policy_file: None,
        audit_log_format: "json".into(),
        audit_log_version: "audit.k8s.io/v1".into(),
        audit_log_mode: "blocking".into(),
        ..AuditArgs::default()
    })
    .unwrap();
    assert!(none.is_none());
    let e = AuditLog::from_args(&AuditArgs {
        audit_log_format: "legacy".into(),
        audit_log_version: "audit.k8s.io/v1".into(),
        audit_log_mode: "blocking".into(),
        ..AuditArgs::default()
    })
    .unwrap_err();
    assert!(e.contains("--audit-log-format"), "{e}");
}

/// `--audit-log-maxsize` (MB) and `--audit-log-maxbackup` rotate the file as
/// kube-apiserver does: no file above the limit, only the newest backups kept, every line
/// of every file a whole event.
#[test]
fn the_audit_log_rotates_by_size_and_keeps_max_backup_old_files() {
    use kubedojo_data_api::api::query::Query;
    use kubedojo_data_api::api::request_info::RequestInfo;
    use kubedojo_data_api::server::audit::AuditRequest;

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("audit.log");
    let audit = AuditLog::from_args(&AuditArgs {
        audit_log_path: Some(log.display().to_string()),
        audit_policy_file: Some(policy.clone()),
        audit_log_format: "json".into(),
        audit_log_version: "audit.k8s.io/v1".into(),
        audit_log_mode: "blocking".into(),
        audit_log_maxsize: 1,
        audit_log_maxbackup: 2,
        audit_log_maxage: 366,
    })
    .unwrap()
    .unwrap();
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    let mut written = 0u64;
    for i in 0..8_000 {
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
            .expect("the policy audits lists at Metadata");
        event.response(200, false);
        drop(event);
        written = std::fs::metadata(&log).unwrap().len();
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &policy)
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "audit.log and two backups: {files:?}");
    assert!(written <= 1024 * 1024, "{written}");
    let mut ids = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.len() as u64 <= 1024 * 1024, "{f:?}: {}", text.len());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            ids.push(v["auditID"].as_str().unwrap().to_string());
        }
    }
    assert!(
        ids.contains(&"id-7999".to_string()),
        "the newest event is kept"
    );
    assert!(
        !ids.contains(&"id-0".to_string()),
        "the oldest file was removed"
    );
}
