//! The served set of DataRecords: merges every source, keeps the last good result of
//! a failing source, and publishes immutable sorted snapshots with resourceVersions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, broadcast};

use super::types::DataRecord;
use super::{RecordSource, RecordsError};

/// One served record with its pre-rendered JSON.
#[derive(Debug)]
pub struct StoredRecord {
    /// The record.
    pub record: DataRecord,
    /// Its JSON form.
    pub json: Vec<u8>,
}

impl StoredRecord {
    /// Renders the record's JSON once.
    pub fn new(record: DataRecord) -> Self {
        let json = serde_json::to_vec(&record).expect("DataRecord serialises");
        StoredRecord { record, json }
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
    /// The list resourceVersion the change produced.
    pub resource_version: u64,
    /// The record (its last state for a deletion).
    pub record: Arc<StoredRecord>,
}

/// How many past events a watch can resume from.
const HISTORY: usize = 1024;

/// An immutable, sorted (namespace, name) view of all records.
#[derive(Debug, Default)]
pub struct RecordsSnapshot {
    /// The list resourceVersion.
    pub resource_version: String,
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
    version: u64,
    /// Last good output of each source (by source index).
    last_good: Vec<Option<Vec<DataRecord>>>,
    /// (namespace, name) → (record, its resourceVersion).
    current: HashMap<(String, String), (DataRecord, u64)>,
}

/// Every record source, merged and published.
pub struct RecordSet {
    sources: Vec<Box<dyn RecordSource>>,
    snapshot: ArcSwap<RecordsSnapshot>,
    state: Mutex<State>,
    events: broadcast::Sender<RecordEvent>,
    history: std::sync::Mutex<VecDeque<RecordEvent>>,
    /// True once every source has loaded successfully at least once.
    loaded: std::sync::atomic::AtomicBool,
}

impl RecordSet {
    /// A set over `sources`; nothing is served until [`RecordSet::refresh`] runs.
    pub fn new(sources: Vec<Box<dyn RecordSource>>) -> Self {
        let n = sources.len();
        RecordSet {
            sources,
            snapshot: ArcSwap::from_pointee(RecordsSnapshot {
                resource_version: "1".into(),
                records: Vec::new(),
            }),
            state: Mutex::new(State {
                version: 1,
                last_good: vec![None; n],
                current: HashMap::new(),
            }),
            events: broadcast::channel(HISTORY).0,
            history: std::sync::Mutex::new(VecDeque::new()),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<RecordsSnapshot> {
        self.snapshot.load_full()
    }

    /// Loads every source once. A source that fails keeps serving its last good
    /// records; the errors are returned so start-up can refuse a bad file.
    pub async fn refresh(&self) -> Vec<RecordsError> {
        let mut errors = Vec::new();
        let mut state = self.state.lock().await;
        for (i, source) in self.sources.iter().enumerate() {
            match source.load().await {
                Ok(records) => state.last_good[i] = Some(records),
                Err(e) => errors.push(e),
            }
        }
        let merged: Vec<DataRecord> = state
            .last_good
            .iter()
            .flatten()
            .flat_map(|records| records.iter().cloned())
            .collect();
        self.publish(&mut state, merged);
        if state.last_good.iter().all(Option::is_some) {
            self.loaded
                .store(true, std::sync::atomic::Ordering::Release);
        }
        errors
    }

    /// True once every source has produced its records at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    fn publish(&self, state: &mut State, merged: Vec<DataRecord>) {
        let next_version = state.version + 1;
        let mut events: Vec<RecordEvent> = Vec::new();
        let mut next: HashMap<(String, String), (DataRecord, u64)> = HashMap::new();
        for mut record in merged {
            let key = (record.namespace().to_string(), record.metadata.name.clone());
            if next.contains_key(&key) {
                tracing::warn!(namespace = %key.0, name = %key.1, "two record sources produced the same record; keeping the first");
                continue;
            }
            let kind = match state.current.get(&key) {
                Some((old, v)) if same_content(old, &record) => {
                    // Unchanged: keep the old timestamps and resourceVersion.
                    next.insert(key, (old.clone(), *v));
                    continue;
                }
                Some(_) => EventType::Modified,
                None => EventType::Added,
            };
            record.metadata.resource_version = Some(next_version.to_string());
            events.push(RecordEvent {
                kind,
                resource_version: next_version,
                record: Arc::new(StoredRecord::new(record.clone())),
            });
            next.insert(key, (record, next_version));
        }
        for (key, (old, _)) in &state.current {
            if !next.contains_key(key) {
                let mut gone = old.clone();
                gone.metadata.resource_version = Some(next_version.to_string());
                events.push(RecordEvent {
                    kind: EventType::Deleted,
                    resource_version: next_version,
                    record: Arc::new(StoredRecord::new(gone)),
                });
            }
        }
        if events.is_empty() {
            return;
        }
        state.version = next_version;
        let mut records: Vec<Arc<StoredRecord>> = next
            .values()
            .map(|(record, _)| Arc::new(StoredRecord::new(record.clone())))
            .collect();
        records.sort_by(|a, b| {
            (a.record.namespace(), a.record.metadata.name.as_str())
                .cmp(&(b.record.namespace(), b.record.metadata.name.as_str()))
        });
        state.current = next;
        self.snapshot.store(Arc::new(RecordsSnapshot {
            resource_version: state.version.to_string(),
            records,
        }));
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(e.clone());
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(e);
        }
    }

    /// Subscribes to changes, and returns the events after `resource_version` that
    /// are still in the history (`None` when it is too old to replay).
    pub fn watch_from(
        &self,
        resource_version: u64,
    ) -> (broadcast::Receiver<RecordEvent>, Option<Vec<RecordEvent>>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.events.subscribe();
        let oldest_known = history
            .front()
            .map(|e| e.resource_version.saturating_sub(1))
            .unwrap_or_else(|| self.snapshot().resource_version.parse().unwrap_or(0));
        if resource_version < oldest_known {
            return (rx, None);
        }
        let replay = history
            .iter()
            .filter(|e| e.resource_version > resource_version)
            .cloned()
            .collect();
        (rx, Some(replay))
    }

    /// Subscribes to changes after the current snapshot.
    pub fn subscribe(&self) -> (broadcast::Receiver<RecordEvent>, Arc<RecordsSnapshot>) {
        let _history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (self.events.subscribe(), self.snapshot())
    }

    /// Re-reads every source every `interval` until the task is dropped.
    pub async fn run_refresh(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            for e in self.refresh().await {
                tracing::error!(error = %e, "records refresh failed; serving the last good records");
            }
        }
    }
}

/// True when two loads of a record carry the same content (timestamps aside).
fn same_content(a: &DataRecord, b: &DataRecord) -> bool {
    a.spec == b.spec
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations == b.metadata.annotations
        && a.status.as_ref().map(|s| &s.sync_status) == b.status.as_ref().map(|s| &s.sync_status)
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
        let set = RecordSet::new(vec![Box::new(FileSource::new(path.clone()))]);
        assert!(!set.loaded());
        assert!(set.refresh().await.is_empty());
        assert!(set.loaded());
        let s1 = set.snapshot();
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
        assert_ne!(s2.resource_version, s1.resource_version);
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
        assert_ne!(
            a.record.metadata.resource_version.as_deref(),
            Some(s2.resource_version.as_str())
        );
    }
}
