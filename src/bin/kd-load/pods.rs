//! Pods started and stopped while the servers run, as a scheduler and a kubelet would (shared
//! by `first-metric` and the pod churn of `run --churn-rate`): the Pod is created in
//! kube-apiserver (bound to its node), its container is started in kubelet-sim through the
//! control endpoint and the Pod is marked Running (`/status`); stopping deletes the Pod at
//! once (`gracePeriodSeconds=0`: no kubelet would confirm a graceful deletion) and removes
//! it from the simulator.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// kube-apiserver and kubelet-sim's control endpoint, with a client for each.
#[derive(Clone)]
pub struct PodApi {
    /// Client of kube-apiserver (the harness's client certificate).
    pub api: reqwest::Client,
    /// Client of the control endpoint (plain HTTP on loopback).
    pub control: reqwest::Client,
    /// kube-apiserver URL.
    pub apiserver: String,
    /// Control endpoint URL (`http://127.0.0.1:PORT`).
    pub control_url: String,
}

impl PodApi {
    /// Clients for `apiserver` (through `api`) and the control endpoint at `control_url`.
    pub fn new(api: reqwest::Client, apiserver: &str, control_url: &str) -> anyhow::Result<Self> {
        let control = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?;
        Ok(PodApi {
            api,
            control,
            apiserver: apiserver.to_owned(),
            control_url: control_url.to_owned(),
        })
    }

    /// Creates namespace `ns` in kube-apiserver (an existing one is fine).
    pub async fn ensure_namespace(&self, ns: &str) -> anyhow::Result<()> {
        let resp = self
            .api
            .post(format!("{}/api/v1/namespaces", self.apiserver))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?)
            .send()
            .await?;
        if !(resp.status().is_success() || resp.status().as_u16() == 409) {
            bail!("creating namespace {ns}: {}", resp.status());
        }
        Ok(())
    }

    /// Creates pod `ns/name` (label `app`) on `node`, starts its container and marks it
    /// Running; returns when the control request was sent (the container's start).
    pub async fn start(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        app: &str,
    ) -> anyhow::Result<Instant> {
        let apiserver = &self.apiserver;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{
                "name": "app", "image": format!("registry.example/kubedojo-sim/{app}:1.0"),
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
        });
        let r = self
            .api
            .post(format!("{apiserver}/api/v1/namespaces/{ns}/pods"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&pod)?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("create: {}", r.status());
        }
        let sent = Instant::now();
        let r = self
            .control
            .put(format!("{}/pods/{ns}/{name}", self.control_url))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(
                &json!({"node": node, "labels": {"app": app},
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
        let now = rfc3339_now();
        let status = json!({"status": {
            "phase": "Running", "startTime": now,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        let r = self
            .api
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
        Ok(sent)
    }

    /// Deletes pod `ns/name` from kube-apiserver (at once) and from the simulator.
    pub async fn stop(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let r = self
            .api
            .delete(format!(
                "{}/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0",
                self.apiserver
            ))
            .send()
            .await?;
        if !(r.status().is_success() || r.status().as_u16() == 404) {
            bail!("delete: {}", r.status());
        }
        let r = self
            .control
            .delete(format!("{}/pods/{ns}/{name}", self.control_url))
            .send()
            .await?;
        if !(r.status().is_success() || r.status().as_u16() == 404) {
            bail!("control delete: {}", r.status());
        }
        Ok(())
    }

    /// Names of the simulator's pods in namespace `ns`, sorted.
    pub async fn sim_pods(&self, ns: &str) -> anyhow::Result<Vec<String>> {
        let body = self
            .control
            .get(format!("{}/pods", self.control_url))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let list: Value = serde_json::from_slice(&body).context("control GET /pods")?;
        let mut names: Vec<String> = list
            .as_array()
            .context("control GET /pods: not an array")?
            .iter()
            .filter(|p| p["namespace"] == ns)
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// One poll of a metrics server's list at `url`: when the body was received and the names of
/// the pods it serves with usage; `None` when the request or its JSON failed.
async fn served(api: &reqwest::Client, url: &str) -> Option<(Instant, Vec<String>)> {
    let r = api
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .ok()?;
    let body = r.bytes().await.ok()?;
    let received = Instant::now();
    let list: Value = serde_json::from_slice(&body).ok()?;
    let names = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| {
            item["containers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["usage"]["cpu"].is_string()))
        })
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    Some((received, names))
}

/// Polls the list at `url` every `every` until `done`, handing each answer to `on_list` with
/// when it was asked for and when it was received (failed polls are skipped).
pub async fn poll_served(
    api: reqwest::Client,
    url: String,
    every: Duration,
    done: tokio_util::sync::CancellationToken,
    mut on_list: impl FnMut(Instant, Instant, Vec<String>),
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !done.is_cancelled() {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        if let Some((received, names)) = served(&api, &url).await {
            on_list(sent, received, names);
        }
    }
}

/// RFC 3339 "now" in whole seconds (the Pod API's precision).
fn rfc3339_now() -> String {
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
