//! JWT introspection responses (RFC 9701): asked for with
//! `Accept: application/token-introspection+jwt`, signed by the active signing key, checked here
//! by an independent verifier (`jsonwebtoken`) against `/.well-known/jwks.json`.

use std::collections::HashSet;

use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde_json::{Value, json};

use crate::helpers::*;

const JWT_TYPE: &str = "application/token-introspection+jwt";

async fn introspect_as(app: &TestApp, caller: &TestClient, token: &str, accept: &str) -> Reply {
    app.post(
        "/oauth2/introspect",
        Some(FORM),
        form(&[("token", token)]),
        &[
            ("authorization", &basic(&caller.id, &caller.secret)),
            ("accept", accept),
        ],
    )
    .await
}

/// Verifies a JWT introspection response the way a resource server would: the key by `kid`
/// from the JWKS, its algorithm, the signature, `typ`, `iss` and `aud` (the caller). Returns
/// the claims.
async fn verify(app: &TestApp, jwt: &str, audience: &str) -> Value {
    let set: JwkSet = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = decode_header(jwt).expect("JWS header");
    assert_eq!(header.typ.as_deref(), Some("token-introspection+jwt"));
    let kid = header.kid.clone().expect("kid");
    let jwk = set.find(&kid).expect("the kid is published in the JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("JWK");
    let mut v = Validation::new(header.alg);
    // No `exp`: RFC 9701 §5 advises against it, so that the JWT cannot pass for a token.
    v.required_spec_claims = HashSet::from(["iss".to_owned(), "aud".to_owned()]);
    v.validate_exp = false;
    v.set_audience(&[audience]);
    v.set_issuer(&[format!("http://{}", app.addr)]);
    let claims = decode::<Value>(jwt, &key, &v)
        .expect("the JWT verifies against the JWKS")
        .claims;
    assert!(claims["iat"].as_i64().is_some(), "{claims}");
    assert!(
        claims.get("exp").is_none() && claims.get("sub").is_none(),
        "{claims}"
    );
    claims
}

#[tokio::test]
async fn introspection_answers_a_jwt_signed_by_the_active_key_when_asked_for_one() {
    for alg in ["EdDSA", "ES256", "PS256", "RS256"] {
        let app = spawn_app_with(&[("signing_alg", alg)]).await;
        let c = app.client("/ping.read", &["--format", "opaque"]);
        let t = app.grant(&c, "/ping.read").await;
        for token in [
            t["access_token"].as_str().unwrap(),
            t["refresh_token"].as_str().unwrap(),
            "not-a-token",
        ] {
            let plain = introspect_as(&app, &c, token, JSON).await;
            assert_eq!(plain.status, 200, "{}", plain.text);
            assert_eq!(plain.header("content-type"), Some(JSON));
            let r = introspect_as(&app, &c, token, JWT_TYPE).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.header("content-type"), Some(JWT_TYPE));
            assert_eq!(r.header("vary"), Some("accept"));
            assert_eq!(decode_header(&r.text).unwrap().alg, alg.parse().unwrap());
            let claims = verify(&app, &r.text, &c.id).await;
            // The same object as the JSON answer, `{"active": false}` included.
            assert_eq!(claims["token_introspection"], plain.json(), "{alg} {token}");
        }
    }
}

#[tokio::test]
async fn the_jwt_names_the_calling_resource_server_as_its_audience() {
    let app = spawn_app().await;
    let api = "https://payments.example.com";
    let owner = app.client("/ping.read", &["--audience", api, "--format", "jwt"]);
    let rs = app.client("/ping.read", &["--resource-server", api]);
    let t = app.grant(&owner, "/ping.read").await;
    let r = introspect_as(&app, &rs, t["access_token"].as_str().unwrap(), JWT_TYPE).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let claims = verify(&app, &r.text, &rs.id).await;
    let inner = &claims["token_introspection"];
    assert_eq!(inner["active"], true, "{claims}");
    assert_eq!(inner["client_id"], owner.id);
    assert_eq!(inner["aud"], api);
    assert_eq!(inner["token_type"], "Bearer");
    assert_eq!(inner["token_use"], "access_token");
}

#[tokio::test]
async fn accept_keeps_json_for_wildcards_honours_q_values_and_refuses_what_allows_neither() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let rfc = app.client("/ping.read", &["--profile", "rfc6749"]);
    let t = app.grant(&c, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap();
    for (accept, want) in [
        ("*/*", Some(JSON)),
        ("application/*", Some(JSON)),
        ("application/json", Some(JSON)),
        (
            "application/token-introspection+jwt;q=0.5, application/json",
            Some(JSON),
        ),
        (
            "application/json;q=0.5, application/token-introspection+jwt",
            Some(JWT_TYPE),
        ),
        (
            "application/json, application/token-introspection+jwt",
            Some(JWT_TYPE),
        ),
        ("application/json;q=0, */*;q=0.1", Some(JWT_TYPE)),
        ("text/html", None),
        ("application/json;q=0", None),
    ] {
        let r = introspect_as(&app, &c, at, accept).await;
        match want {
            Some(content_type) => {
                assert_eq!(r.status, 200, "{accept}: {}", r.text);
                assert_eq!(r.header("content-type"), Some(content_type), "{accept}");
            }
            None => {
                assert_oauth_error(&r, 406, "invalid_request");
                assert_envelope(&r);
                // The same refusal in the rfc6749 profile.
                let r = introspect_as(&app, &rfc, at, accept).await;
                assert_oauth_error(&r, 406, "invalid_request");
            }
        }
    }
    // No Accept header at all: JSON.
    let r = app
        .post(
            "/oauth2/introspect",
            Some(FORM),
            form(&[("token", at)]),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(JSON));
    assert_eq!(r.json()["active"], true);
    // Authentication still comes first: a wrong secret is 401 whatever is accepted.
    let wrong = TestClient {
        id: c.id.clone(),
        secret: "wrong".into(),
    };
    let r = introspect_as(&app, &wrong, at, "text/html").await;
    assert_oauth_error(&r, 401, "invalid_client");
}

#[tokio::test]
async fn discovery_lists_the_introspection_signing_algorithms() {
    let app = spawn_app_with(&[("signing_alg", "ES256")]).await;
    let m = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(
        m["introspection_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(
        m["introspection_signing_alg_values_supported"],
        m["access_token_signing_alg_values_supported"]
    );
}
