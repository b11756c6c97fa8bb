//! Fuzzes the kubelet `/metrics/resource` decoder: no input may panic, and every successful
//! decode must keep the batch's invariants.
//!
//! Run on stable: `cargo fuzz run decode -s none -- -max_total_time=60`.
#![no_main]

use kubedojo_data_api::scrape::decode::{Decoded, decode};
use libfuzzer_sys::fuzz_target;

const REQUEST_TIME_MS: i64 = 1_633_253_812_000;

fuzz_target!(|body: &[u8]| {
    if let Ok(decoded) = decode(body, REQUEST_TIME_MS) {
        check_invariants(&decoded, body);
    }
});

/// Pods sorted and unique by (namespace, name), containers sorted and unique by name, no empty
/// names, valid timestamps, and `skipped` sorted by a line number inside the body.
fn check_invariants(decoded: &Decoded, body: &[u8]) {
    let pods = &decoded.batch.pods;
    assert!(pods.is_sorted_by(|a, b| (&a.namespace, &a.name) < (&b.namespace, &b.name)));
    for pod in pods {
        assert!(!pod.namespace.is_empty() && !pod.name.is_empty());
        assert!(!pod.containers.is_empty());
        assert!(pod.containers.is_sorted_by(|a, b| a.name < b.name));
        for container in &pod.containers {
            assert!(!container.name.is_empty());
            assert!(container.point.timestamp_ms > 0 && container.point.start_time_ms >= 0);
        }
    }
    if let Some(node) = decoded.batch.node {
        assert!(node.timestamp_ms > 0 && node.start_time_ms == 0);
    }
    let lines = body.split(|&b| b == b'\n').count();
    assert!(decoded.skipped.is_sorted_by_key(|e| e.line));
    assert!(
        decoded
            .skipped
            .iter()
            .all(|e| e.line >= 1 && e.line <= lines)
    );
}
