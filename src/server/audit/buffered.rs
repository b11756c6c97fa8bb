//! Batch mode (upstream's `plugin/pkg/audit/buffered`): events go on a bounded buffer and
//! a background thread hands them to the plugin in batches of up to `max_batch_size`,
//! at least every `max_batch_wait`, at most `throttle` batches per second (the webhook's
//! batches are sent concurrently, each with its own retries, as upstream's
//! `AsyncDelegate`; the log's are written in turn). A full buffer
//! drops the event (`apiserver_audit_error_total{plugin="buffered"}`). Shutdown stores
//! everything still buffered; events that come after it are stored synchronously, so
//! none is lost.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::{Backend, Event};

/// The plugin name in error metrics.
const PLUGIN: &str = "buffered";

/// How often an idle worker looks at the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// `--audit-<plugin>-batch-*`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// Events buffered before new ones are dropped.
    pub buffer_size: usize,
    /// Most events in one batch.
    pub max_batch_size: usize,
    /// Longest a started batch waits to fill (zero: send what is there).
    pub max_batch_wait: Duration,
    /// Batches per second and burst, when throttling is on.
    pub throttle: Option<(f32, u32)>,
    /// Hand batches over without waiting for them to be stored (the webhook's batches
    /// are sent concurrently, as upstream's `AsyncDelegate`).
    pub async_delegate: bool,
}

impl BatchConfig {
    /// Checks the values as upstream's `validateBackendBatchOptions`.
    pub fn validate(&self, plugin: &str) -> Result<(), String> {
        if self.buffer_size == 0 {
            return Err(format!(
                "--audit-{plugin}-batch-buffer-size: must be a positive number"
            ));
        }
        if self.max_batch_size == 0 {
            return Err(format!(
                "--audit-{plugin}-batch-max-size: must be a positive number"
            ));
        }
        if let Some((qps, burst)) = self.throttle {
            if qps.is_nan() || qps <= 0.0 {
                return Err(format!(
                    "--audit-{plugin}-batch-throttle-qps {qps}: must be a positive number"
                ));
            }
            if burst == 0 {
                return Err(format!(
                    "--audit-{plugin}-batch-throttle-burst: must be a positive number"
                ));
            }
        }
        Ok(())
    }
}

/// The batching backend.
pub struct Buffered {
    tx: SyncSender<Event>,
    /// `true` once shut down; read-held while queueing so the final drain sees every
    /// queued event.
    stopped: Arc<RwLock<bool>>,
    delegate: Arc<dyn Backend>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Buffered {
    /// Starts the worker thread in front of `delegate`.
    pub fn start(delegate: Box<dyn Backend>, config: BatchConfig) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.buffer_size.max(1));
        let stopped = Arc::new(RwLock::new(false));
        let delegate: Arc<dyn Backend> = Arc::from(delegate);
        let worker = {
            let stopped = stopped.clone();
            let delegate = delegate.clone();
            std::thread::Builder::new()
                .name("audit-batch".into())
                .spawn(move || run(rx, &config, &*delegate, &stopped))
                .expect("spawning the audit batch thread")
        };
        Buffered {
            tx,
            stopped,
            delegate,
            worker: Mutex::new(Some(worker)),
        }
    }
}

impl Backend for Buffered {
    fn process(&self, events: &[Event]) -> bool {
        let stopped = self.stopped.read().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            drop(stopped);
            return self.delegate.process(events);
        }
        for (i, e) in events.iter().enumerate() {
            match self.tx.try_send(e.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    super::metrics::plugin_error(
                        PLUGIN,
                        &"audit buffer queue blocked",
                        &events[i..],
                    );
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => {
                    drop(stopped);
                    return self.delegate.process(&events[i..]);
                }
            }
        }
        true
    }

    fn shutdown(&self) {
        *self.stopped.write().unwrap_or_else(|e| e.into_inner()) = true;
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = worker {
            let _ = w.join();
        }
        self.delegate.shutdown();
    }
}

