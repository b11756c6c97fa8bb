//! The `postgresQuery` source (the lab's `spec.source` / `spec.query` model): each
//! configured record runs one SQL query, and the result fills its `spec.data`.
//!
//! - A query runs in a `READ ONLY` transaction with `SET LOCAL statement_timeout` (the
//!   record's `timeout`, else the connection's statement timeout), bounded on the client
//!   too. It is first prepared (the extended protocol accepts exactly one statement and
//!   no parameters), then run through the simple protocol so that every column type
//!   arrives as the server's own text form.
//! - `shape: keyValue`: two columns, each row one key and its value; `shape: row`: one
//!   row, each column a key. A SQL `NULL` value is an empty string.
//! - Per-record TTL cache: a result is reused until it is about `ttl` old. Callers that
//!   find it expired at the same time share one query (single-flight: a per-record
//!   async lock held while the query runs; the callers queued behind it see the fresh
//!   result). The record set reloads this source every half of the smallest TTL, so a
//!   changed result reaches watchers as a MODIFIED event within about one TTL.
//! - `status.lastSyncTime` is the last successful query; `syncStatus` is `Current`,
//!   `Stale` (the query fails now: the last good data is kept, the error is the message
//!   of the `Synced` condition) or `Error` (never succeeded: no data).
//!
//! A database that is down never fails a load (its records turn `Stale`/`Error`), and
//! no message here ever contains the DSN (the driver's errors do not carry it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_postgres::SimpleQueryMessage;

use super::db::{Database, DbError};
use super::query_configmap::ConfigMapDefinitions;
use super::query_metrics::{FailureReason, RecordMetrics};
use crate::api::meta::ObjectMeta;
use crate::api::time::Time;
use crate::records::file::record_uid;
use crate::records::sources_config::{DEFAULT_QUERY_TTL, QueryRecordConfig, QueryShape};
use crate::records::types::{API_VERSION, Condition, DataRecord, DataRecordSpec, KIND};
use crate::records::{DataRecordStatus, RecordSource, RecordsError};

/// The label every query record carries (unless its configuration sets it).
pub const SOURCE_LABEL: &str = "data.kubedojo.io/source";
/// Its value.
pub const SOURCE_LABEL_VALUE: &str = "postgresQuery";
/// `spec.source` of a query record (the lab's word).
pub const SPEC_SOURCE: &str = "postgres";
/// The condition type carrying the sync state.
pub const SYNCED: &str = "Synced";

/// Records filled from SQL queries on one connection: the inline definitions, then
/// those of a watched ConfigMap ([`QuerySource::with_config_map`]).
pub struct QuerySource {
    connection: String,
    db: Arc<Database>,
    records: Vec<Arc<QueryRecord>>,
    config_map: Option<Arc<ConfigMapDefinitions>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    created: Time,
    queries: Arc<AtomicU64>,
}

impl Drop for QuerySource {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// One record definition with its cache and metric handles.
pub(super) struct QueryRecord {
    pub(super) def: QueryRecordConfig,
    ttl: Duration,
    timeout: Duration,
    state: tokio::sync::Mutex<Entry>,
    metrics: RecordMetrics,
}

impl QueryRecord {
    /// A record with an empty cache; `default_timeout` when `def` names none.
    pub(super) fn new(def: QueryRecordConfig, default_timeout: Duration) -> Self {
        QueryRecord {
            ttl: def.ttl.unwrap_or(DEFAULT_QUERY_TTL),
            timeout: def.timeout.unwrap_or(default_timeout),
            metrics: RecordMetrics::new(&def.namespace, &def.name),
            def,
            state: tokio::sync::Mutex::new(Entry::default()),
        }
    }
}

/// Why a query failed, with its metric reason.
struct Failure {
    error: DbError,
    reason: FailureReason,
}

impl From<DbError> for Failure {
    fn from(error: DbError) -> Self {
        let reason = match &error {
            DbError::Unavailable(m) if m.contains("statement timeout") => FailureReason::Timeout,
            DbError::Unavailable(_) => FailureReason::Unavailable,
            DbError::Query(_) => FailureReason::Sql,
        };
        Failure { error, reason }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::from(DbError::from_pg(e))
    }
}

impl Failure {
    fn shape(error: DbError) -> Self {
        Failure {
            error,
            reason: FailureReason::Shape,
        }
    }
}

#[derive(Default)]
struct Entry {
    /// When the last query (success or failure) started.
    checked: Option<Instant>,
    /// When it ended.
    finished: Option<Instant>,
    /// The last good data and when it was read.
    good: Option<(BTreeMap<String, String>, Time)>,
    /// The current failure, when the last query failed.
    error: Option<String>,
    /// When the Synced condition last changed.
    since: Option<Time>,
}

impl QuerySource {
    /// A source running `records` on `db` (the connection named `connection`).
    pub fn new(connection: &str, db: Arc<Database>, records: Vec<QueryRecordConfig>) -> Self {
        let default_timeout = db.statement_timeout();
        QuerySource {
            connection: connection.to_string(),
            records: records
                .into_iter()
                .map(|def| Arc::new(QueryRecord::new(def, default_timeout)))
                .collect(),
            config_map: None,
            watcher: None,
            db,
            created: Time::now(),
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many queries this source has sent (successful or not).
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Acquire)
    }

