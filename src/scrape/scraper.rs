//! The tick loop: every resolution, scrape every selected node with bounded
//! concurrency and store each node's result as it arrives, so a slow, failing or
//! garbage-speaking kubelet affects only its own node.
//!
//! A tick is bounded by the resolution, as metrics-server bounds its scrape context: a
//! request still running at the deadline is cancelled and counts as a failed scrape of its
//! node, and so does a node the tick never reached. Nodes whose last scrape failed are
//! scraped last, so a zone outage with hundreds of unreachable kubelets cannot starve the
//! healthy ones of the tick's time, and ticks keep starting every resolution (liveness
//! looks at that, never at kubelets).
//!
//! When a scrape shows a container too young for its first rate (less than 10 s since its
//! start), the node is scraped once more when that container turns 10 s old, so a new pod
//! is served within one resolution of its start (see `store::rate`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// `--metric-resolution`; also the deadline of one tick.
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

struct Inner {
    config: ScraperConfig,
    client: Arc<KubeletClient>,
    view: Arc<ClusterView>,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    state: Arc<ScrapeState>,
    /// Nodes whose last scrape failed: scraped after the others.
    failing: Mutex<HashSet<Arc<str>>>,
    /// Nodes with a follow-up scrape pending (at most one each).
    follow_ups: Mutex<HashSet<Arc<str>>>,
    /// Cancels pending follow-ups when the scraper stops.
    stop: CancellationToken,
    /// Sharing the scraping with other replicas (`docs/ha.md`); unset for a lone replica.
    ha: std::sync::OnceLock<Arc<crate::ha::coordinator::Coordinator>>,
}

/// Scrapes kubelets into the store. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Scraper(Arc<Inner>);

/// How one node's scrape in a tick ended.
const PENDING: u8 = 0;
const STARTED: u8 = 1;
const DONE: u8 = 2;

impl Scraper {
    /// A scraper over the given parts.
    pub fn new(
        config: ScraperConfig,
        client: Arc<KubeletClient>,
        view: Arc<ClusterView>,
        store: Arc<Store>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Scraper(Arc::new(Inner {
            config,
            client,
            view,
            store,
            telemetry,
            state: Arc::new(ScrapeState::default()),
            failing: Mutex::new(HashSet::new()),
            follow_ups: Mutex::new(HashSet::new()),
            stop: CancellationToken::new(),
            ha: std::sync::OnceLock::new(),
        }))
    }

    /// Shares the scraping with other replicas (`docs/ha.md`): each tick scrapes only the
    /// nodes this replica owns and fetches the rest from their owners. Set once, before `run`.
    #[must_use]
    pub fn with_ha(self, ha: Arc<crate::ha::coordinator::Coordinator>) -> Self {
        if self.0.ha.set(ha).is_err() {
            tracing::warn!("sharding was already set up for this scraper");
        }
        self
    }

    /// Progress, for health checks.
    pub fn state(&self) -> Arc<ScrapeState> {
        self.0.state.clone()
    }

