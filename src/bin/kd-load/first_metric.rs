//! `kd-load first-metric`: time from a container's start to the first list that serves its
//! pod's usage (issue 12 §4), for several metrics servers at once.
//!
//! Open loop at `--rate` pods per second until `--pods` have started, spread over the fleet's
//! nodes: for each pod, the Pod object is created in kube-apiserver (bound to its node), its
//! container is started in kubelet-sim through the control endpoint, and the Pod is marked
//! Running (`/status`), as a kubelet would right after starting it. The clock of a sample
//! starts when the control request is **sent** (the container starts while it is handled) and
//! stops when a namespace list that holds the pod with usage is **received** from that server,
//! so every figure is an upper bound, by at most the control round trip plus the poll period
//! (`--poll`) plus one list's latency. Each server's namespace list is polled on its own.
//! A pod not served within `--timeout` seconds of its start counts as missing (reported apart,
//! never as a latency).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::pods::{PodApi, poll_served};
use crate::summary::summary;

/// What `first-metric` needs.
pub struct Plan {
    /// kube-apiserver URL.
    pub apiserver: String,
    /// kubelet-sim's control endpoint (`http://127.0.0.1:PORT`).
    pub control: String,
    /// `(name, base URL)` of each metrics server.
    pub servers: Vec<(String, String)>,
    /// Nodes the pods are spread over.
    pub nodes: Vec<String>,
    /// Namespace of the new pods (created if missing).
    pub namespace: String,
    /// Pods started in all.
    pub pods: usize,
    /// Pods started per second.
    pub rate: f64,
    /// List poll period.
    pub poll: Duration,
    /// How long after its start a pod may take before it counts as missing.
    pub timeout: Duration,
}

/// Start and first-served instants of every pod.
#[derive(Default)]
struct Book {
    /// Pod name → when its control request was sent.
    started: HashMap<String, Instant>,
    /// Per server, pod name → when a list serving it was received.
    served: Vec<HashMap<String, Instant>>,
    /// Pods whose creation failed (with the reason).
    failed: Vec<String>,
}

/// Node names of a kubelet-sim `--objects-out` List.
pub fn node_names(objects: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let list: Value = serde_json::from_slice(
        &std::fs::read(objects).with_context(|| format!("reading {}", objects.display()))?,
    )?;
    let nodes: Vec<String> = list["items"]
        .as_array()
        .context("no items")?
        .iter()
        .filter(|o| o["kind"] == "Node")
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    if nodes.is_empty() {
        bail!("{}: no Node objects", objects.display());
    }
    Ok(nodes)
}

/// Runs the plan; prints nothing, returns the JSON summary.
pub async fn run(api: reqwest::Client, plan: Plan) -> anyhow::Result<Value> {
    let pods = PodApi::new(api.clone(), &plan.apiserver, &plan.control)?;
    let ns = &plan.namespace;
    pods.ensure_namespace(ns).await?;
    let book = Arc::new(Mutex::new(Book {
        served: vec![HashMap::new(); plan.servers.len()],
        ..Book::default()
    }));
    let done = tokio_util::sync::CancellationToken::new();
    let mut pollers = Vec::new();
    for (i, (_, url)) in plan.servers.iter().enumerate() {
        let url = format!("{url}/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
        let book = book.clone();
        pollers.push(tokio::spawn(poll_served(
            api.clone(),
            url,
            plan.poll,
            done.clone(),
            move |_, received, names| {
                let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
                for name in names {
                    b.served[i].entry(name).or_insert(received);
                }
            },
        )));
    }
    let began = Instant::now();
    let mut starters = Vec::new();
    for k in 0..plan.pods {
        let at = began + Duration::from_secs_f64(k as f64 / plan.rate);
        tokio::time::sleep_until(at.into()).await;
        let name = format!("fm-{k:05}");
        let node = plan.nodes[k % plan.nodes.len()].clone();
        let (pods, ns, book) = (pods.clone(), ns.clone(), book.clone());
        starters.push(tokio::spawn(async move {
            let result = pods.start(&ns, &name, &node, "first-metric").await;
            let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(sent) => {
                    b.started.insert(name, sent);
                }
                Err(e) => b.failed.push(format!("{name}: {e}")),
            }
        }));
    }
    for s in starters {
        s.await?;
    }
    let last_start = began + Duration::from_secs_f64((plan.pods.max(1) - 1) as f64 / plan.rate);
    // Until every started pod is served by every server, or the last one timed out.
    loop {
        let complete = {
            let b = book.lock().unwrap_or_else(PoisonError::into_inner);
            b.served.iter().all(|s| s.len() >= b.started.len())
        };
        if complete || Instant::now() > last_start + plan.timeout {
            break;
        }
        tokio::time::sleep(plan.poll).await;
    }
    done.cancel();
    for p in pollers {
        let _ = p.await;
    }
    let b = book.lock().unwrap_or_else(PoisonError::into_inner);
    let mut servers = serde_json::Map::new();
    for (i, (name, url)) in plan.servers.iter().enumerate() {
        let mut us = Vec::new();
        let mut missing = 0usize;
        for (pod, start) in &b.started {
            match b.served[i].get(pod) {
                Some(t) if t.duration_since(*start) <= plan.timeout => {
                    us.push(t.duration_since(*start).as_micros() as u64);
                }
                _ => missing += 1,
            }
        }
        let mut s = summary(&us);
        s["missing"] = json!(missing);
        s["url"] = json!(url);
        servers.insert(name.clone(), s);
    }
    Ok(json!({
        "what": "seconds-as-ms from the container's start (control request sent) to the first received namespace list serving the pod with usage",
        "pods_started": b.started.len(),
        "pods_failed": b.failed.len(),
        "first_failures": b.failed.iter().take(5).collect::<Vec<_>>(),
        "rate_per_s": plan.rate,
        "nodes": plan.nodes.len(),
        "poll_ms": plan.poll.as_millis() as u64,
        "timeout_s": plan.timeout.as_secs_f64(),
        "start_span_s": last_start.duration_since(began).as_secs_f64(),
        "servers": servers,
    }))
}
