//! The audit flags, named and defaulted as kube-apiserver's (k8s.io/apiserver
//! `pkg/server/options/audit.go`): the policy, the `log` plugin and the `webhook` plugin,
//! each with its mode, batching and truncation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::buffered::BatchConfig;
use super::truncate::TruncateConfig;
use crate::config::{parse_duration_or_zero, parse_go_bool};

/// The audit policy and the `log` plugin.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Write audit events to this file as JSON lines (`-`: standard output). Needs
    /// --audit-policy-file.
    #[arg(long)]
    pub audit_log_path: Option<String>,
    /// The audit.k8s.io/v1 Policy that decides what is audited.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Format of the audit log: only `json` is supported.
    #[arg(long, default_value = "json")]
    pub audit_log_format: String,
    /// API version of the events written: only `audit.k8s.io/v1`.
    #[arg(long, default_value = "audit.k8s.io/v1")]
    pub audit_log_version: String,
    /// How events are written: `blocking` (before the response; a failed write is logged
    /// and counted), `blocking-strict` (a failed write at RequestReceived fails the
    /// request with 500) or `batch` (a background thread writes from a bounded buffer).
    #[arg(long, default_value = "blocking")]
    pub audit_log_mode: String,
    /// Megabytes the audit log file may reach before it is rotated (0: never rotate).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Old audit log files kept after rotations (0: all of them).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxbackup: usize,
    /// Days an old audit log file is kept, by the time in its name (0: no age limit).
    #[arg(long, default_value_t = 366)]
    pub audit_log_maxage: u64,
    /// Gzip rotated audit log files (`<name>.gz`).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub audit_log_compress: bool,
    /// Events buffered in batch mode before new ones are dropped.
    #[arg(long, default_value_t = 10_000)]
    pub audit_log_batch_buffer_size: usize,
    /// Most events written as one batch (batch mode).
    #[arg(long, default_value_t = 1)]
    pub audit_log_batch_max_size: usize,
    /// Longest a batch waits to fill before it is written (batch mode).
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    pub audit_log_batch_max_wait: Duration,
    /// Limit the batches written per second (batch mode).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub audit_log_batch_throttle_enable: bool,
    /// Batches per second when throttling (batch mode).
    #[arg(long, default_value_t = 0.0)]
    pub audit_log_batch_throttle_qps: f32,
    /// Batches at once when the rate was not used (batch mode).
    #[arg(long, default_value_t = 0)]
    pub audit_log_batch_throttle_burst: u32,
    /// Truncate events larger than --audit-log-truncate-max-event-size and split batches.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub audit_log_truncate_enabled: bool,
    /// Largest batch in bytes passed to the log (truncation).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub audit_log_truncate_max_batch_size: u64,
    /// Largest event in bytes: larger ones lose their request and response objects, and
    /// are dropped if still too large (truncation).
    #[arg(long, default_value_t = 100 * 1024)]
    pub audit_log_truncate_max_event_size: u64,
    /// The webhook plugin.
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// The `webhook` plugin.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// A kubeconfig whose current context names the server audit EventLists are POSTed
    /// to (its CA, client certificate or token).
    #[arg(long)]
    pub audit_webhook_config_file: Option<PathBuf>,
    /// `batch`, `blocking` or `blocking-strict` (as --audit-log-mode).
    #[arg(long, default_value = "batch")]
    pub audit_webhook_mode: String,
    /// API version of the events sent: only `audit.k8s.io/v1`.
    #[arg(long, default_value = "audit.k8s.io/v1")]
    pub audit_webhook_version: String,
    /// Wait before the first retry of a failed POST (then 1.5 times longer each time).
    #[arg(long, default_value = "10s", value_parser = parse_duration_or_zero)]
    pub audit_webhook_initial_backoff: Duration,
    /// Events buffered in batch mode before new ones are dropped.
    #[arg(long, default_value_t = 10_000)]
    pub audit_webhook_batch_buffer_size: usize,
    /// Most events in one POST (batch mode).
    #[arg(long, default_value_t = 400)]
    pub audit_webhook_batch_max_size: usize,
    /// Longest a batch waits to fill before it is sent (batch mode).
    #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero)]
    pub audit_webhook_batch_max_wait: Duration,
    /// Limit the batches sent per second (batch mode).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub audit_webhook_batch_throttle_enable: bool,
    /// Batches per second when throttling (batch mode).
    #[arg(long, default_value_t = 10.0)]
    pub audit_webhook_batch_throttle_qps: f32,
    /// Batches at once when the rate was not used (batch mode).
    #[arg(long, default_value_t = 15)]
    pub audit_webhook_batch_throttle_burst: u32,
    /// Truncate events larger than --audit-webhook-truncate-max-event-size and split batches.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_go_bool)]
    pub audit_webhook_truncate_enabled: bool,
    /// Largest batch in bytes sent (truncation).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub audit_webhook_truncate_max_batch_size: u64,
    /// Largest event in bytes sent (truncation).
    #[arg(long, default_value_t = 100 * 1024)]
    pub audit_webhook_truncate_max_event_size: u64,
}

