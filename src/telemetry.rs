//! Self-metrics on `/metrics` in Prometheus text: metrics-server's six
//! `metrics_server_*` series with the same names and labels (existing dashboards
//! keep working), plus ours (`kubedojo_*`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{node="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node name.
    pub node: String,
}

/// `{success="true"|"false"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuccessLabel {
    /// Whether the request succeeded.
    pub success: String,
}

/// `{reason="timeout"|"tls"|"status"|...}`: why a kubelet request failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A short, stable failure kind (`ScrapeError::reason`, or `deadline`).
    pub reason: String,
}

/// The `type` label of `metrics_server_storage_points`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PointType {
    /// `node` or `container`.
    pub r#type: String,
}

/// `{source, namespace, name}` of a DataRecords row that was skipped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BadRowLabels {
    /// The source (e.g. `postgres:kubedojo`).
    pub source: String,
    /// The row's namespace as stored.
    pub namespace: String,
    /// The row's name as stored.
    pub name: String,
}

/// Process-wide count of skipped DataRecords rows (sources have no Telemetry handle;
/// every Telemetry registry exposes this family).
static BAD_ROWS: std::sync::LazyLock<Family<BadRowLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// Counts one skipped DataRecords row (`kubedojo_datarecords_bad_rows_total`).
pub fn record_bad_row(source: &str, namespace: &str, name: &str) {
    BAD_ROWS
        .get_or_create(&BadRowLabels {
            source: source.to_string(),
            namespace: namespace.chars().take(253).collect(),
            name: name.chars().take(253).collect(),
        })
        .inc();
}

type HistogramFactory = fn() -> Histogram;

fn default_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every self-metric, registered once.
pub struct Telemetry {
    registry: Registry,
    /// Duration of kubelet requests.
    pub kubelet_request_duration: Family<NodeLabel, Histogram, HistogramFactory>,
    /// Number of kubelet requests by outcome.
    pub kubelet_requests: Family<SuccessLabel, Counter>,
    /// Unix time of the last request to each kubelet.
    pub kubelet_last_request_time: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    /// Scrape plus store time per tick.
    pub tick_duration: Histogram,
    /// Points that can be served.
    pub storage_points: Family<PointType, Gauge>,
    /// Age of the returned metrics.
    pub api_metric_freshness: Histogram,
    /// Our own: series or pods the decoder left out.
    pub decode_skipped: Counter,
    /// Our own: DataRecord names produced by two sources (the later one ignored).
    pub record_name_conflicts: Counter,
    /// Our own: failed kubelet requests by reason (no node label: bounded cardinality; the
    /// node is in `metrics_server_kubelet_last_request_time_seconds` and the logs).
    pub kubelet_failures: Family<ReasonLabel, Counter>,
    /// Our own: extra scrapes of a node to serve a new container's first rate in time.
    pub follow_up_scrapes: Counter,
    /// Our own: the peer exchange of sharded scraping (`docs/ha.md`); zero without peers.
    pub peer: crate::ha::coordinator::PeerStats,
}

