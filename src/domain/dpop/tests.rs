use serde_json::json;

use super::*;
use crate::domain::crypto::RootKey;
use crate::domain::jose::tests::{R, TestKey};

const URL: &str = "https://as.example/oauth2/token";
const NOW: UnixTime = 1_800_000_000;

fn keys() -> Result<DerivedKeys, Box<dyn std::error::Error>> {
    Ok(RootKey::generate()?.derive()?)
}

fn expected(now: UnixTime) -> Expected<'static> {
    Expected {
        method: "POST",
        url: URL,
        access_token: None,
        nonce_required: false,
        fapi2: false,
        now,
    }
}

fn claims() -> Value {
    json!({"jti": "a-unique-id", "htm": "POST", "htu": URL, "iat": NOW})
}

fn proof(
    key: &TestKey,
    alg: Algorithm,
    claims: &Value,
) -> Result<String, Box<dyn std::error::Error>> {
    let header = json!({"typ": PROOF_TYP, "alg": alg.as_str(), "jwk": key.jwk()});
    key.sign(alg, &header, claims)
}

fn refused(result: Result<Proof, ProofError>, needle: &str) {
    let why = match result {
        Err(ProofError::Invalid(why)) => why.into_owned(),
        other => format!("not refused as invalid: {other:?}"),
    };
    assert!(why.contains(needle), "{why:?} lacks {needle:?}");
}

#[test]
fn a_proof_of_every_algorithm_is_accepted_and_names_its_key() -> R {
    let keys = keys()?;
    for alg in Algorithm::ALL {
        let key = TestKey::new(alg)?;
        let checked = check(&proof(&key, alg, &claims())?, &expected(NOW), &keys)?;
        let thumbprint = PublicJwk::parse(&key.jwk())?.thumbprint().to_owned();
        assert_eq!(checked.jkt(), thumbprint, "{alg}");
        assert_eq!(checked.replay_until(), NOW + MAX_AGE + 1);
    }
    Ok(())
}

#[test]
fn rs256_is_refused_for_fapi2_clients_only() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::Rs256)?;
    let p = proof(&key, Algorithm::Rs256, &claims())?;
    let fapi = Expected {
        fapi2: true,
        ..expected(NOW)
    };
    refused(check(&p, &fapi, &keys), "algorithm not allowed");
    assert!(check(&p, &expected(NOW), &keys).is_ok());
    Ok(())
}

#[test]
fn wrong_typ_foreign_alg_private_jwk_and_bad_signature_are_refused() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::Es256)?;
    let sign = |header: Value| key.sign(Algorithm::Es256, &header, &claims());
    let p = sign(json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk()}))?;
    refused(check(&p, &expected(NOW), &keys), "typ");
    let p = sign(json!({"typ": PROOF_TYP, "alg": "ES256"}))?;
    refused(check(&p, &expected(NOW), &keys), "jwk");
    let mut private = key.jwk();
    if let Some(o) = private.as_object_mut() {
        o.insert("d".into(), "c2VjcmV0".into());
    }
    let p = sign(json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": private}))?;
    refused(check(&p, &expected(NOW), &keys), "private member");
    for alg in ["none", "HS256"] {
        let p = sign(json!({"typ": PROOF_TYP, "alg": alg, "jwk": key.jwk()}))?;
        refused(check(&p, &expected(NOW), &keys), "algorithm not allowed");
    }
    // Signed by another key than the one in the header.
    let other = TestKey::new(Algorithm::Es256)?;
    let p = other.sign(
        Algorithm::Es256,
        &json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": key.jwk()}),
        &claims(),
    )?;
    refused(check(&p, &expected(NOW), &keys), "does not verify");
    refused(check("not.a.jws", &expected(NOW), &keys), "malformed");
    Ok(())
}

#[test]
fn every_claim_is_checked() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::EdDsa)?;
    let with = |name: &str, value: Value| -> Result<String, Box<dyn std::error::Error>> {
        let mut c = claims();
        if let Some(o) = c.as_object_mut() {
            if value.is_null() {
                o.remove(name);
            } else {
                o.insert(name.into(), value);
            }
        }
        proof(&key, Algorithm::EdDsa, &c)
    };
    let check_now = |p: &str| check(p, &expected(NOW), &keys);
    refused(
        check_now(&with("jti", Value::Null)?),
        "jti claim is missing",
    );
    refused(check_now(&with("jti", json!(""))?), "jti claim must be");
    refused(
        check_now(&with("jti", json!("x".repeat(MAX_JTI_LEN + 1)))?),
        "jti claim must be",
    );
    refused(
        check_now(&with("jti", json!(7))?),
        "jti claim is not a string",
    );
    refused(check_now(&with("htm", json!("GET"))?), "htm");
    refused(
        check_now(&with("htm", Value::Null)?),
        "htm claim is missing",
    );
    refused(
        check_now(&with("htu", json!("https://as.example/oauth2/revoke"))?),
        "htu",
    );
    refused(
        check_now(&with("htu", json!("https://other.example/oauth2/token"))?),
        "htu",
    );
    refused(
        check_now(&with("iat", json!(NOW - MAX_AGE - 1))?),
        "in the past",
    );
    refused(
        check_now(&with("iat", json!(NOW + MAX_AHEAD + 1))?),
        "in the future",
    );
    refused(
        check_now(&with("iat", json!("now"))?),
        "iat claim is not a number",
    );
    refused(
        check_now(&with("iat", Value::Null)?),
        "iat claim is missing",
    );
    assert!(check_now(&with("iat", json!(NOW - MAX_AGE))?).is_ok());
    assert!(check_now(&with("iat", json!(NOW + MAX_AHEAD))?).is_ok());
    Ok(())
}

