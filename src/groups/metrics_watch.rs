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
//!   the response channel holds 16 chunks, a send blocked for 30 s ends the watch, and a
//!   watcher behind the retained history gets a 410 ERROR and is closed.
//! - A watcher sends whole events joined into chunks of up to 32 KiB (a tick, the initial
//!   ADDED list, a replay), not one item per event: the byte stream is the same, the channel
//!   sends, HTTP/2 DATA frames and TLS records are a few per tick. The hub writes a tick's
//!   lines once, already joined into chunks (each event's line is a slice of its chunk, so the
//!   history holds them once); a watcher that sees every event unchanged (JSON, all
//!   namespaces, no selectors) sends those chunks themselves, shared by refcount, so it costs
//!   no encoding or copying. A filtered watcher copies the lines it sends into private chunks:
//!   its channel then holds at most 16 × (32 KiB + one event) of its own.
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
use crate::api::watch_chunks::Chunker;

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
/// A watcher sends its events in chunks of whole events of at most this size (one larger
/// event is a chunk of its own).
const CHUNK_BYTES: usize = 32 << 10;
/// Chunks (or single bookmark and error events) a watcher's response channel holds. A
/// watcher's private bytes in it are at most `CHANNEL_CHUNKS` × ([`CHUNK_BYTES`] + its largest
/// event), 512 KiB plus a little for pods; a watcher that sends a tick's shared chunks adds
/// nothing (they are the history's bytes, counted there).
const CHANNEL_CHUNKS: usize = 16;

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
    /// The JSON watch line, written once (a slice of one of its tick's chunks).
    line: Bytes,
}

