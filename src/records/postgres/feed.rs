//! The change feed: ONE listening connection per process (LISTEN on the schema's
//! channel, outside the pool), fanned out to every watcher.
//!
//! NOTIFY is only a wake-up: on each one the feed reads the change log after the last
//! id it has published and broadcasts those changes in id order. After the
//! connection is lost (or killed) it reconnects, LISTENs again and catches up from
//! the last id it saw, so no change is lost or published twice. When the database
//! stays unreachable it tells the watchers (they end their streams cleanly) and keeps
//! retrying with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use super::db::{Database, DbError};
use super::row::{report_bad_row, stored_from_row};
use super::schema::SchemaNames;
use crate::records::set::StoredRecord;

/// Changes read per catch-up query.
const CATCH_UP_BATCH: i64 = 1000;
/// Batches a watcher may fall behind before it is cut off.
const FEED_BUFFER: usize = 1024;

/// One committed change, decoded once and shared by every watcher.
#[derive(Debug)]
pub struct Change {
    /// The change id (the resourceVersion it produced).
    pub id: u64,
    /// The record before (updates, deletions), with its own resourceVersion.
    pub old: Option<Arc<StoredRecord>>,
    /// The record after (inserts, updates), with resourceVersion = `id`.
    pub new: Option<Arc<StoredRecord>>,
    /// The record before, re-stamped with resourceVersion = `id`: the object of a
    /// DELETED event (a deletion, or an update that leaves a watcher's selector).
    pub gone: Option<Arc<StoredRecord>>,
}

/// What the feed broadcasts.
#[derive(Clone, Debug)]
pub enum FeedMessage {
    /// Changes in id order.
    Changes(Arc<Vec<Arc<Change>>>),
    /// The database is unreachable: end the stream (clients re-watch later).
    Down,
    /// The change log no longer reaches the feed's position (compacted during an
    /// outage): watchers must relist (410).
    Expired,
}

struct Head {
    /// The last change id published.
    last: u64,
    /// Whether the feed is connected and caught up.
    up: bool,
}

/// The process's change feed.
pub struct ChangeFeed {
    db: Arc<Database>,
    names: SchemaNames,
    label: String,
    head: Mutex<Head>,
    tx: broadcast::Sender<FeedMessage>,
}

/// A subscription: the position it starts after, and the receiver of what follows.
pub struct Subscription {
    /// Every change after this id arrives on `rx`; earlier ones must be replayed.
    pub after: u64,
    /// Whether the feed is connected.
    pub up: bool,
    /// Changes after `after`.
    pub rx: broadcast::Receiver<FeedMessage>,
}

impl ChangeFeed {
    /// A feed for the table in `names` (not running until [`ChangeFeed::run`]).
    pub fn new(db: Arc<Database>, names: SchemaNames, label: String) -> Arc<Self> {
        Arc::new(ChangeFeed {
            db,
            names,
            label,
            head: Mutex::new(Head { last: 0, up: false }),
            tx: broadcast::channel(FEED_BUFFER).0,
        })
    }

    /// Subscribes; changes up to `after` are not delivered and must come from the log.
    pub fn subscribe(&self) -> Subscription {
        let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        Subscription {
            after: head.last,
            up: head.up,
            rx: self.tx.subscribe(),
        }
    }

