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
    let control = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    let ns = &plan.namespace;
    let resp = api
        .post(format!("{}/api/v1/namespaces", plan.apiserver))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )?)
        .send()
        .await?;
    if !(resp.status().is_success() || resp.status().as_u16() == 409) {
        bail!("creating namespace {ns}: {}", resp.status());
    }
    let book = Arc::new(Mutex::new(Book {
        served: vec![HashMap::new(); plan.servers.len()],
        ..Book::default()
    }));
    let done = tokio_util::sync::CancellationToken::new();
    let mut pollers = Vec::new();
    for (i, (_, url)) in plan.servers.iter().enumerate() {
        let url = format!("{url}/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
        pollers.push(tokio::spawn(poll(
            api.clone(),
            url,
            i,
            book.clone(),
            plan.poll,
            done.clone(),
        )));
    }
    let began = Instant::now();
    let mut starters = Vec::new();
    for k in 0..plan.pods {
        let at = began + Duration::from_secs_f64(k as f64 / plan.rate);
        tokio::time::sleep_until(at.into()).await;
        let name = format!("fm-{k:05}");
        let node = plan.nodes[k % plan.nodes.len()].clone();
        starters.push(tokio::spawn(start_pod(
            api.clone(),
            control.clone(),
            plan.apiserver.clone(),
            plan.control.clone(),
            ns.clone(),
            name,
            node,
            book.clone(),
        )));
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

/// Creates the Pod, starts its container in the simulator, marks it Running.
#[allow(clippy::too_many_arguments)]
async fn start_pod(
    api: reqwest::Client,
    control: reqwest::Client,
    apiserver: String,
    control_url: String,
    ns: String,
    name: String,
    node: String,
    book: Arc<Mutex<Book>>,
) {
    let result = async {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "first-metric"}},
            "spec": {"nodeName": node, "containers": [{
                "name": "app", "image": "registry.example/kubedojo-sim/first-metric:1.0",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
        });
        let r = api
            .post(format!("{apiserver}/api/v1/namespaces/{ns}/pods"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&pod)?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("create: {}", r.status());
        }
        let sent = Instant::now();
        let r = control
            .put(format!("{control_url}/pods/{ns}/{name}"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(
                &json!({"node": node, "labels": {"app": "first-metric"},
                "containers": [{"name": "app", "cpu": "100m", "memory": "64Mi"}]}),
            )?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "control: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        book.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .started
            .insert(name.clone(), sent);
        let now = chrono_now();
        let status = json!({"status": {
            "phase": "Running", "startTime": now,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        let r = api
            .patch(format!(
                "{apiserver}/api/v1/namespaces/{ns}/pods/{name}/status"
            ))
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&status)?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("status: {}", r.status());
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
        b.started.remove(&name);
        b.failed.push(format!("{name}: {e}"));
    }
}

/// RFC 3339 "now" in whole seconds (the Pod API's precision).
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Polls one server's namespace list until `done`; records each pod's first list with usage.
async fn poll(
    api: reqwest::Client,
    url: String,
    server: usize,
    book: Arc<Mutex<Book>>,
    every: Duration,
    done: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !done.is_cancelled() {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(r) = api
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
        else {
            continue;
        };
        let Ok(body) = r.bytes().await else { continue };
        let received = Instant::now();
        let Ok(list) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
        for item in list["items"].as_array().into_iter().flatten() {
            let has_usage = item["containers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["usage"]["cpu"].is_string()));
            if let (Some(name), true) = (item["metadata"]["name"].as_str(), has_usage) {
                b.served[server].entry(name.to_owned()).or_insert(received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(20_790), (2026, 12, 3));
    }
}
