//! Fuzzes front-proxy identity headers: `X-Remote-User`, `X-Remote-Group` and the
//! percent-encoded `X-Remote-Extra-<key>` headers. No header set may panic; the user is the
//! first value of `X-Remote-User` when not empty (Go's `Header.Get`); every extra key comes
//! from a header under the prefix; and a key percent-encoded by the proxy decodes back to
//! itself.
//!
//! Input: header lines `name: value` separated by `\n`.
//! Run: `cargo fuzz run front_proxy -s none -- -max_total_time=60`.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use kubedojo_data_api::auth::front_proxy::{unescape_extra_key, user_from_headers};
use kubedojo_data_api::auth::trust::{RequestHeaderConfig, RequestHeaderSettings};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<RequestHeaderConfig> = LazyLock::new(|| {
    RequestHeaderSettings {
        ca_pem: include_str!("../fixtures/front-proxy-ca.pem").to_string(),
        allowed_names: vec!["front-proxy-client".into()],
        username_headers: vec!["X-Remote-User".into()],
        uid_headers: vec!["X-Remote-Uid".into()],
        group_headers: vec!["X-Remote-Group".into()],
        extra_prefixes: vec!["X-Remote-Extra-".into()],
    }
    .parse()
    .expect("fixture settings parse")
});

/// Percent-encodes every byte outside `[A-Za-z0-9-_.~]`, as a proxy does for extra keys.
fn escape(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in input.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, mut value) = (&line[..colon], &line[colon + 1..]);
        // As an HTTP parser does: optional whitespace before the value.
        while let [b' ' | b'\t', rest @ ..] = value {
            value = rest;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let user = user_from_headers(&CONFIG, &headers);
    // Go's `headerValue`: the first value of the header (`Header.Get`), when not empty.
    let first_user = headers
        .get_all("x-remote-user")
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .next()
        .filter(|v| !v.is_empty());
    assert_eq!(user.as_ref().map(|u| u.name.as_str()), first_user);
    if let Some(user) = &user {
        assert!(user.groups.iter().all(|g| !g.is_empty()));
        let raw_keys: Vec<String> = headers
            .keys()
            .filter_map(|h| h.as_str().strip_prefix("x-remote-extra-"))
            .map(unescape_extra_key)
            .collect();
        for key in user.extra.keys() {
            assert!(raw_keys.contains(key), "{key:?} not from a header");
        }
    }
    // Decoding what a proxy encoded gives the key back, whatever the key.
    if let Ok(key) = std::str::from_utf8(input) {
        assert_eq!(unescape_extra_key(&escape(key)), key);
    }
});