impl Telemetry {
    /// Registers every metric for a given metric resolution (tick buckets follow it).
    pub fn new(resolution_secs: f64) -> Arc<Self> {
        let mut registry = Registry::default();
        let kubelet_request_duration =
            Family::<NodeLabel, Histogram, HistogramFactory>::new_with_constructor(
                default_buckets as HistogramFactory,
            );
        registry.register(
            "metrics_server_kubelet_request_duration_seconds",
            "Duration of requests to kubelet API in seconds",
            kubelet_request_duration.clone(),
        );
        let kubelet_requests = Family::<SuccessLabel, Counter>::default();
        registry.register(
            "metrics_server_kubelet_request",
            "Number of requests sent to kubelet API",
            kubelet_requests.clone(),
        );
        let kubelet_last_request_time = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "metrics_server_kubelet_last_request_time_seconds",
            "Time of last request performed to kubelet API since unix epoch in seconds",
            kubelet_last_request_time.clone(),
        );
        let r = resolution_secs;
        let mut tick_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        if r > 10.0 {
            tick_buckets.extend([(10.0 + r) / 2.0, r, 1.5 * r, 2.0 * r]);
        }
        let tick_duration = Histogram::new(tick_buckets);
        registry.register(
            "metrics_server_manager_tick_duration_seconds",
            "The total time spent collecting and storing metrics in seconds",
            tick_duration.clone(),
        );
        let storage_points = Family::<PointType, Gauge>::default();
        registry.register(
            "metrics_server_storage_points",
            "Number of metrics points stored",
            storage_points.clone(),
        );
        let api_metric_freshness = Histogram::new(exponential_buckets(1.0, 1.364, 20));
        registry.register(
            "metrics_server_api_metric_freshness_seconds",
            "Freshness of metrics exported",
            api_metric_freshness.clone(),
        );
        let decode_skipped = Counter::default();
        registry.register(
            "kubedojo_decode_skipped_series",
            "Series or pods left out of kubelet payloads (bad values, timestamps or incomplete pods)",
            decode_skipped.clone(),
        );
        let record_name_conflicts = Counter::default();
        registry.register(
            "kubedojo_datarecord_name_conflicts",
            "Times a DataRecord (namespace, name) came from two sources; the earlier source in the configuration is served",
            record_name_conflicts.clone(),
        );
        let kubelet_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "kubedojo_kubelet_request_failures",
            "Failed kubelet requests by reason (transport, tls, timeout, status, too_large, decode, address, credentials, deadline)",
            kubelet_failures.clone(),
        );
        let follow_up_scrapes = Counter::default();
        registry.register(
            "kubedojo_kubelet_follow_up_scrapes",
            "Extra scrapes of a node whose new container becomes old enough for its first rate before the next tick",
            follow_up_scrapes.clone(),
        );
        let peer = crate::ha::coordinator::PeerStats::default();
        for (name, help, counter) in [
            (
                "kubedojo_peer_received_bytes",
                "Bytes of shard bodies fetched from other replicas (sharded scraping)",
                &peer.bytes_received,
            ),
            (
                "kubedojo_peer_served_bytes",
                "Bytes of shard bodies served to other replicas (sharded scraping)",
                &peer.bytes_served,
            ),
            (
                "kubedojo_peer_fetch_failures",
                "Peer shard fetches that failed (transport, status, bad body, timeout)",
                &peer.fetch_failures,
            ),
            (
                "kubedojo_peer_fallback_scrapes",
                "Nodes scraped directly because no owner delivered them",
                &peer.fallback_scrapes,
            ),
            (
                "kubedojo_peer_received_nodes",
                "Nodes ingested from other replicas' shards",
                &peer.nodes_from_peers,
            ),
            (
                "kubedojo_peer_not_here_nodes",
                "Nodes a replica asked of an owner that answered it does not scrape them this tick",
                &peer.not_here,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "kubedojo_datarecords_bad_rows",
            "DataRecords source rows skipped because they are not valid DataRecords, by row",
            BAD_ROWS.clone(),
        );
        crate::records::postgres::query_metrics::register(&mut registry);
        crate::server::audit::metrics::register(&mut registry);
        Arc::new(Telemetry {
            registry,
            kubelet_request_duration,
            kubelet_requests,
            kubelet_last_request_time,
            tick_duration,
            storage_points,
            api_metric_freshness,
            decode_skipped,
            record_name_conflicts,
            kubelet_failures,
            follow_up_scrapes,
            peer,
        })
    }

    /// Counts one kubelet request.
    pub fn kubelet_request(&self, node: &str, seconds: f64, success: bool, now_secs: f64) {
        let label = NodeLabel {
            node: node.to_string(),
        };
        self.kubelet_request_duration
            .get_or_create(&label)
            .observe(seconds);
        self.kubelet_last_request_time
            .get_or_create(&label)
            .set(now_secs);
        self.kubelet_requests
            .get_or_create(&SuccessLabel {
                success: success.to_string(),
            })
            .inc();
    }

    /// Counts one failed kubelet request by reason (after [`Telemetry::kubelet_request`]).
    pub fn kubelet_failure(&self, _node: &str, reason: &str) {
        self.kubelet_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets the storage point gauges.
    pub fn set_storage_points(&self, nodes: u64, containers: u64) {
        self.storage_points
            .get_or_create(&PointType {
                r#type: "node".into(),
            })
            .set(nodes as i64);
        self.storage_points
            .get_or_create(&PointType {
                r#type: "container".into(),
            })
            .set(containers as i64);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode self-metrics");
        }
        out
    }
}
