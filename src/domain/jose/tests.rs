use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256, RsaKeyPair,
};
use serde_json::json;

use super::*;

pub(crate) type R = Result<(), Box<dyn std::error::Error>>;

/// A key pair that signs test JWS (also used by the DPoP tests).
pub(crate) enum TestKey {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl TestKey {
    pub(crate) fn new(alg: Algorithm) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(match alg {
            Algorithm::EdDsa => Self::Ed(Ed25519KeyPair::generate()?),
            Algorithm::Es256 => Self::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?),
            Algorithm::Rs256 | Algorithm::Ps256 => {
                Self::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)?)
            }
        })
    }

    pub(crate) fn jwk(&self) -> Value {
        match self {
            Self::Ed(p) => json!({"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(p.public_key().as_ref())}),
            Self::Ec(p) => {
                let pt = p.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(pt.get(1..33).unwrap_or_default()),
                    "y": URL_SAFE_NO_PAD.encode(pt.get(33..65).unwrap_or_default())})
            }
            Self::Rsa(p) => {
                let pk = p.public_key();
                json!({"kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero())})
            }
        }
    }

    pub(crate) fn sign(
        &self,
        alg: Algorithm,
        header: &Value,
        claims: &Value,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let sig = match self {
            Self::Ed(p) => p.sign(out.as_bytes()).as_ref().to_vec(),
            Self::Ec(p) => p
                .sign(&SystemRandom::new(), out.as_bytes())?
                .as_ref()
                .to_vec(),
            Self::Rsa(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                let pad: &dyn aws_lc_rs::signature::RsaEncoding = if alg == Algorithm::Ps256 {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                p.sign(pad, &SystemRandom::new(), out.as_bytes(), &mut sig)?;
                sig
            }
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

#[test]
fn every_algorithm_verifies_with_the_public_jwk_and_not_with_another_key() -> R {
    for alg in Algorithm::ALL {
        let key = TestKey::new(alg)?;
        let other = TestKey::new(alg)?;
        let jwk = PublicJwk::parse(&key.jwk())?;
        let token = key.sign(alg, &json!({"alg": alg.as_str()}), &json!({"sub": "c"}))?;
        let jws = Jws::parse(&token, &Algorithm::ALL)?;
        assert_eq!(jws.alg(), alg);
        jws.verify(&jwk)?;
        let claims: Value = jws.claims()?;
        assert_eq!(claims["sub"], "c");
        assert_eq!(
            jws.verify(&PublicJwk::parse(&other.jwk())?),
            Err(JoseError::BadSignature),
            "{alg}"
        );
    }
    Ok(())
}

#[test]
fn the_header_alg_must_be_allowed_and_fit_the_key() -> R {
    let key = TestKey::new(Algorithm::Ps256)?;
    let jwk = PublicJwk::parse(&key.jwk())?;
    // A PS256 signature relabelled RS256 does not verify: the padding is part of the algorithm.
    let token = key.sign(Algorithm::Ps256, &json!({"alg": "RS256"}), &json!({}))?;
    assert_eq!(
        Jws::parse(&token, &Algorithm::ALL)?.verify(&jwk),
        Err(JoseError::BadSignature)
    );
    // RS256 outside the allow-list.
    let rs = key.sign(Algorithm::Rs256, &json!({"alg": "RS256"}), &json!({}))?;
    assert!(matches!(
        Jws::parse(&rs, &[Algorithm::Ps256, Algorithm::Es256]),
        Err(JoseError::Algorithm(_))
    ));
    // none and HS256 are never algorithms.
    for alg in ["none", "HS256", "ES384"] {
        let t = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#)),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(
            matches!(
                Jws::parse(&t, &Algorithm::ALL),
                Err(JoseError::Algorithm(_))
            ),
            "{alg}"
        );
    }
    // An EdDSA header against an RSA key.
    let ed = TestKey::new(Algorithm::EdDsa)?;
    let t = ed.sign(Algorithm::EdDsa, &json!({"alg": "EdDSA"}), &json!({}))?;
    assert!(matches!(
        Jws::parse(&t, &Algorithm::ALL)?.verify(&jwk),
        Err(JoseError::Algorithm(_))
    ));
    // A key pinned to ES256 does not verify anything else.
    let mut pinned = key.jwk();
    pinned["alg"] = "RS256".into();
    let pinned = PublicJwk::parse(&pinned)?;
    assert!(matches!(
        Jws::parse(&token, &Algorithm::ALL)?.verify(&pinned),
        Err(JoseError::BadSignature)
    ));
    let ps = key.sign(Algorithm::Ps256, &json!({"alg": "PS256"}), &json!({}))?;
    assert!(matches!(
        Jws::parse(&ps, &Algorithm::ALL)?.verify(&pinned),
        Err(JoseError::Algorithm(_))
    ));
    Ok(())
}

#[test]
fn the_fully_specified_ed25519_name_is_eddsa_in_headers_and_keys() -> R {
    let key = TestKey::new(Algorithm::EdDsa)?;
    let token = key.sign(Algorithm::EdDsa, &json!({"alg": "Ed25519"}), &json!({}))?;
    let mut jwk = key.jwk();
    jwk["alg"] = "EdDSA".into();
    Jws::parse(&token, &[Algorithm::EdDsa])?.verify(&PublicJwk::parse(&jwk)?)?;
    jwk["alg"] = "Ed25519".into();
    Jws::parse(&token, &[Algorithm::EdDsa])?.verify(&PublicJwk::parse(&jwk)?)?;
    // Still only where EdDSA is allowed.
    assert!(matches!(
        Jws::parse(&token, &[Algorithm::Es256]),
        Err(JoseError::Algorithm(_))
    ));
    Ok(())
}

#[test]
fn crit_oversized_and_malformed_tokens_are_refused() -> R {
    let key = TestKey::new(Algorithm::EdDsa)?;
    let crit = key.sign(
        Algorithm::EdDsa,
        &json!({"alg": "EdDSA", "crit": ["b64"], "b64": false}),
        &json!({}),
    )?;
    assert_eq!(
        Jws::parse(&crit, &Algorithm::ALL).err(),
        Some(JoseError::Critical)
    );
    let big = key.sign(
        Algorithm::EdDsa,
        &json!({"alg": "EdDSA"}),
        &json!({"pad": "x".repeat(MAX_JWS_LEN)}),
    )?;
    assert!(matches!(
        Jws::parse(&big, &Algorithm::ALL),
        Err(JoseError::Malformed(_))
    ));
    for bad in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.AA"] {
        assert!(Jws::parse(bad, &Algorithm::ALL).is_err(), "{bad}");
    }
    Ok(())
}

#[test]
fn private_symmetric_and_unknown_keys_are_refused() {
    let refused = [
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]),
            "d": URL_SAFE_NO_PAD.encode([2u8; 32])}),
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
        json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "use": "enc"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "alg": "ES256"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "alg": "HS256"}),
        json!("not an object"),
    ];
    for jwk in refused {
        assert!(
            matches!(PublicJwk::parse(&jwk), Err(JoseError::Key(_))),
            "{jwk}"
        );
    }
}