#[test]
fn htu_is_compared_without_query_or_fragment_and_normalised() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::EdDsa)?;
    for htu in [
        "https://as.example/oauth2/token?x=1",
        "https://as.example/oauth2/token#frag",
        "HTTPS://AS.EXAMPLE:443/oauth2/token",
        "https://as.example/oauth2/./tok%65n",
    ] {
        let mut c = claims();
        c["htu"] = json!(htu);
        let p = proof(&key, Algorithm::EdDsa, &c)?;
        assert!(check(&p, &expected(NOW), &keys).is_ok(), "{htu}");
    }
    assert_eq!(
        normalize_htu("http://Host:80/a/%7e/%2f"),
        Some("http://host/a/~/%2F".into())
    );
    assert_eq!(normalize_htu("urn:x:y"), None);
    assert_eq!(normalize_htu("/oauth2/token"), None);
    Ok(())
}

#[test]
fn ath_is_required_and_checked_when_a_token_is_sent() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::Es256)?;
    let at = Expected {
        access_token: Some("the-token"),
        ..expected(NOW)
    };
    refused(
        check(&proof(&key, Algorithm::Es256, &claims())?, &at, &keys),
        "ath claim is missing",
    );
    let mut c = claims();
    c["ath"] = json!(ath("another-token"));
    refused(
        check(&proof(&key, Algorithm::Es256, &c)?, &at, &keys),
        "ath is not",
    );
    c["ath"] = json!(ath("the-token"));
    assert!(check(&proof(&key, Algorithm::Es256, &c)?, &at, &keys).is_ok());
    Ok(())
}

#[test]
fn nonces_of_this_and_the_previous_window_are_accepted_and_others_asked_for() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::EdDsa)?;
    let wants_nonce = Expected {
        nonce_required: true,
        ..expected(NOW)
    };
    let p = proof(&key, Algorithm::EdDsa, &claims())?;
    assert_eq!(check(&p, &wants_nonce, &keys), Err(ProofError::UseNonce));
    let mut c = claims();
    c["nonce"] = json!(nonce(&keys, NOW));
    assert!(check(&proof(&key, Algorithm::EdDsa, &c)?, &wants_nonce, &keys).is_ok());
    c["nonce"] = json!(nonce(&keys, NOW - NONCE_WINDOW));
    assert!(check(&proof(&key, Algorithm::EdDsa, &c)?, &wants_nonce, &keys).is_ok());
    c["nonce"] = json!(nonce(&keys, NOW - 2 * NONCE_WINDOW));
    assert_eq!(
        check(&proof(&key, Algorithm::EdDsa, &c)?, &wants_nonce, &keys),
        Err(ProofError::UseNonce)
    );
    // Another deployment's nonce (another root key) is not current here.
    assert!(!nonce_is_current(
        &RootKey::generate()?.derive()?,
        &nonce(&keys, NOW),
        NOW
    ));
    // An otherwise bad proof is refused as such, not asked for a nonce.
    c["htm"] = json!("GET");
    refused(
        check(&proof(&key, Algorithm::EdDsa, &c)?, &wants_nonce, &keys),
        "htm",
    );
    Ok(())
}

#[test]
fn a_checked_proof_names_its_jti_and_how_long_to_remember_it() -> R {
    let keys = keys()?;
    let key = TestKey::new(Algorithm::EdDsa)?;
    let checked = check(
        &proof(&key, Algorithm::EdDsa, &claims())?,
        &expected(NOW),
        &keys,
    )?;
    assert_eq!(checked.jti(), "a-unique-id");
    // Remembered until the proof is past MAX_AGE, when check refuses it anyway.
    let later = expected(checked.replay_until());
    refused(
        check(&proof(&key, Algorithm::EdDsa, &claims())?, &later, &keys),
        "in the past",
    );
    Ok(())
}

#[test]
fn refusals_become_the_rfc_9449_error_codes() {
    let e = OAuthError::from(ProofError::invalid("x"));
    assert_eq!(e.code.as_str(), "invalid_dpop_proof");
    assert_eq!(e.field, None);
    assert_eq!(
        OAuthError::from(ProofError::UseNonce).code.as_str(),
        "use_dpop_nonce"
    );
}
