//! Audit logging as k8s.io/apiserver's log backend: `--audit-policy-file` (an
//! `audit.k8s.io/v1` `Policy`) decides each request's level from the first matching rule;
//! `--audit-log-path` (a file, or `-` for stdout) receives one `audit.k8s.io/v1` `Event` as
//! a JSON line per stage: `RequestReceived`, then `ResponseStarted` (watches) and
//! `ResponseComplete` (when the response, or the watch, ends), minus the policy's
//! `omitStages`.
//!
//! Levels `None` and `Metadata` are exactly upstream's. `Request` and `RequestResponse` are
//! written with the metadata only: request and response bodies are never recorded (a warning
//! at start-up says so). Without a policy file nothing is audited, as upstream. Events are
//! written synchronously (`--audit-log-mode=blocking`). The file rotates as kube-apiserver's
//! (`--audit-log-maxsize`, `--audit-log-maxbackup`, `--audit-log-maxage`; see
//! [`audit_rotate`](super::audit_rotate)).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use super::audit_rotate::{RotatingFile, Rotation};
use crate::api::request_info::RequestInfo;
use crate::auth::UserInfo;

/// The audit flags that have an effect (the others are accepted with a warning, see
/// `compat.rs`).
#[derive(Debug, Clone, Default, Args)]
pub struct AuditArgs {
    /// Write audit events to this file as JSON lines (`-`: standard output). Needs
    /// --audit-policy-file.
    #[arg(long)]
    pub audit_log_path: Option<String>,
    /// The audit.k8s.io/v1 Policy that decides what is audited.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Format of the audit log: only `json` is supported.
    #[arg(long, default_value = "json")]
    pub audit_log_format: String,
    /// API version of the events written: only `audit.k8s.io/v1`.
    #[arg(long, default_value = "audit.k8s.io/v1")]
    pub audit_log_version: String,
    /// How events are written: `blocking` (the only mode; `batch` and `blocking-strict`
    /// are taken as `blocking`).
    #[arg(long, default_value = "blocking")]
    pub audit_log_mode: String,
    /// Megabytes the audit log file may reach before it is rotated (0: never rotate).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Old audit log files kept after rotations (0: all of them).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxbackup: usize,
    /// Days an old audit log file is kept, by the time in its name (0: no age limit).
    #[arg(long, default_value_t = 366)]
    pub audit_log_maxage: u64,
}

/// How much of a request is audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// Not audited.
    None,
    /// Request metadata: user, verb, resource, timestamps, response code.
    Metadata,
    /// Metadata plus the request body (written as Metadata here).
    Request,
    /// Metadata plus both bodies (written as Metadata here).
    RequestResponse,
}

/// The points in a request's life an event is written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Stage {
    /// The request was received and authenticated.
    RequestReceived,
    /// The response headers were sent (long-running requests only).
    ResponseStarted,
    /// The response body was sent completely.
    ResponseComplete,
    /// The handler panicked.
    Panic,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// An `audit.k8s.io/v1` `Policy`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// One rule; empty lists match everything.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

/// Resources of one API group a rule names.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--audit-policy-file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--audit-policy-file {}: {e}", path.display()))
    }

    /// Parses a policy (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if policy.api_version != "audit.k8s.io/v1" || policy.kind != "Policy" {
            return Err(format!(
                "expected apiVersion audit.k8s.io/v1, kind Policy; got {:?}, {:?}",
                policy.api_version, policy.kind
            ));
        }
        let _ = (&policy.metadata, policy.omit_managed_fields);
        for (i, r) in policy.rules.iter().enumerate() {
            let _ = r.omit_managed_fields;
            if !r.non_resource_urls.is_empty()
                && (!r.resources.is_empty() || !r.namespaces.is_empty())
            {
                return Err(format!(
                    "rules[{i}]: rules cannot apply to both regular resources and non-resource URLs"
                ));
            }
        }
        Ok(policy)
    }

    /// The level and stages to omit for a request (upstream's `policyRuleEvaluator`):
    /// the first rule that matches decides; none matching means `None`.
    pub fn evaluate(&self, user: &UserInfo, info: &RequestInfo) -> (Level, Vec<Stage>) {
        for rule in &self.rules {
            if rule.matches(user, info) {
                let mut omit = self.omit_stages.clone();
                omit.extend(rule.omit_stages.iter().copied());
                return (rule.level, omit);
            }
        }
        (Level::None, self.omit_stages.clone())
    }

    /// The highest level any rule asks for.
    pub fn max_level(&self) -> Level {
        self.rules
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Level::None)
    }
}

