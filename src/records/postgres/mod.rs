//! DataRecords from PostgreSQL.
//!
//! The table source (`kind: postgres`) serves every row of `<schema>.datarecords` as
//! a DataRecord, answering get, list and watch from SQL (never by loading the table):
//! selectors are pushed down as jsonb predicates on the GIN-indexed labels, pages are
//! keyset scans, and resourceVersions are ids of a change log that triggers fill in
//! commit order, so they are the same on every replica and survive restarts. One
//! listening connection per process (LISTEN/NOTIFY as a wake-up, the log as the
//! truth) feeds every watcher. The query source (`kind: postgresQuery`, [`query`])
//! fills configured records from SQL queries. See docs/datarecords.md.

mod backend;
pub mod config;
pub mod db;
pub mod feed;
pub mod query;
mod query_configmap;
pub mod query_metrics;
pub mod row;
pub mod schema;
pub mod sql;
pub mod table;
mod watch;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use backend::records_page;
pub use backend::{TableBackend, read_at};
pub use config::{ConnectionConfig, TableSourceConfig, TlsMode};
pub use db::{Database, DbError};
pub use feed::ChangeFeed;
pub use query::QuerySource;
pub use schema::{SchemaNames, migrate};
pub use table::TableSource;

use crate::api::resource::ResourceDescriptor;

/// A running table source: the API backend and its background tasks (the change
/// feed and log compaction), stopped when dropped.
pub struct RunningTable {
    /// The backend to serve.
    pub backend: Arc<TableBackend>,
    /// The source (reads, for tests and tools).
    pub table: Arc<TableSource>,
    /// The change feed.
    pub feed: Arc<ChangeFeed>,
    /// When the table is combined with in-memory sources: how many of them come
    /// before it in the configuration (served as a [`crate::records::union`]).
    pub union: Option<usize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningTable {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the table source: optionally migrates the schema (a failure is an error),
/// then starts the change feed and the compaction loop. Never waits for a database
/// that is down (without `migrate`): requests get 503 until it is back.
pub async fn start_table(
    connection: &ConnectionConfig,
    source: &TableSourceConfig,
    migrate_schema: bool,
    descriptor: &'static ResourceDescriptor,
) -> anyhow::Result<RunningTable> {
    let names = SchemaNames::new(&source.schema).map_err(anyhow::Error::msg)?;
    let db = Database::new(connection).map_err(anyhow::Error::msg)?;
    if migrate_schema {
        migrate(&db, &names).await.map_err(|e| {
            anyhow::anyhow!(
                "--postgres-migrate: connection {:?}, schema {:?}: {e}",
                connection.name,
                names.schema
            )
        })?;
        tracing::info!(connection = %connection.name, schema = %names.schema, "DataRecords schema migrated");
    }
    let table = Arc::new(TableSource::new(db.clone(), names.clone()));
    let feed = ChangeFeed::new(db.clone(), names.clone(), table.label().to_string());
    let backend = Arc::new(TableBackend::new(table.clone(), feed.clone(), descriptor));
    let mut tasks = vec![tokio::spawn(feed.clone().run())];
    tasks.push(tokio::spawn(compact_loop(
        db,
        names,
        source.keep_changes,
        Duration::from_secs(60),
    )));
    Ok(RunningTable {
        backend,
        table,
        feed,
        union: None,
        tasks,
    })
}

/// Keeps the newest `keep` changes, every `every` (every replica may run it).
async fn compact_loop(db: Arc<Database>, names: SchemaNames, keep: i64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sql = format!("SELECT {}.compact($1)", names.schema);
        let r = db
            .bounded(async {
                let client = db.client().await?;
                let row = client.query_one(&sql, &[&keep]).await?;
                Ok(row.get::<_, i64>(0))
            })
            .await;
        match r {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(schema = %names.schema, deleted = n, "DataRecords change log compacted")
            }
            Err(e) => {
                tracing::debug!(schema = %names.schema, error = %e, "DataRecords change log compaction skipped")
            }
        }
    }
}