#[test]
fn thumbprints_follow_rfc_7638() -> R {
    // The example of RFC 7638 §3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        PublicJwk::parse(&jwk)?.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    Ok(())
}

#[test]
fn jwk_sets_are_strict_when_registered_and_lenient_when_fetched() -> R {
    let a = TestKey::new(Algorithm::EdDsa)?.jwk();
    let mut b = TestKey::new(Algorithm::Es256)?.jwk();
    b["kid"] = "k1".into();
    let enc = json!({"kty": "OKP", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "use": "enc"});
    let set = json!({"keys": [a, b.clone(), enc]});
    assert!(matches!(JwkSet::parse(&set), Err(JoseError::Key(_))));
    let fetched = JwkSet::parse_lenient(&set)?;
    assert_eq!(fetched.keys().len(), 2);
    assert_eq!(fetched.candidates(Some("k1"), Algorithm::Es256).count(), 1);
    assert_eq!(fetched.candidates(Some("k1"), Algorithm::EdDsa).count(), 0);
    assert_eq!(fetched.candidates(None, Algorithm::EdDsa).count(), 1);
    let twice = json!({"keys": [b.clone(), b]});
    assert!(matches!(JwkSet::parse(&twice), Err(JoseError::Key(_))));
    assert!(matches!(
        JwkSet::parse(&json!({"keys": []})),
        Err(JoseError::Key(_))
    ));
    assert!(matches!(JwkSet::parse(&json!([])), Err(JoseError::Key(_))));
    Ok(())
}

#[test]
fn discovery_names_ed25519_beside_eddsa() {
    assert_eq!(
        accepted_names(&[Algorithm::Ps256, Algorithm::EdDsa]),
        vec!["PS256", "EdDSA", "Ed25519"]
    );
    assert_eq!(accepted_names(&[Algorithm::Es256]), vec!["ES256"]);
}