/// A token bucket of `qps` tokens a second, holding at most `burst`.
struct Throttle {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Throttle {
    fn new(qps: f32, burst: u32) -> Self {
        Throttle {
            qps: f64::from(qps),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    /// Waits for a token.
    fn accept(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.qps).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.qps;
            std::thread::sleep(Duration::from_secs_f64(wait));
            self.tokens = 1.0;
            self.at = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

fn run(rx: Receiver<Event>, config: &BatchConfig, delegate: &dyn Backend, stopped: &RwLock<bool>) {
    let mut throttle = config.throttle.map(|(q, b)| Throttle::new(q, b));
    let is_stopped = || *stopped.read().unwrap_or_else(|e| e.into_inner());
    let mut send = |batch: Vec<Event>| {
        if let Some(t) = throttle.as_mut() {
            t.accept();
        }
        if config.async_delegate {
            delegate.submit(batch);
        } else {
            delegate.process(&batch);
        }
    };
    loop {
        // The first event of a batch: wait for it, looking at the stop flag meanwhile.
        let first = match rx.recv_timeout(IDLE_POLL) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) if !is_stopped() => continue,
            Err(_) => break,
        };
        let deadline = Instant::now() + config.max_batch_wait;
        let mut batch = vec![first];
        while batch.len() < config.max_batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || is_stopped() {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
                continue;
            }
            // Short waits, so a stop is seen within IDLE_POLL even during a long max wait.
            match rx.recv_timeout(left.min(IDLE_POLL)) {
                Ok(e) => batch.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        send(batch);
    }
    // Stopped: every event queued before the flag was set is in the channel now.
    loop {
        let batch: Vec<Event> = rx.try_iter().take(config.max_batch_size).collect();
        if batch.is_empty() {
            break;
        }
        send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::testing::{Recorder, event};
    use super::*;

    fn config(buffer: usize, max: usize, wait_ms: u64) -> BatchConfig {
        BatchConfig {
            buffer_size: buffer,
            max_batch_size: max,
            max_batch_wait: Duration::from_millis(wait_ms),
            throttle: None,
            async_delegate: false,
        }
    }

    #[test]
    fn events_are_batched_up_to_max_size_and_all_flushed_at_shutdown() {
        let rec = Arc::new(Recorder::default());
        *rec.delay.lock().unwrap() = Duration::from_millis(20);
        let b = Buffered::start(Box::new(rec.clone()), config(1000, 3, 10_000));
        for i in 0..10 {
            assert!(b.process(&[event(&i.to_string(), "Metadata")]));
        }
        b.shutdown();
        let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(rec.ids(), want, "every event, in order");
        assert!(rec.batches.lock().unwrap().iter().all(|b| b.len() <= 3));
        // After shutdown events are stored synchronously.
        assert!(b.process(&[event("late", "Metadata")]));
        assert_eq!(rec.ids().last().unwrap(), "late");
    }

    #[test]
    fn shutdown_during_an_hours_wait_flushes_at_once() {
        let rec = Arc::new(Recorder::default());
        let b = Buffered::start(Box::new(rec.clone()), config(100, 1000, 3_600_000));
        b.process(&[event("a", "Metadata")]);
        std::thread::sleep(Duration::from_millis(150));
        assert!(rec.ids().is_empty(), "still waiting for the batch to fill");
        let start = Instant::now();
        b.shutdown();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(rec.ids(), ["a"]);
    }

    #[test]
    fn a_partial_batch_is_sent_after_max_wait() {
        let rec = Arc::new(Recorder::default());
        let b = Buffered::start(Box::new(rec.clone()), config(100, 400, 50));
        b.process(&[event("a", "Metadata"), event("b", "Metadata")]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while rec.ids().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rec.ids(), ["a", "b"], "sent without shutdown");
        assert_eq!(rec.batches.lock().unwrap().len(), 1, "as one batch");
        b.shutdown();
    }

    #[test]
    fn a_full_buffer_drops_with_an_error_count() {
        let rec = Arc::new(Recorder::default());
        *rec.delay.lock().unwrap() = Duration::from_millis(300);
        let b = Buffered::start(Box::new(rec.clone()), config(2, 1, 0));
        let before = super::super::metrics::errors_of(PLUGIN);
        for i in 0..20 {
            assert!(
                b.process(&[event(&i.to_string(), "Metadata")]),
                "batch mode never fails a request"
            );
        }
        let dropped = super::super::metrics::errors_of(PLUGIN) - before;
        b.shutdown();
        let stored = rec.ids().len() as u64;
        assert!(
            dropped > 0,
            "a 2-event buffer behind a slow writer overflows"
        );
        assert_eq!(stored + dropped, 20, "every event is stored or counted");
    }

    /// Counts how batches arrive: `process` (waited for) or `submit` (not waited for).
    #[derive(Default)]
    struct Ways {
        processed: std::sync::atomic::AtomicUsize,
        submitted: std::sync::atomic::AtomicUsize,
    }

    impl Backend for Arc<Ways> {
        fn process(&self, _: &[Event]) -> bool {
            self.processed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            true
        }

        fn submit(&self, _: Vec<Event>) {
            self.submitted
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn async_delegates_get_batches_without_waiting() {
        for async_delegate in [false, true] {
            let ways = Arc::new(Ways::default());
            let b = Buffered::start(
                Box::new(ways.clone()),
                BatchConfig {
                    async_delegate,
                    ..config(100, 1, 0)
                },
            );
            for i in 0..3 {
                b.process(&[event(&i.to_string(), "Metadata")]);
            }
            b.shutdown();
            let (p, s) = (
                ways.processed.load(std::sync::atomic::Ordering::SeqCst),
                ways.submitted.load(std::sync::atomic::Ordering::SeqCst),
            );
            assert_eq!((p, s), if async_delegate { (0, 3) } else { (3, 0) });
        }
    }

    #[test]
    fn the_throttle_spaces_batches() {
        let mut t = Throttle::new(20.0, 1);
        let start = Instant::now();
        for _ in 0..5 {
            t.accept();
        }
        // One token at once, then one every 50 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{:?}",
            start.elapsed()
        );
        let bad = BatchConfig {
            throttle: Some((0.0, 1)),
            ..config(1, 1, 0)
        };
        assert!(
            bad.validate("webhook")
                .unwrap_err()
                .contains("throttle-qps")
        );
        assert!(
            config(0, 1, 0)
                .validate("log")
                .unwrap_err()
                .contains("buffer-size")
        );
    }
}
