//! A test double for the parts of kube-apiserver the server delegates to:
//! TokenReview, SubjectAccessReview and the
//! `kube-system/extension-apiserver-authentication` ConfigMap (get, list, watch).
//! It records every review it is asked, and `kube::Client` talks to it over plain
//! HTTP on 127.0.0.1.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// What the double knows and what it was asked.
#[derive(Default)]
pub struct FakeState {
    /// token → (user, groups)
    pub tokens: Mutex<HashMap<String, (String, Vec<String>)>>,
    /// Every TokenReview request body.
    pub token_reviews: Mutex<Vec<Value>>,
    /// Answer TokenReviews with a 500.
    pub token_error: AtomicBool,
    /// Users whose SubjectAccessReviews are allowed.
    pub allowed_users: Mutex<HashSet<String>>,
    /// (user, object name) pairs allowed as RBAC `resourceNames` would: a review is
    /// allowed only when it names that object.
    pub allowed_names: Mutex<HashSet<(String, String)>>,
    /// Every SubjectAccessReview spec.
    pub sars: Mutex<Vec<Value>>,
    /// Answer SubjectAccessReviews with a 500.
    pub sar_error: AtomicBool,
    /// ConfigMap GETs served.
    pub configmap_gets: AtomicUsize,
    /// Watches stay open but never deliver an event.
    pub silent_watch: AtomicBool,
    /// ConfigMap reads are answered 403 Forbidden.
    pub configmap_forbidden: AtomicBool,
    configmap: Mutex<Option<(u64, BTreeMap<String, String>)>>,
    version: AtomicUsize,
    changes: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Value>>>,
}

/// A running double.
pub struct FakeApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl FakeState {
    fn configmap_object(&self) -> Option<Value> {
        let cm = self.configmap.lock().unwrap();
        cm.as_ref().map(|(rv, data)| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system",
                                "resourceVersion": rv.to_string(), "uid": "cm-uid"},
                   "data": data})
        })
    }

    fn resource_version(&self) -> String {
        self.version.load(Ordering::SeqCst).to_string()
    }
}

impl FakeApiServer {
    /// Starts the double on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState::default());
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeApiServer { addr, state, task }
    }

    /// A kube client for the double.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces the ConfigMap (watchers see MODIFIED/ADDED).
    pub fn set_configmap(&self, data: BTreeMap<String, String>) {
        let rv = self.state.version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        let existed = {
            let mut cm = self.state.configmap.lock().unwrap();
            let existed = cm.is_some();
            *cm = Some((rv, data));
            existed
        };
        let object = self.state.configmap_object().unwrap();
        let event = json!({"type": if existed { "MODIFIED" } else { "ADDED" }, "object": object});
        self.state
            .changes
            .lock()
            .unwrap()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Lets `user`'s SubjectAccessReviews through.
    pub fn allow(&self, user: &str) {
        self.state.allowed_users.lock().unwrap().insert(user.into());
    }

    /// Lets `user` get, list and watch only the object `name` (RBAC `resourceNames`).
    pub fn allow_name(&self, user: &str, name: &str) {
        self.state
            .allowed_names
            .lock()
            .unwrap()
            .insert((user.into(), name.into()));
    }

    /// Makes `token` belong to `user` with `groups`.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.state.tokens.lock().unwrap().insert(
            token.into(),
            (user.into(), groups.iter().map(|g| g.to_string()).collect()),
        );
    }

    /// The SAR specs recorded so far.
    pub fn sars(&self) -> Vec<Value> {
        self.state.sars.lock().unwrap().clone()
    }

    /// The number of TokenReviews asked so far.
    pub fn token_review_count(&self) -> usize {
        self.state.token_reviews.lock().unwrap().len()
    }
}

async fn handle(s: Arc<FakeState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), path.as_str()) {
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
            s.token_reviews.lock().unwrap().push(body.clone());
            if s.token_error.load(Ordering::SeqCst) {
                return json_response(500, &status(500, "InternalError", "token review exploded"));
            }
            let token = body["spec"]["token"].as_str().unwrap_or("").to_string();
            let found = s.tokens.lock().unwrap().get(&token).cloned();
            let st = match found {
                Some((user, groups)) => json!({"authenticated": true,
                    "user": {"username": user, "uid": format!("uid-{user}"), "groups": groups}}),
                None => json!({"authenticated": false, "error": "token not found"}),
            };
            json_response(
                201,
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                       "metadata": {}, "spec": body["spec"], "status": st}),
            )
        }
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews") => {
            s.sars.lock().unwrap().push(body["spec"].clone());
            if s.sar_error.load(Ordering::SeqCst) {
                return json_response(500, &status(500, "InternalError", "authorizer exploded"));
            }
            let user = body["spec"]["user"].as_str().unwrap_or("");
            let name = body["spec"]["resourceAttributes"]["name"]
                .as_str()
                .unwrap_or("");
            let allowed = s.allowed_users.lock().unwrap().contains(user)
                || (!name.is_empty()
                    && s.allowed_names
                        .lock()
                        .unwrap()
                        .contains(&(user.to_string(), name.to_string())));
            json_response(
                201,
                &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                                       "metadata": {}, "spec": body["spec"], "status": {"allowed": allowed}}),
            )
        }
        ("GET", "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication") => {
            s.configmap_gets.fetch_add(1, Ordering::SeqCst);
            if s.configmap_forbidden.load(Ordering::SeqCst) {
                return json_response(
                    403,
                    &status(
                        403,
                        "Forbidden",
                        "configmaps \"extension-apiserver-authentication\" is forbidden",
                    ),
                );
            }
            match s.configmap_object() {
                Some(cm) => json_response(200, &cm),
                None => json_response(
                    404,
                    &status(
                        404,
                        "NotFound",
                        "configmaps \"extension-apiserver-authentication\" not found",
                    ),
                ),
            }
        }
        ("GET", "/api/v1/namespaces/kube-system/configmaps") => {
            let watching = query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1");
            if !watching {
                let items: Vec<Value> = s.configmap_object().into_iter().collect();
                return json_response(
                    200,
                    &json!({"apiVersion": "v1", "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": s.resource_version()}, "items": items}),
                );
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
            if s.silent_watch.load(Ordering::SeqCst) {
                std::mem::forget(tx);
            } else {
                s.changes.lock().unwrap().push(tx);
            }
            let stream = tokio_stream_from(rx)
                .map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{event}\n")))));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        _ => json_response(404, &status(404, "NotFound", "not found")),
    }
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
) -> impl futures::Stream<Item = Value> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
