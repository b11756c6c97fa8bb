//! The metrics pipeline's wiring, shared by `serve` and `demo`: store, scraper,
//! self-metrics, the metrics.k8s.io group and its health checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, header};

use crate::api::query::Query;
use crate::api::request_info::RequestInfo;
use crate::api::response::{self, Body};
use crate::api::time::now_millis;
use crate::cluster::ClusterView;
use crate::groups::metrics::{
    self as metrics_group, NodeMetricsProvider, PodMetricsProvider, Sources,
};
use crate::runtime::AppParts;
use crate::scrape::{KubeletClient, ScrapeState, Scraper, ScraperConfig};
use crate::server::ExtraRoutes;
use crate::store::{Store, StoreConfig};
use crate::telemetry::Telemetry;

/// The running pieces of the metrics pipeline.
pub struct Pipeline {
    /// The store the scraper writes and the API reads.
    pub store: Arc<Store>,
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// The scraper (run it with [`Scraper::run`]).
    pub scraper: Scraper,
    /// Where nodes and pods come from.
    pub view: Arc<ClusterView>,
    resolution: Duration,
    request_timeout: Duration,
    /// The metrics watch history's byte bound (`--watch-history-bytes`).
    pub watch_history_bytes: usize,
}

impl Pipeline {
    /// Builds the store (metrics-server's staleness: none) and scraper.
    pub fn new(
        config: ScraperConfig,
        client: KubeletClient,
        view: Arc<ClusterView>,
        request_timeout: Duration,
    ) -> Self {
        let store_config = StoreConfig::new(config.resolution);
        Self::with_store_config(config, store_config, client, view, request_timeout)
    }

    /// Builds the store with `store_config` (e.g. `--metric-stale-tolerance`) and the scraper.
    pub fn with_store_config(
        config: ScraperConfig,
        store_config: StoreConfig,
        client: KubeletClient,
        view: Arc<ClusterView>,
        request_timeout: Duration,
    ) -> Self {
        let resolution = config.resolution;
        let store = Arc::new(Store::new(store_config));
        let telemetry = Telemetry::new(resolution.as_secs_f64());
        let scraper = Scraper::new(
            config,
            Arc::new(client),
            view.clone(),
            store.clone(),
            telemetry.clone(),
        );
        Pipeline {
            store,
            telemetry,
            scraper,
            view,
            resolution,
            request_timeout,
            watch_history_bytes: crate::groups::metrics_watch::HISTORY_BYTES,
        }
    }

    /// What the computed DataRecords read: this pipeline's store and cluster view.
    pub fn metrics_inputs(&self) -> crate::records::MetricsInputs {
        crate::records::MetricsInputs {
            store: self.store.clone(),
            view: self.view.clone(),
            resolution: self.resolution,
        }
    }

