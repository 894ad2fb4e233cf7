//! The background cleanup (`cleanup_interval`, `cleanup_batch`, `token_retention`): expired and
//! revoked tokens are deleted in small batches, on both backends, so the tables stay bounded.

use std::time::Duration;

use sqlx::Connection as _;

use crate::helpers::*;

/// Short-lived tokens and a cleanup every second, in batches of 3.
const FAST_CLEANUP: &[(&str, &str)] = &[
    ("access_ttl", "1"),
    ("refresh_ttl", "1"),
    ("cleanup_interval", "1"),
    ("cleanup_batch", "3"),
];

/// Row counts (families, access tokens, refresh tokens) of a PostgreSQL app.
async fn pg_token_rows(app: &TestApp) -> (i64, i64, i64) {
    let mut conn = sqlx::PgConnection::connect(&app.database_url())
        .await
        .expect("connect");
    let mut counts = Vec::new();
    for q in [
        "SELECT COUNT(*) FROM token_families",
        "SELECT COUNT(*) FROM access_tokens",
        "SELECT COUNT(*) FROM refresh_tokens",
    ] {
        counts.push(
            sqlx::query_scalar::<_, i64>(q)
                .fetch_one(&mut conn)
                .await
                .expect("count"),
        );
    }
    let _ = conn.close().await;
    (counts[0], counts[1], counts[2])
}

async fn rows(app: &TestApp) -> (i64, i64, i64) {
    if app.pg.is_some() {
        pg_token_rows(app).await
    } else {
        app.token_rows().await
    }
}

/// Issues ten grants (one refreshed, one revoked), then waits for the cleanup to empty the
/// token tables: more rows than one batch, so it takes several transactions.
async fn expired_and_revoked_tokens_disappear(app: TestApp) {
    let c = app.client("/ping.read", &[]);
    for i in 0..10 {
        let t = app.grant(&c, "/ping.read").await;
        let rt = t["refresh_token"].as_str().unwrap();
        match i {
            // With one-second tokens the refresh may already be too late (422); either way.
            0 => assert!(matches!(app.refresh(&c, rt).await.status, 200 | 422)),
            1 => assert_eq!(app.revoke(&c, &[("token", rt)]).await.status, 204),
            _ => {}
        }
    }
    assert!(rows(&app).await.0 > 0);
    let mut last = (0, 0, 0);
    for _ in 0..600 {
        last = rows(&app).await;
        if last == (0, 0, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cleanup left rows behind: {last:?}");
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_deleted_in_the_background_on_sqlite() {
    expired_and_revoked_tokens_disappear(spawn_app_with(FAST_CLEANUP).await).await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_deleted_in_the_background_on_postgres() {
    let Some(app) = spawn_app_pg(FAST_CLEANUP).await else {
        return;
    };
    expired_and_revoked_tokens_disappear(app).await;
}

#[tokio::test]
async fn token_retention_keeps_revoked_tokens_for_audit() {
    let app = spawn_app_with(&[("cleanup_interval", "1"), ("token_retention", "3600")]).await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let rt = t["refresh_token"].as_str().unwrap();
    assert_eq!(app.revoke(&c, &[("token", rt)]).await.status, 204);
    // A second app on a fresh database, without retention, shows a cleanup run deletes such a
    // row within a few intervals; here the row is still present after as long.
    let control = spawn_app_with(&[("cleanup_interval", "1")]).await;
    let cc = control.client("/ping.read", &[]);
    let ct = control.grant(&cc, "/ping.read").await;
    let crt = ct["refresh_token"].as_str().unwrap();
    assert_eq!(control.revoke(&cc, &[("token", crt)]).await.status, 204);
    let mut gone = false;
    for _ in 0..600 {
        if control.token_rows().await == (0, 0, 0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "without retention the revoked family is deleted");
    assert_eq!(
        app.token_rows().await,
        (1, 1, 1),
        "with retention it is kept"
    );
    assert_field_error(&app.refresh(&c, rt).await, "refresh_token", "revoked");
}
