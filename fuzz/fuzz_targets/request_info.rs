//! Fuzzes request parsing: the query string decoder, `RequestInfo` (what authorization is
//! asked about) and `ListOptions` (what the handler applies). No input may panic, and for a
//! list or watch the selectors authorization sees are exactly the ones the handler parses
//! (issue 13 §1.1: a repeated `fieldSelector` must not be authorized as one value and served
//! as another).
//!
//! Input: the first byte picks the method, the rest is `path[?query]`.
//! Run: `cargo fuzz run request_info -s none -- -max_total_time=60`.
#![no_main]

use http::Method;
use kubedojo_data_api::api::field_selector::FieldSelector;
use kubedojo_data_api::api::label_selector::LabelSelector;
use kubedojo_data_api::api::list_options::ListOptions;
use kubedojo_data_api::api::query::Query;
use kubedojo_data_api::api::request_info::RequestInfo;
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fuzz_target!(|input: &[u8]| {
    let Some((&m, rest)) = input.split_first() else {
        return;
    };
    let method = &METHODS[m as usize % METHODS.len()];
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let query = Query::parse(raw_query);
    let info = RequestInfo::new(method, path, &query);
    assert_eq!(info.path, path);
    if !info.is_resource_request {
        assert!(info.resource.is_empty() && info.name.is_empty());
        return;
    }
    assert!(
        info.verb.is_empty() || VERBS.contains(&info.verb.as_str()),
        "{:?}",
        info.verb
    );
    let watch = info.verb == "watch";
    let options = ListOptions::from_query(&query, watch);
    if !matches!(info.verb.as_str(), "list" | "watch" | "deletecollection") {
        return;
    }
    let Ok(options) = options else {
        return;
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let watch_at = if segments[0] == "apis" { 3 } else { 2 };
    let watch_path = segments.get(watch_at) == Some(&"watch");
    if watch_path {
        return;
    }
    // Authorization's raw selectors parse to exactly what the handler applies.
    let label = LabelSelector::parse(&info.label_selector).expect("handler parsed it");
    assert_eq!(label, options.label_selector, "{target:?}");
    let field = FieldSelector::parse(&info.field_selector).expect("handler parsed it");
    assert_eq!(field, options.field_selector, "{target:?}");
    // A list or watch pinned to one valid name by the field selector is authorized for
    // that name (RBAC resourceNames), and the handler serves only that name.
    if let Some(pinned) = options.field_selector.required_name()
        && info.parts.len() == 1
        && info.verb != "deletecollection"
        && !pinned.is_empty()
        && pinned != "."
        && pinned != ".."
        && !pinned.contains(['/', '%'])
    {
        assert_eq!(info.name, pinned, "{target:?}");
    }
});
