//! A watch of the union: the set's events and the table's changes in one stream.
//!
//! The watcher holds one composite position `(seq, id)`. An in-memory publish is
//! applied whole (read from the set's history, so a publish is never split by a table
//! change), with the rows of its keys read at `id`; a table change is applied with the
//! in-memory records of the set's snapshot at `seq`. Each side's change is translated
//! into the change of the *served* object (precedence as in [`super`]), then through
//! the watcher's selectors (a change into the selector is ADDED, out of it DELETED).
//! Every event object and bookmark carries the composite version after the change, so
//! a client resumes from whatever it saw last.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::version::{self, Position, UnionVersion};
use super::{PageQuery, Shared, UnionBackend, key_of, lookup, matches};
use crate::api::endpoint::write_event_object;
use crate::api::list_options::ListOptions;
use crate::api::negotiate::{Output, Target, negotiate};
use crate::api::resource::ResourceDescriptor;
use crate::api::response::Body;
use crate::api::status::ApiError;
use crate::api::time::now_millis;
use crate::api::watch::{self as wire, EventSender};
use crate::records::postgres::db::DbError;
use crate::records::postgres::feed::{Change, FeedMessage, Subscription, decode_change};
use crate::records::postgres::table::{Key, ReadAt};
use crate::records::set::{EventType, RecordEvent, StoredRecord};

/// Initial events are read in pages of this size.
const INITIAL_PAGE: usize = 500;

struct Watcher {
    shared: Arc<Shared>,
    namespace: Option<String>,
    opts: ListOptions,
    output: Output,
    descriptor: &'static ResourceDescriptor,
    bookmark_interval: Duration,
    at: UnionVersion,
}

/// Why a stream ends.
enum End {
    /// The client left (or the stream ends cleanly: it re-watches from its version).
    Quiet,
    /// With this Status as an ERROR event.
    Error(ApiError),
}

impl From<DbError> for End {
    fn from(_: DbError) -> Self {
        // The database went away mid-stream: end cleanly, the client re-watches from
        // its last version and loses nothing (as the table-only watch does).
        End::Quiet
    }
}

impl Watcher {
    fn rv(&self) -> String {
        self.at.format(self.shared.set.epoch())
    }

