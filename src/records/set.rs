//! The served set of DataRecords: merges every source in order (the earlier source wins a
//! name), keeps the last good result of a failing source, and publishes immutable sorted
//! snapshots with resourceVersions of this process's epoch (see [`super::version`]).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast;

use super::merge::{Key, SourceRecords, conflicts_of, winner};
use super::types::DataRecord;
use super::version::{self, Epoch, Position};
use super::{RecordSource, RecordsError};
use crate::api::status::ApiError;

/// One served record with its pre-rendered JSON.
#[derive(Debug)]
pub struct StoredRecord {
    /// The record.
    pub record: DataRecord,
    /// Its JSON form.
    pub json: Vec<u8>,
    /// The index (in the record set) of the source that produced it; 0 outside a set.
    pub source: usize,
}

impl StoredRecord {
    /// Renders the record's JSON once.
    pub fn new(record: DataRecord) -> Self {
        Self::from_source(record, 0)
    }

    /// Renders the record's JSON once, remembering which source of the set produced it.
    pub fn from_source(record: DataRecord, source: usize) -> Self {
        let json = serde_json::to_vec(&record).expect("DataRecord serialises");
        StoredRecord {
            record,
            json,
            source,
        }
    }

    /// This record's last state, stamped with another resourceVersion (a DELETED event
    /// carries the event's version, as kube-apiserver's watch cache does).
    pub fn restamped(&self, resource_version: &str) -> StoredRecord {
        let mut record = self.record.clone();
        record.metadata.resource_version = Some(resource_version.to_string());
        StoredRecord::from_source(record, self.source)
    }
}

/// How a record changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// A new record.
    Added,
    /// A record whose content changed.
    Modified,
    /// A record that is gone (the event carries its last state).
    Deleted,
}

impl EventType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to the record set.
#[derive(Clone, Debug)]
pub struct RecordEvent {
    /// What happened.
    pub kind: EventType,
    /// The counter value the change produced (the version is `<epoch>.<seq>`).
    pub seq: u64,
    /// The record (its last state, stamped with this event's version, for a deletion).
    pub record: Arc<StoredRecord>,
    /// For a modification, the state before it (with its own older version): a watch
    /// with a selector needs it to turn a change that leaves the selector into DELETED.
    pub previous: Option<Arc<StoredRecord>>,
}

/// How many past events a watch can resume from.
const HISTORY: usize = 16 * 1024;
/// How many past snapshots are kept (pages of a list at an older version, watchers that
/// merge the set with another stream).
const RECENT_SNAPSHOTS: usize = 32;

/// An immutable, sorted (namespace, name) view of all records.
#[derive(Debug, Default)]
pub struct RecordsSnapshot {
    /// The list resourceVersion (`<epoch>.<seq>`).
    pub resource_version: String,
    /// The counter value of this snapshot.
    pub seq: u64,
    /// Records sorted by (namespace, name).
    pub records: Vec<Arc<StoredRecord>>,
}

impl RecordsSnapshot {
    /// Index of the first record at or after `(namespace, name)`.
    pub fn lower_bound(&self, namespace: &str, name: &str) -> usize {
        self.records.partition_point(|r| {
            (r.record.namespace(), r.record.metadata.name.as_str()) < (namespace, name)
        })
    }
}

struct State {
    seq: u64,
    /// Last good output of each source (by source index).
    last_good: Vec<Option<SourceRecords>>,
    /// (namespace, name) → the served record, in the snapshot's order.
    current: BTreeMap<Key, Arc<StoredRecord>>,
    /// Name conflicts seen in the last merge: (namespace, name, losing source index).
    conflicts: BTreeSet<(String, String, usize)>,
}

struct History {
    events: VecDeque<RecordEvent>,
    /// Every event with a counter above this one is still in `events`.
    floor: u64,
}

/// Every record source, merged and published.
pub struct RecordSet {
    epoch: Epoch,
    sources: Vec<Arc<dyn RecordSource>>,
    snapshot: ArcSwap<RecordsSnapshot>,
    /// The last [`RECENT_SNAPSHOTS`] snapshots, oldest first.
    recent: Mutex<VecDeque<Arc<RecordsSnapshot>>>,
    state: Mutex<State>,
    events: broadcast::Sender<RecordEvent>,
    history: Mutex<History>,
    /// True once every source has loaded successfully at least once.
    loaded: AtomicBool,
    conflicts_seen: AtomicU64,
    conflict_counter: OnceLock<Counter>,
}

