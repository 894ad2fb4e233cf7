//! A stalled database: while it cannot write, token requests are answered `503`, and a `503`
//! means nothing was committed; every other answer is the write's real outcome.
//!
//! The stall is real: a PostgreSQL table locked by another session, or SQLite's write lock held
//! by another connection, for longer than the server's statement and busy timeouts. Requests
//! arrive in waves over the stall, so some are cancelled by the database, some are withdrawn
//! after waiting for a batch, and some are taken by a batch that commits when the stall ends.
//! Afterwards every `503` is checked for having left nothing behind: a refresh answered `503` must
//! still be refreshable with the same token (had it committed, the retry would be taken for
//! theft and revoke the family), and the token tables must hold exactly the rows of the requests
//! answered `200`.

use std::time::Duration;

use sqlx::Connection as _;
use tokio::task::JoinSet;

use crate::helpers::*;

/// Requests per wave of each kind, and when each wave starts after the stall began.
const PER_WAVE: usize = 2;
const WAVES_MS: &[u64] = &[0, 1_000, 2_000, 3_500, 4_500, 6_000, 8_500, 11_000];
/// How long the stall lasts: beyond PostgreSQL's statement timeout (8 s) and SQLite's busy
/// timeout (5 s), and beyond the queue timeout (5 s) after the first batch is cancelled.
const STALL: Duration = Duration::from_secs(15);

#[derive(Debug)]
enum Sent {
    Grant(Reply),
    Refresh {
        client: TestClient,
        refresh_token: String,
        reply: Reply,
    },
}

/// Families and access tokens in the app's database.
async fn rows(app: &TestApp) -> (i64, i64) {
    if let Some(db) = &app.pg {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
        let f = count("SELECT COUNT(*) FROM token_families")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        let a = count("SELECT COUNT(*) FROM access_tokens")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        (f, a)
    } else {
        let (f, a, _) = app.token_rows().await;
        (f, a)
    }
}

/// Runs the waves of requests against `app` while `stall` holds the database, then checks
/// every answer. `stall` returns once the database is free again.
async fn waves_over_a_stall<S>(app: TestApp, stall: impl FnOnce() -> S)
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let app = std::sync::Arc::new(app);
    let granter = app.client("/ping.read", &[]);
    let mut refreshers = Vec::new();
    for _ in 0..WAVES_MS.len() * PER_WAVE {
        let c = app.client("/ping.read", &[]);
        let first = app.grant(&c, "/ping.read").await;
        let refresh_token = first["refresh_token"].as_str().expect("rt").to_owned();
        refreshers.push((c, refresh_token));
    }
    let (families_before, access_before) = rows(&app).await;

    let stalled = tokio::spawn(stall());
    // Let the stall take hold before the first wave.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let mut sent = JoinSet::new();
    let mut refreshers = refreshers.into_iter();
    for &at in WAVES_MS {
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        for _ in 0..PER_WAVE {
            let a = app.clone();
            let c = granter.clone();
            sent.spawn(async move {
                Sent::Grant(
                    a.token(
                        &c,
                        &[
                            ("grant_type", "client_credentials"),
                            ("scope", "/ping.read"),
                        ],
                    )
                    .await,
                )
            });
            let a = app.clone();
            let (client, refresh_token) = refreshers.next().expect("a refresher per request");
            sent.spawn(async move {
                let reply = a.refresh(&client, &refresh_token).await;
                Sent::Refresh {
                    client,
                    refresh_token,
                    reply,
                }
            });
        }
    }
    let mut answers = Vec::new();
    while let Some(done) = sent.join_next().await {
        answers.push(done.expect("request task"));
    }
    stalled.await.expect("stall task");

    let mut unavailable = 0;
    let mut granted = 0;
    let mut refreshed = 0;
    for answer in answers {
        let reply = match &answer {
            Sent::Grant(r) | Sent::Refresh { reply: r, .. } => r,
        };
        match reply.status {
            200 => {
                let access = reply.json()["access_token"]
                    .as_str()
                    .expect("access_token")
                    .to_owned();
                assert_eq!(app.ping(&access).await, 200, "a token answered 200 works");
                match answer {
                    Sent::Grant(_) => granted += 1,
                    Sent::Refresh { .. } => refreshed += 1,
                }
            }
            503 => {
                unavailable += 1;
                assert!(
                    reply.header("retry-after").is_some(),
                    "a 503 says when to retry: {reply:?}"
                );
                if let Sent::Refresh {
                    client,
                    refresh_token,
                    ..
                } = &answer
                {
                    // Nothing committed: the same refresh token is still live, and its family
                    // was not revoked as stolen.
                    let retry = app.refresh(client, refresh_token).await;
                    assert_eq!(
                        retry.status, 200,
                        "a refresh answered 503 must not have consumed its token: {}",
                        retry.text
                    );
                    let access = retry.json()["access_token"]
                        .as_str()
                        .expect("access_token")
                        .to_owned();
                    assert_eq!(app.ping(&access).await, 200);
                    refreshed += 1;
                }
            }
            other => panic!("only 200 or 503 while the database stalls, got {other}: {reply:?}"),
        }
    }
    assert!(
        unavailable > 0,
        "the stall must have made some requests wait past the database's timeouts"
    );
    let (families, access) = rows(&app).await;
    assert_eq!(
        families - families_before,
        granted,
        "exactly one family per grant answered 200, none for a grant answered 503"
    );
    assert_eq!(
        access - access_before,
        granted + refreshed,
        "exactly one access token per grant or refresh answered 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_postgres_answers_503_only_for_work_that_did_not_commit() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    let url = app.pg.as_ref().expect("pg").url.clone();
    waves_over_a_stall(app, move || async move {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("LOCK TABLE access_tokens IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("lock");
        tokio::time::sleep(STALL).await;
        tx.commit().await.expect("release");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sqlite_answers_503_only_for_work_that_did_not_commit() {
    let app = spawn_app().await;
    let path = app.db_path();
    waves_over_a_stall(app, move || async move {
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.busy_timeout(Duration::from_secs(5)).expect("busy");
            conn.execute_batch("BEGIN IMMEDIATE")
                .expect("take the write lock");
            std::thread::sleep(STALL);
            conn.execute_batch("COMMIT").expect("release");
        })
        .await
        .expect("stall");
    })
    .await;
}
