//! The union of the in-memory record set (file, postgresQuery, computed sources) and
//! the PostgreSQL table source (`kind: postgres`) in one `--sources-config`.
//!
//! Neither side is copied into the other: the set stays in memory, the table stays in
//! SQL (selectors pushed down, keyset pages on `(namespace, name)`). A list merges the
//! two sorted streams page by page; a watch merges the set's events with the table's
//! change feed into one stream. resourceVersions are composite (`<epoch>.<seq>_p<id>`,
//! [`version`]): both positions travel in every list version, continue token, event
//! and bookmark.
//!
//! **Precedence** follows the configuration's order, as between in-memory sources: a
//! record of an in-memory source listed *before* the table hides a row with the same
//! (namespace, name); a row hides a record of a source listed *after* it. Because the
//! served object of a key is a pure function of both sides at one composite version,
//! get, list and watch agree and nothing flaps (a row inserted under an in-memory
//! record that wins is never shown; one inserted over a record it beats is a MODIFIED).
//!
//! **Database down**: a list or watch needs the table, so it is 503 with `Retry-After`
//! (never a partial list); a get of a record that wins over the table is still
//! answered from memory. See docs/datarecords.md.

pub mod version;
mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use self::version::{Position, UnionVersion};
use super::postgres::table::{Key, ListError, ListQuery, ReadAt};
use super::postgres::{ChangeFeed, TableSource, records_page};
use super::set::{RecordSet, RecordsSnapshot, StoredRecord};
use crate::api::field_selector::FieldSelector;
use crate::api::label_selector::LabelSelector;
use crate::api::list_options::ListOptions;
use crate::api::paging::ContinueToken;
use crate::api::resource::{AsyncBackend, ListPage, ResourceDescriptor, SharedObject};
use crate::api::response::Body;
use crate::api::status::ApiError;

/// DataRecords served from the record set and a PostgreSQL table together.
pub struct UnionBackend {
    shared: Arc<Shared>,
    feed: Arc<ChangeFeed>,
    descriptor: &'static ResourceDescriptor,
    bookmark_interval: Duration,
}

/// What lists and watchers share.
struct Shared {
    set: Arc<RecordSet>,
    table: Arc<TableSource>,
    /// Sources of the set with an index below this come before the table.
    split: usize,
    /// Keys whose cross-component conflict was already logged and counted.
    conflicts: Mutex<HashSet<Key>>,
}

impl UnionBackend {
    /// The union of `set` and `table` (whose `feed` must be running); the first
    /// `sources_before_table` sources of the set come before the table in the
    /// configuration.
    pub fn new(
        set: Arc<RecordSet>,
        table: Arc<TableSource>,
        feed: Arc<ChangeFeed>,
        sources_before_table: usize,
        descriptor: &'static ResourceDescriptor,
    ) -> Self {
        UnionBackend {
            shared: Arc::new(Shared {
                set,
                table,
                split: sources_before_table,
                conflicts: Mutex::new(HashSet::new()),
            }),
            feed,
            descriptor,
            bookmark_interval: Duration::from_secs(60),
        }
    }

    /// Sets how often watchers that allow bookmarks get one.
    pub fn with_bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }
}

fn key_of(r: &StoredRecord) -> Key {
    (
        r.record.namespace().to_string(),
        r.record.metadata.name.clone(),
    )
}

fn lookup(snap: &RecordsSnapshot, ns: &str, name: &str) -> Option<Arc<StoredRecord>> {
    let i = snap.lower_bound(ns, name);
    snap.records
        .get(i)
        .filter(|r| r.record.namespace() == ns && r.record.metadata.name == name)
        .cloned()
}

fn matches(labels: &LabelSelector, fields: &FieldSelector, r: &StoredRecord) -> bool {
    labels.matches(&r.record.metadata.labels) && fields.matches(&r.record.metadata)
}

/// One page of the union.
struct MergedPage {
    items: Vec<Arc<StoredRecord>>,
    more: bool,
    /// The table's version the page shows.
    id: u64,
}

/// What a page of the union asks for.
struct PageQuery<'a> {
    namespace: Option<&'a str>,
    labels: &'a LabelSelector,
    fields: &'a FieldSelector,
    after: Option<Key>,
    limit: usize,
}

impl Shared {
    /// True when the in-memory record `m` wins over a row of the same name.
    fn wins(&self, m: &StoredRecord) -> bool {
        m.source < self.split
    }

    /// The served object of a key, from its in-memory record and its row.
    fn served(
        &self,
        m: Option<&Arc<StoredRecord>>,
        s: Option<&Arc<StoredRecord>>,
    ) -> Option<Arc<StoredRecord>> {
        match m {
            Some(m) if self.wins(m) => Some(m.clone()),
            _ => s.or(m).cloned(),
        }
    }