impl RecordSet {
    /// A set over `sources` (earlier sources win a name) with a random epoch; nothing is
    /// served until [`RecordSet::refresh`] runs.
    pub fn new(sources: Vec<Box<dyn RecordSource>>) -> Self {
        Self::with_epoch(sources, Epoch::random())
    }

    /// A set with a given epoch (tests).
    pub fn with_epoch(sources: Vec<Box<dyn RecordSource>>, epoch: Epoch) -> Self {
        let n = sources.len();
        RecordSet {
            epoch,
            sources: sources.into_iter().map(Arc::from).collect(),
            snapshot: ArcSwap::from_pointee(RecordsSnapshot {
                resource_version: epoch.version(0),
                seq: 0,
                records: Vec::new(),
            }),
            recent: Mutex::new(VecDeque::new()),
            state: Mutex::new(State {
                seq: 0,
                last_good: (0..n).map(|_| None).collect(),
                current: BTreeMap::new(),
                conflicts: BTreeSet::new(),
            }),
            events: broadcast::channel(HISTORY).0,
            history: Mutex::new(History {
                events: VecDeque::new(),
                floor: 0,
            }),
            loaded: AtomicBool::new(false),
            conflicts_seen: AtomicU64::new(0),
            conflict_counter: OnceLock::new(),
        }
    }