    /// Adds the metrics.k8s.io group, `/metrics` and the health checks to the app.
    pub fn add_to(&self, parts: &mut AppParts) {
        parts
            .records
            .count_conflicts_in(self.telemetry.record_name_conflicts.clone());
        let sources = Sources {
            store: self.store.clone(),
            cluster: self.view.clone(),
            telemetry: Some(self.telemetry.clone()),
            watch_history_bytes: self.watch_history_bytes,
        };
        parts.extra_groups.push(metrics_group::group_version());
        parts
            .extra_providers
            .push(Arc::new(NodeMetricsProvider::new(sources.clone())));
        parts
            .extra_providers
            .push(Arc::new(PodMetricsProvider::new(sources)));
        parts.extra_schemas.extend(metrics_group::schemas());
        parts
            .extra_routes
            .push(Arc::new(SelfMetrics(self.telemetry.clone())));

        let started = Instant::now();
        // Readiness never waits longer than this: an unready aggregated server makes
        // kube-aggregator answer 503 for the whole group, cluster-wide.
        let max_wait = self.resolution * 2 + self.request_timeout;
        let store = self.store.clone();
        let gave_up = Arc::new(AtomicBool::new(false));
        // Once ready, always ready: kubelets failing later (a zone outage) must never take the
        // whole metrics.k8s.io group down with a 503 from the aggregator.
        let was_ready = AtomicBool::new(false);
        parts.health.add_ready(
            "metric-storage-ready",
            Arc::new(move || {
                if was_ready.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if store.has_complete_data() {
                    was_ready.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                if started.elapsed() > max_wait {
                    if !gave_up.swap(true, Ordering::Relaxed) {
                        tracing::warn!("no metrics yet after {max_wait:?}; reporting ready anyway so discovery stays up");
                    }
                    return Ok(());
                }
                Err("no metrics to serve".into())
            }),
        );
        let view = self.view.clone();
        parts.health.add_ready(
            "metric-informer-sync",
            Arc::new(move || {
                if view.synced() || started.elapsed() > max_wait {
                    Ok(())
                } else {
                    Err("node or pod list not synced yet".into())
                }
            }),
        );
        // Ticks end by the resolution (the scraper's deadline), so a tick starts at least every
        // resolution however many kubelets hang; only a stuck loop trips this.
        let state: Arc<ScrapeState> = self.scraper.state();
        let late_after = (self.resolution.mul_f64(1.5)).max(self.resolution + self.request_timeout);
        parts.health.add_live(
            "metric-collection-timely",
            Arc::new(move || {
                let last = state.last_tick_start_ms.load(Ordering::Acquire);
                let late = last != 0 && now_millis() - last > late_after.as_millis() as i64;
                if late {
                    Err(format!(
                        "the last scrape cycle started more than {late_after:?} ago"
                    ))
                } else {
                    Ok(())
                }
            }),
        );
    }
}

/// `/metrics`: the self-metrics in Prometheus text.
struct SelfMetrics(Arc<Telemetry>);

impl ExtraRoutes for SelfMetrics {
    fn handle(
        &self,
        info: &RequestInfo,
        _query: &Query,
        _accept: Option<&str>,
    ) -> Option<Response<Body>> {
        if info.path != "/metrics" {
            return None;
        }
        let mut resp = response::text(StatusCode::OK, self.0.encode());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Some(resp)
    }
}

/// The kubelet client settings for a real cluster, from the kube config as metrics-server
/// takes them from its rest config: TLS verified against the cluster CA unless
/// `--kubelet-certificate-authority` or `--kubelet-insecure-tls` say otherwise; the user's
/// credentials (bearer token, token file, exec plugin, basic auth) on every request; the
/// user's client certificate as the TLS identity unless `--kubelet-client-certificate/-key`
/// give one.
pub fn kubelet_client_config(
    args: &crate::config::MetricsArgs,
    kube: &kube::Config,
) -> anyhow::Result<crate::scrape::KubeletClientConfig> {
    use anyhow::Context;
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut config = crate::scrape::KubeletClientConfig {
        insecure: args.kubelet_insecure_tls,
        auth: crate::scrape::KubeletAuth::Kubeconfig(Box::new(kube.clone())),
        timeout: args.request_timeout(),
        max_body_bytes: args.kubelet_max_response_bytes,
        gzip: args.kubelet_gzip,
        ..crate::scrape::KubeletClientConfig::default()
    };
    config.ca_pem = if let Some(path) = &args.kubelet_certificate_authority {
        Some(read(path)?)
    } else if args.kubelet_insecure_tls {
        None
    } else if let Some(ders) = &kube.root_cert {
        Some(
            ders.iter()
                .map(|d| der_to_pem(d))
                .collect::<String>()
                .into_bytes(),
        )
    } else if let Some(file) = &kube.root_cert_file {
        Some(read(file)?)
    } else {
        None
    };
    config.client_identity_pem = match (&args.kubelet_client_certificate, &args.kubelet_client_key)
    {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            Some(pem)
        }
        _ => kubeconfig_identity(&kube.auth_info)?,
    };
    Ok(config)
}

/// The kubeconfig user's client certificate and key (inline base64 data or files), PEM.
fn kubeconfig_identity(auth: &kube::config::AuthInfo) -> anyhow::Result<Option<Vec<u8>>> {
    use anyhow::Context;
    use base64::Engine;
    use secrecy::ExposeSecret;
    let load = |data: Option<&str>,
                file: Option<&String>,
                what: &str|
     -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(data) = data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .with_context(|| format!("kubeconfig {what}-data is not base64"))?;
            return Ok(Some(bytes));
        }
        file.map(|f| std::fs::read(f).with_context(|| format!("reading kubeconfig {what} {f}")))
            .transpose()
    };
    let cert = load(
        auth.client_certificate_data.as_deref(),
        auth.client_certificate.as_ref(),
        "client-certificate",
    )?;
    let key = load(
        auth.client_key_data.as_ref().map(|k| k.expose_secret()),
        auth.client_key.as_ref(),
        "client-key",
    )?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(mut cert), Some(key)) => {
            cert.push(b'\n');
            cert.extend(key);
            Ok(Some(cert))
        }
        _ => anyhow::bail!("the kubeconfig user has a client certificate or key without the other"),
    }
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