    /// Runs [`Scraper::run`] once the node list has synced, or after `max_wait` (a slow
    /// kube-apiserver delays metrics but never stops them). The pod list is not waited for:
    /// a tick reads only nodes, and pods are joined with their usage when a request is
    /// served, so the two readings a rate needs are taken while a large pod list (150,000
    /// pods at 5,000 nodes) is still arriving.
    pub async fn run_once_nodes_synced(self, max_wait: Duration, shutdown: CancellationToken) {
        let started = Instant::now();
        while !self.0.view.nodes_synced() && started.elapsed() < max_wait {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        if !self.0.view.nodes_synced() {
            tracing::warn!(
                "the node list has not synced after {max_wait:?}; scraping the nodes known so far"
            );
        }
        self.run(shutdown).await;
    }

    /// Ticks until `shutdown` is cancelled. Ticks never overlap, and each ends by the
    /// resolution, so one starts every resolution.
    pub async fn run(self, shutdown: CancellationToken) {
        let _stop_follow_ups = self.0.stop.clone().drop_guard();
        let resolution = self.0.config.resolution;
        let mut interval = match self.0.ha.get() {
            // Replicas tick together (aligned to the wall clock), so a peer's shard fetched
            // halfway through a tick holds that tick's readings.
            Some(_) => tokio::time::interval_at(
                tokio::time::Instant::now() + crate::ha::until_next_tick(resolution),
                resolution,
            ),
            None => tokio::time::interval(resolution),
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

    /// One scrape cycle over every selected node, ending by the resolution at the latest.
    pub async fn tick(&self) {
        let me = &self.0;
        let started = Instant::now();
        self.0
            .state
            .last_tick_start_ms
            .store(now_millis(), Ordering::Release);
        let mut nodes: Vec<Arc<NodeInfo>> = me
            .view
            .nodes()
            .into_iter()
            .filter(|n| me.config.node_selector.matches(&n.labels))
            .collect();
        let plan = me.ha.get().map(|ha| {
            let mut plan = ha.plan(std::mem::take(&mut nodes));
            nodes = std::mem::take(&mut plan.own);
            (ha.clone(), plan)
        });
        {
            let failing = me.failing.lock().unwrap_or_else(PoisonError::into_inner);
            // Stable: healthy nodes first, in the view's order.
            nodes.sort_by_key(|n| failing.contains(n.name.as_str()));
        }
        let progress: Vec<std::sync::atomic::AtomicU8> = nodes
            .iter()
            .map(|_| std::sync::atomic::AtomicU8::new(PENDING))
            .collect();
        let scrapes = futures::stream::iter(nodes.iter().zip(&progress)).for_each_concurrent(
            me.config.concurrency.max(1),
            |(node, progress)| async move {
                progress.store(STARTED, Ordering::Release);
                self.scrape_node(node).await;
                progress.store(DONE, Ordering::Release);
            },
        );
        // The nodes other replicas own: fetched from them halfway through the tick; what no
        // owner delivered is scraped here (bounded by the same deadline).
        // Boxed as `dyn Send`: joining the two streams' futures directly trips rustc's
        // higher-ranked `Send` inference when the scraper is spawned.
        let scrapes: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
            Box::pin(scrapes);
        let scrapes = futures::future::join(scrapes, self.remote(plan, started));
        let publisher = async {
            let mut every = tokio::time::interval(me.config.publish_interval);
            every.tick().await;
            loop {
                every.tick().await;
                me.store.publish(now_millis());
            }
        };
        let deadline = tokio::time::sleep(me.config.resolution);
        let timed_out = tokio::select! {
            _ = scrapes => false,
            _ = publisher => false,
            _ = deadline => true,
        };
        if timed_out {
            self.fail_unfinished(&nodes, &progress, started);
        }
        let view = &me.view;
        let selector = &me.config.node_selector;
        me.store
            .retain_nodes(|name| view.node(name).is_some_and(|n| selector.matches(&n.labels)));
        let snapshot = me.store.publish_cycle(now_millis());
        let points = snapshot.storage_points();
        me.telemetry
            .set_storage_points(points.node, points.container);
        me.telemetry
            .tick_duration
            .observe(started.elapsed().as_secs_f64());
        me.state
            .last_tick_end_ms
            .store(now_millis(), Ordering::Release);
        let first = !me.state.first_tick_done.swap(true, Ordering::AcqRel);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (nodes, pods) = (snapshot.node_count(), snapshot.pod_count());
        if first {
            // Start-up is read from the log: node list, pod list, first cycle (issue 15 §7).
            tracing::info!(
                elapsed_ms,
                nodes,
                pods,
                timed_out,
                "first scrape cycle done"
            );
        } else {
            tracing::debug!(elapsed_ms, nodes, pods, timed_out, "scrape cycle done");
        }
    }

    /// The nodes other replicas own: fetched from them `fetch_offset` into the tick; what no
    /// owner delivered is scraped here (bounded by the tick's deadline like the rest).
    async fn remote(
        &self,
        plan: Option<(
            Arc<crate::ha::coordinator::Coordinator>,
            crate::ha::coordinator::Plan,
        )>,
        started: Instant,
    ) {
        let Some((ha, plan)) = plan else { return };
        if plan.remote.is_empty() {
            return;
        }
        tokio::time::sleep_until((started + ha.fetch_offset()).into()).await;
        let missing = ha.fetch_remote(plan, &self.0.store).await;
        self.scrape_all(missing).await;
    }

    async fn scrape_all(&self, nodes: Vec<Arc<NodeInfo>>) {
        futures::stream::iter(nodes)
            .for_each_concurrent(self.0.config.concurrency.max(1), |node| async move {
                self.scrape_node(&node).await;
            })
            .await;
    }

    /// The tick's deadline passed: every node whose scrape was cut off or never started counts
    /// as a failed scrape (metrics-server's context deadline does the same) and its data drops
    /// out (unless `--metric-stale-tolerance` keeps it). Only a node whose request was cut off
    /// counts as a failed request and goes to the back of the next tick; one the tick never
    /// reached keeps its place.
    fn fail_unfinished(
        &self,
        nodes: &[Arc<NodeInfo>],
        progress: &[std::sync::atomic::AtomicU8],
        started: Instant,
    ) {
        let me = &self.0;
        let now = now_millis();
        let mut cut = 0usize;
        for (node, state) in nodes.iter().zip(progress) {
            let state = state.load(Ordering::Acquire);
            if state == DONE {
                continue;
            }
            cut += 1;
            if state == STARTED {
                me.telemetry.kubelet_request(
                    &node.name,
                    started.elapsed().as_secs_f64(),
                    false,
                    now as f64 / 1000.0,
                );
                self.set_failing(&node.name, true);
            }
            me.telemetry.kubelet_failure(&node.name, "deadline");
            me.store.mark_failed(&node.name, now);
        }
        tracing::warn!(
            nodes = cut,
            deadline = ?me.config.resolution,
            "scrape cycle reached its deadline; unfinished nodes count as failed"
        );
    }

    fn set_failing(&self, node: &str, failing: bool) {
        let mut set = self
            .0
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failing {
            if !set.contains(node) {
                set.insert(Arc::from(node));
            }
        } else {
            set.remove(node);
        }
    }

    async fn scrape_node(&self, node: &NodeInfo) {
        let me = &self.0;
        let started = Instant::now();
        let request_time_ms = now_millis();
        let result = self.fetch_and_decode(node, request_time_ms).await;
        let ok = result.is_ok();
        me.telemetry.kubelet_request(
            &node.name,
            started.elapsed().as_secs_f64(),
            ok,
            request_time_ms as f64 / 1000.0,
        );
        self.set_failing(&node.name, !ok);
        match result {
            Ok(decoded) => {
                if !decoded.skipped.is_empty() {
                    me.telemetry
                        .decode_skipped
                        .inc_by(decoded.skipped.len() as u64);
                    tracing::debug!(node = %node.name, skipped = ?decoded.skipped, "left out some series");
                }
                let due = me.store.ingest(&node.name, decoded.batch, now_millis());
                if let Some(ha) = me.ha.get() {
                    // What the store made of it (rates included): peers take it as it is.
                    if let Some(state) = me.store.export(&node.name) {
                        ha.record(&node.name, Ok(&state));
                    }
                }
                if let Some(due) = due {
                    self.schedule_follow_up(&node.name, due);
                }
            }
            Err(e) => {
                me.telemetry.kubelet_failure(&node.name, e.reason());
                if let Some(ha) = me.ha.get() {
                    ha.record(&node.name, Err(()));
                }
                me.store.mark_failed(&node.name, now_millis());
                if node.ready {
                    tracing::warn!(node = %node.name, error = %e, "failed to scrape node");
                } else {
                    tracing::debug!(node = %node.name, error = %e, "failed to scrape node (not ready)");
                }
            }
        }
    }

    /// Scrapes `node` again at `due_ms` (ms since the epoch), once, unless one is pending or
    /// the next regular scrape comes first.
    fn schedule_follow_up(&self, node: &str, due_ms: i64) {
        let me = &self.0;
        let wait_ms = due_ms.saturating_sub(now_millis()).max(0);
        let resolution_ms = i64::try_from(me.config.resolution.as_millis()).unwrap_or(i64::MAX);
        if wait_ms >= resolution_ms || me.stop.is_cancelled() {
            return;
        }
        let name: Arc<str> = Arc::from(node);
        {
            let mut pending = me.follow_ups.lock().unwrap_or_else(PoisonError::into_inner);
            if !pending.insert(name.clone()) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A little after the due time: the kubelet's sample must be at least 10 s old.
            let wait = Duration::from_millis(wait_ms.unsigned_abs() + 100);
            tokio::select! {
                _ = this.0.stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {
                    this.0.follow_ups.lock().unwrap_or_else(PoisonError::into_inner).remove(&name);
                    if let Some(info) = this.0.view.node(&name) {
                        this.0.telemetry.follow_up_scrapes.inc();
                        // Bounded like a tick's request.
                        let _ = tokio::time::timeout(this.0.config.resolution, this.scrape_node(&info)).await;
                        this.0.store.publish(now_millis());
                    }
                    return;
                }
            }
            this.0
                .follow_ups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        });
    }

    async fn fetch_and_decode(
        &self,
        node: &NodeInfo,
        request_time_ms: i64,
    ) -> Result<super::decode::Decoded, ScrapeError> {
        let url = self
            .0
            .config
            .addressing
            .url(node)
            .map_err(ScrapeError::Address)?;
        let body = self.0.client.get(&url).await?;
        decode(&body, request_time_ms).map_err(|e| ScrapeError::Decode(e.to_string()))
    }
}