    /// Logs (once per key) and counts a name both sides produce.
    fn conflict(&self, m: &StoredRecord) {
        let key = key_of(m);
        let new = self
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        if !new {
            return;
        }
        let memory = self
            .set
            .source_names()
            .get(m.source)
            .cloned()
            .unwrap_or_default();
        let (served_from, ignored_from) = if self.wins(m) {
            (memory, self.table.label().to_string())
        } else {
            (self.table.label().to_string(), memory)
        };
        tracing::warn!(
            namespace = %key.0,
            name = %key.1,
            served_from = %served_from,
            ignored_from = %ignored_from,
            "two record sources produce the same DataRecord; the earlier source in the configuration wins"
        );
        self.set.note_conflict();
    }

    /// One page of the union at the set's snapshot `snap` and the table at `at`.
    async fn page(
        &self,
        snap: &RecordsSnapshot,
        mut at: ReadAt,
        q: &PageQuery<'_>,
    ) -> Result<MergedPage, ListError> {
        let filtered = !q.labels.is_empty() || !q.fields.is_empty();
        let mut items: Vec<Arc<StoredRecord>> = Vec::new();
        let mut cursor = q.after.clone();
        let mut more = false;
        let id = loop {
            let need = if q.limit > 0 {
                q.limit - items.len()
            } else {
                0
            };
            let page = self
                .table
                .list(&ListQuery {
                    namespace: q.namespace,
                    labels: q.labels,
                    fields: q.fields,
                    after: cursor.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                    limit: need,
                    at,
                })
                .await?;
            let id = page.resource_version;
            at = ReadAt::Exact(id);
            // This round covers the keys in (cursor, upper]: every row matching the
            // selectors there is in `page`, every in-memory record there is in `mem`.
            let upper = if page.more {
                page.items.last().map(|r| key_of(r))
            } else {
                None
            };
            let mem = in_range(snap, q.namespace, cursor.as_ref(), upper.as_ref());
            let mut merged: Vec<Arc<StoredRecord>> = Vec::new();
            // Records of later sources that match, where a row of the same name that
            // does not match the selectors would still hide them.
            let mut unsure: Vec<(usize, Key)> = Vec::new();
            let (mut i, mut j) = (0, 0);
            while i < mem.len() || j < page.items.len() {
                let order = match (mem.get(i), page.items.get(j)) {
                    (Some(m), Some(s)) => key_cmp(m, s),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        let m = mem[i];
                        i += 1;
                        if !matches(q.labels, q.fields, m) {
                            continue;
                        }
                        if filtered && !self.wins(m) {
                            unsure.push((merged.len(), key_of(m)));
                        }
                        merged.push(m.clone());
                    }
                    std::cmp::Ordering::Greater => {
                        merged.push(page.items[j].clone());
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        let m = mem[i];
                        let s = &page.items[j];
                        i += 1;
                        j += 1;
                        self.conflict(m);
                        if self.wins(m) {
                            if matches(q.labels, q.fields, m) {
                                merged.push(m.clone());
                            }
                        } else {
                            merged.push(s.clone());
                        }
                    }
                }
            }
            if !unsure.is_empty() {
                let keys: Vec<Key> = unsure.iter().map(|(_, k)| k.clone()).collect();
                let states = self
                    .table
                    .states_at(&keys, id)
                    .await?
                    .ok_or(ListError::Expired {
                        requested: id,
                        current: id,
                    })?;
                let mut hidden = vec![false; merged.len()];
                for (at, key) in &unsure {
                    if states.get(key).is_some_and(Option::is_some) {
                        self.conflict(&merged[*at]);
                        hidden[*at] = true;
                    }
                }
                let mut n = 0;
                merged.retain(|_| {
                    n += 1;
                    !hidden[n - 1]
                });
            }
            for r in merged {
                if q.limit > 0 && items.len() == q.limit {
                    more = true;
                    break;
                }
                items.push(r);
            }
            if more || upper.is_none() {
                break id;
            }
            if q.limit > 0 && items.len() == q.limit {
                more = true;
                break id;
            }
            cursor = upper;
        };
        Ok(MergedPage { items, more, id })
    }

    async fn get(&self, ns: &str, name: &str) -> Result<Option<Arc<StoredRecord>>, ApiError> {
        let m = lookup(&self.set.snapshot(), ns, name);
        if let Some(m) = &m
            && self.wins(m)
        {
            // Answered from memory, also while the database is down.
            return Ok(Some(m.clone()));
        }
        let s = self.table.get(ns, name).await?;
        if let (Some(m), Some(_)) = (&m, &s) {
            self.conflict(m);
        }
        Ok(self.served(m.as_ref(), s.as_ref()))
    }
}

fn key_cmp(a: &StoredRecord, b: &StoredRecord) -> std::cmp::Ordering {
    (a.record.namespace(), a.record.metadata.name.as_str())
        .cmp(&(b.record.namespace(), b.record.metadata.name.as_str()))
}