    /// This process's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The names of the sources, in order.
    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name()).collect()
    }

    /// Counts name conflicts (also those seen before this call) in `counter`.
    pub fn count_conflicts_in(&self, counter: Counter) {
        counter.inc_by(self.conflicts_seen.load(Ordering::Acquire));
        let _ = self.conflict_counter.set(counter);
    }

    /// How many name conflicts have started since start-up.
    pub fn conflicts_seen(&self) -> u64 {
        self.conflicts_seen.load(Ordering::Acquire)
    }

    /// Counts a name conflict found outside the set (between one of its records and
    /// another component of a union); the caller logs it, once.
    pub fn note_conflict(&self) {
        self.conflicts_seen.fetch_add(1, Ordering::AcqRel);
        if let Some(c) = self.conflict_counter.get() {
            c.inc();
        }
    }

    /// The snapshot of counter value `seq`, while it is one of the last few published
    /// (`None` once it is gone, or for a counter never published).
    pub fn snapshot_at(&self, seq: u64) -> Option<Arc<RecordsSnapshot>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot();
        if current.seq == seq {
            return Some(current);
        }
        recent.iter().find(|s| s.seq == seq).cloned()
    }

    /// The events after counter value `seq`, whole publishes only (`None` when some
    /// left the history).
    pub fn history_after(&self, seq: u64) -> Option<Vec<RecordEvent>> {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if seq < history.floor {
            return None;
        }
        Some(
            history
                .events
                .iter()
                .filter(|e| e.seq > seq)
                .cloned()
                .collect(),
        )
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<RecordsSnapshot> {
        self.snapshot.load_full()
    }

    /// Judges a requested resourceVersion against the current state (see
    /// [`super::version`]).
    pub fn judge(&self, resource_version: &str) -> Result<Position, ApiError> {
        version::judge(resource_version, self.epoch, self.snapshot().seq)
    }

    /// Loads every source once. A source that fails keeps serving its last good
    /// records; the errors are returned so start-up can refuse a bad file.
    pub async fn refresh(&self) -> Vec<RecordsError> {
        let mut errors = Vec::new();
        let mut results = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            results.push(source.load().await);
        }
        let mut state = self.lock_state();
        let mut affected = HashSet::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(records) => replace(&mut state, i, records, &mut affected),
                Err(e) => errors.push(e),
            }
        }
        self.merge_and_publish(&mut state, affected);
        errors
    }

    /// Loads one source and publishes the result (a failure keeps its last good records).
    pub async fn refresh_source(&self, index: usize) -> Result<(), RecordsError> {
        let Some(source) = self.sources.get(index) else {
            return Ok(());
        };
        let records = source.load().await?;
        let mut state = self.lock_state();
        let mut affected = HashSet::new();
        replace(&mut state, index, records, &mut affected);
        self.merge_and_publish(&mut state, affected);
        Ok(())
    }

    /// True once every source has produced its records at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes what changed for the `affected` keys (those the replaced sources had or
    /// have now): every other key's winner and record are as they were, so they are not
    /// looked at. Gives exactly the events and snapshot of a full re-merge of every source
    /// (see `merge_tests`): additions and modifications in merge order (source order, then
    /// load order), then deletions in key order.
    fn merge_and_publish(&self, state: &mut State, affected: HashSet<Key>) {
        self.update_conflicts(state, &affected);
        self.publish(state, affected);
        if state.last_good.iter().all(Option::is_some) {
            self.loaded.store(true, Ordering::Release);
        }
    }

    /// Replaces the conflicts of the `affected` keys, logging and counting the new ones.
    fn update_conflicts(&self, state: &mut State, affected: &HashSet<Key>) {
        let mut now = BTreeSet::new();
        for key in affected {
            conflicts_of(&state.last_good, key, &mut now);
        }
        // The affected keys' conflicts of the last publish (conflicts are rare: a clone each).
        let mut before = BTreeSet::new();
        if !state.conflicts.is_empty() {
            state.conflicts.retain(|c| {
                let hit = affected.contains(&(c.0.clone(), c.1.clone()));
                if hit {
                    before.insert(c.clone());
                }
                !hit
            });
        }
        for (ns, name, loser) in now.difference(&before) {
            let key = (ns.clone(), name.clone());
            let served = winner(&state.last_good, &key).map_or(0, |w| w.0);
            tracing::warn!(
                namespace = %ns,
                name = %name,
                served_from = %self.sources[served].name(),
                ignored_from = %self.sources[*loser].name(),
                "two record sources produce the same DataRecord; the earlier source in the configuration wins"
            );
            self.conflicts_seen.fetch_add(1, Ordering::AcqRel);
            if let Some(c) = self.conflict_counter.get() {
                c.inc();
            }
        }
        state.conflicts.extend(now);
    }

    fn publish(&self, state: &mut State, affected: HashSet<Key>) {
        let seq = state.seq + 1;
        let rv = self.epoch.version(seq);
        // (merge order, key, new record, event type, previous record)
        let mut changed = Vec::new();
        let mut deleted: Vec<(Key, Arc<StoredRecord>)> = Vec::new();
        for key in affected {
            let previous = state.current.get(&key);
            let Some((source, pos, record)) = winner(&state.last_good, &key) else {
                if let Some(old) = previous {
                    deleted.push((key, old.clone()));
                }
                continue;
            };
            let kind = match previous {
                Some(old)
                    if old.source == source
                        && same_content(&old.record, record)
                        && (!self.sources[source].sync_time_is_content()
                            || sync_time(&old.record) == sync_time(record)) =>
                {
                    // Unchanged: keep the old timestamps and resourceVersion.
                    continue;
                }
                Some(_) => EventType::Modified,
                None => EventType::Added,
            };
            let mut record = record.clone();
            if let Some(created) = previous.and_then(|p| p.record.metadata.creation_timestamp) {
                // A record keeps its creation time across changes (it is immutable).
                record.metadata.creation_timestamp = Some(created);
            }
            record.metadata.resource_version = Some(rv.clone());
            let stored = Arc::new(StoredRecord::from_source(record, source));
            changed.push(((source, pos), key, stored, kind, previous.cloned()));
        }
        if changed.is_empty() && deleted.is_empty() {
            return;
        }
        changed.sort_by_key(|c| c.0);
        deleted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut events: Vec<RecordEvent> = Vec::with_capacity(changed.len() + deleted.len());
        for (_, key, stored, kind, previous) in changed {
            events.push(RecordEvent {
                kind,
                seq,
                record: stored.clone(),
                previous,
            });
            state.current.insert(key, stored);
        }
        for (key, old) in deleted {
            events.push(RecordEvent {
                kind: EventType::Deleted,
                seq,
                record: Arc::new(old.restamped(&rv)),
                previous: None,
            });
            state.current.remove(&key);
        }
        state.seq = seq;
        // Sorted by (namespace, name): the map's order.
        let records: Vec<Arc<StoredRecord>> = state.current.values().cloned().collect();
        {
            // Under the lock, so `snapshot_at` always finds the one just replaced.
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT_SNAPSHOTS {
                recent.pop_front();
            }
            recent.push_back(self.snapshot.load_full());
            self.snapshot.store(Arc::new(RecordsSnapshot {
                resource_version: rv,
                seq,
                records,
            }));
        }
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        for e in events {
            if history.events.len() == HISTORY
                && let Some(dropped) = history.events.pop_front()
            {
                history.floor = history.floor.max(dropped.seq);
            }
            history.events.push_back(e.clone());
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(e);
        }
    }

    /// Subscribes to changes, and returns the events after counter value `seq` that
    /// are still in the history (`None` when some of them are gone: 410 for the client).
    pub fn watch_from(
        &self,
        seq: u64,
    ) -> (broadcast::Receiver<RecordEvent>, Option<Vec<RecordEvent>>) {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = self.events.subscribe();
        if seq < history.floor {
            return (rx, None);
        }
        let replay = history
            .events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect();
        (rx, Some(replay))
    }

    /// Subscribes to changes after the current snapshot.
    pub fn subscribe(&self) -> (broadcast::Receiver<RecordEvent>, Arc<RecordsSnapshot>) {
        let _history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        (self.events.subscribe(), self.snapshot())
    }

    /// Keeps every source current until the task is dropped: each source is re-read
    /// every `default_interval` (or its own interval), and a push source also as soon
    /// as it signals a change.
    pub async fn run_refresh(self: Arc<Self>, default_interval: Duration) {
        let tasks: Vec<_> = (0..self.sources.len())
            .map(|i| tokio::spawn(self.clone().run_source(i, default_interval)))
            .collect();
        // Aborts the per-source tasks when this future is dropped (task aborted).
        struct AbortAll(Vec<tokio::task::JoinHandle<()>>);
        impl Drop for AbortAll {
            fn drop(&mut self) {
                for t in &self.0 {
                    t.abort();
                }
            }
        }
        let tasks = AbortAll(tasks);
        std::future::pending::<()>().await;
        drop(tasks);
    }

    async fn run_source(self: Arc<Self>, index: usize, default_interval: Duration) {
        let source = self.sources[index].clone();
        let interval = source.refresh_interval().unwrap_or(default_interval);
        let mut changes = source.changes();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            match &mut changes {
                Some(rx) => {
                    tokio::select! {
                        _ = tick.tick() => {}
                        changed = rx.changed() => {
                            if changed.is_err() {
                                // The producer is gone: fall back to polling.
                                changes = None;
                                continue;
                            }
                        }
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            if let Err(e) = self.refresh_source(index).await {
                tracing::error!(source = %source.name(), error = %e, "records refresh failed; serving the last good records");
            }
        }
    }
}

/// Makes `records` source `index`'s last good load, adding to `affected` every key it had
/// before or has now.
fn replace(state: &mut State, index: usize, records: Vec<DataRecord>, affected: &mut HashSet<Key>) {
    let next = SourceRecords::new(records);
    affected.extend(next.keys().cloned());
    if let Some(old) = state.last_good[index].replace(next) {
        affected.extend(old.into_keys());
    }
}

/// True when two loads of a record carry the same content (timestamps aside).
fn same_content(a: &DataRecord, b: &DataRecord) -> bool {
    a.spec == b.spec
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations == b.metadata.annotations
        && a.metadata.uid == b.metadata.uid
        && a.status.as_ref().map(|s| (&s.sync_status, &s.conditions))
            == b.status.as_ref().map(|s| (&s.sync_status, &s.conditions))
}

fn sync_time(r: &DataRecord) -> Option<crate::api::time::Time> {
    r.status.as_ref().and_then(|s| s.last_sync_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::FileSource;

    #[tokio::test]
    async fn refresh_publishes_sorted_records_and_keeps_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "- metadata: {name: b}\n  spec: {source: s}\n- metadata: {name: a, namespace: x}\n  spec: {source: s}\n").unwrap();
        let set = RecordSet::with_epoch(
            vec![Box::new(FileSource::new(path.clone()))],
            Epoch::from_raw(0xabc),
        );
        assert!(!set.loaded());
        assert!(set.refresh().await.is_empty());
        assert!(set.loaded());
        let s1 = set.snapshot();
        assert_eq!(s1.resource_version, "000000000abc.1");
        let names: Vec<&str> = s1
            .records
            .iter()
            .map(|r| r.record.metadata.name.as_str())
            .collect();
        assert_eq!(names, vec!["b", "a"]);

        // Unchanged content: same resourceVersion.
        assert!(set.refresh().await.is_empty());
        assert_eq!(set.snapshot().resource_version, s1.resource_version);

        // A bad edit keeps the last good records and reports the error.
        std::fs::write(&path, "- nope").unwrap();
        let errors = set.refresh().await;
        assert_eq!(errors.len(), 1);
        assert_eq!(set.snapshot().records.len(), 2);

        // A real change bumps the list and the record's resourceVersion.
        std::fs::write(&path, "- metadata: {name: b}\n  spec: {source: changed}\n- metadata: {name: a, namespace: x}\n  spec: {source: s}\n").unwrap();
        assert!(set.refresh().await.is_empty());
        let s2 = set.snapshot();
        assert_eq!(s2.resource_version, "000000000abc.2");
        let b = s2
            .records
            .iter()
            .find(|r| r.record.metadata.name == "b")
            .unwrap();
        assert_eq!(
            b.record.metadata.resource_version.as_deref(),
            Some(s2.resource_version.as_str())
        );
        let a = s2
            .records
            .iter()
            .find(|r| r.record.metadata.name == "a")
            .unwrap();
        assert_eq!(
            a.record.metadata.resource_version.as_deref(),
            Some("000000000abc.1")
        );
    }

    /// Issue 13 §1.2: versions restarted at 1 in every process, so a version from another
    /// process (or from before a restart) was taken for one of ours.
    #[tokio::test]
    async fn a_version_from_another_process_is_never_taken_for_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(&path, "- metadata: {name: a}\n  spec: {source: s}\n").unwrap();
        let first = RecordSet::new(vec![Box::new(FileSource::new(path.clone()))]);
        let second = RecordSet::new(vec![Box::new(FileSource::new(path.clone()))]);
        assert!(first.refresh().await.is_empty());
        assert!(second.refresh().await.is_empty());
        let rv = first.snapshot().resource_version.clone();
        assert_ne!(rv, second.snapshot().resource_version);
        assert_eq!(first.judge(&rv).unwrap(), Position::Known(1));
        let e = second.judge(&rv).unwrap_err();
        assert_eq!((e.code, e.reason), (410, "Expired"));
        // From this process's future.
        let future = first.epoch().version(2);
        let e = first.judge(&future).unwrap_err();
        assert_eq!((e.code, e.reason), (504, "Timeout"));
    }

    #[tokio::test]
    async fn history_floor_covers_whole_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        let mut text = String::new();
        for i in 0..HISTORY + 10 {
            text.push_str(&format!(
                "- metadata: {{name: r{i}}}\n  spec: {{source: s}}\n"
            ));
        }
        std::fs::write(&path, &text).unwrap();
        let set = RecordSet::new(vec![Box::new(FileSource::new(path.clone()))]);
        assert!(set.refresh().await.is_empty());
        // Publish 1 had more events than the history holds: it cannot be replayed whole.
        assert!(set.watch_from(0).1.is_none());
        assert_eq!(set.watch_from(1).1.map(|r| r.len()), Some(0));
        std::fs::write(&path, "").unwrap();
        assert!(set.refresh().await.is_empty());
        // Publish 2 deleted everything: again more than the history.
        assert!(set.watch_from(1).1.is_none());
        assert_eq!(set.watch_from(2).1.map(|r| r.len()), Some(0));
    }

    struct Fixed(&'static str, Vec<(&'static str, &'static str)>);
    impl RecordSource for Fixed {
        fn name(&self) -> String {
            self.0.to_string()
        }
        fn load(&self) -> futures::future::BoxFuture<'_, Result<Vec<DataRecord>, RecordsError>> {
            let records = self
                .1
                .iter()
                .map(|(name, source)| DataRecord {
                    api_version: crate::records::types::API_VERSION.into(),
                    kind: crate::records::types::KIND.into(),
                    metadata: crate::api::meta::ObjectMeta {
                        name: name.to_string(),
                        namespace: Some("default".into()),
                        ..Default::default()
                    },
                    spec: crate::records::DataRecordSpec {
                        source: source.to_string(),
                        ..Default::default()
                    },
                    status: None,
                })
                .collect();
            Box::pin(async move { Ok(records) })
        }
    }

    #[tokio::test]
    async fn the_earlier_source_wins_a_name_and_the_conflict_is_counted_once() {
        let set = RecordSet::new(vec![
            Box::new(Fixed("first", vec![("same", "one"), ("a", "one")])),
            Box::new(Fixed("second", vec![("same", "two"), ("b", "two")])),
        ]);
        let counter = Counter::default();
        assert!(set.refresh().await.is_empty());
        set.count_conflicts_in(counter.clone());
        assert_eq!(counter.get(), 1);
        let rv = set.snapshot().resource_version.clone();
        for _ in 0..3 {
            assert!(set.refresh().await.is_empty());
        }
        let s = set.snapshot();
        assert_eq!(s.resource_version, rv, "no flapping between the two");
        let same = s
            .records
            .iter()
            .find(|r| r.record.metadata.name == "same")
            .unwrap();
        assert_eq!(same.record.spec.source, "one");
        assert_eq!(s.records.len(), 3);
        assert_eq!(counter.get(), 1, "counted once, not per refresh");
        assert_eq!(set.conflicts_seen(), 1);
    }
}

#[cfg(test)]
#[path = "set_merge_tests.rs"]
mod merge_tests;
