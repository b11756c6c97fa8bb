//! One watcher of the table source: replay the change log after the requested
//! resourceVersion, then follow the process's change feed, translating each change
//! into what this watcher should see (as kube-apiserver's watch cache does: an update
//! that leaves the selector is DELETED, one that enters it is ADDED).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::db::DbError;
use super::feed::{Change, FeedMessage, Subscription, decode_change};
use super::table::TableSource;
use crate::api::endpoint::write_event_object;
use crate::api::list_options::ListOptions;
use crate::api::negotiate::Output;
use crate::api::resource::ResourceDescriptor;
use crate::api::status::ApiError;
use crate::api::time::now_millis;
use crate::api::watch::{self as wire, EventSender};
use crate::records::set::StoredRecord;

/// What a watcher asked to see, and how to write it.
pub struct Watcher {
    /// Namespace scope.
    pub namespace: Option<String>,
    /// Selectors and watch options.
    pub opts: ListOptions,
    /// Representation of event objects.
    pub output: Output,
    /// The resource (DataRecords).
    pub descriptor: &'static ResourceDescriptor,
    /// Interval of BOOKMARK events (when the client allows them).
    pub bookmark_interval: Duration,
}

impl Watcher {
    fn matches(&self, r: &StoredRecord) -> bool {
        let meta = &r.record.metadata;
        self.namespace
            .as_deref()
            .is_none_or(|ns| r.record.namespace() == ns)
            && self.opts.label_selector.matches(&meta.labels)
            && self.opts.field_selector.matches(meta)
    }

    /// The event this watcher sees for a change, if any.
    pub fn translate<'c>(&self, c: &'c Change) -> Option<(&'static str, &'c StoredRecord)> {
        let was = c.old.as_deref().is_some_and(|r| self.matches(r));
        let is = c.new.as_deref().is_some_and(|r| self.matches(r));
        match (was, is) {
            (false, true) => c.new.as_deref().map(|r| ("ADDED", r)),
            (true, true) => c.new.as_deref().map(|r| ("MODIFIED", r)),
            (true, false) => c.gone.as_deref().map(|r| ("DELETED", r)),
            (false, false) => None,
        }
    }

    fn encode(&self, kind: &str, r: &StoredRecord) -> bytes::Bytes {
        let mut object = Vec::with_capacity(r.json.len() + 256);
        write_event_object(
            &mut object,
            self.descriptor,
            self.output,
            r,
            self.opts.include_object,
            now_millis(),
        );
        wire::event(kind, &object)
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> bytes::Bytes {
        wire::bookmark(
            &self.descriptor.group_version(),
            self.descriptor.kind,
            &rv.to_string(),
            initial_events_end,
        )
    }
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Every current record as ADDED first (resourceVersion unset or "0"); with
    /// `initial_events_end`, then the WatchList bookmark.
    Current {
        /// Send the `k8s.io/initial-events-end` bookmark after the initial events.
        initial_events_end: bool,
    },
    /// The changes after this version.
    After(u64),
}

/// Streams a watch until the client leaves, `timeoutSeconds` passes, the feed goes
/// down (the stream ends cleanly) or the client falls too far behind (cut off).
pub async fn run(
    table: Arc<TableSource>,
    watcher: Watcher,
    start: Start,
    mut sub: Subscription,
    tx: EventSender,
    timeout: Duration,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let streamed = async {
        let mut last = match start {
            Start::Current { initial_events_end } => {
                let Some(v) = initial(&table, &watcher, &tx).await else {
                    return;
                };
                if initial_events_end && tx.send(watcher.bookmark(v, true)).await.is_err() {
                    return;
                }
                v
            }
            Start::After(v) => v,
        };
        // The log between `last` and the feed's position at subscription.
        if last < sub.after {
            match replay(&table, &watcher, &tx, last, sub.after).await {
                Ok(Some(v)) => last = v,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(wire::error(&e)).await;
                    return;
                }
            }
        }
        follow(&watcher, &mut sub, &tx, last).await;
    };
    tokio::select! {
        _ = &mut deadline => {}
        _ = streamed => {}
        _ = tx.closed() => {}
    }
}

