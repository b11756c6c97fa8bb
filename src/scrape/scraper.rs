//! The tick loop: every resolution, scrape every selected node with bounded
//! concurrency and store each node's result as it arrives, so a slow, failing or
//! garbage-speaking kubelet affects only its own node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::client::{KubeletClient, ScrapeError};
use super::decode::decode;
use crate::api::label_selector::LabelSelector;
use crate::api::time::now_millis;
use crate::cluster::address::KubeletAddressing;
use crate::cluster::{ClusterView, NodeInfo};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Scraper settings.
#[derive(Clone, Debug)]
pub struct ScraperConfig {
    /// `--metric-resolution`.
    pub resolution: Duration,
    /// Most kubelets scraped at once.
    pub concurrency: usize,
    /// `--node-selector`.
    pub node_selector: LabelSelector,
    /// Address, port and path choice.
    pub addressing: KubeletAddressing,
    /// How often the store publishes while a long tick is still running.
    pub publish_interval: Duration,
}

/// Scrape progress, read by health checks.
#[derive(Debug, Default)]
pub struct ScrapeState {
    /// Start of the last tick (ms since the epoch; 0 before the first).
    pub last_tick_start_ms: AtomicI64,
    /// End of the last complete tick (0 before the first).
    pub last_tick_end_ms: AtomicI64,
    /// True once one tick has finished.
    pub first_tick_done: AtomicBool,
}

/// Scrapes kubelets into the store.
pub struct Scraper {
    config: ScraperConfig,
    client: Arc<KubeletClient>,
    view: Arc<ClusterView>,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    state: Arc<ScrapeState>,
    ha: Option<Arc<crate::ha::coordinator::Coordinator>>,
}

impl Scraper {
    /// A scraper over the given parts.
    pub fn new(
        config: ScraperConfig,
        client: Arc<KubeletClient>,
        view: Arc<ClusterView>,
        store: Arc<Store>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Scraper {
            config,
            client,
            view,
            store,
            telemetry,
            state: Arc::new(ScrapeState::default()),
            ha: None,
        }
    }

    /// Shares the scraping with other replicas (`docs/ha.md`): each tick scrapes only the
    /// nodes this replica owns and fetches the rest from their owners.
    pub fn with_ha(mut self, ha: Arc<crate::ha::coordinator::Coordinator>) -> Self {
        self.ha = Some(ha);
        self
    }

    /// Progress, for health checks.
    pub fn state(&self) -> Arc<ScrapeState> {
        self.state.clone()
    }

    /// Ticks until `shutdown` is cancelled. Ticks never overlap: a tick that runs long
    /// delays the next one.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut interval = match &self.ha {
            // Replicas tick together (aligned to the wall clock), so a peer's shard fetched
            // halfway through a tick holds that tick's readings.
            Some(_) => tokio::time::interval_at(
                tokio::time::Instant::now() + crate::ha::until_next_tick(self.config.resolution),
                self.config.resolution,
            ),
            None => tokio::time::interval(self.config.resolution),
        };
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.tick() => {}
            }
        }
    }

    /// One scrape cycle over every selected node.
    pub async fn tick(&self) {
        let started = Instant::now();
        self.state
            .last_tick_start_ms
            .store(now_millis(), Ordering::Release);
        let nodes: Vec<Arc<NodeInfo>> = self
            .view
            .nodes()
            .into_iter()
            .filter(|n| self.config.node_selector.matches(&n.labels))
            .collect();
        let (nodes, plan) = match &self.ha {
            Some(ha) => {
                let mut plan = ha.plan(nodes);
                (std::mem::take(&mut plan.own), Some((ha, plan)))
            }
            None => (nodes, None),
        };
        let own = self.scrape_all(nodes);
        let remote = async {
            let Some((ha, plan)) = plan else { return };
            if plan.remote.is_empty() {
                return;
            }
            tokio::time::sleep_until((started + ha.fetch_offset()).into()).await;
            let missing = ha.fetch_remote(plan, &self.store).await;
            self.scrape_all(missing).await;
        };
        let scrapes = futures::future::join(own, remote);
        let publisher = async {
            let mut every = tokio::time::interval(self.config.publish_interval);
            every.tick().await;
            loop {
                every.tick().await;
                self.store.publish(now_millis());
            }
        };
        tokio::select! {
            _ = scrapes => {}
            _ = publisher => {}
        }
        let view = &self.view;
        let selector = &self.config.node_selector;
        self.store
            .retain_nodes(|name| view.node(name).is_some_and(|n| selector.matches(&n.labels)));
        if let Some(ha) = &self.ha {
            ha.end_tick();
        }
        let snapshot = self.store.publish(now_millis());
        let points = snapshot.storage_points();
        self.telemetry
            .set_storage_points(points.node, points.container);
        self.telemetry
            .tick_duration
            .observe(started.elapsed().as_secs_f64());
        self.state
            .last_tick_end_ms
            .store(now_millis(), Ordering::Release);
        self.state.first_tick_done.store(true, Ordering::Release);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            nodes = snapshot.node_count(),
            pods = snapshot.pod_count(),
            "scrape cycle done"
        );
    }

    async fn scrape_all(&self, nodes: Vec<Arc<NodeInfo>>) {
        futures::stream::iter(nodes)
            .for_each_concurrent(self.config.concurrency.max(1), |node| async move {
                self.scrape_node(&node).await
            })
            .await;
    }

    async fn scrape_node(&self, node: &NodeInfo) {
        let started = Instant::now();
        let request_time_ms = now_millis();
        let result = self.fetch_and_decode(node, request_time_ms).await;
        let ok = result.is_ok();
        self.telemetry.kubelet_request(
            &node.name,
            started.elapsed().as_secs_f64(),
            ok,
            request_time_ms as f64 / 1000.0,
        );
        match result {
            Ok(decoded) => {
                if !decoded.skipped.is_empty() {
                    self.telemetry
                        .decode_skipped
                        .inc_by(decoded.skipped.len() as u64);
                    tracing::debug!(node = %node.name, skipped = ?decoded.skipped, "left out some series");
                }
                if let Some(ha) = &self.ha {
                    ha.record(&node.name, Ok(&decoded.batch));
                }
                self.store.ingest(&node.name, decoded.batch, now_millis());
            }
            Err(e) => {
                if let Some(ha) = &self.ha {
                    ha.record(&node.name, Err(()));
                }
                self.store.mark_failed(&node.name, now_millis());
                if node.ready {
                    tracing::warn!(node = %node.name, error = %e, "failed to scrape node");
                } else {
                    tracing::debug!(node = %node.name, error = %e, "failed to scrape node (not ready)");
                }
            }
        }
    }

    async fn fetch_and_decode(
        &self,
        node: &NodeInfo,
        request_time_ms: i64,
    ) -> Result<super::decode::Decoded, ScrapeError> {
        let url = self
            .config
            .addressing
            .url(node)
            .map_err(ScrapeError::Address)?;
        let body = self.client.get(&url).await?;
        decode(&body, request_time_ms).map_err(|e| ScrapeError::Decode(e.to_string()))
    }
}
