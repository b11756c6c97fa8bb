//! Fuzzes the `labelSelector` parser: no input may panic, and every selector that parses
//! prints (`Display`, apimachinery's `Selector.String()`) as a string that parses back to the
//! same selector, whose every key and value is valid.
//!
//! Run: `cargo fuzz run label_selector -s none -- -max_total_time=60`.
#![no_main]

use std::collections::BTreeMap;

use kubedojo_data_api::api::label_selector::{
    LabelSelector, Operator, is_valid_label_key, is_valid_label_value,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let Ok(selector) = LabelSelector::parse(input) else {
        return;
    };
    let printed = selector.to_string();
    let reparsed = LabelSelector::parse(&printed)
        .unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(reparsed, selector, "{input:?} printed as {printed:?}");
    let mut labels = BTreeMap::new();
    for r in selector.requirements() {
        assert!(is_valid_label_key(&r.key), "{:?}", r.key);
        match r.op {
            Operator::Exists | Operator::DoesNotExist => assert!(r.values.is_empty()),
            Operator::GreaterThan | Operator::LessThan => {
                assert_eq!(r.values.len(), 1);
                assert!(r.values[0].parse::<i64>().is_ok());
            }
            Operator::In | Operator::NotIn => {
                assert!(!r.values.is_empty());
                assert!(r.values.iter().all(|v| is_valid_label_value(v)));
            }
        }
        if let Some(v) = r.values.first() {
            labels.insert(r.key.clone(), v.clone());
        }
    }
    // Matching is total and agrees with the requirements one by one.
    let all = selector.requirements().iter().all(|r| r.matches(&labels));
    assert_eq!(selector.matches(&labels), all);
});
