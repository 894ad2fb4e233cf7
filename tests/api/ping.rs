//! `GET /ping` (SPEC §2.5): how a resource server checks a Tessera token.

use crate::helpers::*;

#[tokio::test]
async fn a_token_holding_ping_read_gets_200_with_no_body() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let r = app
        .get(
            "/ping",
            &[(
                "authorization",
                &format!("Bearer {}", t["access_token"].as_str().unwrap()),
            )],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text.is_empty());
    assert_envelope(&r);
}

#[tokio::test]
async fn a_token_without_the_scope_gets_403_insufficient_scope() {
    let app = spawn_app().await;
    let c = app.client("/accounts.read", &[]);
    let t = app.grant(&c, "/accounts.read").await;
    let r = app
        .get(
            "/ping",
            &[(
                "authorization",
                &format!("Bearer {}", t["access_token"].as_str().unwrap()),
            )],
        )
        .await;
    assert_eq!(r.status, 403);
    let www = r.header("www-authenticate").unwrap();
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");
    assert!(www.contains("scope=\"/ping.read\""), "{www}");
}

#[tokio::test]
async fn missing_invalid_and_expired_credentials_get_401_with_a_challenge() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--access-ttl", "1"]);
    let t = app.grant(&c, "/ping.read").await;

    let r = app.get("/ping", &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("Bearer"));

    for bad in [
        "garbage",
        "tes_at_forged",
        "a.b.c",
        t["refresh_token"].as_str().unwrap(),
    ] {
        let r = app
            .get("/ping", &[("authorization", &format!("Bearer {bad}"))])
            .await;
        assert_eq!(r.status, 401, "{bad}");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    }
    let r = app.get("/ping", &[("authorization", "Digest abc")]).await;
    assert_eq!(r.status, 401);

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        app.ping(t["access_token"].as_str().unwrap()).await,
        401,
        "expired"
    );
}

#[tokio::test]
async fn basic_client_credentials_are_accepted_on_ping() {
    let app = spawn_app().await;
    let c = app.client("/accounts.read", &[]);
    let r = app
        .get("/ping", &[("authorization", &basic(&c.id, &c.secret))])
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .get("/ping", &[("authorization", &basic(&c.id, "wrong"))])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"tessera\"")
    );
    let r = app.get("/ping", &[("authorization", "Basic !!!")]).await;
    assert_eq!(r.status, 401);
}