    fn passes(&self, r: &StoredRecord) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| r.record.namespace() == ns)
            && matches(&self.opts.label_selector, &self.opts.field_selector, r)
    }

    /// Sends what this watcher sees of the served object going from `before` to
    /// `after`, stamped with the watcher's current version.
    async fn emit(
        &self,
        tx: &EventSender,
        before: Option<Arc<StoredRecord>>,
        after: Option<Arc<StoredRecord>>,
    ) -> Result<(), End> {
        let same = match (&before, &after) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if same {
            return Ok(());
        }
        let was = before.as_deref().is_some_and(|r| self.passes(r));
        let is = after.as_deref().is_some_and(|r| self.passes(r));
        let (kind, r) = match (was, is) {
            (false, true) => ("ADDED", after),
            (true, true) => ("MODIFIED", after),
            (true, false) => ("DELETED", before),
            (false, false) => return Ok(()),
        };
        let r = r.expect("a passing side exists");
        self.send(tx, kind, &r).await
    }

    async fn send(&self, tx: &EventSender, kind: &str, r: &StoredRecord) -> Result<(), End> {
        let r = r.restamped(&self.rv());
        let mut object = Vec::with_capacity(r.json.len() + 256);
        write_event_object(
            &mut object,
            self.descriptor,
            self.output,
            &r,
            self.opts.include_object,
            now_millis(),
        );
        tx.send(wire::event(kind, &object))
            .await
            .map_err(|_| End::Quiet)
    }

    async fn bookmark(&self, tx: &EventSender, initial_events_end: bool) -> Result<(), End> {
        let b = wire::bookmark(
            &self.descriptor.group_version(),
            self.descriptor.kind,
            &self.rv(),
            initial_events_end,
        );
        tx.send(b).await.map_err(|_| End::Quiet)
    }

    /// Every served object as ADDED, page by page at one composite version.
    async fn initial(&mut self, tx: &EventSender) -> Result<(), End> {
        let snap = self.shared.set.snapshot();
        let mut at = ReadAt::Latest;
        let mut after: Option<Key> = None;
        let scope = self.namespace.clone().or(self
            .opts
            .field_selector
            .required_namespace()
            .map(str::to_string));
        loop {
            let q = PageQuery {
                namespace: scope.as_deref(),
                labels: &self.opts.label_selector,
                fields: &self.opts.field_selector,
                after: after.clone(),
                limit: INITIAL_PAGE,
            };
            let page = self
                .shared
                .page(&snap, at, &q)
                .await
                .map_err(|e| End::Error(e.into()))?;
            at = ReadAt::Exact(page.id);
            self.at = UnionVersion {
                seq: snap.seq,
                id: page.id,
            };
            for r in &page.items {
                self.send(tx, "ADDED", r).await?;
            }
            if !page.more {
                return Ok(());
            }
            after = page.items.last().map(|r| key_of(r));
        }
    }

    /// Applies the in-memory publishes after the watcher's counter (whole publishes,
    /// from the history; 410 when they left it).
    async fn apply_memory(&mut self, tx: &EventSender) -> Result<(), End> {
        let Some(events) = self.shared.set.history_after(self.at.seq) else {
            return Err(End::Error(crate::records::version::expired(
                &self.rv(),
                &self.rv(),
            )));
        };
        if events.is_empty() {
            return Ok(());
        }
        // The rows at the watcher's table version of every key whose served object
        // may depend on them.
        let keys: Vec<Key> = events
            .iter()
            .filter(|e| {
                let wins = |r: &Option<Arc<StoredRecord>>| {
                    r.as_deref().is_some_and(|r| self.shared.wins(r))
                };
                let (before, after) = memory_sides(e);
                !(wins(&before) && wins(&after))
            })
            .map(|e| key_of(&e.record))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let rows: HashMap<Key, Option<Arc<StoredRecord>>> =
            match self.shared.table.states_at(&keys, self.at.id).await? {
                Some(rows) => rows,
                None => return Err(End::Error(expired_table(self.at.id))),
            };
        for e in events {
            let (before, after) = memory_sides(&e);
            let s = rows.get(&key_of(&e.record)).cloned().flatten();
            if s.is_some() {
                self.shared.conflict(&e.record);
            }
            self.at.seq = e.seq;
            let before = self.shared.served(before.as_ref(), s.as_ref());
            let after = self.shared.served(after.as_ref(), s.as_ref());
            self.emit(tx, before, after).await?;
        }
        Ok(())
    }

    /// Applies one table change, with the in-memory records at the watcher's counter.
    async fn apply_change(&mut self, tx: &EventSender, c: &Change) -> Result<(), End> {
        if c.id <= self.at.id {
            return Ok(());
        }
        let Some(snap) = self.shared.set.snapshot_at(self.at.seq) else {
            // Only while the watcher is more than the kept snapshots behind.
            return Err(End::Error(ApiError::resource_version_expired(format!(
                "too old resource version: {} (the watcher fell behind)",
                self.rv()
            ))));
        };
        let any = c.new.as_ref().or(c.old.as_ref());
        let m = any.and_then(|r| lookup(&snap, r.record.namespace(), &r.record.metadata.name));
        if let Some(m) = &m {
            self.shared.conflict(m);
        }
        self.at.id = c.id;
        let before = self.shared.served(m.as_ref(), c.old.as_ref());
        let after = self.shared.served(m.as_ref(), c.new.as_ref());
        self.emit(tx, before, after).await
    }

    /// Replays the logged changes in `(at.id, to]`.
    async fn replay(&mut self, tx: &EventSender, to: u64) -> Result<(), End> {
        let table = self.shared.table.clone();
        let names = table.names();
        let db = table.db();
        let compacted = table.compacted_through().await?;
        if self.at.id < compacted {
            return Err(End::Error(expired_table(self.at.id)));
        }
        while self.at.id < to {
            let from = self.at.id as i64;
            let rows = db
                .bounded(async {
                    let client = db.client().await?;
                    client
                        .query(
                            &format!(
                                "SELECT id, old, new FROM {} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT 1000",
                                names.changes()
                            ),
                            &[&from, &(to as i64)],
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
                self.apply_change(tx, &change).await?;
            }
        }
        self.at.id = self.at.id.max(to);
        Ok(())
    }

    async fn run(
        &mut self,
        tx: &EventSender,
        start: Option<UnionVersion>,
        initial_events_end: bool,
        mut sub: Subscription,
        mut rx: tokio::sync::broadcast::Receiver<RecordEvent>,
    ) -> Result<(), End> {
        match start {
            None => {
                self.initial(tx).await?;
                if initial_events_end {
                    self.bookmark(tx, true).await?;
                }
            }
            Some(v) => {
                self.at = v;
                self.apply_memory(tx).await?;
            }
        }
        if self.at.id < sub.after {
            self.replay(tx, sub.after).await?;
        }
        let bookmarks = self.opts.allow_watch_bookmarks;
        let mut every = tokio::time::interval(self.bookmark_interval);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick(), if bookmarks => self.bookmark(tx, false).await?,
                event = rx.recv() => match event {
                    Ok(e) if e.seq <= self.at.seq => {}
                    Ok(_) => self.apply_memory(tx).await?,
                    Err(RecvError::Lagged(_)) => {
                        return Err(End::Error(ApiError::resource_version_expired(format!(
                            "too old resource version: {} (the watcher fell behind)",
                            self.rv()
                        ))));
                    }
                    Err(RecvError::Closed) => return Err(End::Quiet),
                },
                message = sub.rx.recv() => match message {
                    Ok(FeedMessage::Changes(changes)) => {
                        for c in changes.iter() {
                            self.apply_change(tx, c).await?;
                        }
                    }
                    Ok(FeedMessage::Down) | Err(RecvError::Closed) => return Err(End::Quiet),
                    Ok(FeedMessage::Expired) => return Err(End::Error(expired_table(self.at.id))),
                    Err(RecvError::Lagged(n)) => {
                        tracing::info!(skipped = n, "DataRecords watcher fell behind; closing its stream");
                        return Err(End::Quiet);
                    }
                }
            }
        }
    }
}

