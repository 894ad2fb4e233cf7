//! `POST /oauth2/introspect` (RFC 7662, SPEC §2.3): claims for active tokens, `active: false`
//! for everything else, and visibility rules.

use serde_json::Value;

use crate::helpers::*;

async fn introspect(app: &TestApp, caller: &TestClient, token: &str) -> Value {
    let r = app
        .post(
            "/oauth2/introspect",
            Some(FORM),
            form(&[("token", token)]),
            &[("authorization", &basic(&caller.id, &caller.secret))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    r.json()
}

fn inactive(v: &Value) -> bool {
    v == &serde_json::json!({ "active": false })
}

#[tokio::test]
async fn active_tokens_introspect_with_their_claims() {
    let app = spawn_app().await;
    for format in ["opaque", "jwt"] {
        let c = app.client("/ping.read /accounts.read", &["--format", format]);
        let t = app.grant(&c, "/ping.read /accounts.read").await;
        let v = introspect(&app, &c, t["access_token"].as_str().unwrap()).await;
        assert_eq!(v["active"], true, "{format}: {v}");
        // RFC 7662 §2.2: the access token's type (RFC 6749 §7.1), whatever its format.
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["token_use"], "access_token");
        assert_eq!(v["scope"], "/ping.read /accounts.read");
        assert_eq!(v["client_id"], c.id);
        assert_eq!(v["sub"], c.id);
        assert_eq!(v["exp"], t["expires_in"]);
        assert_eq!(v["iat"], v["nbf"]);
        assert_eq!(v["aud"], format!("http://{}", app.addr));
        assert_eq!(v["iss"], format!("http://{}", app.addr));
        assert!(v["jti"].as_str().is_some_and(|j| !j.is_empty()));

        let v = introspect(&app, &c, t["refresh_token"].as_str().unwrap()).await;
        assert_eq!(v["active"], true, "{v}");
        // A refresh token has no token type; its kind is in token_use.
        assert!(v.get("token_type").is_none(), "{v}");
        assert_eq!(v["token_use"], "refresh_token");
        assert_eq!(v["scope"], "/ping.read /accounts.read");
        assert!(v["exp"].as_i64().unwrap() > now() + 29 * 24 * 3600);
    }
}

#[tokio::test]
async fn unknown_expired_revoked_and_used_tokens_are_inactive() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--access-ttl", "1"]);
    for garbage in [
        "nonsense",
        "tes_at_forged",
        "tes_rt_forged",
        "a.b.c",
        "eyJ.eyJ.sig",
    ] {
        assert!(inactive(&introspect(&app, &c, garbage).await), "{garbage}");
    }
    // Revoked access token, consumed refresh token.
    let t = app.grant(&c, "/ping.read").await;
    app.revoke(&c, &[("token", t["access_token"].as_str().unwrap())])
        .await;
    assert!(inactive(
        &introspect(&app, &c, t["access_token"].as_str().unwrap()).await
    ));
    let next = app
        .refresh(&c, t["refresh_token"].as_str().unwrap())
        .await
        .json();
    assert!(
        inactive(&introspect(&app, &c, t["refresh_token"].as_str().unwrap()).await),
        "consumed"
    );
    // Revoked family: both tokens of the successor go inactive.
    app.revoke(&c, &[("token", next["refresh_token"].as_str().unwrap())])
        .await;
    assert!(inactive(
        &introspect(&app, &c, next["refresh_token"].as_str().unwrap()).await
    ));
    assert!(inactive(
        &introspect(&app, &c, next["access_token"].as_str().unwrap()).await
    ));
    // Expired.
    let t = app.grant(&c, "/ping.read").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(inactive(
        &introspect(&app, &c, t["access_token"].as_str().unwrap()).await
    ));
    // A disabled client's tokens.
    let d = app.client("/ping.read", &["--format", "jwt"]);
    let t = app.grant(&d, "/ping.read").await;
    let rs = app.client("/ping.read", &["--resource-server", "*"]);
    app.cli_json(&["client", "disable", &d.id, "--json"]);
    assert!(inactive(
        &introspect(&app, &rs, t["access_token"].as_str().unwrap()).await
    ));
    assert!(inactive(
        &introspect(&app, &rs, t["refresh_token"].as_str().unwrap()).await
    ));
}

#[tokio::test]
async fn visibility_own_tokens_audience_and_all() {
    let app = spawn_app().await;
    let api = "https://payments.example.com";
    let owner = app.client("/ping.read", &["--audience", api]);
    let other_owner = app.client("/ping.read", &[]);
    let stranger = app.client("/ping.read", &[]);
    let payments_rs = app.client("/ping.read", &["--resource-server", api]);
    let all_rs = app.client("/ping.read", &["--resource-server", "*"]);
    let t = app.grant(&owner, "/ping.read").await;
    let u = app.grant(&other_owner, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap();
    let rt = t["refresh_token"].as_str().unwrap();

    assert_eq!(introspect(&app, &owner, at).await["active"], true);
    assert!(
        inactive(&introspect(&app, &stranger, at).await),
        "not visible to a stranger"
    );
    assert_eq!(introspect(&app, &payments_rs, at).await["aud"], api);
    assert!(
        inactive(&introspect(&app, &payments_rs, u["access_token"].as_str().unwrap()).await),
        "other audience"
    );
    assert!(
        inactive(&introspect(&app, &payments_rs, rt).await),
        "refresh tokens have no audience"
    );
    assert_eq!(
        introspect(&app, &all_rs, u["access_token"].as_str().unwrap()).await["active"],
        true
    );
    assert_eq!(introspect(&app, &all_rs, rt).await["active"], true);
}

#[tokio::test]
async fn the_resource_parameter_sets_an_allowed_audience() {
    let app = spawn_app().await;
    let c = app.client(
        "/ping.read",
        &[
            "--format",
            "jwt",
            "--resource",
            "https://a.example.com",
            "--resource",
            "https://b.example.com",
        ],
    );
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
                ("resource", "https://b.example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = introspect(&app, &c, r.json()["access_token"].as_str().unwrap()).await;
    assert_eq!(v["aud"], "https://b.example.com");
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
                ("resource", "https://evil.example.com"),
            ],
        )
        .await;
    assert_field_error(&r, "resource", "not an allowed resource");
    let rfc = app.client("/ping.read", &["--profile", "rfc6749"]);
    let r = app
        .token(
            &rfc,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
                ("resource", "https://a.example.com"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_target");
}

#[tokio::test]
async fn introspection_requires_authentication_and_a_token() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let rfc = app.client("/ping.read", &["--profile", "rfc6749"]);
    let r = app
        .post(
            "/oauth2/introspect",
            Some(FORM),
            form(&[("token", "x")]),
            &[],
        )
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = app
        .post(
            "/oauth2/introspect",
            Some(FORM),
            form(&[]),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    assert_field_error(&r, "token", "required");
    let r = app
        .post(
            "/oauth2/introspect",
            Some(FORM),
            form(&[]),
            &[("authorization", &basic(&rfc.id, &rfc.secret))],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let body =
        serde_json::json!({"token": "x", "client_id": c.id, "client_secret": c.secret}).to_string();
    let r = app.post("/oauth2/introspect", Some(JSON), body, &[]).await;
    assert_eq!(r.json(), serde_json::json!({"active": false}));
}
