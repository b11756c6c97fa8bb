//! Fuzzes the `fieldSelector` parser: no input may panic, errors are 400 Status values, and
//! every selector that parses prints as a string that parses back to the same selector.
//!
//! Run: `cargo fuzz run field_selector -s none -- -max_total_time=60`.
#![no_main]

use kubedojo_data_api::api::field_selector::{Field, FieldSelector};
use kubedojo_data_api::api::meta::ObjectMeta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let selector = match FieldSelector::parse(input) {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.code, 400, "{input:?}: {e:?}");
            return;
        }
    };
    let printed = selector.to_string();
    let reparsed = FieldSelector::parse(&printed)
        .unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}, which fails: {e:?}"));
    assert_eq!(reparsed, selector, "{input:?} printed as {printed:?}");
    // The name a selector pins is one an object must have to match it.
    if let Some(name) = selector.required_name() {
        let ns = selector.required_namespace().unwrap_or("default");
        let other = ObjectMeta {
            name: format!("{name}-other"),
            namespace: Some(ns.to_string()),
            ..ObjectMeta::default()
        };
        assert!(!selector.matches(&other));
    }
    for t in selector.terms() {
        assert!(matches!(t.field, Field::Name | Field::Namespace));
    }
});
