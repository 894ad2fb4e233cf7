//! The body parser of `/oauth2/token`, `/oauth2/revoke` and `/oauth2/introspect`.
//!
//! The first byte picks the Content-Type; the rest is the body. Properties: no panic, and a
//! body that parses re-serialises (as a form, and as JSON) to one that parses to the same fields.
#![no_main]

use std::collections::HashMap;

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use tessera::fuzzing::parse_body;

const TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "application/json",
    "application/x-www-form-urlencoded; charset=utf-8",
    "Application/JSON; charset=UTF-8",
    "text/plain",
    "",
];

fn headers(ct: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if !ct.is_empty() {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
    h
}

fn reparse(ct: &str, body: &[u8]) -> HashMap<String, String> {
    match parse_body(&headers(ct), body) {
        Ok(f) => f,
        Err(e) => panic!("re-serialised body refused: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES[usize::from(selector) % TYPES.len()];
    let Ok(fields) = parse_body(&headers(ct), body) else {
        return;
    };
    let mut form = form_urlencoded::Serializer::new(String::new());
    let mut sorted: Vec<_> = fields.iter().collect();
    sorted.sort();
    for (k, v) in &sorted {
        form.append_pair(k, v);
    }
    let form = form.finish();
    assert_eq!(reparse(TYPES[0], form.as_bytes()), fields, "form {form:?}");
    let json = serde_json::to_vec(&fields).unwrap();
    assert_eq!(reparse(TYPES[1], &json), fields);
    assert_eq!(reparse(TYPES[0], &json), fields, "JSON labelled as a form");
});
