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
}

impl Pipeline {
    /// Builds the store and scraper.
    pub fn new(
        config: ScraperConfig,
        client: KubeletClient,
        view: Arc<ClusterView>,
        request_timeout: Duration,
    ) -> Self {
        let resolution = config.resolution;
        let store = Arc::new(Store::new(StoreConfig::new(resolution)));
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
        }
    }

    /// Adds the metrics.k8s.io group, `/metrics` and the health checks to the app.
    pub fn add_to(&self, parts: &mut AppParts) {
        let sources = Sources {
            store: self.store.clone(),
            cluster: self.view.clone(),
            telemetry: Some(self.telemetry.clone()),
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
        parts.health.add_ready(
            "metric-storage-ready",
            Arc::new(move || {
                if store.has_complete_data() {
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

/// The kubelet client settings for a real cluster: TLS verified against the
/// cluster CA unless `--kubelet-certificate-authority` or `--kubelet-insecure-tls`
/// say otherwise; the bearer token (or client certificate) of the kube config.
pub fn kubelet_client_config(
    args: &crate::config::MetricsArgs,
    kube: &kube::Config,
) -> anyhow::Result<crate::scrape::KubeletClientConfig> {
    use anyhow::Context;
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut config = base_config(args, kube);
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
    if let (Some(cert), Some(key)) = (&args.kubelet_client_certificate, &args.kubelet_client_key) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        config.client_identity_pem = Some(pem);
    }
    Ok(config)
}

fn base_config(
    args: &crate::config::MetricsArgs,
    kube: &kube::Config,
) -> crate::scrape::KubeletClientConfig {
    use secrecy::ExposeSecret;
    crate::scrape::KubeletClientConfig {
        insecure: args.kubelet_insecure_tls,
        token_file: kube
            .auth_info
            .token_file
            .as_ref()
            .map(std::path::PathBuf::from),
        token: kube
            .auth_info
            .token
            .as_ref()
            .map(|t| t.expose_secret().to_string()),
        timeout: args.request_timeout(),
        max_body_bytes: args.kubelet_max_response_bytes,
        ..crate::scrape::KubeletClientConfig::default()
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