    /// Adds the definitions of a ConfigMap, watched with `client` (a change of the
    /// ConfigMap adds, changes or removes records; a malformed version keeps the last
    /// good definitions). Starts the watch task (stopped when the source is dropped);
    /// call inside a Tokio runtime.
    pub fn with_config_map(
        mut self,
        reference: crate::records::sources_config::ConfigMapRef,
        client: kube::Client,
    ) -> Self {
        let inline = self
            .records
            .iter()
            .map(|r| (r.def.namespace.clone(), r.def.name.clone()))
            .collect();
        let defs = Arc::new(ConfigMapDefinitions::new(
            reference,
            inline,
            self.db.statement_timeout(),
        ));
        self.watcher = Some(tokio::spawn(defs.clone().run(client)));
        self.config_map = Some(defs);
        self
    }

    /// The current error of the ConfigMap's definitions (naming the ConfigMap and key),
    /// `None` when its current version is in use or there is no ConfigMap.
    pub fn config_map_error(&self) -> Option<String> {
        self.config_map.as_ref().and_then(|d| d.error())
    }

    /// Every record definition now: the inline ones, then the ConfigMap's.
    fn all_records(&self) -> Vec<Arc<QueryRecord>> {
        let mut all = self.records.clone();
        if let Some(d) = &self.config_map {
            all.extend(d.records());
        }
        all
    }

    /// The record at `index` of the configuration, its query run first when its cached
    /// result expired (callers arriving together share that query). `None` past the end.
    pub async fn record(&self, index: usize) -> Option<DataRecord> {
        let rec = self.all_records().get(index)?.clone();
        Some(self.current(&rec).await)
    }

    async fn current(&self, rec: &QueryRecord) -> DataRecord {
        // Waiting behind another caller's query (not just its render) is a shared wait.
        let (mut entry, waited_since) = match rec.state.try_lock() {
            Ok(entry) => (entry, None),
            Err(_) => {
                let since = Instant::now();
                (rec.state.lock().await, Some(since))
            }
        };
        // A little early rather than a whole reload period late.
        let tolerance = (rec.ttl / 10).min(Duration::from_millis(500));
        let fresh = entry
            .checked
            .is_some_and(|t| t.elapsed() + tolerance < rec.ttl);
        if fresh {
            let shared = waited_since
                .zip(entry.finished)
                .is_some_and(|(w, f)| f >= w);
            rec.metrics.hit(shared);
        } else {
            rec.metrics.miss();
            let started = Instant::now();
            let result = self.run(rec).await;
            entry.checked = Some(started);
            entry.finished = Some(Instant::now());
            let now = Time::now();
            let seconds = started.elapsed().as_secs_f64();
            match result {
                Ok(data) => {
                    rec.metrics.success(seconds, unix_seconds());
                    if entry.error.is_some() || entry.good.is_none() {
                        entry.since = Some(now);
                        if entry.error.take().is_some() {
                            tracing::info!(
                                connection = %self.connection,
                                namespace = %rec.def.namespace,
                                name = %rec.def.name,
                                "DataRecord query succeeds again"
                            );
                        }
                    }
                    entry.good = Some((data, now));
                }
                Err(Failure { error: e, reason }) => {
                    rec.metrics.failure(seconds, reason);
                    let message = e.to_string();
                    if entry.error.as_deref() != Some(message.as_str()) {
                        if entry.error.is_none() {
                            entry.since = Some(now);
                        }
                        tracing::warn!(
                            connection = %self.connection,
                            namespace = %rec.def.namespace,
                            name = %rec.def.name,
                            error = %message,
                            "DataRecord query failed; serving the last good data"
                        );
                        entry.error = Some(message);
                    }
                }
            }
        }
        self.render(rec, &entry)
    }