/// The current records as ADDED, page by page at one version; that version, or
/// `None` when the stream ended.
async fn initial(table: &TableSource, watcher: &Watcher, tx: &EventSender) -> Option<u64> {
    use super::table::{ListQuery, ReadAt};
    let mut at = ReadAt::Latest;
    let mut after: Option<(String, String)> = None;
    loop {
        let q = ListQuery {
            namespace: watcher.namespace.as_deref(),
            labels: &watcher.opts.label_selector,
            fields: &watcher.opts.field_selector,
            after: after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            limit: 500,
            at,
        };
        let page = match table.list(&q).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(wire::error(&ApiError::from(e))).await;
                return None;
            }
        };
        at = ReadAt::Exact(page.resource_version);
        for r in &page.items {
            if tx.send(watcher.encode("ADDED", r)).await.is_err() {
                return None;
            }
        }
        if !page.more {
            return Some(page.resource_version);
        }
        after = page.items.last().map(|r| {
            (
                r.record.namespace().to_string(),
                r.record.metadata.name.clone(),
            )
        });
    }
}

/// Sends the logged changes in `(from, to]`; the last id covered, `None` when the
/// client left, or the error to end the watch with (410 when the log no longer reaches
/// `from`).
async fn replay(
    table: &TableSource,
    watcher: &Watcher,
    tx: &EventSender,
    from: u64,
    to: u64,
) -> Result<Option<u64>, ApiError> {
    let names = table.names();
    let db = table.db();
    let mut last = from;
    let compacted = table.compacted_through().await?;
    if from < compacted {
        return Err(ApiError::resource_version_expired(format!(
            "too old resource version: {from} ({to})"
        )));
    }
    while last < to {
        let rows = db
            .bounded(async {
                let client = db.client().await?;
                client
                    .query(
                        &format!(
                            "SELECT id, old, new FROM {} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT 1000",
                            names.changes()
                        ),
                        &[&(last as i64), &(to as i64)],
                    )
                    .await
                    .map_err(DbError::from_pg)
            })
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let id = row.get::<_, i64>(0) as u64;
            let old: Option<Value> = row.get(1);
            let new: Option<Value> = row.get(2);
            let change = decode_change(table.label(), id, old, new);
            if let Some((kind, r)) = watcher.translate(&change)
                && tx.send(watcher.encode(kind, r)).await.is_err()
            {
                return Ok(None);
            }
            last = id;
        }
    }
    Ok(Some(to.max(last)))
}

/// Follows the feed after `last`, with periodic bookmarks.
async fn follow(watcher: &Watcher, sub: &mut Subscription, tx: &EventSender, mut last: u64) {
    let bookmarks = watcher.opts.allow_watch_bookmarks;
    let mut every = tokio::time::interval(watcher.bookmark_interval);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick(), if bookmarks => {
                if tx.send(watcher.bookmark(last, false)).await.is_err() {
                    return;
                }
            }
            message = sub.rx.recv() => match message {
                Ok(FeedMessage::Changes(changes)) => {
                    for c in changes.iter() {
                        if c.id <= last {
                            continue;
                        }
                        last = c.id;
                        if let Some((kind, r)) = watcher.translate(c)
                            && tx.send(watcher.encode(kind, r)).await.is_err()
                        {
                            return;
                        }
                    }
                }
                // The database is gone: end cleanly; the client re-watches from its
                // last resourceVersion and loses nothing.
                Ok(FeedMessage::Down) | Err(RecvError::Closed) => return,
                Ok(FeedMessage::Expired) => {
                    let e = ApiError::resource_version_expired(format!(
                        "too old resource version: {last} (the change log was compacted)"
                    ));
                    let _ = tx.send(wire::error(&e)).await;
                    return;
                }
                // The client stopped reading and the shared buffer moved on: cut it off
                // (it resumes from its last resourceVersion through the log).
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(skipped = n, "DataRecords watcher fell behind; closing its stream");
                    return;
                }
            }
        }
    }
}
