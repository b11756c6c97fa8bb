//! The table source's reads: get and list straight from SQL, never from memory.
//!
//! A list runs in one REPEATABLE READ, READ ONLY transaction: the current
//! resourceVersion (the newest change id) and the rows come from the same snapshot.
//! Pages are keyset scans on the primary key `(namespace, name)`, never OFFSET. A page
//! at an older resourceVersion (a `continue` token, or `resourceVersionMatch=Exact`)
//! is the current rows with every change made since that version undone from the
//! change log's `old` images, so all pages of one list show the same state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::Transaction;

use super::db::{Database, DbError};
use super::row::{report_bad_row, stored_from_row};
use super::schema::SchemaNames;
use super::sql::Filter;
use crate::api::field_selector::FieldSelector;
use crate::api::label_selector::LabelSelector;
use crate::api::status::ApiError;
use crate::records::set::StoredRecord;

/// Rows fetched per round trip when a list has no `limit`.
const BATCH: usize = 1000;
/// Changes a page at an older resourceVersion may undo before it is 410 Expired.
const MAX_UNDO: i64 = 10_000;

/// Which state of the table a list reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// The newest state (resourceVersion unset or "0").
    Latest,
    /// At least this version (`NotOlderThan`, or a resourceVersion without a match).
    NotOlderThan(u64),
    /// Exactly this version (`Exact`, or a continue token's version).
    Exact(u64),
}

/// What a list asks for.
#[derive(Clone, Debug)]
pub struct ListQuery<'a> {
    /// Namespace scope.
    pub namespace: Option<&'a str>,
    /// Label selector (pushed down).
    pub labels: &'a LabelSelector,
    /// Field selector (pushed down).
    pub fields: &'a FieldSelector,
    /// Resume strictly after this key.
    pub after: Option<(&'a str, &'a str)>,
    /// Page size (0 = everything).
    pub limit: usize,
    /// Which state.
    pub at: ReadAt,
}

/// One page of records.
#[derive(Debug)]
pub struct Page {
    /// The resourceVersion the page shows.
    pub resource_version: u64,
    /// Records in (namespace, name) order.
    pub items: Vec<Arc<StoredRecord>>,
    /// More records follow the last item.
    pub more: bool,
}

/// Why a list could not be answered.
#[derive(Debug)]
pub enum ListError {
    /// The database failed.
    Db(DbError),
    /// The requested version is older than the change log reaches; `current` is the
    /// newest version (for a resumable continue token).
    Expired {
        /// Requested version.
        requested: u64,
        /// Newest version.
        current: u64,
    },
    /// The requested version is newer than the newest change.
    TooLarge {
        /// Requested version.
        requested: u64,
        /// Newest version.
        current: u64,
    },
}

impl From<DbError> for ListError {
    fn from(e: DbError) -> Self {
        ListError::Db(e)
    }
}

impl From<tokio_postgres::Error> for ListError {
    fn from(e: tokio_postgres::Error) -> Self {
        ListError::Db(DbError::from_pg(e))
    }
}

impl From<ListError> for ApiError {
    fn from(e: ListError) -> Self {
        match e {
            ListError::Db(e) => e.into(),
            ListError::Expired { requested, current } => ApiError::resource_version_expired(
                format!("too old resource version: {requested} ({current})"),
            ),
            ListError::TooLarge { requested, current } => {
                ApiError::too_large_resource_version(requested, current)
            }
        }
    }
}

/// Records are rows of `<schema>.datarecords`.
pub struct TableSource {
    db: Arc<Database>,
    names: SchemaNames,
    label: String,
}

impl TableSource {
    /// The table source in `names.schema` on `db`.
    pub fn new(db: Arc<Database>, names: SchemaNames) -> Self {
        let label = format!("postgres:{}/{}", db.name(), names.schema);
        TableSource { db, names, label }
    }

    /// `postgres:<connection>/<schema>` (logs, metrics).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The database.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The schema names.
    pub fn names(&self) -> &SchemaNames {
        &self.names
    }

    /// The oldest resourceVersion the change log still reaches (`log_state.compacted_through`):
    /// a watch or an `Exact` read from before it gets 410.
    pub async fn compacted_through(&self) -> Result<u64, DbError> {
        self.db
            .bounded(async {
                let client = self.db.client().await?;
                let sql = format!("SELECT compacted_through FROM {}", self.names.log_state());
                let compacted: i64 = client
                    .query_one(&sql, &[])
                    .await
                    .map_err(DbError::from_pg)?
                    .get(0);
                Ok(compacted as u64)
            })
            .await
    }