/// Only the defaults of the flags (as if none were given).
#[derive(clap::Parser)]
struct Defaults {
    #[command(flatten)]
    audit: AuditArgs,
}

impl Default for AuditArgs {
    fn default() -> Self {
        <Defaults as clap::Parser>::parse_from(["audit"]).audit
    }
}

impl Default for WebhookArgs {
    fn default() -> Self {
        AuditArgs::default().webhook
    }
}

impl AuditArgs {
    /// The log plugin's batching.
    pub fn log_batch(&self) -> BatchConfig {
        BatchConfig {
            buffer_size: self.audit_log_batch_buffer_size,
            max_batch_size: self.audit_log_batch_max_size,
            max_batch_wait: self.audit_log_batch_max_wait,
            throttle: self.audit_log_batch_throttle_enable.then_some((
                self.audit_log_batch_throttle_qps,
                self.audit_log_batch_throttle_burst,
            )),
            // Upstream: asynchronous log writers only make lock contention.
            async_delegate: false,
        }
    }

    /// The log plugin's truncation (`None`: off).
    pub fn log_truncate(&self) -> Option<TruncateConfig> {
        self.audit_log_truncate_enabled.then_some(TruncateConfig {
            max_event_size: self.audit_log_truncate_max_event_size,
            max_batch_size: self.audit_log_truncate_max_batch_size,
        })
    }
}

impl WebhookArgs {
    /// The webhook plugin's batching.
    pub fn batch(&self) -> BatchConfig {
        BatchConfig {
            buffer_size: self.audit_webhook_batch_buffer_size,
            max_batch_size: self.audit_webhook_batch_max_size,
            max_batch_wait: self.audit_webhook_batch_max_wait,
            throttle: self.audit_webhook_batch_throttle_enable.then_some((
                self.audit_webhook_batch_throttle_qps,
                self.audit_webhook_batch_throttle_burst,
            )),
            async_delegate: true,
        }
    }

    /// The webhook plugin's truncation (`None`: off).
    pub fn truncate(&self) -> Option<TruncateConfig> {
        self.audit_webhook_truncate_enabled
            .then_some(TruncateConfig {
                max_event_size: self.audit_webhook_truncate_max_event_size,
                max_batch_size: self.audit_webhook_truncate_max_batch_size,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kube_apiservers() {
        let a = AuditArgs::default();
        assert_eq!(a.audit_log_mode, "blocking");
        assert_eq!(
            a.log_batch(),
            BatchConfig {
                buffer_size: 10_000,
                max_batch_size: 1,
                max_batch_wait: Duration::ZERO,
                throttle: None,
                async_delegate: false,
            }
        );
        assert!(a.log_truncate().is_none() && !a.audit_log_compress);
        let w = &a.webhook;
        assert_eq!(w.audit_webhook_mode, "batch");
        assert_eq!(w.audit_webhook_initial_backoff, Duration::from_secs(10));
        assert_eq!(
            w.batch(),
            BatchConfig {
                buffer_size: 10_000,
                max_batch_size: 400,
                max_batch_wait: Duration::from_secs(30),
                throttle: Some((10.0, 15)),
                async_delegate: true,
            }
        );
        let mut t = a.clone();
        t.audit_log_truncate_enabled = true;
        assert_eq!(
            t.log_truncate(),
            Some(TruncateConfig {
                max_event_size: 102_400,
                max_batch_size: 10_485_760,
            })
        );
    }
}
