//! The audit self-metrics upstream's `k8s.io/apiserver/pkg/audit` exposes, process-wide
//! (every Telemetry registry shows them on `/metrics`): `apiserver_audit_event_total`,
//! `apiserver_audit_error_total{plugin}`, `apiserver_audit_level_total{level}` and
//! `apiserver_audit_requests_rejected_total`.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::policy::Level;

/// The `plugin` label of `apiserver_audit_error_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

/// The `level` label of `apiserver_audit_level_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabel {
    level: String,
}

static EVENTS: LazyLock<Counter> = LazyLock::new(Counter::default);
static ERRORS: LazyLock<Family<PluginLabel, Counter>> = LazyLock::new(Family::default);
static LEVELS: LazyLock<Family<LevelLabel, Counter>> = LazyLock::new(Family::default);
static REJECTED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Adds the audit metrics to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "apiserver_audit_event",
        "Counter of audit events generated and sent to the audit backend",
        EVENTS.clone(),
    );
    registry.register(
        "apiserver_audit_error",
        "Counter of audit events that failed to be audited properly. Plugin identifies the plugin affected by the error",
        ERRORS.clone(),
    );
    registry.register(
        "apiserver_audit_level",
        "Counter of policy levels for audit events (1 per request)",
        LEVELS.clone(),
    );
    registry.register(
        "apiserver_audit_requests_rejected",
        "Counter of apiserver requests rejected due to an error in audit logging backend",
        REJECTED.clone(),
    );
}

/// One event handed to the backends.
pub fn event() {
    EVENTS.inc();
}

/// The policy level decided for one request.
pub fn level(level: Level) {
    LEVELS
        .get_or_create(&LevelLabel {
            level: format!("{level:?}"),
        })
        .inc();
}

/// One request refused because its `RequestReceived` event could not be stored
/// (`blocking-strict`).
pub fn rejected() {
    REJECTED.inc();
}

/// `events` events a plugin failed to store (upstream's `HandlePluginError`): counted and
/// logged with the first event's audit ID.
pub fn plugin_error(plugin: &str, error: &dyn std::fmt::Display, events: &[super::Event]) {
    if events.is_empty() {
        return;
    }
    ERRORS
        .get_or_create(&PluginLabel {
            plugin: plugin.to_string(),
        })
        .inc_by(events.len() as u64);
    let first = events[0]["auditID"].as_str().unwrap_or("");
    tracing::error!(
        plugin,
        error = %error,
        events = events.len(),
        first_audit_id = first,
        "audit events could not be stored"
    );
}

/// The current value of `apiserver_audit_error_total{plugin}` (tests).
pub fn errors_of(plugin: &str) -> u64 {
    ERRORS
        .get_or_create(&PluginLabel {
            plugin: plugin.to_string(),
        })
        .get()
}