fn expired_table(id: u64) -> ApiError {
    ApiError::resource_version_expired(format!(
        "too old resource version: the table's part {id} is older than its change log reaches"
    ))
}

/// The in-memory record before and after an event.
fn memory_sides(e: &RecordEvent) -> (Option<Arc<StoredRecord>>, Option<Arc<StoredRecord>>) {
    match e.kind {
        EventType::Added => (None, Some(e.record.clone())),
        EventType::Modified => (e.previous.clone(), Some(e.record.clone())),
        EventType::Deleted => (Some(e.record.clone()), None),
    }
}

impl UnionBackend {
    pub(super) async fn watch_inner(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
        accept: Option<&str>,
    ) -> Result<http::Response<Body>, ApiError> {
        let output = negotiate(accept, Target::Object, true)?;
        let initial_events = opts.send_initial_events == Some(true);
        if initial_events && opts.resource_version_match.as_deref() != Some("NotOlderThan") {
            return Err(ApiError::invalid_list_options(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        let set = &self.shared.set;
        let judged = match opts.resource_version.as_deref() {
            None => Ok(Position::Any),
            Some(rv) => match version::judge(rv, set.epoch(), self.current()) {
                Err(e) if e.code == 400 => return Err(e),
                other => other,
            },
        };
        // 503 now, rather than a stream that ends at once, when the database or the
        // feed is down.
        let current_id = self.shared.table.current_version().await?;
        // Subscribe to both before reading anything, so nothing falls between.
        let sub = self.feed.subscribe();
        if !sub.up {
            return Err(ApiError::unavailable_retry(
                "the DataRecords change feed is reconnecting to the database",
                1,
            ));
        }
        let (rx, _) = set.subscribe();
        let start = match &judged {
            Ok(Position::Known(v)) if !initial_events => Some(*v),
            _ => None,
        };
        let refused = match judged {
            Err(e) => Some(e),
            Ok(Position::Known(v)) if v.id > current_id => {
                Some(crate::records::version::too_large(
                    opts.resource_version.as_deref().unwrap_or_default(),
                    &self.format(UnionVersion {
                        seq: set.snapshot().seq,
                        id: current_id,
                    }),
                ))
            }
            _ => None,
        };
        let (tx, resp) = wire::stream();
        let timeout = wire::timeout(opts.timeout_seconds);
        let mut watcher = Watcher {
            shared: self.shared.clone(),
            namespace: namespace.map(str::to_string),
            opts: opts.clone(),
            output,
            descriptor: self.descriptor,
            bookmark_interval: self.bookmark_interval,
            at: UnionVersion { seq: 0, id: 0 },
        };
        tokio::spawn(async move {
            if let Some(e) = refused {
                let _ = tx.send(wire::error(&e)).await;
                return;
            }
            let streamed = watcher.run(&tx, start, initial_events, sub, rx);
            let ended = tokio::select! {
                _ = tokio::time::sleep(timeout) => End::Quiet,
                _ = tx.closed() => End::Quiet,
                r = streamed => r.err().unwrap_or(End::Quiet),
            };
            if let End::Error(e) = ended {
                let _ = tx.send(wire::error(&e)).await;
            }
        });
        Ok(resp)
    }
}
