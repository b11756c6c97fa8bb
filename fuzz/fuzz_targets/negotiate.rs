//! Fuzzes `Accept` parsing and content negotiation: no header may panic, clauses come out
//! with a positive finite-or-infinite quality sorted best first, and the negotiated output
//! is one the target can take.
//!
//! Run: `cargo fuzz run negotiate -s none -- -max_total_time=60`.
#![no_main]

use kubedojo_data_api::api::negotiate::{
    Output, Target, accepts_plain_json, negotiate_output, parse_accept, status_as_protobuf,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &str| {
    let ranges = parse_accept(header);
    for r in &ranges {
        assert!(r.q > 0.0 && !r.q.is_nan(), "{header:?}: q={}", r.q);
        assert!(!r.kind.is_empty() && !r.subtype.is_empty());
        assert!(r.params.iter().all(|(k, _)| k != "q"));
    }
    assert!(ranges.is_sorted_by(|a, b| a.q >= b.q), "{header:?}");
    for target in [Target::Object, Target::List] {
        for table in [false, true] {
            for protobuf in [false, true] {
                match negotiate_output(Some(header), target, table, protobuf) {
                    Ok(Output::Protobuf) => assert!(protobuf),
                    Ok(Output::Table { .. }) => assert!(table),
                    Ok(Output::PartialObjectMetadata { .. }) => {
                        assert!(matches!(target, Target::Object))
                    }
                    Ok(Output::PartialObjectMetadataList { .. }) => {
                        assert!(matches!(target, Target::List))
                    }
                    Ok(Output::Json) => {}
                    Err(e) => assert_eq!(e.code, 406, "{header:?}: {e:?}"),
                }
            }
        }
    }
    let _ = status_as_protobuf(Some(header));
    if accepts_plain_json(Some(header)) && !header.trim().is_empty() {
        assert!(ranges.iter().any(|r| r.accepts_json()));
    }
});