impl PolicyRule {
    fn matches(&self, user: &UserInfo, info: &RequestInfo) -> bool {
        if !self.users.is_empty() && !self.users.contains(&user.name) {
            return false;
        }
        if !self.user_groups.is_empty() && !user.groups.iter().any(|g| self.user_groups.contains(g))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&info.verb) {
            return false;
        }
        if info.is_resource_request {
            if !self.non_resource_urls.is_empty() {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.contains(&info.namespace) {
                return false;
            }
            self.resources.is_empty() || self.resources.iter().any(|gr| gr.matches(info))
        } else {
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            self.non_resource_urls.is_empty()
                || self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || *u == info.path
                        || u.strip_suffix('*')
                            .is_some_and(|p| info.path.starts_with(p))
                })
        }
    }
}

impl GroupResources {
    /// Upstream's `ruleMatchesResource`: no resources means the whole group; otherwise
    /// `res`, `res/sub`, `*`, `*/sub` or `res/*` (which also matches `res` itself), each
    /// limited to `resourceNames` when given.
    fn matches(&self, info: &RequestInfo) -> bool {
        if self.group != info.api_group {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        if !self.resource_names.is_empty() && !self.resource_names.contains(&info.name) {
            return false;
        }
        let sub = info.subresource.as_str();
        let combined = if sub.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{sub}", info.resource)
        };
        self.resources.iter().any(|r| {
            *r == combined
                || r == "*"
                || (!sub.is_empty() && r.strip_prefix("*/") == Some(sub))
                || r.strip_suffix("/*") == Some(info.resource.as_str())
        })
    }
}

/// Where events go.
enum Sink {
    Stdout,
    File(RotatingFile),
}

/// The audit backend: a policy and a log.
pub struct AuditLog {
    policy: Policy,
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// The backend the flags ask for: `None` without a policy file or a log path
    /// (upstream audits nothing without a policy), an error for an unusable file or a
    /// format or version we cannot write.
    pub fn from_args(args: &AuditArgs) -> Result<Option<Arc<Self>>, String> {
        if args.audit_log_format != "json" {
            return Err(format!(
                "--audit-log-format={:?}: only \"json\" is supported",
                args.audit_log_format
            ));
        }
        if args.audit_log_version != "audit.k8s.io/v1" {
            return Err(format!(
                "--audit-log-version={:?}: only \"audit.k8s.io/v1\" is supported",
                args.audit_log_version
            ));
        }
        if !matches!(
            args.audit_log_mode.as_str(),
            "blocking" | "batch" | "blocking-strict"
        ) {
            return Err(format!(
                "--audit-log-mode={:?}: known modes are batch,blocking,blocking-strict",
                args.audit_log_mode
            ));
        }
        let (Some(path), Some(policy)) = (&args.audit_log_path, &args.audit_policy_file) else {
            if args.audit_log_path.is_some() {
                tracing::warn!("--audit-log-path without --audit-policy-file: nothing is audited");
            }
            return Ok(None);
        };
        let policy = Policy::load(policy)?;
        if args.audit_log_mode != "blocking" {
            tracing::warn!(mode = %args.audit_log_mode, "audit events are written synchronously (blocking mode)");
        }
        if policy.max_level() > Level::Metadata {
            tracing::warn!(
                "audit levels Request and RequestResponse are written as metadata only: request and response bodies are not recorded"
            );
        }
        let sink = if path == "-" {
            Sink::Stdout
        } else {
            let rotation = Rotation::from_flags(
                args.audit_log_maxsize,
                args.audit_log_maxbackup,
                args.audit_log_maxage,
            );
            let file = RotatingFile::open(Path::new(path), rotation)
                .map_err(|e| format!("--audit-log-path {path}: {e}"))?;
            Sink::File(file)
        };
        Ok(Some(Arc::new(AuditLog {
            policy,
            sink: Mutex::new(sink),
        })))
    }

