//! JWT access token verification, with one key of each algorithm.
//!
//! Properties: no panic; an arbitrary string never verifies; a real token with any change
//! applied verifies only if its signed part (header and claims) is unchanged — so no change
//! ever yields different claims (an ECDSA signature has a second valid form, which is harmless).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera::domain::jwt::{ACCESS_TOKEN_TYP, AccessClaims, Algorithm, SigningKey, encode};
use tessera::fuzzing::{decode_jwt, looks_like_jwt};

const ISSUER: &str = "https://issuer.test";
const NOW: i64 = 1_000_000;

struct Fixture {
    keys: Vec<SigningKey>,
    tokens: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys: Vec<SigningKey> = Algorithm::ALL
            .into_iter()
            .map(|a| SigningKey::generate(a).unwrap().0)
            .collect();
        let claims = AccessClaims {
            iss: ISSUER.into(),
            sub: "client".into(),
            aud: "https://api.test".into(),
            exp: NOW + 60,
            iat: NOW,
            nbf: NOW,
            jti: "0190d7a4-0000-7000-8000-000000000000".into(),
            client_id: "client".into(),
            scope: "/ping.read /accounts/a1/transfers.write".into(),
            cnf: None,
        };
        let tokens = keys
            .iter()
            .map(|k| encode(k, ACCESS_TOKEN_TYP, &claims).unwrap())
            .collect();
        Fixture { keys, tokens }
    })
}

fn decode(f: &'static Fixture, token: &str) -> Option<AccessClaims> {
    let _ = looks_like_jwt(token);
    decode_jwt(
        token,
        |kid| f.keys.iter().find(|k| k.kid() == kid),
        ISSUER,
        NOW,
    )
    .ok()
}

fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    if op < 64 {
        let Ok(s) = std::str::from_utf8(rest) else {
            return;
        };
        assert!(decode(f, s).is_none(), "{s:?} verified");
        return;
    }
    let original = &f.tokens[usize::from(op) % f.tokens.len()];
    let mut bytes = original.clone().into_bytes();
    for pair in rest.chunks(2) {
        match *pair {
            [pos, b] => {
                // Positions spread over the whole token (an RS256 token is ~600 bytes).
                let i = usize::from(pos) * bytes.len() / 256;
                if let Some(x) = bytes.get_mut(i) {
                    *x = b;
                }
            }
            [cut] => bytes.truncate(usize::from(cut) * bytes.len() / 256),
            _ => {}
        }
    }
    let Ok(changed) = String::from_utf8(bytes) else {
        return;
    };
    if decode(f, &changed).is_some() {
        assert_eq!(
            signed_part(&changed),
            signed_part(original),
            "a token with a changed header or claims verified"
        );
    }
});