    /// One record (the current state), `None` when there is no such row or the row
    /// is not a valid record (that is logged and counted).
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<StoredRecord>>, DbError> {
        self.db
            .bounded(async {
                let client = self.db.client().await?;
                let sql = format!(
                    "SELECT to_jsonb(d) FROM {} d WHERE namespace = $1 AND name = $2",
                    self.names.table()
                );
                let row = client.query_opt(&sql, &[&namespace, &name]).await?;
                Ok(row.and_then(|row| {
                    let v: Value = row.get(0);
                    match stored_from_row(&v) {
                        Ok(r) => Some(r),
                        Err(bad) => {
                            report_bad_row(&self.label, &bad);
                            None
                        }
                    }
                }))
            })
            .await
    }

    /// The newest resourceVersion.
    pub async fn current_version(&self) -> Result<u64, DbError> {
        self.db
            .bounded(async {
                let client = self.db.client().await?;
                let row = client.query_one(&self.version_sql(), &[]).await?;
                Ok(row.get::<_, i64>(0) as u64)
            })
            .await
    }

    /// The state at version `at` of each key in `keys` (`None`: no such row then, or
    /// a row that is not a valid record), read in one statement; `Ok(None)` when the
    /// change log no longer reaches `at` (compacted: 410 for the caller). An `at`
    /// above the newest version reads the current rows.
    pub async fn states_at(
        &self,
        keys: &[(String, String)],
        at: u64,
    ) -> Result<Option<HashMap<Key, Option<Arc<StoredRecord>>>>, DbError> {
        if keys.is_empty() {
            return Ok(Some(HashMap::new()));
        }
        let namespaces: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        // The first change after `at` of a key holds its state at `at` (`old`); a key
        // unchanged since is its current row. One statement sees one snapshot.
        let sql = format!(
            "SELECT k.namespace, k.name, \
               (SELECT jsonb_build_array(c.old) FROM {changes} c \
                 WHERE c.namespace = k.namespace AND c.name = k.name AND c.id > $3 \
                 ORDER BY c.id LIMIT 1), \
               (SELECT to_jsonb(d) FROM {table} d WHERE d.namespace = k.namespace AND d.name = k.name), \
               (SELECT compacted_through FROM {state}) \
             FROM unnest($1::text[], $2::text[]) AS k(namespace, name)",
            changes = self.names.changes(),
            table = self.names.table(),
            state = self.names.log_state(),
        );
        let at = at.min(i64::MAX as u64) as i64;
        self.db
            .bounded(async {
                let client = self.db.client().await?;
                let rows = client.query(&sql, &[&namespaces, &names, &at]).await?;
                let mut out = HashMap::with_capacity(rows.len());
                for row in rows {
                    let compacted: i64 = row.get(4);
                    if at < compacted {
                        return Ok(None);
                    }
                    let key: Key = (row.get(0), row.get(1));
                    let undo: Option<Value> = row.get(2);
                    let image = match undo {
                        Some(Value::Array(mut a)) if !a.is_empty() => Some(a.swap_remove(0)),
                        _ => row.get::<_, Option<Value>>(3),
                    };
                    let state = image
                        .filter(|v| !v.is_null())
                        .and_then(|v| match stored_from_row(&v) {
                            Ok(r) => Some(r),
                            Err(bad) => {
                                report_bad_row(&self.label, &bad);
                                None
                            }
                        });
                    out.insert(key, state);
                }
                Ok(Some(out))
            })
            .await
    }

    fn version_sql(&self) -> String {
        format!(
            "SELECT greatest(coalesce((SELECT max(id) FROM {}), 0), compacted_through), compacted_through FROM {}",
            self.names.changes(),
            self.names.log_state()
        )
    }

    /// One page (or, with limit 0, everything) at the requested version.
    pub async fn list(&self, q: &ListQuery<'_>) -> Result<Page, ListError> {
        match self.db.bounded(self.list_inner(q)).await {
            Ok(r) => r,
            Err(e) => Err(ListError::Db(e)),
        }
    }

    async fn list_inner(&self, q: &ListQuery<'_>) -> Result<Result<Page, ListError>, DbError> {
        let mut client = self.db.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let row = tx.query_one(&self.version_sql(), &[]).await?;
        let current = row.get::<_, i64>(0) as u64;
        let compacted = row.get::<_, i64>(1) as u64;
        let target = match q.at {
            ReadAt::Latest => current,
            ReadAt::NotOlderThan(n) if n <= current => current,
            ReadAt::Exact(n) if n <= current => {
                if n < compacted {
                    return Ok(Err(ListError::Expired {
                        requested: n,
                        current,
                    }));
                }
                n
            }
            ReadAt::NotOlderThan(n) | ReadAt::Exact(n) => {
                return Ok(Err(ListError::TooLarge {
                    requested: n,
                    current,
                }));
            }
        };
        let undo = if target < current {
            match self.undo_since(&tx, target, q).await? {
                Some(u) => u,
                None => {
                    return Ok(Err(ListError::Expired {
                        requested: target,
                        current,
                    }));
                }
            }
        } else {
            Undo::default()
        };
        let page = self.scan(&tx, q, undo).await?;
        tx.commit().await?;
        Ok(Ok(Page {
            resource_version: target,
            ..page
        }))
    }

