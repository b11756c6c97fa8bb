//! Watch on `metrics.k8s.io` (nodes and pods): one hub per resource turns store snapshots into
//! events, encoded once and shared by every watcher.
//!
//! - The hub follows the store's published snapshots (it polls the lock-free snapshot pointer
//!   every 250 ms once a first watch has started). For each new snapshot it compares every
//!   servable object with the previous one by a fingerprint of what is served (timestamp,
//!   window, usages, container names, labels): new objects are ADDED, changed ones MODIFIED
//!   (so one MODIFIED per object per scrape that changed it), objects that left the store or the
//!   cluster view DELETED (carrying their last state). One [`Tick`] holds a snapshot's events,
//!   each with its JSON watch line written once.
//! - ResourceVersions are `<published ms>-<process epoch>`; lists carry the same form. A watch
//!   from a version of this process within the hub's short history replays the ticks after it;
//!   anything else (another replica, a restart, too old) gets a 410 ERROR event, so the client
//!   relists. The replay may repeat a change the client already has (at-least-once; ADDED and
//!   MODIFIED are upserts for informers), never skips one.
//! - A watcher sends the current objects as ADDED (no resourceVersion or `0`, or
//!   `sendInitialEvents=true` with the WatchList bookmark), then live ticks filtered by its
//!   namespace and selectors; an object whose labels move it into or out of a label selector is
//!   ADDED or DELETED for that watcher. Bookmarks every 10 s when allowed; the watch ends at
//!   `timeoutSeconds` (default 30–60 min). A watcher whose client stops reading is bounded:
//!   the response channel holds 64 events, a send blocked for 30 s ends the watch, and a watcher
//!   behind the retained history gets a 410 ERROR and is closed.
//! - The history is bounded by ticks (16) and by bytes (32 MiB of encoded events, an estimate
//!   of what they hold), always keeping the newest 2 ticks: every pod's sample timestamp changes
//!   with each scrape, so one tick holds every pod (~36 MB at 1,000 nodes × 30 pods; 16 of them
//!   were ~8x the server's own RSS). Watchers do not hold ticks of their own: the hub notifies
//!   them of a new tick and each takes the ticks after its version from the history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch as notify;

use crate::api::endpoint::write_event_object;
use crate::api::list_options::ListOptions;
use crate::api::meta::ObjectMeta;
use crate::api::negotiate::{Output, Target, negotiate};
use crate::api::resource::{ApiObject, ResourceDescriptor};
use crate::api::response::Body;
use crate::api::status::ApiError;
use crate::api::time::now_millis;
use crate::api::watch;

/// Ticks kept for resuming and for slow watchers.
const HISTORY: usize = 16;
/// Bytes of events the history may hold beyond its newest [`HISTORY_MIN`] ticks (the default
/// of `--watch-history-bytes`).
pub const HISTORY_BYTES: usize = 32 << 20;
/// Ticks always kept, whatever their size: a client that lists during one tick can still
/// resume from the list's version.
const HISTORY_MIN: usize = 2;
/// What an event holds beside its two encodings (the object's metadata, Table cells, the
/// event and reference counts), an estimate for the history's byte bound.
const EVENT_OVERHEAD: usize = 512;
/// How often the hub looks for a new snapshot.
const POLL: Duration = Duration::from_millis(250);
/// Bookmark interval (when the watcher allows bookmarks).
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// A send blocked this long (the client stopped reading) ends the watch.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// This process's resourceVersion epoch: random, so versions of two replicas never match.
fn epoch() -> &'static str {
    static EPOCH: OnceLock<String> = OnceLock::new();
    EPOCH.get_or_init(|| format!("{:08x}", rand::random::<u32>()))
}

/// The resourceVersion of the snapshot published at `published_ms`.
pub fn resource_version(published_ms: i64) -> String {
    format!("{published_ms}-{}", epoch())
}

/// The published time of a resourceVersion of this process, if it is one.
fn parse_resource_version(rv: &str) -> Option<i64> {
    let (ms, e) = rv.split_once('-')?;
    (e == epoch()).then(|| ms.parse().ok()).flatten()
}

/// Where a hub gets its objects: the current snapshot's published time, and a scan of every
/// servable object with its fingerprint.
pub trait WatchSource: Send + Sync + 'static {
    /// When the store's current snapshot was published.
    fn published_at(&self) -> i64;
    /// Visits every object of the current snapshot as `(fingerprint, object)`; returns the
    /// snapshot's published time.
    fn scan(&self, visit: &mut dyn FnMut(u64, &dyn ApiObject)) -> i64;
}

