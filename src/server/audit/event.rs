//! One audited request's events: the `audit.k8s.io/v1` `Event` of each stage, with
//! `requestObject` (level `Request` and up, from `ResponseStarted` on: the request body
//! when it is JSON) and `responseObject` (level `RequestResponse`, on `ResponseComplete`:
//! the JSON response body as served). Upstream re-encodes protobuf objects as JSON; here
//! non-JSON bodies (protobuf, text) are left out, and so are watch streams, as upstream.

use std::sync::Arc;

use serde_json::{Value, json};

use super::AuditLog;
use super::policy::{Level, Stage};
use crate::api::request_info::RequestInfo;
use crate::auth::UserInfo;

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
    request_object: Option<Value>,
    response_object: Option<Value>,
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

/// A body as an event object: parsed when it is JSON (by content type, or for a body
/// without one, by its bytes), else `None`.
fn json_object(body: &[u8], content_type: Option<&str>) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    let json = content_type.is_none_or(|c| {
        let media = c.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
    });
    if !json {
        return None;
    }
    serde_json::from_slice(body).ok()
}

impl AuditEvent {
    pub(super) fn new(
        log: Arc<AuditLog>,
        level: Level,
        omit: Vec<Stage>,
        request: AuditRequest,
    ) -> Self {
        AuditEvent {
            log,
            level,
            omit,
            request,
            code: None,
            done: false,
            request_object: None,
            response_object: None,
        }
    }

    /// Stores `RequestReceived`; `false` when a strict plugin failed.
    pub(super) fn received(&self) -> bool {
        let at = self.request.received.clone();
        self.write(Stage::RequestReceived, &at)
    }

    /// The level the policy decided.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Records the request body (level `Request` and up; ignored below).
    pub fn request_body(&mut self, body: &[u8], content_type: Option<&str>) {
        if self.level >= Level::Request {
            self.request_object = json_object(body, content_type);
        }
    }

    /// Whether the response body is wanted: level `RequestResponse`, a JSON response.
    pub fn wants_response_body(&self, content_type: Option<&str>) -> bool {
        self.level >= Level::RequestResponse
            && content_type.is_some_and(|c| json_object(b"{}", Some(c)).is_some())
    }

    /// Records the whole response body (for `ResponseComplete`).
    pub fn response_body(&mut self, body: &[u8], content_type: Option<&str>) {
        if self.level >= Level::RequestResponse {
            self.response_object = json_object(body, content_type);
        }
    }

    /// Records the response: `ResponseStarted` now for long-running requests, and
    /// `ResponseComplete` when this value is dropped.
    pub fn response(&mut self, code: u16, long_running: bool) {
        self.code = Some(code);
        if long_running {
            let at = micro_time_now();
            self.write(Stage::ResponseStarted, &at);
        }
    }

    /// Records a panic in the handler (the `Panic` stage replaces `ResponseComplete`).
    pub fn panicked(&mut self) {
        self.code = Some(500);
        let at = micro_time_now();
        self.write(Stage::Panic, &at);
        self.done = true;
    }

    /// Stores the event of `stage`; `false` when a strict plugin failed (an omitted
    /// stage is a success).
    fn write(&self, stage: Stage, at: &str) -> bool {
        if self.omit.contains(&stage) {
            return true;
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
        if stage != Stage::RequestReceived
            && let Some(o) = &self.request_object
        {
            event["requestObject"] = o.clone();
        }
        if stage == Stage::ResponseComplete
            && let Some(o) = &self.response_object
        {
            event["responseObject"] = o.clone();
        }
        self.log.process(event)
    }
}

impl Drop for AuditEvent {
    fn drop(&mut self) {
        if !self.done && self.code.is_some() {
            let at = micro_time_now();
            self.write(Stage::ResponseComplete, &at);
        }
    }
}
