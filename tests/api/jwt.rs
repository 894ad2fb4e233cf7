//! JWT access tokens (RFC 9068), verified by an independent JOSE library against the JWKS.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use crate::helpers::*;

async fn jwks(app: &TestApp) -> JwkSet {
    let r = app.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(r.status, 200);
    serde_json::from_str(&r.text).expect("JWKS parses as a JWK set")
}

#[tokio::test]
async fn jwt_access_tokens_verify_with_the_published_key() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts/*/wallets.read", &["--format", "jwt"]);
    let scope = "/ping.read /accounts/acct-1/wallets.read";
    let t = app.grant(&c, scope).await;
    assert_eq!(t["token_type"], "jwt", "seed profile names the format");
    let token = t["access_token"].as_str().unwrap();

    let header = decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("kid");
    let set = jwks(&app).await;
    let jwk = set.find(&kid).expect("kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();

    let issuer = format!("http://{}", app.addr);
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&issuer]);
    validation.set_audience(&[&issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "sub", "aud", "jti"]);
    let claims: Value = decode(token, &key, &validation).expect("verifies").claims;
    assert_eq!(claims["sub"], c.id);
    assert_eq!(claims["client_id"], c.id);
    assert_eq!(claims["scope"], scope);
    assert_eq!(claims["exp"], t["expires_in"]);
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    assert_eq!(claims["iat"], claims["nbf"]);
    assert_eq!(app.ping(token).await, 200);
}

#[tokio::test]
async fn jwt_audience_comes_from_the_client_or_the_server_setting() {
    let app = spawn_app_with(&[("audience", "https://api.example.com")]).await;
    let a = app.client("/ping.read", &["--format", "jwt"]);
    let b = app.client(
        "/ping.read",
        &[
            "--format",
            "jwt",
            "--audience",
            "https://payments.example.com",
        ],
    );
    for (c, aud) in [
        (&a, "https://api.example.com"),
        (&b, "https://payments.example.com"),
    ] {
        let t = app.grant(c, "/ping.read").await;
        let token = t["access_token"].as_str().unwrap();
        let kid = decode_header(token).unwrap().kid.unwrap();
        let set = jwks(&app).await;
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[aud]);
        assert!(decode::<Value>(token, &key, &v).is_ok(), "aud {aud}");
    }
}

#[tokio::test]
async fn revoked_and_tampered_jwts_are_refused() {
    let app = spawn_app().await;
    let c = app.client(
        "/ping.read /accounts.read",
        &["--format", "jwt", "--profile", "moov"],
    );
    let t = app.grant(&c, "/accounts.read").await;
    assert_eq!(t["token_type"], "Bearer");
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(app.ping(token).await, 403);

    // Change the scope claim without re-signing.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = "/ping.read".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(app.ping(&forged).await, 401);
    // alg: none, with no signature.
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        parts[1]
    );
    assert_eq!(app.ping(&none).await, 401);

    let t = app.grant(&c, "/ping.read").await;
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(app.ping(token).await, 200);
    assert_eq!(app.revoke(&c, &[("token", token)]).await.status, 204);
    assert_eq!(app.ping(token).await, 401, "revoked by jti");
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--format", "jwt"]);
    let t = app.grant(&c, "/ping.read").await;
    let before = jwks(&app).await;
    assert_eq!(
        before.keys.len(),
        2,
        "the active key and the next key are published"
    );
    let dir = app.stop().await;
    let app = spawn_in(dir, &[]).await;
    let after = jwks(&app).await;
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&after).unwrap(),
        "same key after restart"
    );
    // The issuer changed with the port, so verify the signature only.
    let token = t["access_token"].as_str().unwrap();
    let kid = decode_header(token).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(after.find(&kid).unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_aud = false;
    assert!(decode::<Value>(token, &key, &v).is_ok());
}