    /// A backend writing to `file`, never rotated (tests).
    pub fn to_file(policy: Policy, file: &Path) -> std::io::Result<Arc<Self>> {
        let file = RotatingFile::open(file, Rotation::default())?;
        Ok(Arc::new(AuditLog {
            policy,
            sink: Mutex::new(Sink::File(file)),
        }))
    }

    /// Starts auditing one request: decides its level and writes `RequestReceived`.
    /// `None` when the policy says `None`.
    pub fn begin(self: &Arc<Self>, request: AuditRequest) -> Option<AuditEvent> {
        let anonymous = UserInfo::default();
        let user = request.user.as_ref().unwrap_or(&anonymous);
        let (level, omit) = self.policy.evaluate(user, &request.info);
        if level == Level::None {
            return None;
        }
        let event = AuditEvent {
            log: self.clone(),
            level,
            omit,
            request,
            code: None,
            done: false,
        };
        event.write(Stage::RequestReceived, &event.request.received);
        Some(event)
    }

    fn write_line(&self, line: &[u8]) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let result = match &mut *sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line).and_then(|()| out.flush())
            }
            Sink::File(f) => f.write_line(line),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "writing an audit event failed");
        }
    }
}

/// What an event says about the request.
#[derive(Clone, Debug)]
pub struct AuditRequest {
    /// `Audit-ID` header (kube-apiserver's aggregator forwards its own), else a new UUID.
    pub audit_id: String,
    /// The request URI (path and query).
    pub request_uri: String,
    /// The parsed request.
    pub info: RequestInfo,
    /// The authenticated user (`None`: authentication failed).
    pub user: Option<UserInfo>,
    /// `X-Forwarded-For` entries then the peer address.
    pub source_ips: Vec<String>,
    /// `User-Agent`.
    pub user_agent: String,
    /// When the request was received (RFC 3339, microseconds).
    pub received: String,
}

/// One audited request; writes `ResponseComplete` when dropped after
/// [`AuditEvent::response`] (for a watch: when its body ends).
pub struct AuditEvent {
    log: Arc<AuditLog>,
    level: Level,
    omit: Vec<Stage>,
    request: AuditRequest,
    code: Option<u16>,
    done: bool,
}

/// The current time as a `metav1.MicroTime`.
pub fn micro_time_now() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}

/// A fresh audit ID (a random version 4 UUID, as upstream).
pub fn new_audit_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

impl AuditEvent {
    /// Records the response: `ResponseStarted` now for long-running requests, and
    /// `ResponseComplete` when this value is dropped.
    pub fn response(&mut self, code: u16, long_running: bool) {
        self.code = Some(code);
        if long_running {
            self.write(Stage::ResponseStarted, &micro_time_now());
        }
    }

    /// Records a panic in the handler (the `Panic` stage replaces `ResponseComplete`).
    pub fn panicked(&mut self) {
        self.code = Some(500);
        self.write(Stage::Panic, &micro_time_now());
        self.done = true;
    }

