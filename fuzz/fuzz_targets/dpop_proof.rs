//! DPoP proof checks (RFC 9449 §4.3), with a real Ed25519 proof as the seed of every change.
//!
//! Properties: no panic; an arbitrary string is never accepted; a real proof with any change
//! applied is accepted only if its signed part (header and claims) is unchanged, and then names
//! the same key and `jti`.
#![no_main]

use std::sync::OnceLock;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use tessera::domain::crypto::{DerivedKeys, RootKey};
use tessera::domain::dpop::{Expected, Proof, check};

const URL: &str = "https://issuer.test/oauth2/token";
const NOW: i64 = 1_000_000;

struct Fixture {
    keys: DerivedKeys,
    proof: String,
    accepted: Proof,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = RootKey::generate().unwrap().derive().unwrap();
        let pair = Ed25519KeyPair::generate().unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let header = serde_json::json!({
            "typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x},
        });
        let claims = serde_json::json!({
            "jti": "0190d7a4-0000-7000-8000-000000000000",
            "htm": "POST", "htu": URL, "iat": NOW,
        });
        let mut proof = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        proof.push('.');
        proof.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()));
        let sig = pair.sign(proof.as_bytes());
        proof.push('.');
        proof.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let accepted = check(&proof, &expected(), &keys).unwrap();
        Fixture {
            keys,
            proof,
            accepted,
        }
    })
}

fn expected() -> Expected<'static> {
    Expected {
        method: "POST",
        url: URL,
        access_token: None,
        nonce_required: false,
        fapi2: false,
        now: NOW,
    }
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
        assert!(check(s, &expected(), &f.keys).is_err(), "{s:?} accepted");
        return;
    }
    let mut bytes = f.proof.clone().into_bytes();
    for pair in rest.chunks(2) {
        match *pair {
            [pos, b] => {
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
    if let Ok(proof) = check(&changed, &expected(), &f.keys) {
        // Surrounding whitespace is trimmed; nothing else may change what was signed.
        assert_eq!(
            signed_part(changed.trim()),
            signed_part(&f.proof),
            "a proof with a changed header or claims was accepted"
        );
        assert_eq!(proof, f.accepted);
    }
});
