//! Audit backends as upstream's `audit.Backend`: a backend takes events and says whether
//! every one was stored. The flags build, per plugin (`log`, `webhook`),
//! `truncate(mode(plugin))`, and the plugins are unioned, as
//! `k8s.io/apiserver/pkg/server/options/audit.go`.

use std::sync::Arc;

/// One audit event (an `audit.k8s.io/v1` `Event` object), shared by the backends.
pub type Event = Arc<serde_json::Value>;

/// Where audit events go.
pub trait Backend: Send + Sync {
    /// Stores `events`; `false` when any of them could not be stored (the plugin has
    /// counted and logged it).
    fn process(&self, events: &[Event]) -> bool;
    /// Stores `events` without waiting for the outcome (upstream's `AsyncDelegate`, used by
    /// batch mode for the webhook); [`Backend::shutdown`] waits for it. By default the
    /// same as [`Backend::process`].
    fn submit(&self, events: Vec<Event>) {
        self.process(&events);
    }
    /// Flushes what is buffered and stops; later events are still stored, synchronously.
    fn shutdown(&self) {}
}

/// How a plugin is driven (`--audit-<plugin>-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Events are queued on a bounded buffer and a background thread stores them.
    Batch,
    /// Each event is stored before the request goes on; failures are logged and counted.
    Blocking,
    /// As blocking, and a `RequestReceived` event that cannot be stored fails the request.
    BlockingStrict,
}

impl Mode {
    /// Parses `--audit-<plugin>-mode`.
    pub fn parse(plugin: &str, mode: &str) -> Result<Self, String> {
        match mode {
            "batch" => Ok(Mode::Batch),
            "blocking" => Ok(Mode::Blocking),
            "blocking-strict" => Ok(Mode::BlockingStrict),
            _ => Err(format!(
                "--audit-{plugin}-mode={mode:?}: known modes are batch,blocking,blocking-strict"
            )),
        }
    }
}

/// A backend that always reports success (`blocking` mode: a failed write is counted and
/// logged by the plugin but does not fail the request).
pub struct IgnoreErrors(pub Box<dyn Backend>);

impl Backend for IgnoreErrors {
    fn process(&self, events: &[Event]) -> bool {
        self.0.process(events);
        true
    }

    fn shutdown(&self) {
        self.0.shutdown();
    }
}

/// Every event to every backend (upstream's `audit.Union`); succeeds when all do.
pub struct Union(pub Vec<Box<dyn Backend>>);

impl Backend for Union {
    fn process(&self, events: &[Event]) -> bool {
        let mut ok = true;
        for b in &self.0 {
            ok &= b.process(events);
        }
        ok
    }

    fn shutdown(&self) {
        for b in &self.0 {
            b.shutdown();
        }
    }
}

/// `delegate` driven as `mode` says.
pub fn with_mode(
    mode: Mode,
    batch: &super::buffered::BatchConfig,
    delegate: Box<dyn Backend>,
) -> Box<dyn Backend> {
    match mode {
        Mode::BlockingStrict => delegate,
        Mode::Blocking => Box::new(IgnoreErrors(delegate)),
        Mode::Batch => Box::new(super::buffered::Buffered::start(delegate, batch.clone())),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Mutex;

    /// A backend that records what it is given and fails while `fail` is set.
    #[derive(Default)]
    pub struct Recorder {
        pub batches: Mutex<Vec<Vec<Event>>>,
        pub fail: std::sync::atomic::AtomicBool,
        pub delay: Mutex<std::time::Duration>,
    }

    impl Recorder {
        pub fn ids(&self) -> Vec<String> {
            let batches = self.batches.lock().unwrap();
            batches
                .iter()
                .flatten()
                .map(|e| e["auditID"].as_str().unwrap_or("").to_string())
                .collect()
        }
    }

    impl Backend for Arc<Recorder> {
        fn process(&self, events: &[Event]) -> bool {
            let delay = *self.delay.lock().unwrap();
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            self.batches.lock().unwrap().push(events.to_vec());
            !self.fail.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// An event with `id` and `level`.
    pub fn event(id: &str, level: &str) -> Event {
        Arc::new(serde_json::json!({"kind": "Event", "auditID": id, "level": level}))
    }

    #[test]
    fn union_and_ignore_errors_report_as_upstream() {
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        b.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let union = Union(vec![Box::new(a.clone()), Box::new(b.clone())]);
        assert!(!union.process(&[event("1", "Metadata")]), "one failed");
        assert_eq!(a.ids(), ["1"]);
        assert_eq!(b.ids(), ["1"], "the second still gets the event");
        let ignoring = IgnoreErrors(Box::new(b.clone()));
        assert!(ignoring.process(&[event("2", "Metadata")]));
        assert!(
            Mode::parse("log", "sync")
                .unwrap_err()
                .contains("--audit-log-mode")
        );
    }
}