/// The events of one snapshot.
struct Tick {
    /// Published time of the snapshot the diff starts from.
    from_ms: i64,
    /// Published time of this snapshot.
    rv_ms: i64,
    events: Vec<Event>,
    /// Every event's line joined into chunks of [`CHUNK_BYTES`] (the events' lines are slices
    /// of them): what a watcher that sees every event unchanged sends, shared by all.
    chunks: Vec<Bytes>,
    /// What its events hold, estimated (the history's byte bound; the chunks are the lines).
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
        let mut pending = Vec::new();
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
                None => pending.push((Kind::Added, object.clone(), None)),
                Some((old_fp, old_obj)) if *old_fp != fp => pending.push((
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
            pending.push((Kind::Deleted, object, None));
        }
        let (events, chunks) = encode(pending);
        let bytes = events
            .iter()
            .map(|e| e.line.len() + e.object.json.len() + EVENT_OVERHEAD)
            .sum();
        let tick = Arc::new(Tick {
            from_ms: state.rv_ms,
            rv_ms,
            events,
            chunks,
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
        let (tx, resp) = watch::stream_with_capacity(CHANNEL_CHUNKS);
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

/// An event before encoding: its kind, object and the labels before a MODIFIED.
type Pending = (
    Kind,
    Arc<WatchObject>,
    Option<Arc<BTreeMap<String, String>>>,
);

/// Writes the events' JSON lines once, joined into chunks of [`CHUNK_BYTES`]; each event's
/// line is a slice of its chunk.
fn encode(pending: Vec<Pending>) -> (Vec<Event>, Vec<Bytes>) {
    let mut chunker = Chunker::new(CHUNK_BYTES);
    let mut chunks = Vec::new();
    // (chunk index, start, end) of every event's line.
    let mut spans = Vec::with_capacity(pending.len());
    for (kind, object, _) in &pending {
        let (done, start) = chunker.push_event(kind.as_str(), &object.json);
        chunks.extend(done);
        spans.push((chunks.len(), start, chunker.pending()));
    }
    chunks.extend(chunker.finish());
    let events = pending
        .into_iter()
        .zip(spans)
        .map(|((kind, object, old_labels), (i, start, end))| Event {
            kind,
            object,
            old_labels,
            line: chunks[i].slice(start..end),
        })
        .collect();
    (events, chunks)
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

    /// Whether this watcher sees every event of a tick as the hub encoded it (JSON, every
    /// namespace, no selectors, so no selector transitions either): it sends the tick's
    /// shared chunks.
    fn sees_all(&self) -> bool {
        matches!(self.output, Output::Json)
            && self.namespace.is_none()
            && self.opts.label_selector.is_empty()
            && self.opts.field_selector.is_empty()
    }

    /// Sends one item (a chunk of whole events, a bookmark, an error); false when the watch
    /// must end (client gone or not reading).
    async fn send(&self, item: Bytes) -> bool {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.tx.send(item)).await,
            Ok(Ok(()))
        )
    }

    /// Sends `chunk` if there is one; false when the watch must end.
    async fn send_some(&self, chunk: Option<Bytes>) -> bool {
        match chunk {
            Some(c) => self.send(c).await,
            None => true,
        }
    }

    /// Adds one event to `out`, sending the chunk it completes; false when the watch must end.
    async fn push_object(
        &self,
        out: &mut Chunker,
        kind: Kind,
        object: &WatchObject,
        shared: Option<&Bytes>,
    ) -> bool {
        let done = match (self.output, shared) {
            (Output::Json, Some(line)) => out.push_line(line),
            _ => {
                let mut encoded = Vec::with_capacity(object.json.len() + 256);
                write_event_object(
                    &mut encoded,
                    self.descriptor,
                    self.output,
                    object,
                    self.opts.include_object,
                    now_millis(),
                );
                out.push_event(kind.as_str(), &encoded).0
            }
        };
        self.send_some(done).await
    }

    /// Sends a tick's events as this watcher sees them, in chunks.
    async fn send_tick(&self, tick: &Tick) -> bool {
        if self.sees_all() {
            for c in &tick.chunks {
                if !self.send(c.clone()).await {
                    return false;
                }
            }
            return true;
        }
        let mut out = Chunker::new(CHUNK_BYTES);
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
                (true, true) => {
                    self.push_object(&mut out, e.kind, &e.object, Some(&e.line))
                        .await
                }
                (false, true) => {
                    self.push_object(&mut out, Kind::Added, &e.object, None)
                        .await
                }
                (true, false) => {
                    self.push_object(&mut out, Kind::Deleted, &e.object, None)
                        .await
                }
                (false, false) => true,
            };
            if !ok {
                return false;
            }
        }
        self.send_some(out.finish()).await
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
                let mut out = Chunker::new(CHUNK_BYTES);
                for o in objects {
                    if self.in_scope(&o.meta)
                        && self.matches_labels(&o.meta.labels)
                        && !self.push_object(&mut out, Kind::Added, &o, None).await
                    {
                        return;
                    }
                }
                if !self.send_some(out.finish()).await {
                    return;
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
        hub_of(10, 1000, max_bytes, ticks)
    }

    /// [`hub`] over `pods` objects of `size` bytes.
    fn hub_of(pods: usize, size: usize, max_bytes: usize, ticks: i64) -> (Arc<Hub>, Arc<Fake>) {
        let src = Arc::new(Fake {
            rv: AtomicI64::new(1000),
            pods,
            size,
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

    /// A source whose objects the test sets for each published version.
    #[derive(Default)]
    struct Scripted(Mutex<(i64, Vec<WatchObject>)>);

    impl WatchSource for Scripted {
        fn published_at(&self) -> i64 {
            self.0.lock().unwrap().0
        }
        fn scan(&self, visit: &mut dyn FnMut(u64, &dyn ApiObject)) -> i64 {
            let s = self.0.lock().unwrap();
            for o in &s.1 {
                visit(fingerprint((&o.json, &*o.meta.labels)), o);
            }
            s.0
        }
    }

    /// Pod `i` of namespace `a` (even) or `b` (odd) with label `app=<app>`, ~350 bytes of JSON
    /// that differ by `generation`.
    fn pod(i: usize, app: &str, generation: u32) -> WatchObject {
        let ns = if i.is_multiple_of(2) { "a" } else { "b" };
        WatchObject {
            meta: ObjectMeta {
                name: format!("p{i:03}"),
                namespace: Some(ns.into()),
                labels: Arc::new(BTreeMap::from([("app".to_string(), app.to_string())])),
                ..ObjectMeta::default()
            },
            json: format!(
                r#"{{"metadata":{{"name":"p{i:03}","namespace":"{ns}","labels":{{"app":"{app}"}}}},"generation":{generation},"pad":"{}"}}"#,
                "x".repeat(300)
            )
            .into_bytes(),
            cells: Vec::new(),
        }
    }

    /// A hub over [`Scripted`]: 200 pods at 1000 (the base); at 2000 every pod changes, pods
    /// 5–9 switch `app` (selector transitions both ways), pods 0–2 leave, 200–204 arrive; at
    /// 3000 pods 10–60 change and pod 12 switches `app` (x to y).
    fn scripted_hub() -> Arc<Hub> {
        let app = |i: usize, flip: bool| {
            if i.is_multiple_of(3) != flip {
                "x"
            } else {
                "y"
            }
        };
        let src = Arc::new(Scripted::default());
        *src.0.lock().unwrap() = (1000, (0..200).map(|i| pod(i, app(i, false), 1)).collect());
        let hub = Arc::new(Hub::new(src.clone(), &crate::groups::metrics::PODS));
        hub.started.get_or_init(|| ());
        hub.refresh();
        hub.lock().history.clear();
        hub.lock().history_bytes = 0;
        let flipped2 = |i: usize| (5..10).contains(&i);
        *src.0.lock().unwrap() = (
            2000,
            (3..205).map(|i| pod(i, app(i, flipped2(i)), 2)).collect(),
        );
        hub.refresh();
        *src.0.lock().unwrap() = (
            3000,
            (3..205)
                .map(|i| {
                    let g = if (10..=60).contains(&i) { 3 } else { 2 };
                    pod(i, app(i, flipped2(i) != (i == 12)), g)
                })
                .collect(),
        );
        hub.refresh();
        assert_eq!(hub.lock().history.len(), 2);
        hub
    }

    const JSON: &str = "application/json";
    const PARTIAL: &str = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io";

    fn watch_opts(rv: Option<&str>, labels: &str, timeout: u64) -> ListOptions {
        ListOptions {
            resource_version: rv.map(str::to_string),
            label_selector: crate::api::label_selector::LabelSelector::parse(labels).unwrap(),
            timeout_seconds: Some(timeout),
            ..ListOptions::default()
        }
    }

    /// Every data frame of a watch response, as sent.
    async fn frames(resp: http::Response<Body>) -> Vec<Bytes> {
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.extend(f.unwrap().into_data().ok());
        }
        out
    }

    /// A watcher as `Hub::watch` builds it (its channel unused), for the reference stream.
    fn watcher(h: &Arc<Hub>, ns: Option<&str>, opts: &ListOptions, accept: &str) -> Watcher {
        Watcher {
            hub: h.clone(),
            descriptor: h.descriptor,
            namespace: ns.map(str::to_string),
            opts: opts.clone(),
            output: negotiate(Some(accept), Target::Object, true).unwrap(),
            tx: watch::stream().0,
        }
    }

    /// The lines the watcher sent one by one before batching (one item per event): the
    /// reference stream for a tick.
    fn reference_tick(w: &Watcher, tick: &Tick) -> Vec<Bytes> {
        let mut out = Vec::new();
        for e in &tick.events {
            if !w.in_scope(&e.object.meta) {
                continue;
            }
            let now = w.matches_labels(&e.object.meta.labels);
            let before = match (&e.kind, &e.old_labels) {
                (Kind::Modified, Some(old)) => w.matches_labels(old),
                _ => now,
            };
            match (before, now) {
                (true, true) => out.push(reference_line(w, e.kind, &e.object, Some(&e.line))),
                (false, true) => out.push(reference_line(w, Kind::Added, &e.object, None)),
                (true, false) => out.push(reference_line(w, Kind::Deleted, &e.object, None)),
                (false, false) => {}
            }
        }
        out
    }

    fn reference_line(w: &Watcher, kind: Kind, o: &WatchObject, shared: Option<&Bytes>) -> Bytes {
        if let (Output::Json, Some(line)) = (w.output, shared) {
            return line.clone();
        }
        let mut encoded = Vec::new();
        write_event_object(
            &mut encoded,
            w.descriptor,
            w.output,
            o,
            w.opts.include_object,
            0,
        );
        watch::event(kind.as_str(), &encoded)
    }

    /// The initial ADDED lines one by one, as before batching.
    fn reference_added(w: &Watcher, h: &Hub) -> Vec<Bytes> {
        let mut objects: Vec<_> = h.lock().objects.values().map(|(_, o)| o.clone()).collect();
        objects.sort_by_key(|o| key(&o.meta));
        objects
            .iter()
            .filter(|o| w.in_scope(&o.meta) && w.matches_labels(&o.meta.labels))
            .map(|o| reference_line(w, Kind::Added, o, None))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn batched_bodies_equal_the_event_by_event_stream() {
        let h = scripted_hub();
        let ticks: Vec<Arc<Tick>> = h.lock().history.iter().cloned().collect();
        let kinds = |lines: &[Bytes], k: &str| {
            let k = format!(r#"{{"type":"{k}""#);
            lines.iter().filter(|l| l.starts_with(k.as_bytes())).count()
        };
        let from = resource_version(1000);
        for (ns, labels, accept) in [
            (None, "", JSON),
            (Some("a"), "app=x", JSON),
            (None, "app=y", JSON),
            (Some("b"), "", JSON),
            (None, "", PARTIAL),
        ] {
            for rv in [Some(from.as_str()), None] {
                let opts = watch_opts(rv, labels, 1);
                let w = watcher(&h, ns, &opts, accept);
                let lines: Vec<Bytes> = match rv {
                    Some(_) => ticks.iter().flat_map(|t| reference_tick(&w, t)).collect(),
                    None => reference_added(&w, &h),
                };
                let case = format!("ns {ns:?} labels {labels:?} {accept} rv {rv:?}");
                if rv.is_some() {
                    for k in ["MODIFIED", "ADDED", "DELETED"] {
                        assert!(kinds(&lines, k) > 0, "{case}: no {k}");
                    }
                }
                let got = frames(h.watch(ns, &opts, Some(accept)).unwrap()).await;
                assert_eq!(got.concat(), lines.concat(), "{case}");
                // Whole events only, a few chunks rather than one item per event.
                for f in &got {
                    assert!(
                        f.starts_with(br#"{"type":""#) && f.ends_with(b"\n"),
                        "{case}"
                    );
                    assert!(f.len() <= CHUNK_BYTES, "{case}: {}", f.len());
                }
                assert!(
                    got.len() * 8 <= lines.len(),
                    "{case}: {} items for {} events",
                    got.len(),
                    lines.len()
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_that_see_everything_share_the_ticks_chunks() {
        let h = scripted_hub();
        let ticks: Vec<Arc<Tick>> = h.lock().history.iter().cloned().collect();
        for t in &ticks {
            // The lines are slices of the chunks, which hold nothing else: the history's byte
            // bound counts them once.
            let lines: Vec<u8> = t.events.iter().flat_map(|e| e.line.to_vec()).collect();
            assert_eq!(t.chunks.concat(), lines);
            for e in &t.events {
                let inside = t.chunks.iter().any(|c| {
                    let r = c.as_ptr_range();
                    r.start <= e.line.as_ptr() && e.line.as_ptr_range().end <= r.end
                });
                assert!(inside, "a line outside its tick's chunks");
            }
            assert!(t.bytes > t.chunks.iter().map(Bytes::len).sum::<usize>());
        }
        assert!(ticks[0].chunks.len() > 1, "tick 2000 is ~75 kB");
        let want: Vec<*const u8> = ticks
            .iter()
            .flat_map(|t| t.chunks.iter().map(|c| c.as_ptr()))
            .collect();
        let opts = watch_opts(Some(&resource_version(1000)), "", 1);
        let (a, b) = tokio::join!(
            frames(h.watch(None, &opts, Some(JSON)).unwrap()),
            frames(h.watch(None, &opts, Some(JSON)).unwrap())
        );
        let ptrs = |f: &[Bytes]| f.iter().map(|c| c.as_ptr()).collect::<Vec<_>>();
        assert_eq!(ptrs(&a), want);
        assert_eq!(ptrs(&b), want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_stops_reading_is_cut_off() {
        // One tick of 1,000 events of ~1 kB: ~30 chunks, more than the channel holds.
        let (h, _) = hub_of(1000, 1000, usize::MAX, 1);
        h.started.get_or_init(|| ());
        let tick_bytes: usize = h.lock().history[0].chunks.iter().map(Bytes::len).sum();
        let line = h.lock().history[0].events[0].line.len();
        let opts = watch_opts(Some(&resource_version(1000)), "", 3600);
        // Shared chunks, and private ones (a namespace: every pod is in it, but filtered).
        let shared = h.watch(None, &opts, Some(JSON)).unwrap();
        let private = h.watch(Some("ns"), &opts, Some(JSON)).unwrap();
        tokio::time::sleep(SEND_TIMEOUT + Duration::from_secs(1)).await;
        for resp in [shared, private] {
            let got = tokio::time::timeout(Duration::from_secs(1), frames(resp))
                .await
                .expect("the watch ended");
            let got: usize = got.iter().map(Bytes::len).sum();
            assert!(got < tick_bytes, "{got} of {tick_bytes}");
            assert!(got <= CHANNEL_CHUNKS * (CHUNK_BYTES + line), "{got}");
        }
    }
}
