//! The `log` plugin: one JSON line per event on standard output (`--audit-log-path=-`) or
//! in a rotating file. A failed write is counted as `apiserver_audit_error_total{plugin="log"}`.

use std::io::Write;
use std::sync::Mutex;

use super::backend::{Backend, Event};
use super::rotate::RotatingFile;

/// The plugin name in error metrics.
const PLUGIN: &str = "log";

/// Where the lines go.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file rotated by size.
    File(RotatingFile),
}

/// The log plugin.
pub struct LogBackend {
    sink: Mutex<Sink>,
}

impl LogBackend {
    /// Writes to `sink`.
    pub fn new(sink: Sink) -> Self {
        LogBackend {
            sink: Mutex::new(sink),
        }
    }
}

impl Backend for LogBackend {
    fn process(&self, events: &[Event]) -> bool {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let mut ok = true;
        for e in events {
            let mut line = serde_json::to_vec(&**e).unwrap_or_default();
            line.push(b'\n');
            let result = match &mut *sink {
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&line).and_then(|()| out.flush())
                }
                Sink::File(f) => f.write_line(&line),
            };
            if let Err(err) = result {
                super::metrics::plugin_error(PLUGIN, &err, std::slice::from_ref(e));
                ok = false;
            }
        }
        ok
    }

    fn shutdown(&self) {
        if let Sink::File(f) = &mut *self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            f.finish();
        }
    }
}
