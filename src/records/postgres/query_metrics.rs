//! Self-metrics of the `postgresQuery` source, per record (`namespace`, `name`).
//!
//! Process-wide families (a source has no Telemetry handle, as for the bad-row
//! counter); [`register`] adds them to a Telemetry registry. Every call of a record
//! counts as exactly one cache hit or one cache miss; a miss runs the query (one
//! success or one failure, and one duration sample). A shared wait is a hit that
//! waited for another caller's query (single-flight) instead of finding a fresh result.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{namespace, name}` of a query record.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    /// The record's namespace.
    pub namespace: String,
    /// The record's name.
    pub name: String,
}

/// `{namespace, name, reason}` of a failed query.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The record's namespace.
    pub namespace: String,
    /// The record's name.
    pub name: String,
    /// [`FailureReason::as_str`].
    pub reason: String,
}

/// Why a query failed (a short, stable set: bounded cardinality).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The database could not be reached or the connection broke.
    Unavailable,
    /// The statement timeout or the client-side bound expired.
    Timeout,
    /// The database refused the query (a SQL error).
    Sql,
    /// The result does not fit the record's `shape`.
    Shape,
}

impl FailureReason {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Unavailable => "unavailable",
            FailureReason::Timeout => "timeout",
            FailureReason::Sql => "sql",
            FailureReason::Shape => "shape",
        }
    }
}

type HistogramFactory = fn() -> Histogram;

fn duration_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

type Gauge64 = Gauge<f64, AtomicU64>;

static SUCCESSES: LazyLock<Family<RecordLabels, Counter>> = LazyLock::new(Family::default);
static FAILURES: LazyLock<Family<FailureLabels, Counter>> = LazyLock::new(Family::default);
static DURATION: LazyLock<Family<RecordLabels, Histogram, HistogramFactory>> =
    LazyLock::new(|| Family::new_with_constructor(duration_buckets as HistogramFactory));
static CACHE_HITS: LazyLock<Family<RecordLabels, Counter>> = LazyLock::new(Family::default);
static CACHE_MISSES: LazyLock<Family<RecordLabels, Counter>> = LazyLock::new(Family::default);
static SHARED_WAITS: LazyLock<Family<RecordLabels, Counter>> = LazyLock::new(Family::default);
static LAST_SUCCESS: LazyLock<Family<RecordLabels, Gauge64>> = LazyLock::new(Family::default);
static CONFIG_ERRORS: LazyLock<Family<ConfigMapLabels, Counter>> = LazyLock::new(Family::default);
static CONFIG_OK: LazyLock<Family<ConfigMapLabels, Gauge>> = LazyLock::new(Family::default);

/// `{namespace, name, key}` of a ConfigMap holding query record definitions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigMapLabels {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key holding the definitions.
    pub key: String,
}

/// The metric handles of one record (looked up once per record, not per call).
pub struct RecordMetrics {
    labels: RecordLabels,
    successes: Counter,
    duration: Histogram,
    hits: Counter,
    misses: Counter,
    shared: Counter,
    last_success: Gauge64,
}

impl RecordMetrics {
    /// The handles of record `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let labels = RecordLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        RecordMetrics {
            successes: SUCCESSES.get_or_create(&labels).clone(),
            duration: DURATION.get_or_create(&labels).clone(),
            hits: CACHE_HITS.get_or_create(&labels).clone(),
            misses: CACHE_MISSES.get_or_create(&labels).clone(),
            shared: SHARED_WAITS.get_or_create(&labels).clone(),
            last_success: LAST_SUCCESS.get_or_create(&labels).clone(),
            labels,
        }
    }

    /// A call served from the cache; `waited` when it waited for another caller's query.
    pub fn hit(&self, waited: bool) {
        self.hits.inc();
        if waited {
            self.shared.inc();
        }
    }

    /// A call that ran the query.
    pub fn miss(&self) {
        self.misses.inc();
    }

    /// A query that succeeded after `seconds`, at Unix time `now_secs`.
    pub fn success(&self, seconds: f64, now_secs: f64) {
        self.duration.observe(seconds);
        self.successes.inc();
        self.last_success.set(now_secs);
    }

    /// A query that failed after `seconds`.
    pub fn failure(&self, seconds: f64, reason: FailureReason) {
        self.duration.observe(seconds);
        FAILURES
            .get_or_create(&FailureLabels {
                namespace: self.labels.namespace.clone(),
                name: self.labels.name.clone(),
                reason: reason.as_str().to_string(),
            })
            .inc();
    }
}

/// Records that a ConfigMap's definitions were read: `Ok` sets its `valid` gauge to 1,
/// an error counts one rejected version and sets the gauge to 0.
pub fn config_map_read(namespace: &str, name: &str, key: &str, ok: bool) {
    let labels = ConfigMapLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key: key.to_string(),
    };
    CONFIG_OK.get_or_create(&labels).set(i64::from(ok));
    if !ok {
        CONFIG_ERRORS.get_or_create(&labels).inc();
    }
}

/// Adds the query source's families to `registry` (every Telemetry registry has them).
pub fn register(registry: &mut Registry) {
    registry.register(
        "kubedojo_datarecord_query_successes",
        "postgresQuery record queries that succeeded, by record",
        SUCCESSES.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_failures",
        "postgresQuery record queries that failed, by record and reason (unavailable, timeout, sql, shape)",
        FAILURES.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_duration_seconds",
        "Duration of postgresQuery record queries (successful or not), by record",
        DURATION.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_cache_hits",
        "postgresQuery record reads answered from the TTL cache without running the query, by record",
        CACHE_HITS.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_cache_misses",
        "postgresQuery record reads that ran the query (the cached result was missing or expired), by record",
        CACHE_MISSES.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_shared_waits",
        "postgresQuery record reads that waited for another caller's query and used its result (single-flight), by record",
        SHARED_WAITS.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_last_success_timestamp_seconds",
        "Unix time of the last successful query of each postgresQuery record",
        LAST_SUCCESS.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_configmap_rejected",
        "Versions of a ConfigMap of postgresQuery record definitions that were rejected (the last good definitions stay), by ConfigMap and key",
        CONFIG_ERRORS.clone(),
    );
    registry.register(
        "kubedojo_datarecord_query_configmap_valid",
        "1 when the current version of a ConfigMap of postgresQuery record definitions is in use, 0 when it is rejected or missing",
        CONFIG_OK.clone(),
    );
}