/// The in-memory records in `(after, upper]` (`upper` `None`: to the end), in scope.
fn in_range<'s>(
    snap: &'s RecordsSnapshot,
    namespace: Option<&str>,
    after: Option<&Key>,
    upper: Option<&Key>,
) -> Vec<&'s Arc<StoredRecord>> {
    let records = &snap.records;
    let mut start = match namespace {
        Some(ns) => snap.lower_bound(ns, ""),
        None => 0,
    };
    if let Some((ns, name)) = after {
        let i = snap.lower_bound(ns, name);
        let skip_equal = records
            .get(i)
            .is_some_and(|r| r.record.namespace() == ns && &r.record.metadata.name == name);
        start = start.max(if skip_equal { i + 1 } else { i });
    }
    let mut out = Vec::new();
    for r in &records[start.min(records.len())..] {
        if namespace.is_some_and(|ns| r.record.namespace() != ns) {
            break;
        }
        if let Some((ns, name)) = upper
            && (r.record.namespace(), r.record.metadata.name.as_str())
                > (ns.as_str(), name.as_str())
        {
            break;
        }
        out.push(r);
    }
    out
}

impl UnionBackend {
    fn current(&self) -> UnionVersion {
        UnionVersion {
            seq: self.shared.set.snapshot().seq,
            id: self.feed.last(),
        }
    }

    fn format(&self, v: UnionVersion) -> String {
        v.format(self.shared.set.epoch())
    }

    async fn list_inner(
        &self,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let set = &self.shared.set;
        let token = opts
            .continue_token
            .as_deref()
            .map(ContinueToken::decode)
            .transpose()?;
        let (snap, at) = match &token {
            Some(t) => {
                let bad = || {
                    ApiError::bad_request(
                        "invalid continue token: continue key is not valid: bad resourceVersion",
                    )
                };
                let resume = || {
                    let now = self.format(self.current());
                    ApiError::continue_expired(Some(
                        ContinueToken::new(&now, &t.ns, &t.name).encode(),
                    ))
                };
                match version::parse(&t.rv).map_err(|_| bad())? {
                    version::Requested::At { epoch, at } if epoch == set.epoch() => {
                        match set.snapshot_at(at.seq) {
                            Some(snap) => (snap, ReadAt::Exact(at.id)),
                            // The in-memory state of the first page is gone.
                            None => return Err(resume()),
                        }
                    }
                    version::Requested::At { .. } => return Err(resume()),
                    _ => return Err(bad()),
                }
            }
            None => {
                let rvm = opts.resource_version_match.as_deref();
                if let Some(other) = rvm.filter(|m| *m != "Exact" && *m != "NotOlderThan") {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                    )));
                }
                let position = match opts.resource_version.as_deref() {
                    None => Position::Any,
                    Some(rv) => version::judge(rv, set.epoch(), self.current())?,
                };
                match (position, rvm) {
                    (Position::Any, Some("Exact")) => {
                        return Err(ApiError::invalid_list_options(
                            "resourceVersionMatch",
                            "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                        ));
                    }
                    (Position::Any, _) => (set.snapshot(), ReadAt::Latest),
                    (Position::Known(v), Some("Exact")) => match set.snapshot_at(v.seq) {
                        Some(snap) => (snap, ReadAt::Exact(v.id)),
                        None => {
                            return Err(crate::records::version::expired(
                                opts.resource_version.as_deref().unwrap_or_default(),
                                &self.format(self.current()),
                            ));
                        }
                    },
                    (Position::Known(v), _) => (set.snapshot(), ReadAt::NotOlderThan(v.id)),
                }
            }
        };
        let scope = namespace.or(opts.field_selector.required_namespace());
        let q = PageQuery {
            namespace: scope,
            labels: &opts.label_selector,
            fields: &opts.field_selector,
            after: token.as_ref().map(|t| (t.ns.clone(), t.name.clone())),
            limit: opts.limit,
        };
        let page = match self.shared.page(&snap, at, &q).await {
            Ok(p) => p,
            Err(ListError::Expired { current, .. }) if token.is_some() => {
                let t = token.as_ref().expect("token");
                let now = self.format(UnionVersion {
                    seq: set.snapshot().seq,
                    id: current,
                });
                return Err(ApiError::continue_expired(Some(
                    ContinueToken::new(&now, &t.ns, &t.name).encode(),
                )));
            }
            Err(ListError::TooLarge { .. }) => {
                let rv = opts.resource_version.as_deref().unwrap_or_default();
                return Err(crate::records::version::too_large(
                    rv,
                    &self.format(self.current()),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let rv = self.format(UnionVersion {
            seq: snap.seq,
            id: page.id,
        });
        Ok(records_page(rv, page.items, page.more))
    }
}

impl AsyncBackend for UnionBackend {
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedObject>, ApiError>> {
        async move {
            let Some(ns) = namespace else {
                return Ok(None);
            };
            Ok(self.shared.get(ns, name).await?.map(|r| r as SharedObject))
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        namespace: Option<&'a str>,
        opts: &'a ListOptions,
    ) -> BoxFuture<'a, Result<ListPage, ApiError>> {
        self.list_inner(namespace, opts).boxed()
    }

    fn watch<'a>(
        &'a self,
        namespace: Option<&'a str>,
        opts: &'a ListOptions,
        accept: Option<&'a str>,
    ) -> BoxFuture<'a, Result<http::Response<Body>, ApiError>> {
        self.watch_inner(namespace, opts, accept).boxed()
    }
}