/// A fingerprint of served content (a 64-bit SipHash).
pub fn fingerprint(content: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

/// An object as a watch event carries it: metadata, its JSON, its Table cells.
struct WatchObject {
    meta: ObjectMeta,
    json: Vec<u8>,
    cells: Vec<serde_json::Value>,
}

impl ApiObject for WatchObject {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.json);
    }
    fn cells(&self, _now_ms: i64) -> Vec<serde_json::Value> {
        self.cells.clone()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Added,
    Modified,
    Deleted,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

struct Event {
    kind: Kind,
    object: Arc<WatchObject>,
    /// The labels before a MODIFIED (for selector transitions).
    old_labels: Option<Arc<BTreeMap<String, String>>>,
    /// The JSON watch line, written once.
    line: Bytes,
}

/// The events of one snapshot.
struct Tick {
    /// Published time of the snapshot the diff starts from.
    from_ms: i64,
    /// Published time of this snapshot.
    rv_ms: i64,
    events: Vec<Event>,
    /// What its events hold, estimated (the history's byte bound).
    bytes: usize,
}

/// One object of a scan: its key, fingerprint, and its encoding when new or changed.
type Seen = ((String, String), u64, Option<Arc<WatchObject>>);

#[derive(Default)]
struct State {
    rv_ms: i64,
    objects: HashMap<(String, String), (u64, Arc<WatchObject>)>,
    history: VecDeque<Arc<Tick>>,
    /// Sum of the history's [`Tick::bytes`].
    history_bytes: usize,
}

impl State {
    /// Appends a tick and drops the oldest beyond the bounds.
    fn push(&mut self, tick: Arc<Tick>, max_ticks: usize, max_bytes: usize) {
        self.history_bytes += tick.bytes;
        self.history.push_back(tick);
        while self.history.len() > max_ticks
            || (self.history.len() > HISTORY_MIN && self.history_bytes > max_bytes)
        {
            let old = self.history.pop_front().expect("not empty");
            self.history_bytes -= old.bytes;
        }
    }

    /// The ticks after `at`, or `None` when the history no longer holds all of them.
    fn after(&self, at: i64) -> Option<Vec<Arc<Tick>>> {
        if at >= self.rv_ms {
            return Some(Vec::new());
        }
        let first = self.history.front()?;
        (first.from_ms <= at).then(|| {
            self.history
                .iter()
                .filter(|t| t.rv_ms > at)
                .cloned()
                .collect()
        })
    }
}

/// The watch hub of one metrics resource.
pub struct Hub {
    source: Arc<dyn WatchSource>,
    descriptor: &'static ResourceDescriptor,
    state: Mutex<State>,
    /// The published time of the newest tick, for watchers waiting for one.
    tx: notify::Sender<i64>,
    started: OnceLock<()>,
    /// History bounds ([`HISTORY`], [`HISTORY_BYTES`]; smaller in tests).
    max_ticks: usize,
    max_bytes: usize,
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace_or_empty().to_string(), meta.name.clone())
}

fn capture(obj: &dyn ApiObject, now_ms: i64) -> Arc<WatchObject> {
    let mut json = Vec::with_capacity(512);
    obj.write_json(&mut json);
    Arc::new(WatchObject {
        meta: obj.meta().clone(),
        json,
        cells: obj.cells(now_ms),
    })
}

impl Hub {
    /// A hub over `source` for the resource `descriptor`; nothing runs until the first watch.
    pub fn new(source: Arc<dyn WatchSource>, descriptor: &'static ResourceDescriptor) -> Self {
        Self::with_history_bytes(source, descriptor, HISTORY_BYTES)
    }

