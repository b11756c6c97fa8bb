//! Fuzzes the records file loader (YAML or JSON, a list or an object with `items`): no
//! document may panic or hang; every record it accepts is valid (DNS names, unique per
//! namespace, a uid, a source); and what it accepts, written back as JSON, loads as the same
//! records (after the first load has filled in defaults).
//!
//! Run: `cargo fuzz run records_file -s none -- -max_total_time=60`.
#![no_main]

use std::collections::BTreeSet;

use kubedojo_data_api::api::time::Time;
use kubedojo_data_api::records::parse_records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let now = Time::from_millis(1_700_000_000_000);
    let Ok(records) = parse_records("fuzz.yaml", text, now) else {
        return;
    };
    let mut keys = BTreeSet::new();
    for r in &records {
        let ns = r
            .metadata
            .namespace
            .as_deref()
            .expect("namespace defaulted");
        assert!(!ns.is_empty() && !r.metadata.name.is_empty());
        assert!(
            keys.insert((ns.to_string(), r.metadata.name.clone())),
            "duplicate"
        );
        assert!(
            r.metadata
                .uid
                .as_deref()
                .is_some_and(|u| !u.trim().is_empty())
        );
        assert!(!r.spec.source.trim().is_empty());
        assert!(r.status.as_ref().is_some_and(|s| !s.sync_status.is_empty()));
    }
    let once = serde_json::to_string(&records).expect("records serialize");
    let again = parse_records("fuzz.json", &once, now).expect("written records load");
    let twice = serde_json::to_string(&again).expect("records serialize");
    assert_eq!(once, twice);
});
