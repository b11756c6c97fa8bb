//! `/healthz`, `/livez` and `/readyz` with named checks and `?verbose`, as
//! kube-apiserver serves them.

use std::sync::Arc;

use http::{Response, StatusCode};

use crate::api::response::{Body, text};

/// A named health check: `Ok(())` when healthy, `Err(reason)` otherwise.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The checks behind each endpoint.
#[derive(Clone, Default)]
pub struct Health {
    /// Liveness checks (`/livez`, also part of `/healthz`).
    pub live: Vec<(String, Check)>,
    /// Readiness checks (`/readyz`, also part of `/healthz`).
    pub ready: Vec<(String, Check)>,
}

impl Health {
    /// Health with the always-passing `ping` check.
    pub fn new() -> Self {
        let ping: Check = Arc::new(|| Ok(()));
        Health {
            live: vec![("ping".into(), ping.clone())],
            ready: vec![("ping".into(), ping)],
        }
    }

    /// Adds a liveness check.
    pub fn add_live(&mut self, name: &str, check: Check) {
        self.live.push((name.to_string(), check));
    }

    /// Adds a readiness check.
    pub fn add_ready(&mut self, name: &str, check: Check) {
        self.ready.push((name.to_string(), check));
    }

    /// Serves `/<endpoint>[/<check>]` with an optional `verbose` query.
    pub fn serve(&self, path: &str, verbose: bool, exclude: &[String]) -> Option<Response<Body>> {
        let trimmed = path.trim_start_matches('/');
        let (endpoint, single) = match trimmed.split_once('/') {
            Some((e, c)) => (e, Some(c)),
            None => (trimmed, None),
        };
        let checks: Vec<&(String, Check)> = match endpoint {
            "livez" => self.live.iter().collect(),
            "readyz" => self.ready.iter().collect(),
            // As in kube-apiserver, /healthz carries the liveness checks: a server that
            // is alive but still warming up must not be restarted.
            "healthz" => self.live.iter().collect(),
            _ => return None,
        };
        if let Some(name) = single {
            let (_, check) = checks.iter().find(|(n, _)| n == name)?;
            return Some(match check() {
                Ok(()) => text(StatusCode::OK, "ok"),
                Err(reason) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal server error: {reason}\n"),
                ),
            });
        }
        let mut report = String::new();
        let mut failed = false;
        for (name, check) in checks {
            if exclude.iter().any(|e| e == name) {
                report.push_str(&format!("[+]{name} excluded: ok\n"));
                continue;
            }
            match check() {
                Ok(()) => report.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => {
                    failed = true;
                    tracing::info!(check = %name, %reason, "{endpoint} check failed");
                    report.push_str(&format!("[-]{name} failed: reason withheld\n"));
                }
            }
        }
        Some(if failed {
            report.push_str(&format!("{endpoint} check failed\n"));
            text(StatusCode::INTERNAL_SERVER_ERROR, report)
        } else if verbose {
            report.push_str(&format!("{endpoint} check passed\n"));
            text(StatusCode::OK, report)
        } else {
            text(StatusCode::OK, "ok")
        })
    }
}