    fn write(&self, stage: Stage, at: &str) {
        if self.omit.contains(&stage) {
            return;
        }
        let r = &self.request;
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": format!("{:?}", self.level),
            "auditID": r.audit_id,
            "stage": stage.as_str(),
            "requestURI": r.request_uri,
            "verb": r.info.verb,
            "user": match &r.user {
                Some(u) => {
                    let mut user = json!({"username": u.name, "groups": u.groups});
                    if !u.uid.is_empty() {
                        user["uid"] = json!(u.uid);
                    }
                    if !u.extra.is_empty() {
                        user["extra"] = json!(u.extra);
                    }
                    user
                }
                None => json!({}),
            },
            "sourceIPs": r.source_ips,
            "userAgent": r.user_agent,
            "requestReceivedTimestamp": r.received,
            "stageTimestamp": at,
        });
        if r.info.is_resource_request {
            let i = &r.info;
            let mut object = json!({"resource": i.resource, "apiVersion": i.api_version});
            for (key, value) in [
                ("namespace", &i.namespace),
                ("name", &i.name),
                ("apiGroup", &i.api_group),
                ("subresource", &i.subresource),
            ] {
                if !value.is_empty() {
                    object[key] = json!(value);
                }
            }
            event["objectRef"] = object;
        }
        if stage != Stage::RequestReceived
            && let Some(code) = self.code
        {
            event["responseStatus"] = json!({"metadata": {}, "code": code});
        }
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        self.log.write_line(&line);
    }
}

impl Drop for AuditEvent {
    fn drop(&mut self) {
        if !self.done && self.code.is_some() {
            self.write(Stage::ResponseComplete, &micro_time_now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::query::Query;
    use http::Method;

    fn info(method: Method, path: &str) -> RequestInfo {
        RequestInfo::new(&method, path, &Query::default())
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: ["system:kube-proxy"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz", "/livez"]
  - level: Metadata
    resources:
      - group: metrics.k8s.io
        resources: ["pods", "nodes"]
    namespaces: ["", "kube-system"]
  - level: RequestResponse
    userGroups: ["system:masters"]
    resources:
      - group: data.kubedojo.io
        resources: ["datarecords/*"]
        resourceNames: ["orders"]
  - level: Metadata
    verbs: ["watch"]
    omitStages: [ResponseStarted]
"#;

    #[test]
    fn first_matching_rule_decides_as_upstream() {
        let p = Policy::parse(POLICY).unwrap();
        let alice = user("alice", &["system:authenticated"]);
        let admin = user("admin", &["system:masters"]);
        let cases = [
            (&alice, info(Method::GET, "/healthz/ping"), Level::None),
            (&alice, info(Method::GET, "/readyz"), Level::None),
            (&alice, info(Method::GET, "/metrics"), Level::None),
            (
                &user("system:kube-proxy", &[]),
                info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes"),
                Level::None,
            ),
            (
                &alice,
                info(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes"),
                Level::Metadata,
            ),
            (
                &alice,
                info(
                    Method::GET,
                    "/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods",
                ),
                Level::Metadata,
            ),
            (
                &alice,
                info(
                    Method::GET,
                    "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                ),
                Level::None,
            ),
            (
                &admin,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/orders/status",
                ),
                Level::RequestResponse,
            ),
            (
                &admin,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/orders",
                ),
                Level::RequestResponse,
            ),
            (
                &admin,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/namespaces/default/datarecords/other/status",
                ),
                Level::None,
            ),
            (
                &alice,
                info(
                    Method::GET,
                    "/apis/data.kubedojo.io/v1alpha1/watch/namespaces/default/datarecords",
                ),
                Level::Metadata,
            ),
        ];
        for (u, i, want) in cases {
            assert_eq!(p.evaluate(u, &i).0, want, "{} {}", u.name, i.path);
        }
        let watch = info(
            Method::GET,
            "/apis/data.kubedojo.io/v1alpha1/watch/namespaces/default/datarecords",
        );
        assert_eq!(
            p.evaluate(&alice, &watch).1,
            vec![Stage::RequestReceived, Stage::ResponseStarted]
        );
    }

    #[test]
    fn bad_policies_are_readable_errors() {
        let e = Policy::parse("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\n").unwrap_err();
        assert!(e.contains("expected apiVersion audit.k8s.io/v1"), "{e}");
        let e = Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n")
            .unwrap_err();
        assert!(e.contains("Loud"), "{e}");
        let e = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [/x]\n  namespaces: [a]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("both regular resources and non-resource URLs"),
            "{e}"
        );
    }
}
