//! Audit logging as k8s.io/apiserver's: `--audit-policy-file` (an `audit.k8s.io/v1`
//! `Policy`, see [`policy`]) decides each request's level from the first matching rule;
//! each stage's `audit.k8s.io/v1` `Event` (`RequestReceived`, `ResponseStarted` for
//! watches, `ResponseComplete`, or `Panic`, minus the policy's `omitStages`) goes to the
//! plugins the flags enable, unioned as upstream:
//!
//! - `log` (`--audit-log-path`, a file or `-` for stdout): a JSON line per event, the
//!   file rotated as kube-apiserver's ([`rotate`], `--audit-log-compress` gzips old files);
//! - `webhook` (`--audit-webhook-config-file`): `EventList`s POSTed with retry and backoff
//!   ([`webhook`]).
//!
//! Each plugin runs in its mode ([`backend::Mode`]: `blocking`, `blocking-strict`, or
//! `batch` through [`buffered`]) behind optional truncation ([`truncate`]). Levels
//! `Request` and `RequestResponse` add `requestObject` (the request body, for requests
//! that carry one) and, for `RequestResponse`, `responseObject` (a JSON response body,
//! on `ResponseComplete`; never a watch's stream) — see [`event`]. Without a policy file
//! nothing is audited, as upstream. Self-metrics: [`metrics`].

pub mod args;
pub mod backend;
pub mod body;
pub mod buffered;
pub mod event;
pub mod log;
pub mod metrics;
pub mod policy;
pub mod rotate;
pub mod truncate;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;

pub use args::{AuditArgs, WebhookArgs};
pub use backend::{Backend, Event, Mode};
pub use event::{AuditEvent, AuditRequest, micro_time_now, new_audit_id};
pub use policy::{Level, Policy, Stage};

use crate::auth::UserInfo;

/// The audit machinery: the policy and the backends.
pub struct AuditLog {
    policy: Policy,
    backend: Box<dyn Backend>,
    /// The policy asks for `Request` or more somewhere: request bodies are read.
    bodies: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// A request refused because its `RequestReceived` event could not be stored
/// (`blocking-strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

fn check_version(flag: &str, version: &str) -> Result<(), String> {
    if version != "audit.k8s.io/v1" {
        return Err(format!(
            "--{flag}={version:?}: only \"audit.k8s.io/v1\" is supported"
        ));
    }
    Ok(())
}

/// `plugin` driven by its mode, batching and truncation flags.
fn wrap(
    plugin: &str,
    mode: Mode,
    batch: &buffered::BatchConfig,
    truncate: Option<truncate::TruncateConfig>,
    delegate: Box<dyn Backend>,
) -> Result<Box<dyn Backend>, String> {
    if mode == Mode::Batch {
        batch.validate(plugin)?;
    }
    if let Some(t) = &truncate {
        t.validate(plugin)?;
    }
    let backend = backend::with_mode(mode, batch, delegate);
    Ok(match truncate {
        Some(t) => Box::new(truncate::Truncate::new(backend, t)),
        None => backend,
    })
}

impl AuditLog {
    /// The machinery the flags ask for: `None` without a policy file or without any
    /// plugin (upstream audits nothing without a policy), an error for an unusable file,
    /// a bad value, or a format or version we cannot write.
    pub fn from_args(args: &AuditArgs) -> Result<Option<Arc<Self>>, String> {
        if args.audit_log_format != "json" {
            return Err(format!(
                "--audit-log-format={:?}: only \"json\" is supported",
                args.audit_log_format
            ));
        }
        check_version("audit-log-version", &args.audit_log_version)?;
        let log_mode = Mode::parse("log", &args.audit_log_mode)?;
        let w = &args.webhook;
        if w.audit_webhook_config_file.is_some() {
            check_version("audit-webhook-version", &w.audit_webhook_version)?;
        }
        let Some(policy) = &args.audit_policy_file else {
            if args.audit_log_path.is_some() || w.audit_webhook_config_file.is_some() {
                tracing::warn!("audit plugins without --audit-policy-file: nothing is audited");
            }
            return Ok(None);
        };
        let policy = Policy::load(policy)?;
        let mut plugins: Vec<Box<dyn Backend>> = Vec::new();
        if let Some(path) = &args.audit_log_path {
            let sink = if path == "-" {
                log::Sink::Stdout
            } else {
                let mut rotation = rotate::Rotation::from_flags(
                    args.audit_log_maxsize,
                    args.audit_log_maxbackup,
                    args.audit_log_maxage,
                );
                rotation.compress = args.audit_log_compress;
                let file = rotate::RotatingFile::open(Path::new(path), rotation)
                    .map_err(|e| format!("--audit-log-path {path}: {e}"))?;
                log::Sink::File(file)
            };
            plugins.push(wrap(
                "log",
                log_mode,
                &args.log_batch(),
                args.log_truncate(),
                Box::new(log::LogBackend::new(sink)),
            )?);
        }
        if let Some(config) = &w.audit_webhook_config_file {
            let mode = Mode::parse("webhook", &w.audit_webhook_mode)?;
            let hook = webhook::Webhook::new(config, w.audit_webhook_initial_backoff)?;
            plugins.push(wrap(
                "webhook",
                mode,
                &w.batch(),
                w.truncate(),
                Box::new(hook),
            )?);
        }
        if plugins.is_empty() {
            return Ok(None);
        }
        let backend: Box<dyn Backend> = if plugins.len() == 1 {
            plugins.remove(0)
        } else {
            Box::new(backend::Union(plugins))
        };
        Ok(Some(Self::new(policy, backend)))
    }

    /// The machinery for `policy` sending to `backend`.
    pub fn new(policy: Policy, backend: Box<dyn Backend>) -> Arc<Self> {
        let bodies = policy.max_level() >= Level::Request;
        Arc::new(AuditLog {
            policy,
            backend,
            bodies,
        })
    }

    /// Whether any rule records request bodies (`Request` or `RequestResponse`); when
    /// not, no body is ever read or kept for auditing.
    pub fn wants_request_bodies(&self) -> bool {
        self.bodies
    }

    /// Starts auditing one request: decides its level and stores `RequestReceived`.
    /// `Ok(None)` when the policy says `None`; `Err(Rejected)` when a `blocking-strict`
    /// plugin could not store the event (the request must fail, as upstream's).
    pub fn begin(self: &Arc<Self>, request: AuditRequest) -> Result<Option<AuditEvent>, Rejected> {
        let anonymous = UserInfo::default();
        let user = request.user.as_ref().unwrap_or(&anonymous);
        let (level, omit) = self.policy.evaluate(user, &request.info);
        metrics::level(level);
        if level == Level::None {
            return Ok(None);
        }
        let event = AuditEvent::new(self.clone(), level, omit, request);
        if !event.received() {
            metrics::rejected();
            return Err(Rejected);
        }
        Ok(Some(event))
    }

    /// Hands one event to the backends; `false` when a strict one failed.
    fn process(&self, event: serde_json::Value) -> bool {
        metrics::event();
        self.backend.process(&[Arc::new(event)])
    }

    /// Flushes buffered events (batch mode) and waits for old log files to be
    /// compressed; call once requests have drained. Later events are stored synchronously.
    pub fn shutdown(&self) {
        self.backend.shutdown();
    }
}
