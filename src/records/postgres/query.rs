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

/// Records filled from SQL queries on one connection.
pub struct QuerySource {
    connection: String,
    db: Arc<Database>,
    records: Vec<QueryRecord>,
    created: Time,
    queries: Arc<AtomicU64>,
}

struct QueryRecord {
    def: QueryRecordConfig,
    ttl: Duration,
    timeout: Duration,
    state: tokio::sync::Mutex<Entry>,
}

#[derive(Default)]
struct Entry {
    /// When the last query (success or failure) started.
    checked: Option<Instant>,
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
                .map(|def| QueryRecord {
                    ttl: def.ttl.unwrap_or(DEFAULT_QUERY_TTL),
                    timeout: def.timeout.unwrap_or(default_timeout),
                    def,
                    state: tokio::sync::Mutex::new(Entry::default()),
                })
                .collect(),
            db,
            created: Time::now(),
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many queries this source has sent (successful or not).
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Acquire)
    }

    /// The record at `index` of the configuration, its query run first when its cached
    /// result expired (callers arriving together share that query). `None` past the end.
    pub async fn record(&self, index: usize) -> Option<DataRecord> {
        let rec = self.records.get(index)?;
        Some(self.current(rec).await)
    }

    async fn current(&self, rec: &QueryRecord) -> DataRecord {
        let mut entry = rec.state.lock().await;
        // A little early rather than a whole reload period late.
        let tolerance = (rec.ttl / 10).min(Duration::from_millis(500));
        let fresh = entry
            .checked
            .is_some_and(|t| t.elapsed() + tolerance < rec.ttl);
        if !fresh {
            let started = Instant::now();
            let result = self.run(rec).await;
            entry.checked = Some(started);
            let now = Time::now();
            match result {
                Ok(data) => {
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
                Err(e) => {
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

    async fn run(&self, rec: &QueryRecord) -> Result<BTreeMap<String, String>, DbError> {
        self.queries.fetch_add(1, Ordering::AcqRel);
        let limit = rec.timeout + self.db_connect_margin();
        match tokio::time::timeout(limit, self.query(rec)).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Unavailable(format!("no answer within {limit:?}"))),
        }
    }

    fn db_connect_margin(&self) -> Duration {
        // The pool's own wait is bounded by the connect timeout; add a round trip.
        self.db.connect_timeout() + Duration::from_millis(500)
    }

    async fn query(&self, rec: &QueryRecord) -> Result<BTreeMap<String, String>, DbError> {
        let mut client = self.db.client().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let ms = rec.timeout.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await?;
        let sql = rec.def.query.as_str();
        // The extended protocol refuses several statements; parameters have no values.
        let statement = tx.prepare(sql).await?;
        if !statement.params().is_empty() {
            return Err(DbError::Query(format!(
                "the query takes {} parameter(s); a record's query must be complete",
                statement.params().len()
            )));
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
        shape_rows(rec.def.shape, &columns, rows.iter().map(row_values))
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
            let all = self.records.iter().map(|r| self.current(r));
            Ok(futures::future::join_all(all).await)
        }
        .boxed()
    }

    fn refresh_interval(&self) -> Option<Duration> {
        let min = self.records.iter().map(|r| r.ttl).min()?;
        Some((min / 2).max(Duration::from_millis(100)))
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