    /// [`Hub::new`] with a history of at most `max_bytes` of events beyond its newest 2 ticks
    /// (0: no byte bound, only 16 ticks).
    pub fn with_history_bytes(
        source: Arc<dyn WatchSource>,
        descriptor: &'static ResourceDescriptor,
        max_bytes: usize,
    ) -> Self {
        Hub {
            source,
            descriptor,
            state: Mutex::new(State::default()),
            tx: notify::Sender::new(0),
            started: OnceLock::new(),
            max_ticks: HISTORY,
            max_bytes: if max_bytes == 0 {
                usize::MAX
            } else {
                max_bytes
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compares the current snapshot with the state and publishes a tick when it changed.
    fn refresh(&self) {
        if self.source.published_at() == self.lock().rv_ms {
            return;
        }
        let now = now_millis();
        let mut seen: Vec<Seen> = Vec::new();
        // Scan outside the lock: encode only what is new or changed.
        let prev: HashMap<(String, String), u64> = self
            .lock()
            .objects
            .iter()
            .map(|(k, (f, _))| (k.clone(), *f))
            .collect();
        let rv_ms = self.source.scan(&mut |fp, obj| {
            let k = key(obj.meta());
            let changed = prev.get(&k) != Some(&fp);
            seen.push((k, fp, changed.then(|| capture(obj, now))));
        });
        let mut state = self.lock();
        if rv_ms == state.rv_ms {
            return;
        }
        let mut events = Vec::new();
        let mut next = HashMap::with_capacity(seen.len());
        for (k, fp, captured) in seen {
            let old = state.objects.remove(&k);
            let object = match (captured, &old) {
                (Some(o), _) => o,
                (None, Some((_, o))) => o.clone(),
                // Changed between the two lock sections: skip until the next snapshot.
                (None, None) => continue,
            };
            match &old {
                None => events.push(event(Kind::Added, object.clone(), None)),
                Some((old_fp, old_obj)) if *old_fp != fp => events.push(event(
                    Kind::Modified,
                    object.clone(),
                    Some(old_obj.meta.labels.clone()),
                )),
                Some(_) => {}
            }
            next.insert(k, (fp, object));
        }
        let mut gone: Vec<_> = state.objects.drain().collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, (_, object)) in gone {
            events.push(event(Kind::Deleted, object, None));
        }
        let bytes = events
            .iter()
            .map(|e| e.line.len() + e.object.json.len() + EVENT_OVERHEAD)
            .sum();
        let tick = Arc::new(Tick {
            from_ms: state.rv_ms,
            rv_ms,
            events,
            bytes,
        });
        state.objects = next;
        state.rv_ms = rv_ms;
        state.push(tick, self.max_ticks, self.max_bytes);
        // Sent under the lock: a new watcher subscribes and reads the state under it too.
        self.tx.send_replace(rv_ms);
    }

    fn start(self: &Arc<Self>) {
        self.started.get_or_init(|| {
            self.refresh();
            // The first state is the base, not a tick anyone must replay.
            let mut state = self.lock();
            state.history.clear();
            state.history_bytes = 0;
            drop(state);
            let hub = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(POLL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(hub) = hub.upgrade() else { return };
                    hub.refresh();
                }
            });
        });
    }

    /// Serves one watch request.
    pub fn watch(
        self: &Arc<Self>,
        namespace: Option<&str>,
        opts: &ListOptions,
        accept: Option<&str>,
    ) -> Result<http::Response<Body>, ApiError> {
        let d = self.descriptor;
        let output = negotiate(accept, Target::Object, true)?;
        let initial_events = opts.send_initial_events == Some(true);
        if initial_events && opts.resource_version_match.as_deref() != Some("NotOlderThan") {
            return Err(ApiError::invalid_list_options(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        self.start();
        let requested = opts
            .resource_version
            .as_deref()
            .filter(|rv| !rv.is_empty() && *rv != "0");
        let (rx, start) = {
            let state = self.lock();
            let rx = self.tx.subscribe();
            let start = match requested {
                _ if initial_events => Start::Added(
                    state.objects.values().map(|(_, o)| o.clone()).collect(),
                    state.rv_ms,
                ),
                None => Start::Added(
                    state.objects.values().map(|(_, o)| o.clone()).collect(),
                    state.rv_ms,
                ),
                Some(rv) => {
                    match parse_resource_version(rv).and_then(|ms| Some((ms, state.after(ms)?))) {
                        Some((ms, ticks)) => Start::Replay(ticks, ms.max(state.rv_ms)),
                        None => Start::Expired(rv.to_string(), resource_version(state.rv_ms)),
                    }
                }
            };
            (rx, start)
        };
        let (tx, resp) = watch::stream();
        let w = Watcher {
            hub: self.clone(),
            descriptor: d,
            namespace: namespace.map(str::to_string),
            opts: opts.clone(),
            output,
            tx,
        };
        let timeout = watch::timeout(opts.timeout_seconds);
        tokio::spawn(w.run(rx, start, initial_events, timeout));
        Ok(resp)
    }
}

fn event(
    kind: Kind,
    object: Arc<WatchObject>,
    old_labels: Option<Arc<BTreeMap<String, String>>>,
) -> Event {
    let line = watch::event(kind.as_str(), &object.json);
    Event {
        kind,
        object,
        old_labels,
        line,
    }
}

enum Start {
    /// Send these as ADDED; the watch is then at this published time.
    Added(Vec<Arc<WatchObject>>, i64),
    /// Replay these ticks; the watch is then at this published time.
    Replay(Vec<Arc<Tick>>, i64),
    /// The requested version (and the current one) for the 410.
    Expired(String, String),
}

struct Watcher {
    hub: Arc<Hub>,
    descriptor: &'static ResourceDescriptor,
    namespace: Option<String>,
    opts: ListOptions,
    output: Output,
    tx: watch::EventSender,
}

impl Watcher {
    fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.opts.label_selector.matches(labels)
    }

    fn in_scope(&self, meta: &ObjectMeta) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta.namespace_or_empty() == ns)
            && self.opts.field_selector.matches(meta)
    }