    async fn run(&self, rec: &QueryRecord) -> Result<BTreeMap<String, String>, Failure> {
        self.queries.fetch_add(1, Ordering::AcqRel);
        let limit = rec.timeout + self.db_connect_margin();
        match tokio::time::timeout(limit, self.query(rec)).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                error: DbError::Unavailable(format!("no answer within {limit:?}")),
                reason: FailureReason::Timeout,
            }),
        }
    }

    fn db_connect_margin(&self) -> Duration {
        // The pool's own wait is bounded by the connect timeout; add a round trip.
        self.db.connect_timeout() + Duration::from_millis(500)
    }

    async fn query(&self, rec: &QueryRecord) -> Result<BTreeMap<String, String>, Failure> {
        let mut client = self.db.client().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let ms = rec.timeout.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await?;
        let sql = rec.def.query.as_str();
        // The extended protocol refuses several statements; parameters have no values.
        let statement = tx.prepare(sql).await?;
        if !statement.params().is_empty() {
            return Err(Failure::shape(DbError::Query(format!(
                "the query takes {} parameter(s); a record's query must be complete",
                statement.params().len()
            ))));
        }
        let messages = tx.simple_query(sql).await?;
        tx.commit().await?;
        let columns: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let rows: Vec<_> = messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect();
        shape_rows(rec.def.shape, &columns, rows.iter().map(row_values)).map_err(Failure::shape)
    }

    fn render(&self, rec: &QueryRecord, entry: &Entry) -> DataRecord {
        let mut labels = rec.def.labels.clone();
        labels
            .entry(SOURCE_LABEL.to_string())
            .or_insert_with(|| SOURCE_LABEL_VALUE.to_string());
        let (data, synced) = match &entry.good {
            Some((data, at)) => (data.clone(), Some(*at)),
            None => (BTreeMap::new(), None),
        };
        let (sync_status, condition) = match (&entry.error, &entry.good) {
            (None, Some(_)) => (
                "Current",
                Condition {
                    type_: SYNCED.into(),
                    status: "True".into(),
                    reason: "QuerySucceeded".into(),
                    message: String::new(),
                    last_transition_time: entry.since,
                },
            ),
            (Some(e), Some(_)) => (
                "Stale",
                Condition {
                    type_: SYNCED.into(),
                    status: "False".into(),
                    reason: "QueryFailed".into(),
                    message: format!("the query fails; serving the last good data: {e}"),
                    last_transition_time: entry.since,
                },
            ),
            (e, None) => (
                "Error",
                Condition {
                    type_: SYNCED.into(),
                    status: "False".into(),
                    reason: "QueryFailed".into(),
                    message: format!(
                        "the query has never succeeded: {}",
                        e.as_deref().unwrap_or("not run yet")
                    ),
                    last_transition_time: entry.since,
                },
            ),
        };
        DataRecord {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: rec.def.name.clone(),
                namespace: Some(rec.def.namespace.clone()),
                uid: Some(record_uid(&rec.def.namespace, &rec.def.name)),
                generation: Some(1),
                creation_timestamp: Some(self.created),
                labels: Arc::new(labels),
                ..ObjectMeta::default()
            },
            spec: DataRecordSpec {
                source: SPEC_SOURCE.into(),
                query: rec.def.query.clone(),
                data,
            },
            status: Some(DataRecordStatus {
                last_sync_time: synced,
                sync_status: sync_status.into(),
                conditions: vec![condition],
            }),
        }
    }
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn row_values(row: &tokio_postgres::SimpleQueryRow) -> Vec<Option<String>> {
    (0..row.len())
        .map(|i| row.get(i).map(str::to_string))
        .collect()
}