    /// The last change id published.
    pub fn last(&self) -> u64 {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    fn publish(&self, changes: Vec<Arc<Change>>) {
        let Some(last) = changes.last().map(|c| c.id) else {
            return;
        };
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        head.last = last;
        let _ = self.tx.send(FeedMessage::Changes(Arc::new(changes)));
    }

    fn set_up(&self, up: bool) {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        if head.up && !up {
            let _ = self.tx.send(FeedMessage::Down);
        }
        head.up = up;
    }

    /// Listens until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut started = false;
        loop {
            match self.session(&mut started).await {
                Ok(()) => {
                    tracing::warn!(source = %self.label, "DataRecords change feed: listening connection closed; reconnecting");
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(source = %self.label, error = %e, "DataRecords change feed: database unavailable; retrying");
                    self.set_up(false);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: LISTEN, catch up, then catch up again on every notification.
    /// `Ok` when an established connection ends (reconnect at once), `Err` when it
    /// cannot be set up (the database is down).
    async fn session(&self, started: &mut bool) -> Result<(), DbError> {
        let (client, mut notifications) = self
            .db
            .connect_listener(&format!("kubedojo-data-api listener {}", self.names.schema))
            .await?;
        self.db
            .bounded(async {
                client
                    .batch_execute(&format!("LISTEN \"{}\"", self.names.channel()))
                    .await
                    .map_err(DbError::from_pg)
            })
            .await?;
        if !*started {
            // First connection: start at the newest change (watchers replay older ones).
            let v = self
                .db
                .bounded(async {
                    let row = client
                        .query_one(
                            &format!(
                                "SELECT greatest(coalesce((SELECT max(id) FROM {}), 0), compacted_through) FROM {}",
                                self.names.changes(),
                                self.names.log_state()
                            ),
                            &[],
                        )
                        .await?;
                    Ok(row.get::<_, i64>(0) as u64)
                })
                .await?;
            self.head.lock().unwrap_or_else(|e| e.into_inner()).last = v;
            *started = true;
        }
        self.catch_up(&client).await?;
        self.set_up(true);
        tracing::info!(source = %self.label, after = self.last(), "DataRecords change feed listening");
        while notifications.recv().await.is_some() {
            // Coalesce a burst of notifications into one read of the log.
            while notifications.try_recv().is_ok() {}
            if let Err(e) = self.catch_up(&client).await {
                // Treated as a lost connection: reconnect at once; watchers are only
                // told the database is down when reconnecting fails.
                tracing::warn!(source = %self.label, error = %e, "DataRecords change feed: reading the change log failed");
                return Ok(());
            }
        }
        Ok(())
    }

    /// Publishes every change after the last published id.
    async fn catch_up(&self, client: &tokio_postgres::Client) -> Result<(), DbError> {
        loop {
            let after = self.last();
            let (rows, compacted) = self
                .db
                .bounded(async {
                    let compacted: i64 = client
                        .query_one(
                            &format!("SELECT compacted_through FROM {}", self.names.log_state()),
                            &[],
                        )
                        .await?
                        .get(0);
                    let rows = client
                        .query(
                            &format!(
                                "SELECT id, old, new FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
                                self.names.changes()
                            ),
                            &[&(after as i64), &CATCH_UP_BATCH],
                        )
                        .await?;
                    Ok((rows, compacted as u64))
                })
                .await?;
            if after < compacted {
                tracing::error!(source = %self.label, after, compacted, "DataRecords change feed: the change log was compacted past this feed; watchers must relist");
                let _ = self.tx.send(FeedMessage::Expired);
                self.head.lock().unwrap_or_else(|e| e.into_inner()).last = compacted;
                continue;
            }
            let n = rows.len();
            let changes: Vec<Arc<Change>> = rows
                .into_iter()
                .map(|row| {
                    let id = row.get::<_, i64>(0) as u64;
                    let old: Option<Value> = row.get(1);
                    let new: Option<Value> = row.get(2);
                    Arc::new(self.decode(id, old, new))
                })
                .collect();
            self.publish(changes);
            if (n as i64) < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }

    /// Decodes a change log row (bad images are logged, counted and treated as absent).
    pub fn decode(&self, id: u64, old: Option<Value>, new: Option<Value>) -> Change {
        decode_change(&self.label, id, old, new)
    }
}

/// Decodes one change log row.
pub fn decode_change(label: &str, id: u64, old: Option<Value>, new: Option<Value>) -> Change {
    let parse = |v: Option<Value>| {
        v.and_then(|v| match stored_from_row(&v) {
            Ok(r) => Some(r),
            Err(bad) => {
                report_bad_row(label, &bad);
                None
            }
        })
    };
    let old = parse(old);
    let new = parse(new);
    let gone = old.as_ref().map(|r| {
        let mut record = r.record.clone();
        record.metadata.resource_version = Some(id.to_string());
        Arc::new(StoredRecord::new(record))
    });
    Change { id, old, new, gone }
}
