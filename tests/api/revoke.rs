//! `POST /oauth2/revoke` (RFC 7009, SPEC §2.2).

use crate::helpers::*;

#[tokio::test]
async fn revoking_an_access_token_stops_it_and_only_it() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap();
    let r = app
        .revoke(&c, &[("token", at), ("token_type_hint", "access_token")])
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    assert_envelope(&r);
    assert_eq!(app.ping(at).await, 401);
    // The refresh token of the family still works.
    assert_eq!(
        app.refresh(&c, t["refresh_token"].as_str().unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let r = app.revoke(&c, &[("token", rt)]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 401);
    assert_field_error(&app.refresh(&c, rt).await, "refresh_token", "revoked");
}

#[tokio::test]
async fn revoke_succeeds_with_200_in_the_rfc6749_profile() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--profile", "rfc6749"]);
    let t = app.grant(&c, "/ping.read").await;
    let r = app
        .revoke(&c, &[("token", t["access_token"].as_str().unwrap())])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 401);
}

#[tokio::test]
async fn unknown_malformed_and_already_revoked_tokens_are_a_success() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap();
    for token in ["nonsense", "tes_at_forged", "a.b.c", at, at] {
        let r = app.revoke(&c, &[("token", token)]).await;
        assert_eq!(r.status, 204, "{token}: {}", r.text);
    }
    // JSON body too.
    let body =
        serde_json::json!({"token": "unknown", "client_id": c.id, "client_secret": c.secret})
            .to_string();
    assert_eq!(
        app.post("/oauth2/revoke", Some(JSON), body, &[])
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn another_clients_token_is_refused_and_left_untouched() {
    let app = spawn_app().await;
    let owner = app.client("/ping.read", &[]);
    let other = app.client("/ping.read", &[]);
    let t = app.grant(&owner, "/ping.read").await;
    for field in ["access_token", "refresh_token"] {
        let r = app
            .revoke(&other, &[("token", t[field].as_str().unwrap())])
            .await;
        assert_oauth_error(&r, 400, "unauthorized_client");
    }
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 200);
    assert_eq!(
        app.refresh(&owner, t["refresh_token"].as_str().unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revoke_field_errors_follow_the_profile() {
    let app = spawn_app().await;
    let seed = app.client("/ping.read", &[]);
    let rfc = app.client("/ping.read", &["--profile", "rfc6749"]);
    assert_field_error(&app.revoke(&seed, &[]).await, "token", "token is required");
    assert_field_error(
        &app.revoke(&seed, &[("token", "x"), ("token_type_hint", "id_token")])
            .await,
        "token_type_hint",
        "must be",
    );
    assert_oauth_error(&app.revoke(&rfc, &[]).await, 400, "invalid_request");
    assert_oauth_error(
        &app.revoke(&rfc, &[("token", "x"), ("token_type_hint", "id_token")])
            .await,
        400,
        "unsupported_token_type",
    );
}

#[tokio::test]
async fn revoke_requires_client_authentication() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap();
    let r = app
        .post("/oauth2/revoke", Some(FORM), form(&[("token", at)]), &[])
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = app
        .post(
            "/oauth2/revoke",
            Some(FORM),
            form(&[("token", at)]),
            &[("authorization", &basic(&c.id, "wrong"))],
        )
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"tessera\"")
    );
    assert_eq!(app.ping(at).await, 200);
}
