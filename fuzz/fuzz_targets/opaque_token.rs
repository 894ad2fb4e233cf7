//! Opaque token checking (`tes_at_…`, `tes_rt_…`): prefix, length, base64url and MAC.
//!
//! Properties: no panic; an arbitrary string never verifies (it would need a forged 128-bit
//! MAC); a real token with any change applied never verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera::domain::crypto::{DerivedKeys, RootKey};
use tessera::domain::token::{MintedToken, mint};
use tessera::fuzzing::{OpaqueKind, verify_opaque};

struct Fixture {
    keys: DerivedKeys,
    tokens: Vec<(OpaqueKind, MintedToken)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = RootKey::generate().unwrap().derive().unwrap();
        let tokens = [OpaqueKind::Access, OpaqueKind::Refresh]
            .into_iter()
            .map(|k| (k, mint(k, uuid::Uuid::now_v7(), &keys).unwrap()))
            .collect();
        Fixture { keys, tokens }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    if op < 128 {
        // The input as a presented token.
        let Ok(s) = std::str::from_utf8(rest) else {
            return;
        };
        for kind in [OpaqueKind::Access, OpaqueKind::Refresh] {
            assert_eq!(verify_opaque(kind, s, &f.keys), None, "{s:?} verified");
        }
        return;
    }
    // A real token, changed: bytes of `rest` as (position, new byte) pairs, an odd last byte
    // truncating instead.
    let (kind, token) = &f.tokens[usize::from(op) % f.tokens.len()];
    let mut bytes = token.token.clone().into_bytes();
    for pair in rest.chunks(2) {
        match *pair {
            [pos, b] => {
                let i = usize::from(pos) % bytes.len().max(1);
                if let Some(x) = bytes.get_mut(i) {
                    *x = b;
                }
            }
            [cut] => bytes.truncate(usize::from(cut)),
            _ => {}
        }
    }
    let Ok(changed) = String::from_utf8(bytes) else {
        return;
    };
    let got = verify_opaque(*kind, &changed, &f.keys);
    if changed == token.token {
        assert!(got.is_some());
    } else {
        assert_eq!(got, None, "changed token {changed:?} verified");
    }
});
