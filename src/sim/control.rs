//! The simulator's control endpoint: plain HTTP on a loopback address, to add, re-size and
//! remove pods while the fleet serves (the HPA e2e plays scheduler and kubelet with it).
//!
//! - `PUT /pods/{namespace}/{name}` with
//!   `{"node": "sim-node-0001", "labels": {"app": "web"}, "containers": [{"name": "app",
//!   "cpu": "400m", "memory": "300Mi"}]}`: adds the pod (its containers start now), or
//!   changes the usage of an existing one from now on (its counters continue, so every
//!   rate stays honest). `200` with the pod as [`PodUsage`] JSON.
//! - `DELETE /pods/{namespace}/{name}`: removes it (`404` if there is none).
//! - `GET /pods`: every pod, a JSON array of [`PodUsage`].
//!
//! Bad requests get `400` with a one-line reason, unknown paths `404`, other methods `405`.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header::CONTENT_TYPE,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Labels, SimControl, SimError, SimPod};
use crate::api::quantity::{parse_nanos, parse_units};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// A `PUT /pods/{namespace}/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPod {
    /// The node's name (`sim-node-0001`…).
    pub node: String,
    /// The pod's labels (optional).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its containers and their usage (at least one).
    pub containers: Vec<PutContainer>,
}

/// One container of a [`PutPod`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutContainer {
    /// Container name.
    pub name: String,
    /// CPU rate as a quantity (`400m`, `1.5`).
    pub cpu: String,
    /// Working set as a quantity (`300Mi`).
    pub memory: String,
}

/// A pod as the endpoint reports it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodUsage {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it is on.
    pub node: String,
    /// Its CPU rate now, nanocores.
    pub cpu_nanocores: u64,
    /// Its working set now, bytes.
    pub memory_bytes: u64,
}

/// Binds `addr` (a loopback address: the endpoint has no authentication) and serves the
/// control API until `cancel`; returns the bound address.
pub async fn serve_control(
    control: SimControl,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<SocketAddr, SimError> {
    let bind_error = |source| SimError::Bind { addr, source };
    if !addr.ip().is_loopback() {
        return Err(bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the control endpoint has no authentication: use a loopback address",
        )));
    }
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let control = control.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let control = control.clone();
                    async move { Ok::<_, Infallible>(handle(&control, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::select! {
                    () = cancel.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    Ok(bound)
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

fn text(status: StatusCode, msg: impl std::fmt::Display) -> Answer {
    answer(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

fn json(value: &impl Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => answer(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn handle(control: &SimControl, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["pods"]) => json(&pods(control)),
        (Method::PUT, ["pods", ns, name]) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
            };
            match put(control, ns, name, &body) {
                Ok(pod) => json(&pod),
                Err((status, msg)) => text(status, msg),
            }
        }
        (Method::DELETE, ["pods", ns, name]) => {
            if control.update_fleet(|f| f.remove_pod(ns, name)) {
                text(StatusCode::OK, format!("pod {ns}/{name} removed"))
            } else {
                text(StatusCode::NOT_FOUND, format!("no pod {ns}/{name}"))
            }
        }
        (_, ["pods"] | ["pods", _, _]) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, format!("no such path {path}")),
    }
}

fn pods(control: &SimControl) -> Vec<PodUsage> {
    let now = control.now_ms();
    control
        .fleet()
        .pods()
        .map(|(node, pod)| PodUsage {
            namespace: pod.namespace.to_string(),
            name: pod.name.clone(),
            node: node.name.clone(),
            cpu_nanocores: pod.cpu_nanocores_at(now),
            memory_bytes: pod.memory_bytes_at(now),
        })
        .collect()
}

fn put(
    control: &SimControl,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<PodUsage, (StatusCode, String)> {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg);
    let spec: PutPod = serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))?;
    if ns.is_empty() || name.is_empty() {
        return Err(bad("namespace and name must not be empty".into()));
    }
    if spec.containers.is_empty() {
        return Err(bad("containers: at least one is needed".into()));
    }
    let mut containers = Vec::with_capacity(spec.containers.len());
    for c in &spec.containers {
        let cpu = parse_nanos(&c.cpu).ok_or_else(|| {
            bad(format!(
                "container {}: cpu {:?} is not a quantity",
                c.name, c.cpu
            ))
        })?;
        let memory = parse_units(&c.memory).ok_or_else(|| {
            bad(format!(
                "container {}: memory {:?} is not a quantity",
                c.name, c.memory
            ))
        })?;
        if c.name.is_empty() || containers.iter().any(|(n, _, _)| n == &c.name) {
            return Err(bad(format!(
                "container names must be non-empty and unique: {:?}",
                c.name
            )));
        }
        containers.push((c.name.clone(), cpu, memory));
    }
    let labels = Labels::new(
        spec.labels
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into())),
    );
    let now = control.now_ms();
    let pod = SimPod::with_usage(ns, name, labels, &containers, now);
    let node = control
        .fleet()
        .nodes
        .iter()
        .position(|n| n.name == spec.node)
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no simulated node {:?}", spec.node),
            )
        })?;
    control
        .update_fleet(|f| f.put_pod(node, pod, now))
        .map_err(|e| bad(e.to_string()))?;
    pods(control)
        .into_iter()
        .find(|p| p.namespace == ns && p.name == name)
        .ok_or_else(|| (StatusCode::INTERNAL_SERVER_ERROR, "the pod vanished".into()))
}
