//! The request pipeline: authenticate → authorize → route → negotiate → handler,
//! with one structured log line per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use rustls_pki_types::CertificateDer;

use super::health::Health;
use super::limits::{ActiveGuard, GuardedBody, Limits, watch_stop};
use super::options::ServingOptions;
use crate::api::discovery::{
    AGGREGATED_CONTENT_TYPE, GroupVersion, aggregated, api_group_list, wants_aggregated,
};
use crate::api::endpoint;
use crate::api::list_options::ListOptions;
use crate::api::negotiate::accepts_plain_json;
use crate::api::openapi::{OpenApiDocs, Rendered};
use crate::api::query::Query;
use crate::api::request_info::RequestInfo;
use crate::api::resource::ResourceProvider;
use crate::api::response::{self, Body};
use crate::api::status::ApiError;
use crate::api::time::now_millis;
use crate::auth::{AuthChain, AuthError, AuthRequest, UserInfo, forbidden};
use futures::FutureExt;
use http_body_util::BodyExt;
use std::panic::AssertUnwindSafe;

/// Health endpoints (kubelet probes) are exempt from the in-flight limit.
fn is_health_path(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// 429 with `Retry-After: 1`, as kube-apiserver's max-in-flight filter.
fn too_many_requests() -> Response<Body> {
    let mut resp = response::error(&ApiError::too_many_requests(1));
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Extra endpoints outside our API groups (demo mode's read-only core API, `/metrics`).
pub trait ExtraRoutes: Send + Sync {
    /// Answers the request, or `None` when the path is not one of its own.
    fn handle(
        &self,
        info: &RequestInfo,
        query: &Query,
        accept: Option<&str>,
    ) -> Option<Response<Body>>;

    /// Like [`ExtraRoutes::handle`], also given the authenticated user and the request
    /// headers as handlers see them (credentials and identity headers stripped).
    fn handle_authenticated(
        &self,
        info: &RequestInfo,
        query: &Query,
        accept: Option<&str>,
        _user: &UserInfo,
        _headers: &http::HeaderMap,
    ) -> Option<Response<Body>> {
        self.handle(info, query, accept)
    }
}

/// Everything a request may need, shared by all connections.
pub struct App {
    groups: Vec<GroupVersion>,
    resources: HashMap<(String, String, String), Arc<dyn ResourceProvider>>,
    openapi: OpenApiDocs,
    aggregated: (Vec<u8>, String),
    auth: AuthChain,
    health: Health,
    extra: Vec<Arc<dyn ExtraRoutes>>,
    version: serde_json::Value,
    limits: Limits,
    audit: Option<Arc<super::audit::AuditLog>>,
    /// Whole-snapshot lists encoded at once on the blocking pool: one per core, so a burst of
    /// them holds no more response buffers at a time than when they ran on the workers.
    whole_lists: Arc<tokio::sync::Semaphore>,
}

/// Build-time facts for `/version`.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "major": "0",
        "minor": env!("CARGO_PKG_VERSION_MINOR"),
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else if std::env::consts::ARCH == "aarch64" { "arm64" } else { std::env::consts::ARCH }),
    })
}

/// Connection facts passed to each request.
#[derive(Clone, Default)]
pub struct ConnInfo {
    /// Remote address.
    pub remote: Option<std::net::SocketAddr>,
    /// Client certificate chain, leaf first.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl App {
    /// Assembles the app from its groups, providers, OpenAPI documents and auth chain.
    pub fn new(
        groups: Vec<GroupVersion>,
        providers: Vec<Arc<dyn ResourceProvider>>,
        openapi: OpenApiDocs,
        auth: AuthChain,
        health: Health,
        extra: Vec<Arc<dyn ExtraRoutes>>,
    ) -> Self {
        let aggregated = aggregated(&groups);
        let resources = providers
            .into_iter()
            .map(|p| {
                let d = p.descriptor();
                (
                    (
                        d.group.to_string(),
                        d.version.to_string(),
                        d.plural.to_string(),
                    ),
                    p,
                )
            })
            .collect();
        App {
            groups,
            resources,
            openapi,
            aggregated,
            auth,
            health,
            extra,
            version: version_info(),
            limits: Limits::default(),
            audit: None,
            whole_lists: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
        }
    }