    /// The state at `target` of every key changed since (first change after `target`
    /// per key, its `old` image), limited to the list's scope; `None` when more than
    /// [`MAX_UNDO`] changes happened since.
    async fn undo_since(
        &self,
        tx: &Transaction<'_>,
        target: u64,
        q: &ListQuery<'_>,
    ) -> Result<Option<Undo>, DbError> {
        let target = target as i64;
        let count: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} WHERE id > $1 LIMIT $2) c",
                    self.names.changes()
                ),
                &[&target, &(MAX_UNDO + 1)],
            )
            .await?
            .get(0);
        if count > MAX_UNDO {
            return Ok(None);
        }
        let mut f = Filter::default();
        let t = f.param(target);
        f.and(format!("id > {t}"));
        f.namespace(q.namespace);
        f.after(q.after);
        let sql = format!(
            "SELECT DISTINCT ON (namespace, name) namespace, name, old FROM {} {} ORDER BY namespace, name, id",
            self.names.changes(),
            f.where_sql()
        );
        let rows = tx.query(&sql, &f.params()).await?;
        let mut undo = Undo::default();
        for row in rows {
            let ns: String = row.get(0);
            let name: String = row.get(1);
            let old: Option<Value> = row.get(2);
            let state = old.and_then(|v| match stored_from_row(&v) {
                Ok(r) => Some(r),
                Err(bad) => {
                    report_bad_row(&self.label, &bad);
                    None
                }
            });
            let state = state.filter(|r| {
                q.labels.matches(&r.record.metadata.labels) && q.fields.matches(&r.record.metadata)
            });
            undo.keys.insert((ns.clone(), name.clone()));
            undo.states.push_back(((ns, name), state));
        }
        Ok(Some(undo))
    }

    async fn scan(
        &self,
        tx: &Transaction<'_>,
        q: &ListQuery<'_>,
        mut undo: Undo,
    ) -> Result<Page, DbError> {
        let want = if q.limit > 0 { q.limit + 1 } else { usize::MAX };
        let batch = if q.limit > 0 {
            q.limit + 1 + undo.keys.len()
        } else {
            BATCH
        };
        let mut items: Vec<Arc<StoredRecord>> = Vec::new();
        let mut cursor: Option<(String, String)> =
            q.after.map(|(a, b)| (a.to_string(), b.to_string()));
        'outer: loop {
            let mut f = Filter::default();
            f.namespace(q.namespace);
            f.fields(q.fields);
            f.labels(q.labels);
            f.after(cursor.as_ref().map(|(a, b)| (a.as_str(), b.as_str())));
            let lim = f.param(batch as i64);
            let sql = format!(
                "SELECT namespace, name, to_jsonb(d) FROM {} d {} ORDER BY namespace, name LIMIT {lim}",
                self.names.table(),
                f.where_sql()
            );
            let rows = tx.query(&sql, &f.params()).await?;
            let exhausted = rows.len() < batch;
            for row in rows {
                let key: (String, String) = (row.get(0), row.get(1));
                while undo.states.front().is_some_and(|(k, _)| *k < key) {
                    let (_, state) = undo.states.pop_front().expect("front exists");
                    items.extend(state);
                    if items.len() >= want {
                        break 'outer;
                    }
                }
                if undo.keys.contains(&key) {
                    // Changed since the target version: its state there comes from the log.
                    if undo.states.front().is_some_and(|(k, _)| *k == key) {
                        let (_, state) = undo.states.pop_front().expect("front exists");
                        items.extend(state);
                    }
                } else {
                    let v: Value = row.get(2);
                    match stored_from_row(&v) {
                        Ok(r) => items.push(r),
                        Err(bad) => report_bad_row(&self.label, &bad),
                    }
                }
                cursor = Some(key);
                if items.len() >= want {
                    break 'outer;
                }
            }
            if exhausted {
                for (_, state) in undo.states.drain(..) {
                    items.extend(state);
                    if items.len() >= want {
                        break;
                    }
                }
                break;
            }
        }
        let more = q.limit > 0 && items.len() > q.limit;
        items.truncate(if q.limit > 0 { q.limit } else { items.len() });
        Ok(Page {
            resource_version: 0,
            items,
            more,
        })
    }
}

/// `(namespace, name)`.
pub type Key = (String, String);

/// States at the target version of the keys changed since (sorted by key; `None`:
/// absent at the target, or not matching the list's selectors).
#[derive(Default)]
struct Undo {
    keys: HashSet<Key>,
    states: VecDeque<(Key, Option<Arc<StoredRecord>>)>,
}
