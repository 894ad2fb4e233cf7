//! The `refresh_token` grant: rotation, reuse detection, scope narrowing, races.

use std::sync::Arc;

use crate::helpers::*;

#[tokio::test]
async fn refresh_rotates_both_tokens_and_keeps_the_scope() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read", &[]);
    let first = app.grant(&c, "/ping.read /accounts.read").await;
    let r = app
        .refresh(&c, first["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    let second = r.json();
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["scope"], "/ping.read /accounts.read");
    assert_eq!(second["token_type"], "opaque");
    assert_eq!(
        app.ping(second["access_token"].as_str().unwrap()).await,
        200
    );
    // The new refresh token works in turn.
    let r = app
        .refresh(&c, second["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn reused_refresh_token_revokes_its_family() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let first = app.grant(&c, "/ping.read").await;
    let old_rt = first["refresh_token"].as_str().unwrap();
    let second = app.refresh(&c, old_rt).await.json();
    // Theft: the consumed token comes back.
    let r = app.refresh(&c, old_rt).await;
    assert_field_error(&r, "refresh_token", "already used");
    // Every token of the family is dead, including the legitimate successor.
    assert_eq!(app.ping(first["access_token"].as_str().unwrap()).await, 401);
    assert_eq!(
        app.ping(second["access_token"].as_str().unwrap()).await,
        401
    );
    let r = app
        .refresh(&c, second["refresh_token"].as_str().unwrap())
        .await;
    assert_field_error(&r, "refresh_token", "revoked");
    // Other families of the same client are untouched.
    let other = app.grant(&c, "/ping.read").await;
    assert_eq!(app.ping(other["access_token"].as_str().unwrap()).await, 200);
}

#[tokio::test]
async fn reuse_is_invalid_grant_in_the_rfc6749_profile() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--profile", "rfc6749"]);
    let first = app.grant(&c, "/ping.read").await;
    let rt = first["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(&c, rt).await.status, 200);
    assert_oauth_error(&app.refresh(&c, rt).await, 400, "invalid_grant");
}

#[tokio::test]
async fn grace_window_allows_a_quick_retry_of_a_used_token() {
    let app = spawn_app_with(&[("refresh_grace", "60")]).await;
    let c = app.client("/ping.read", &[]);
    let first = app.grant(&c, "/ping.read").await;
    let rt = first["refresh_token"].as_str().unwrap();
    let a = app.refresh(&c, rt).await;
    let b = app.refresh(&c, rt).await;
    assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.text, b.text);
    assert_eq!(
        app.ping(a.json()["access_token"].as_str().unwrap()).await,
        200
    );
    assert_eq!(
        app.ping(b.json()["access_token"].as_str().unwrap()).await,
        200
    );
}

#[tokio::test]
async fn scope_narrows_on_refresh_but_never_widens() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read /accounts.write", &[]);
    let first = app.grant(&c, "/ping.read /accounts.read").await;
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
                ("scope", "/accounts.read"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let narrowed = r.json();
    assert_eq!(narrowed["scope"], "/accounts.read");
    // The narrowed access token lacks /ping.read.
    assert_eq!(
        app.ping(narrowed["access_token"].as_str().unwrap()).await,
        403
    );
    // Widening is refused, and a refused request does not consume the token.
    let rt = narrowed["refresh_token"].as_str().unwrap();
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", "/accounts.write"),
            ],
        )
        .await;
    assert_field_error(&r, "scope", "not part of the original grant");
    // Without a scope, the original grant comes back (RFC 6749 §6).
    let r = app.refresh(&c, rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["scope"], "/ping.read /accounts.read");
}

#[tokio::test]
async fn refresh_follows_the_clients_current_allowed_scopes() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read", &[]);
    let first = app.grant(&c, "/ping.read /accounts.read").await;
    app.cli_json(&["client", "update", &c.id, "--scope", "/ping.read", "--json"]);
    let r = app
        .refresh(&c, first["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["scope"], "/ping.read");
}

#[tokio::test]
async fn another_clients_refresh_token_is_refused_and_left_alone() {
    let app = spawn_app().await;
    let owner = app.client("/ping.read", &[]);
    let thief = app.client("/ping.read", &[]);
    let t = app.grant(&owner, "/ping.read").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let r = app.refresh(&thief, rt).await;
    assert_field_error(&r, "refresh_token", "not issued to this client");
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 200);
    assert_eq!(app.refresh(&owner, rt).await.status, 200);
}

#[tokio::test]
async fn forged_access_and_expired_refresh_tokens_are_invalid_grants() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--refresh-ttl", "1"]);
    let t = app.grant(&c, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap();
    let rt = t["refresh_token"].as_str().unwrap();
    // An access token is not a refresh token; a mangled one fails its checksum.
    assert_field_error(&app.refresh(&c, at).await, "refresh_token", "invalid");
    let mut mangled = rt.to_owned();
    mangled.replace_range(10..11, if &rt[10..11] == "A" { "B" } else { "A" });
    assert_field_error(&app.refresh(&c, &mangled).await, "refresh_token", "invalid");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_field_error(&app.refresh(&c, rt).await, "refresh_token", "expired");
    assert_eq!(
        app.token_rows().await,
        (1, 1, 1),
        "failed refreshes wrote nothing"
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_produce_at_most_one_success() {
    let app = Arc::new(spawn_app().await);
    let c = app.client("/ping.read", &[]);
    for _ in 0..5 {
        let t = app.grant(&c, "/ping.read").await;
        let rt = t["refresh_token"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (app, c, rt) = (app.clone(), c.clone(), rt.clone());
            tasks.push(tokio::spawn(async move { app.refresh(&c, &rt).await }));
        }
        let mut ok = Vec::new();
        for task in tasks {
            let r = task.await.unwrap();
            assert!(
                r.status == 200 || r.status == 422,
                "unexpected {}: {}",
                r.status,
                r.text
            );
            if r.status == 200 {
                ok.push(r.json());
            }
        }
        assert!(
            ok.len() <= 1,
            "{} refreshes of one token succeeded",
            ok.len()
        );
        // Every loser was a reuse, so the family is revoked: even the winner's token is dead.
        for v in ok {
            assert_eq!(app.ping(v["access_token"].as_str().unwrap()).await, 401);
        }
    }
}

#[tokio::test]
async fn refreshed_web_tokens_keep_their_origin_binding() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--origin", "https://app.example.com"]);
    let auth = basic(&c.id, &c.secret);
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ]),
            &[
                ("authorization", &auth),
                ("origin", "https://app.example.com"),
            ],
        )
        .await;
    let rt = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // Claiming another type on refresh does not escape the binding.
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_type", "service"),
            ]),
            &[("authorization", &auth)],
        )
        .await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
            &[
                ("authorization", &auth),
                ("origin", "https://app.example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_disabled_client_cannot_refresh_and_its_tokens_stop_working() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    app.cli_json(&["client", "disable", &c.id, "--json"]);
    assert_oauth_error(
        &app.refresh(&c, t["refresh_token"].as_str().unwrap()).await,
        401,
        "invalid_client",
    );
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 401);
    app.cli_json(&["client", "enable", &c.id, "--json"]);
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 200);
}