/// Turns result rows into `spec.data` by `shape`.
fn shape_rows(
    shape: QueryShape,
    columns: &[String],
    rows: impl Iterator<Item = Vec<Option<String>>>,
) -> Result<BTreeMap<String, String>, DbError> {
    let mut data = BTreeMap::new();
    match shape {
        QueryShape::KeyValue => {
            if columns.len() != 2 {
                return Err(DbError::Query(format!(
                    "shape keyValue needs two columns (key, value), the query returns {}",
                    columns.len()
                )));
            }
            for (i, row) in rows.enumerate() {
                let mut values = row.into_iter();
                let key = values.next().flatten().filter(|k| !k.is_empty());
                let Some(key) = key else {
                    return Err(DbError::Query(format!(
                        "row {i}: the key (column {:?}) is NULL or empty",
                        columns[0]
                    )));
                };
                let value = values.next().flatten().unwrap_or_default();
                if data.insert(key.clone(), value).is_some() {
                    return Err(DbError::Query(format!(
                        "row {i}: the key {key:?} appears twice"
                    )));
                }
            }
        }
        QueryShape::Row => {
            let rows: Vec<_> = rows.collect();
            if rows.len() != 1 {
                return Err(DbError::Query(format!(
                    "shape row needs exactly one row, the query returns {}",
                    rows.len()
                )));
            }
            for (column, value) in columns
                .iter()
                .zip(rows.into_iter().next().unwrap_or_default())
            {
                if data
                    .insert(column.clone(), value.unwrap_or_default())
                    .is_some()
                {
                    return Err(DbError::Query(format!(
                        "the column name {column:?} appears twice"
                    )));
                }
            }
        }
    }
    Ok(data)
}

impl RecordSource for QuerySource {
    fn name(&self) -> String {
        format!("postgresQuery:{}", self.connection)
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>> {
        async move {
            if let Some(d) = &self.config_map {
                // The first read of the ConfigMap, so that start-up serves its records.
                d.initialized(self.db.connect_timeout()).await;
            }
            let records = self.all_records();
            let all = records.iter().map(|r| self.current(r));
            Ok(futures::future::join_all(all).await)
        }
        .boxed()
    }

    fn refresh_interval(&self) -> Option<Duration> {
        let inline = self.records.iter().map(|r| r.ttl).min();
        // ConfigMap records come and go: their TTLs are not known here, so at most 1 s.
        let min = match (inline, &self.config_map) {
            (Some(t), Some(_)) => t.min(Duration::from_secs(2)),
            (None, Some(_)) => Duration::from_secs(2),
            (Some(t), None) => t,
            (None, None) => return None,
        };
        Some((min / 2).max(Duration::from_millis(100)))
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.config_map.as_ref().map(|d| d.subscribe())
    }

    fn sync_time_is_content(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
        v.iter()
            .map(|r| r.iter().map(|c| c.map(str::to_string)).collect())
            .collect()
    }

    #[test]
    fn key_value_and_row_shapes() {
        let kv = vec!["k".to_string(), "v".to_string()];
        let data = shape_rows(
            QueryShape::KeyValue,
            &kv,
            rows(&[&[Some("a"), Some("1")], &[Some("b"), None]]).into_iter(),
        )
        .unwrap();
        assert_eq!(data["a"], "1");
        assert_eq!(data["b"], "");
        let e = shape_rows(
            QueryShape::KeyValue,
            &kv,
            rows(&[&[None, Some("1")]]).into_iter(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("row 0: the key (column \"k\")"),
            "{e}"
        );
        let e = shape_rows(
            QueryShape::KeyValue,
            &kv,
            rows(&[&[Some("a"), Some("1")], &[Some("a"), Some("2")]]).into_iter(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let three = vec!["a".into(), "b".into(), "c".into()];
        let e = shape_rows(QueryShape::KeyValue, &three, std::iter::empty()).unwrap_err();
        assert!(e.to_string().contains("two columns"), "{e}");
        let data = shape_rows(
            QueryShape::Row,
            &three,
            rows(&[&[Some("1"), None, Some("x")]]).into_iter(),
        )
        .unwrap();
        assert_eq!(
            data.into_iter().collect::<Vec<_>>(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".into(), "".into()),
                ("c".into(), "x".into())
            ]
        );
        for n in [0, 2] {
            let r = vec![vec![Some("1".to_string()), None, None]; n];
            let e = shape_rows(QueryShape::Row, &three, r.into_iter()).unwrap_err();
            assert!(e.to_string().contains(&format!("returns {n}")), "{e}");
        }
    }
}