    /// Sends one line; false when the watch must end (client gone or not reading).
    async fn send(&self, line: Bytes) -> bool {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.tx.send(line)).await,
            Ok(Ok(()))
        )
    }

    async fn send_object(&self, kind: Kind, object: &WatchObject, shared: Option<&Bytes>) -> bool {
        let line = match (self.output, shared) {
            (Output::Json, Some(line)) => line.clone(),
            _ => {
                let mut out = Vec::with_capacity(object.json.len() + 256);
                write_event_object(
                    &mut out,
                    self.descriptor,
                    self.output,
                    object,
                    self.opts.include_object,
                    now_millis(),
                );
                watch::event(kind.as_str(), &out)
            }
        };
        self.send(line).await
    }

    /// Sends a tick's events as this watcher sees them.
    async fn send_tick(&self, tick: &Tick) -> bool {
        for e in &tick.events {
            let meta = &e.object.meta;
            if !self.in_scope(meta) {
                continue;
            }
            let now = self.matches_labels(&meta.labels);
            let before = match (&e.kind, &e.old_labels) {
                (Kind::Modified, Some(old)) => self.matches_labels(old),
                _ => now,
            };
            let ok = match (before, now) {
                (true, true) => self.send_object(e.kind, &e.object, Some(&e.line)).await,
                (false, true) => self.send_object(Kind::Added, &e.object, None).await,
                (true, false) => self.send_object(Kind::Deleted, &e.object, None).await,
                (false, false) => true,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn bookmark(&self, rv_ms: i64, initial_events_end: bool) -> Bytes {
        watch::bookmark(
            &self.descriptor.group_version(),
            self.descriptor.kind,
            &resource_version(rv_ms),
            initial_events_end,
        )
    }

    async fn run(
        self,
        mut rx: notify::Receiver<i64>,
        start: Start,
        initial_events: bool,
        timeout: Duration,
    ) {
        let mut at = match start {
            Start::Expired(requested, current) => {
                let e = ApiError::resource_version_expired(format!(
                    "too old resource version: {requested} ({current})"
                ));
                let _ = self.send(watch::error(&e)).await;
                return;
            }
            Start::Added(mut objects, rv_ms) => {
                objects.sort_by_key(|o| key(&o.meta));
                for o in objects {
                    if self.in_scope(&o.meta)
                        && self.matches_labels(&o.meta.labels)
                        && !self.send_object(Kind::Added, &o, None).await
                    {
                        return;
                    }
                }
                if initial_events && !self.send(self.bookmark(rv_ms, true)).await {
                    return;
                }
                rv_ms
            }
            Start::Replay(ticks, rv_ms) => {
                for t in ticks {
                    if !self.send_tick(&t).await {
                        return;
                    }
                }
                rv_ms
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
        bookmarks.tick().await;
        let allow_bookmarks = self.opts.allow_watch_bookmarks;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = bookmarks.tick(), if allow_bookmarks => {
                    if !self.send(self.bookmark(at, false)).await {
                        return;
                    }
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = self.hub.lock().after(at);
                    let Some(ticks) = next else {
                        let e = ApiError::resource_version_expired(format!(
                            "too old resource version: {} (the watcher fell behind)",
                            resource_version(at)
                        ));
                        let _ = self.send(watch::error(&e)).await;
                        return;
                    };
                    for t in ticks {
                        at = t.rv_ms;
                        if !self.send_tick(&t).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// `pods` objects of `size` JSON bytes, all changed with every published version.
    struct Fake {
        rv: AtomicI64,
        pods: usize,
        size: usize,
    }

    impl WatchSource for Fake {
        fn published_at(&self) -> i64 {
            self.rv.load(Ordering::SeqCst)
        }
        fn scan(&self, visit: &mut dyn FnMut(u64, &dyn ApiObject)) -> i64 {
            let rv = self.published_at();
            for i in 0..self.pods {
                let o = WatchObject {
                    meta: ObjectMeta {
                        name: format!("p{i}"),
                        namespace: Some("ns".into()),
                        ..ObjectMeta::default()
                    },
                    json: format!("{{\"n\":\"{}\"}}", "x".repeat(self.size)).into_bytes(),
                    cells: Vec::new(),
                };
                visit(fingerprint((rv, i)), &o);
            }
            rv
        }
    }

    /// A hub over 10 objects of ~1 kB whose first state is published at 1000; `ticks` more
    /// versions (2000, 3000, ...) each change every object.
    fn hub(max_bytes: usize, ticks: i64) -> (Arc<Hub>, Arc<Fake>) {
        let src = Arc::new(Fake {
            rv: AtomicI64::new(1000),
            pods: 10,
            size: 1000,
        });
        let mut hub = Hub::new(src.clone(), &crate::groups::metrics::PODS);
        hub.max_bytes = max_bytes;
        let hub = Arc::new(hub);
        hub.refresh();
        hub.lock().history.clear();
        hub.lock().history_bytes = 0;
        for k in 2..=ticks + 1 {
            src.rv.store(k * 1000, Ordering::SeqCst);
            hub.refresh();
        }
        (hub, src)
    }

    #[test]
    fn history_is_bounded_by_ticks_and_by_bytes() {
        let (h, _) = hub(usize::MAX, 20);
        let tick_bytes = h.lock().history[0].bytes;
        assert!(tick_bytes > 10 * 2000, "{tick_bytes}");
        assert_eq!(h.lock().history.len(), HISTORY);
        // Room for three ticks: the oldest go, resuming from before them is refused, from the
        // oldest kept tick's start it replays every later tick.
        let (h, _) = hub(3 * tick_bytes + tick_bytes / 2, 8);
        let s = h.lock();
        assert_eq!(s.history.len(), 3);
        assert_eq!(s.history_bytes, 3 * tick_bytes);
        assert!(s.after(5000).is_none(), "tick 6000 is gone");
        let rvs: Vec<i64> = s.after(6000).unwrap().iter().map(|t| t.rv_ms).collect();
        assert_eq!(rvs, [7000, 8000, 9000]);
        assert!(s.after(9000).unwrap().is_empty());
        drop(s);
        // A budget below one tick still keeps the newest two.
        let (h, _) = hub(1, 8);
        assert_eq!(h.lock().history.len(), HISTORY_MIN);
    }

    #[tokio::test]
    async fn a_watch_from_a_tick_the_byte_bound_dropped_gets_410() {
        let (h, _) = hub(1, 8);
        h.started.get_or_init(|| ());
        let body = |rv: &str| {
            let opts = ListOptions {
                resource_version: Some(resource_version(rv.parse().unwrap())),
                timeout_seconds: Some(1),
                ..ListOptions::default()
            };
            let resp = h.watch(None, &opts, Some("application/json")).unwrap();
            async move {
                let b = resp.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8(b.to_vec()).unwrap()
            }
        };
        let expired = body("6000").await;
        assert!(
            expired.starts_with(r#"{"type":"ERROR""#) && expired.contains("410"),
            "{expired}"
        );
        // From the start of the oldest kept tick: both kept ticks, every object once each.
        let replay = body("7000").await;
        assert_eq!(
            replay.matches(r#"{"type":"MODIFIED""#).count(),
            20,
            "{replay}"
        );
    }

    #[test]
    fn resource_versions_carry_this_process_epoch() {
        let rv = resource_version(1_700_000_000_123);
        assert_eq!(parse_resource_version(&rv), Some(1_700_000_000_123));
        assert_eq!(parse_resource_version("1700000000123-00000000x"), None);
        assert_eq!(parse_resource_version("1700000000123"), None);
        assert_eq!(parse_resource_version("abc-def"), None);
    }
}
