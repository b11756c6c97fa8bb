//! The table source as the DataRecords API backend: list options and continue tokens
//! mapped onto [`TableSource`] reads, and watches onto the change feed.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::feed::ChangeFeed;
use super::table::{ListError, ListQuery, ReadAt, TableSource};
use super::watch::{self, Start, Watcher};
use crate::api::list_options::ListOptions;
use crate::api::negotiate::{Target, negotiate};
use crate::api::paging::ContinueToken;
use crate::api::resource::{AsyncBackend, ListPage, ResourceDescriptor, SharedObject};
use crate::api::response::Body;
use crate::api::status::ApiError;
use crate::records::set::StoredRecord;

/// DataRecords served from a PostgreSQL table.
pub struct TableBackend {
    table: Arc<TableSource>,
    feed: Arc<ChangeFeed>,
    descriptor: &'static ResourceDescriptor,
    bookmark_interval: Duration,
}

impl TableBackend {
    /// A backend over `table`, following `feed` (whose task must be running).
    pub fn new(
        table: Arc<TableSource>,
        feed: Arc<ChangeFeed>,
        descriptor: &'static ResourceDescriptor,
    ) -> Self {
        TableBackend {
            table,
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

fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resource version {rv:?}: must be an integer"
        ))
    })
}

/// Which state a list without a continue token reads (kube-apiserver's rules).
pub fn read_at(opts: &ListOptions) -> Result<ReadAt, ApiError> {
    match (
        opts.resource_version.as_deref(),
        opts.resource_version_match.as_deref(),
    ) {
        (None, _) | (Some("0"), None | Some("NotOlderThan")) => Ok(ReadAt::Latest),
        (Some(rv), Some("Exact")) => Ok(ReadAt::Exact(parse_rv(rv)?)),
        (Some(rv), None | Some("NotOlderThan")) => Ok(ReadAt::NotOlderThan(parse_rv(rv)?)),
        (Some(_), Some(other)) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

impl AsyncBackend for TableBackend {
    fn get<'a>(
        &'a self,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedObject>, ApiError>> {
        async move {
            let Some(ns) = namespace else {
                return Ok(None);
            };
            let r = self.table.get(ns, name).await?;
            Ok(r.map(|r| r as SharedObject))
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        namespace: Option<&'a str>,
        opts: &'a ListOptions,
    ) -> BoxFuture<'a, Result<ListPage, ApiError>> {
        async move {
            let token = opts
                .continue_token
                .as_deref()
                .map(ContinueToken::decode)
                .transpose()?;
            let at = match &token {
                Some(t) => ReadAt::Exact(parse_rv(&t.rv).map_err(|_| {
                    ApiError::bad_request(
                        "invalid continue token: continue key is not valid: bad resourceVersion",
                    )
                })?),
                None => read_at(opts)?,
            };
            // A field selector that pins the namespace narrows the scan like a path.
            let scope = namespace.or(opts.field_selector.required_namespace());
            let q = ListQuery {
                namespace: scope,
                labels: &opts.label_selector,
                fields: &opts.field_selector,
                after: token.as_ref().map(|t| (t.ns.as_str(), t.name.as_str())),
                limit: opts.limit,
                at,
            };
            let page = match self.table.list(&q).await {
                Ok(p) => p,
                Err(ListError::Expired { current, .. }) if token.is_some() => {
                    let t = token.as_ref().expect("token");
                    let resume = ContinueToken::new(&current.to_string(), &t.ns, &t.name);
                    return Err(ApiError::continue_expired(Some(resume.encode())));
                }
                Err(e) => return Err(e.into()),
            };
            let rv = page.resource_version.to_string();
            Ok(records_page(rv, page.items, page.more))
        }
        .boxed()
    }

    fn watch<'a>(
        &'a self,
        namespace: Option<&'a str>,
        opts: &'a ListOptions,
        accept: Option<&'a str>,
    ) -> BoxFuture<'a, Result<http::Response<Body>, ApiError>> {
        async move {
            let output = negotiate(accept, Target::Object, true)?;
            let initial_events = opts.send_initial_events == Some(true);
            if initial_events && opts.resource_version_match.as_deref() != Some("NotOlderThan") {
                return Err(ApiError::invalid_list_options(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            let requested = match opts.resource_version.as_deref() {
                None | Some("0") => None,
                Some(rv) => Some(parse_rv(rv)?),
            };
            // Answer 503 now, rather than a stream that ends at once, when the database
            // or the feed is down.
            let current = self.table.current_version().await?;
            let sub = self.feed.subscribe();
            if !sub.up {
                return Err(ApiError::unavailable_retry(
                    "the DataRecords change feed is reconnecting to the database",
                    1,
                ));
            }
            let start = match requested {
                Some(rv) if rv > current => {
                    return Err(ApiError::too_large_resource_version(rv, current));
                }
                Some(rv) if !initial_events => Start::After(rv),
                _ => Start::Current {
                    initial_events_end: initial_events,
                },
            };
            let watcher = Watcher {
                namespace: namespace.map(str::to_string),
                opts: opts.clone(),
                output,
                descriptor: self.descriptor,
                bookmark_interval: self.bookmark_interval,
            };
            let (tx, resp) = crate::api::watch::stream();
            let timeout = crate::api::watch::timeout(opts.timeout_seconds);
            tokio::spawn(watch::run(
                self.table.clone(),
                watcher,
                start,
                sub,
                tx,
                timeout,
            ));
            Ok(resp)
        }
        .boxed()
    }
}

/// A list page of `items` at `rv`, with a continue token after the last item when `more`
/// records follow (the table source and the union page the same way).
pub(crate) fn records_page(rv: String, items: Vec<Arc<StoredRecord>>, more: bool) -> ListPage {
    let continue_token = if more {
        items.last().map(|r| {
            ContinueToken::new(&rv, r.record.namespace(), &r.record.metadata.name).encode()
        })
    } else {
        None
    };
    ListPage {
        resource_version: rv,
        items: items.into_iter().map(|r| r as SharedObject).collect(),
        continue_token,
    }
}