    /// Applies the serving limits (`--request-timeout`, `--max-requests-inflight`).
    pub fn with_serving(mut self, opts: &ServingOptions) -> Self {
        self.limits = Limits::new(opts);
        self
    }

    /// Writes an audit event for every request the policy selects
    /// (`--audit-policy-file`, `--audit-log-path`).
    pub fn with_audit(mut self, audit: Option<Arc<super::audit::AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// Whether requests' bodies are read for the audit log (a policy rule at `Request`
    /// or `RequestResponse`); see [`super::audit::body::read_request`].
    pub fn audit_wants_request_bodies(&self) -> bool {
        self.audit
            .as_ref()
            .is_some_and(|a| a.wants_request_bodies())
    }

    /// The limits requests pass through (the server cancels `closing` at shutdown).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Handles one request end to end and logs it.
    pub async fn handle<B>(&self, req: Request<B>, conn: &ConnInfo) -> Response<Body> {
        self.handle_on(req, conn, None).await
    }

    /// Like [`App::handle`], holding `active` (the connection's in-flight marker)
    /// until the response body is dropped.
    pub async fn handle_on<B>(
        &self,
        req: Request<B>,
        conn: &ConnInfo,
        active: Option<ActiveGuard>,
    ) -> Response<Body> {
        let started = Instant::now();
        let received = self.audit.as_ref().map(|_| super::audit::micro_time_now());
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // Parsed once: authorization and the handler read the same values.
        let query = Query::parse(req.uri().query());
        let info = RequestInfo::new(&method, &path, &query);
        let long_running = info.verb == "watch";
        let exempt = long_running || is_health_path(&path);
        let mut guards: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        if let Some(a) = active {
            guards.push(Box::new(a));
        }
        let mut req = req;
        let limited = match (&self.limits.inflight, exempt) {
            (Some(sem), false) => match sem.clone().try_acquire_owned() {
                Ok(permit) => {
                    guards.push(Box::new(permit));
                    None
                }
                Err(_) => Some(too_many_requests()),
            },
            _ => None,
        };
        let mut panicked = false;
        // Filled once the user is known (audit begins after authentication, as upstream).
        let mut audit_slot: Option<Option<super::audit::AuditEvent>> = None;
        let (user, mut resp) = match limited {
            Some(resp) => (None, resp),
            None => {
                let run = AssertUnwindSafe(self.pipeline(
                    &mut req,
                    conn,
                    (&info, &query),
                    (&mut audit_slot, received.as_deref()),
                ))
                .catch_unwind();
                let outcome = if long_running {
                    Ok(run.await)
                } else {
                    tokio::time::timeout(self.limits.request_timeout, run).await
                };
                match outcome {
                    Ok(Ok(done)) => done,
                    Ok(Err(panic)) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(path = %path, panic = %what, "request handler panicked");
                        panicked = true;
                        (
                            None,
                            response::error(&ApiError::internal("the request handler panicked")),
                        )
                    }
                    Err(_) => (None, response::error(&ApiError::request_timeout())),
                }
            }
        };
        resp.headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-cache, private"));
        if method == Method::HEAD {
            *resp.body_mut() = response::empty();
        }
        let stop = long_running.then(|| {
            let timeout_seconds = query.get("timeoutSeconds").and_then(|v| v.parse().ok());
            watch_stop(
                self.limits.closing.clone(),
                crate::api::watch::hard_deadline(timeout_seconds),
            )
        });
        let status = resp.status().as_u16();
        let mut audited_body = None;
        if let (Some(log), Some(received)) = (&self.audit, received) {
            let event = match audit_slot {
                Some(started) => started,
                // Never authenticated (401, 429, a timeout or panic before): audited now.
                None => log
                    .begin(audit_request(&req, conn, &info, user.clone(), received))
                    .ok()
                    .flatten(),
            };
            if let Some(mut event) = event {
                if let Some(body) = req.extensions().get::<super::audit::body::RequestBody>() {
                    event.request_body(&body.bytes, body.content_type.as_deref());
                }
                if panicked {
                    event.panicked();
                } else {
                    event.response(status, long_running);
                }
                let ct = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                if !long_running && !panicked && event.wants_response_body(ct) {
                    audited_body = Some((event, ct.map(str::to_string)));
                } else {
                    // ResponseComplete is written when the body has been sent (or dropped).
                    guards.push(Box::new(event));
                }
            }
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (user_name, groups) = match &user {
            Some(u) => (u.name.as_str(), u.groups.join(",")),
            None => ("", String::new()),
        };
        tracing::info!(
            target: "kubedojo::request",
            verb = %info.verb,
            method = %method,
            path = %path,
            status,
            content_type,
            latency_ms = format_args!("{latency_ms:.3}"),
            user = user_name,
            groups = %groups,
            remote = %conn.remote.map(|a| a.to_string()).unwrap_or_default(),
            "request"
        );
        if let Some((event, ct)) = audited_body {
            resp = resp.map(|body| super::audit::body::AuditedBody::new(body, event, ct).boxed());
        }
        if stop.is_none() && guards.is_empty() {
            return resp;
        }
        resp.map(|body| GuardedBody::new(body, stop, guards).boxed())
    }

    async fn pipeline<B>(
        &self,
        req: &mut Request<B>,
        conn: &ConnInfo,
        (info, query): (&RequestInfo, &Query),
        (audit_slot, received): (&mut Option<Option<super::audit::AuditEvent>>, Option<&str>),
    ) -> (Option<UserInfo>, Response<Body>) {
        // Status errors are written in the type the client negotiates (protobuf for the HPA).
        let accept_header = req.headers().get(header::ACCEPT).cloned();
        let accept_for_errors = accept_header.as_ref().and_then(|v| v.to_str().ok());
        let auth_req = AuthRequest {
            headers: req.headers(),
            peer_certificates: conn.peer_certificates.as_deref().map(|v| v.as_slice()),
        };
        let user = match self.auth.authenticate(&auth_req).await {
            Ok(u) => u,
            Err(AuthError::Unauthorized(why)) => {
                tracing::debug!(reason = %why, "authentication failed");
                return (
                    None,
                    response::error_negotiated(&ApiError::unauthorized(), accept_for_errors, true),
                );
            }
            Err(e) => return (None, response::error(&ApiError::internal(format!("{e:?}")))),
        };
        if let (Some(log), Some(received)) = (&self.audit, received) {
            let request = audit_request(req, conn, info, Some(user.clone()), received.into());
            match log.begin(request) {
                Ok(event) => *audit_slot = Some(event),
                Err(super::audit::Rejected) => {
                    // blocking-strict: upstream answers 500 and handles nothing.
                    let uri = request_uri(req.uri());
                    return (
                        Some(user),
                        response::text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!(
                                "Internal Server Error: {uri:?}: failed to store audit event\n"
                            ),
                        ),
                    );
                }
            }
        }
        // Handlers never see credentials or identity headers; the user travels as an
        // extension.
        self.auth.strip_credentials(req.headers_mut());
        req.extensions_mut().insert(user.clone());
        match self.auth.authorize(&user, info).await {
            Ok(()) => {}
            Err(AuthError::Forbidden(reason)) => {
                let mut resp = response::error_negotiated(
                    &forbidden(&user.name, info, &reason),
                    accept_for_errors,
                    true,
                );
                resp.headers_mut().insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                return (Some(user), resp);
            }
            Err(AuthError::Internal(e)) | Err(AuthError::Unauthorized(e)) => {
                let uri = request_uri(req.uri());
                return (
                    Some(user),
                    response::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Internal Server Error: {uri:?}: {e}\n"),
                    ),
                );
            }
        }
        // Test-only routes for misbehaving-handler tests; never in a release binary.
        #[cfg(test)]
        if let Some(resp) = test_routes(info, query).await {
            return (Some(user), resp);
        }
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let if_none_match = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        let resp = self
            .route(
                req.method(),
                info,
                query,
                accept,
                if_none_match,
                (&user, req.headers()),
            )
            .await;
        (Some(user), resp)
    }

    async fn route(
        &self,
        method: &Method,
        info: &RequestInfo,
        query: &Query,
        accept: Option<&str>,
        if_none_match: Option<&str>,
        (user, headers): (&UserInfo, &http::HeaderMap),
    ) -> Response<Body> {
        let is_read = *method == Method::GET || *method == Method::HEAD;
        if info.is_resource_request && info.api_prefix == "apis" {
            return self.resource(method, info, query, accept).await;
        }
        for extra in &self.extra {
            if let Some(resp) = extra.handle_authenticated(info, query, accept, user, headers) {
                return resp;
            }
        }
        if !is_read {
            return if self.is_known_non_resource(&info.path) {
                response::error(&ApiError::method_not_allowed())
            } else {
                response::page_not_found()
            };
        }
        let path = info.path.trim_end_matches('/');
        let verbose = query.has("verbose");
        let exclude: Vec<String> = query.all("exclude").map(str::to_string).collect();
        if let Some(resp) = self.health.serve(path, verbose, &exclude) {
            return resp;
        }
        match path {
            "/apis" => self.apis(accept, if_none_match),
            "/version" => response::json_value(&self.version),
            "/openapi/v2" => rendered(&self.openapi.v2, if_none_match, false),
            "/openapi/v3" => rendered(&self.openapi.v3_root, if_none_match, false),
            _ => self.group_paths(path, accept, if_none_match),
        }
    }

    fn is_known_non_resource(&self, path: &str) -> bool {
        let p = path.trim_end_matches('/');
        matches!(
            p,
            "/apis"
                | "/version"
                | "/openapi/v2"
                | "/openapi/v3"
                | "/healthz"
                | "/livez"
                | "/readyz"
        ) || self.group_paths_match(p)
    }

    fn group_paths_match(&self, path: &str) -> bool {
        self.groups.iter().any(|g| {
            path == format!("/apis/{}", g.group)
                || path == format!("/apis/{}", g.group_version())
                || path == format!("/openapi/v3/apis/{}", g.group_version())
        })
    }

    fn apis(&self, accept: Option<&str>, if_none_match: Option<&str>) -> Response<Body> {
        if wants_aggregated(accept) {
            let (bytes, etag) = &self.aggregated;
            if if_none_match == Some(etag.as_str()) {
                let mut resp = Response::new(response::empty());
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                resp.headers_mut().insert(
                    header::ETAG,
                    HeaderValue::from_str(etag).expect("etag is ascii"),
                );
                return resp;
            }
            let mut resp = response::json(Bytes::from(bytes.clone()));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(AGGREGATED_CONTENT_TYPE),
            );
            h.insert(
                header::ETAG,
                HeaderValue::from_str(etag).expect("etag is ascii"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Accept"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
            return resp;
        }
        if !accepts_plain_json(accept) {
            return response::error(&ApiError::not_acceptable(
                "only the following media types are accepted: application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            ));
        }
        response::json_value(&api_group_list(&self.groups))
    }

    fn group_paths(
        &self,
        path: &str,
        accept: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Response<Body> {
        if let Some(key) = path.strip_prefix("/openapi/v3/") {
            return match self.openapi.v3_document(key) {
                Some(doc) => rendered(doc, if_none_match, true),
                None => response::page_not_found(),
            };
        }
        for g in &self.groups {
            if path == format!("/apis/{}", g.group) {
                return discovery_json(accept, &g.api_group());
            }
            if path == format!("/apis/{}", g.group_version()) {
                return discovery_json(accept, &g.api_resource_list());
            }
        }
        response::page_not_found()
    }

    async fn resource(
        &self,
        method: &Method,
        info: &RequestInfo,
        query: &Query,
        accept: Option<&str>,
    ) -> Response<Body> {
        let served = self
            .groups
            .iter()
            .any(|g| g.group == info.api_group && g.version == info.api_version);
        if !served {
            return response::page_not_found();
        }
        let key = (
            info.api_group.clone(),
            info.api_version.clone(),
            info.resource.clone(),
        );
        let Some(provider) = self.resources.get(&key) else {
            return response::error(&ApiError::unknown_resource());
        };
        let d = provider.descriptor();
        if let Some(backend) = provider.backend() {
            return self
                .backend_resource(d, backend, method, info, query, accept)
                .await
                .unwrap_or_else(|e| response::error(&e));
        }
        let result = async {
            if !info.subresource.is_empty() || (!d.namespaced && !info.namespace.is_empty()) {
                return Err(ApiError::unknown_resource());
            }
            if *method != Method::GET && *method != Method::HEAD {
                return Err(ApiError::method_not_allowed());
            }
            let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
            let now = now_millis();
            match info.verb.as_str() {
                "get" => endpoint::get(provider.as_ref(), namespace, &info.name, accept, now),
                "list" => {
                    let opts = ListOptions::from_query(query, false)?;
                    if endpoint::list_scope(namespace, &opts).is_none() {
                        self.list_on_blocking_pool(Arc::clone(provider), opts, accept, now)
                            .await
                    } else {
                        endpoint::list(provider.as_ref(), namespace, &opts, accept, now)
                    }
                }
                "watch" => {
                    let opts = named_watch(ListOptions::from_query(query, true)?, &info.name)?;
                    provider.watch(namespace, &opts, accept)
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        .await;
        result.unwrap_or_else(|e| response::error_negotiated(&e, accept, provider.protobuf()))
    }
}

#[cfg(test)]
async fn test_routes(info: &RequestInfo, query: &Query) -> Option<Response<Body>> {
    match info.path.as_str() {
        "/debug/test/panic" => panic!("test-only panic route"),
        "/debug/test/sleep" => {
            let ms: u64 = query.get("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Some(response::text(StatusCode::OK, "slept"))
        }
        _ => None,
    }
}

impl App {
    /// Encodes a list that visits the whole snapshot ([`endpoint::list_scope`] is `None`:
    /// `kubectl top pod -A`, `kubectl top node`, every list of a cluster-scoped resource) on
    /// tokio's blocking pool instead of on the worker that read the request. Such a list is
    /// long work without an await point (the 30,000-pod list is 12 MB of JSON and ~0.1 s of
    /// CPU): on a worker it holds up every request queued behind it there (HPA queries waited up to one
    /// full list's time, `bench/results/faulty-1000x30`), while on its own thread the kernel
    /// shares the cores between it and the workers. Small lists stay on the worker (a thread
    /// hand-off costs more than they do). A panic in the encoder resumes here, where the
    /// request's panic handler answers 500 as for any handler. At most one such list per core
    /// is encoded at a time ([`App::whole_lists`]); the others wait without holding a worker.
    async fn list_on_blocking_pool(
        &self,
        provider: Arc<dyn ResourceProvider>,
        opts: ListOptions,
        accept: Option<&str>,
        now: i64,
    ) -> Result<Response<Body>, ApiError> {
        // Held by the encoding thread: a request that times out does not free a slot its
        // encoding still uses.
        let Ok(permit) = Arc::clone(&self.whole_lists).acquire_owned().await else {
            return Err(ApiError::internal("the list encoder is closed"));
        };
        let accept = accept.map(str::to_owned);
        let encode = move || {
            let _permit = permit;
            endpoint::list(provider.as_ref(), None, &opts, accept.as_deref(), now)
        };
        match tokio::task::spawn_blocking(encode).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime is shutting down.
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// A resource request answered by an asynchronous backend (a database).
    async fn backend_resource(
        &self,
        d: &'static crate::api::resource::ResourceDescriptor,
        backend: &dyn crate::api::resource::AsyncBackend,
        method: &Method,
        info: &RequestInfo,
        query: &Query,
        accept: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        if !info.subresource.is_empty() || (!d.namespaced && !info.namespace.is_empty()) {
            return Err(ApiError::unknown_resource());
        }
        if *method != Method::GET && *method != Method::HEAD {
            return Err(ApiError::method_not_allowed());
        }
        let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
        let now = now_millis();
        match info.verb.as_str() {
            "get" => endpoint::get_async(d, backend, namespace, &info.name, accept, now).await,
            "list" => {
                let opts = ListOptions::from_query(query, false)?;
                endpoint::list_async(d, backend, namespace, &opts, accept, now).await
            }
            "watch" => {
                let opts = named_watch(ListOptions::from_query(query, true)?, &info.name)?;
                backend.watch(namespace, &opts, accept).await
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }
}

/// The options of a watch of one named object (`/watch/.../<name>`, or a field selector
/// pinning `metadata.name`, which the request info turns into the name), as
/// kube-apiserver's ListResource: a given field selector must pin that name and is kept
/// whole (its other terms still apply); without one, the watch selects the name.
fn named_watch(mut opts: ListOptions, name: &str) -> Result<ListOptions, ApiError> {
    if name.is_empty() {
        return Ok(opts);
    }
    if opts.field_selector.is_empty() {
        opts.field_selector =
            crate::api::field_selector::FieldSelector::parse(&format!("metadata.name={name}"))?;
    } else if opts.field_selector.required_name() != Some(name) {
        return Err(ApiError::bad_request(
            "fieldSelector metadata.name doesn't match requested name",
        ));
    }
    Ok(opts)
}

fn discovery_json(accept: Option<&str>, doc: &serde_json::Value) -> Response<Body> {
    if !accepts_plain_json(accept) {
        return response::error(&ApiError::not_acceptable(
            "only the following media types are accepted: application/json",
        ));
    }
    response::json_value(doc)
}

fn rendered(doc: &Rendered, if_none_match: Option<&str>, immutable: bool) -> Response<Body> {
    let etag = format!("\"{}\"", doc.hash);
    if if_none_match == Some(etag.as_str()) {
        let mut resp = Response::new(response::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }
    let mut resp = response::json(Bytes::from(doc.bytes.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("etag is ascii"),
    );
    if immutable {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    resp
}

/// The request facts an audit event records.
fn audit_request<B>(
    req: &Request<B>,
    conn: &ConnInfo,
    info: &RequestInfo,
    user: Option<UserInfo>,
    received: String,
) -> super::audit::AuditRequest {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut source_ips: Vec<String> = header("x-forwarded-for")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(remote) = conn.remote {
        let ip = remote.ip().to_string();
        if !source_ips.contains(&ip) {
            source_ips.push(ip);
        }
    }
    let audit_id = Some(header("audit-id"))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(super::audit::new_audit_id);
    super::audit::AuditRequest {
        audit_id,
        request_uri: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        info: info.clone(),
        user,
        source_ips,
        user_agent: header("user-agent"),
        received,
    }
}

/// RequestURI as Go has it: path and query, also for HTTP/2's absolute-form URIs.
fn request_uri(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_else(|| uri.path().to_string())
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
