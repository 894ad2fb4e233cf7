//! `Authorization: Basic` parsing (RFC 6749 §2.3.1: id and secret form-urlencoded, then joined
//! with `:` and base64-encoded).
//!
//! Properties: no panic; credentials that parse re-encode (form-urlencoded, base64) to a header
//! that parses to the same pair; a part without `%` or `+` is taken as it is written.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use tessera::fuzzing::parse_basic;

fn parse(value: &[u8]) -> Option<Result<(String, String), ()>> {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(value).ok()?);
    parse_basic(&h)
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fuzz_target!(|data: &[u8]| {
    // Half the inputs are taken as a raw header value, half as the decoded `id:secret`.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (value, plain) = if mode % 2 == 0 {
        (rest.to_vec(), None)
    } else {
        let Ok(plain) = std::str::from_utf8(rest) else {
            return;
        };
        (
            format!("Basic {}", STANDARD.encode(plain)).into_bytes(),
            Some(plain),
        )
    };
    let Some(Ok((id, secret))) = parse(&value) else {
        return;
    };
    let again = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encode(&id), encode(&secret)))
    );
    assert_eq!(
        parse(again.as_bytes()),
        Some(Ok((id.clone(), secret.clone())))
    );
    if let Some((raw_id, raw_secret)) = plain.and_then(|p| p.split_once(':')) {
        for (raw, got) in [(raw_id, &id), (raw_secret, &secret)] {
            if !raw.contains(['%', '+']) {
                assert_eq!(raw, got, "a part without escapes is taken as written");
            }
        }
    }
});
