//! Tessera on PostgreSQL: several real `tessera serve` processes on one database, races between
//! them decided by the database, migrations at start-up, and database outages.
//!
//! Each test gets a fresh database (see `tests/common/pg.rs`); without PostgreSQL they fail
//! under `CI` and are skipped loudly otherwise. Nothing here waits on the wall clock to decide a
//! race: many concurrent attempts are made, and every outcome is checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection as _;
use tokio::task::JoinSet;

use crate::helpers::*;
use crate::pg::TestDb;

/// Every instance of a deployment shares the issuer (JWTs carry it), the master key and the
/// database URL.
const SERVE_ARGS: &[&str] = &["--issuer", "https://tessera.test"];

fn tokens(v: &Value) -> (String, String) {
    (
        v["access_token"].as_str().expect("access_token").to_owned(),
        v["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    )
}

/// A `client_credentials` request for `/ping.read`, whatever its answer.
async fn ping_grant(app: &TestApp, c: &TestClient) -> Reply {
    app.token(
        c,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
        ],
    )
    .await
}

/// A fresh database, a master key, and two `tessera serve` processes started at the same
/// moment on them.
async fn two_instances() -> Option<(Arc<TestDb>, Arc<TestApp>, Arc<TestApp>)> {
    let db = Arc::new(TestDb::create().await?);
    let key = new_master_key();
    let (a, b) = tokio::join!(
        spawn_serve(&db, &key, SERVE_ARGS),
        spawn_serve(&db, &key, SERVE_ARGS)
    );
    Some((db, Arc::new(a), Arc::new(b)))
}

/// Polls `probe` until it returns true, for at most `limit`; true if it did.
async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if probe().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_token_minted_on_one_instance_is_used_refreshed_and_revoked_on_another() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    for format in ["opaque", "jwt"] {
        let c = a.client("/ping.read", &["--format", format]);
        let (at, rt) = tokens(&a.grant(&c, "/ping.read").await);
        assert_eq!(
            b.ping(&at).await,
            200,
            "{format}: minted on A, checked on B"
        );

        let r = b.refresh(&c, &rt).await;
        assert_eq!(
            r.status, 200,
            "{format}: minted on A, refreshed on B: {}",
            r.text
        );
        let (at2, rt2) = tokens(&r.json());
        assert_eq!(
            a.ping(&at2).await,
            200,
            "{format}: refreshed on B, checked on A"
        );

        let rv = b.revoke(&c, &[("token", &rt2)]).await;
        assert_eq!(rv.status, 204, "{}", rv.text);
        for app in [&a, &b] {
            assert_eq!(app.ping(&at).await, 401, "{format}: the family is revoked");
            assert_eq!(app.ping(&at2).await, 401, "{format}: the family is revoked");
        }
        assert_field_error(&a.refresh(&c, &rt2).await, "refresh_token", "revoked");
    }
    let jwks_a = a.get("/.well-known/jwks.json", &[]).await.json();
    let jwks_b = b.get("/.well-known/jwks.json", &[]).await.json();
    assert_eq!(jwks_a, jwks_b, "both instances publish the same key");
}

#[tokio::test]
async fn an_access_token_revoked_on_one_instance_is_refused_by_every_instance_at_once() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    let opaque = a.client("/ping.read", &[]);
    let jwt = a.client("/ping.read", &["--format", "jwt"]);
    for i in 0..10 {
        let (minter, revoker) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let c = if i % 4 < 2 { &opaque } else { &jwt };
        let (at, _) = tokens(&minter.grant(c, "/ping.read").await);
        assert_eq!(a.ping(&at).await, 200);
        assert_eq!(b.ping(&at).await, 200);
        let rv = revoker.revoke(c, &[("token", &at)]).await;
        assert_eq!(rv.status, 204, "{}", rv.text);
        // No waiting: the 204 came after the commit, and every instance reads the database.
        assert_eq!(minter.ping(&at).await, 401, "round {i}");
        assert_eq!(revoker.ping(&at).await, 401, "round {i}");
    }
    // Every one of those checks went through the batched access-token read (20 per instance).
    for app in [&a, &b] {
        let looked_up = app
            .metric(
                "tessera_postgres_read_batch_size_sum",
                &[("read", "access_token")],
            )
            .await;
        assert!(looked_up >= 20.0, "{looked_up} access-token lookups");
    }
}

#[tokio::test]
async fn a_client_disabled_or_its_secret_rotated_through_the_cli_changes_every_instance_at_once() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    let c = a.client("/ping.read", &[]);
    let (at, _) = tokens(&a.grant(&c, "/ping.read").await);
    let grant = |app: Arc<TestApp>, c: TestClient| async move { ping_grant(&app, &c).await.status };

    let out = a.cli(&["client", "disable", &c.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for app in [&a, &b] {
        assert_eq!(grant(app.clone(), c.clone()).await, 401);
        assert_eq!(
            app.ping(&at).await,
            401,
            "a disabled client's tokens stop at once"
        );
    }
    let out = b.cli(&["client", "enable", &c.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for app in [&a, &b] {
        assert_eq!(grant(app.clone(), c.clone()).await, 200);
        assert_eq!(app.ping(&at).await, 200);
    }

    let rotated = a.cli_json(&[
        "client",
        "rotate-secret",
        &c.id,
        "--keep-old",
        "0",
        "--json",
    ]);
    let fresh = TestClient {
        id: c.id.clone(),
        secret: rotated["client_secret"].as_str().unwrap().to_owned(),
    };
    for app in [&a, &b] {
        assert_eq!(grant(app.clone(), c.clone()).await, 401, "old secret");
        assert_eq!(grant(app.clone(), fresh.clone()).await, 200, "new secret");
    }
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_on_two_instances_succeed_once() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    let c = a.client("/ping.read", &[]);
    for round in 0..20 {
        let (_, rt) = tokens(&a.grant(&c, "/ping.read").await);
        let mut attempts = JoinSet::new();
        for i in 0..8 {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (c, rt) = (c.clone(), rt.clone());
            attempts.spawn(async move { app.refresh(&c, &rt).await });
        }
        let replies = attempts.join_all().await;
        let (won, lost): (Vec<_>, Vec<_>) = replies.iter().partition(|r| r.status == 200);
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: one of 8 racing refreshes wins: {statuses:?}"
        );
        for r in &lost {
            assert_field_error(r, "refresh_token", "");
        }
        // A loser that saw the token consumed treats it as theft: the winner's tokens die too.
        if lost.iter().any(|r| r.text.contains("already used")) {
            let (at2, rt2) = tokens(&won[0].json());
            for app in [&a, &b] {
                assert_eq!(app.ping(&at2).await, 401, "round {round}");
            }
            assert_field_error(&b.refresh(&c, &rt2).await, "refresh_token", "revoked");
        }
    }
}

#[tokio::test]
async fn a_refresh_racing_a_revoke_on_another_instance_never_leaves_a_live_successor() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    let c = a.client("/ping.read", &[]);
    let mut refreshed = 0;
    for round in 0..30 {
        let (at, rt) = tokens(&a.grant(&c, "/ping.read").await);
        let (refresher, revoker) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let revoke_fields = [("token", rt.as_str())];
        let (r, rv) = tokio::join!(
            refresher.refresh(&c, &rt),
            revoker.revoke(&c, &revoke_fields)
        );
        assert_eq!(rv.status, 204, "round {round}: {}", rv.text);
        for app in [&a, &b] {
            assert_eq!(app.ping(&at).await, 401, "round {round}");
        }
        match r.status {
            200 => {
                refreshed += 1;
                let (at2, rt2) = tokens(&r.json());
                for app in [&a, &b] {
                    assert_eq!(app.ping(&at2).await, 401, "round {round}: live successor");
                    assert_field_error(&app.refresh(&c, &rt2).await, "refresh_token", "");
                }
            }
            _ => assert_field_error(&r, "refresh_token", ""),
        }
    }
    eprintln!("refresh won the race against revoke in {refreshed} of 30 rounds");
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_family_on_every_instance() {
    let Some((_db, a, b)) = two_instances().await else {
        return;
    };
    let c = a.client("/ping.read", &[]);
    let (at, rt) = tokens(&a.grant(&c, "/ping.read").await);
    let r = a.refresh(&c, &rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (at2, rt2) = tokens(&r.json());
    assert_field_error(&b.refresh(&c, &rt).await, "refresh_token", "already used");
    for app in [&a, &b] {
        assert_eq!(app.ping(&at).await, 401);
        assert_eq!(app.ping(&at2).await, 401);
        assert_field_error(&app.refresh(&c, &rt2).await, "refresh_token", "revoked");
    }
}

#[tokio::test]
async fn instances_starting_together_migrate_once_and_share_one_signing_key() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let db = Arc::new(db);
    let key = new_master_key();
    let (a, b, c) = tokio::join!(
        spawn_serve(&db, &key, SERVE_ARGS),
        spawn_serve(&db, &key, SERVE_ARGS),
        spawn_serve(&db, &key, SERVE_ARGS)
    );
    let mut jwks = Vec::new();
    for app in [&a, &b, &c] {
        assert_eq!(app.get("/readyz", &[]).await.status, 200);
        jwks.push(app.get("/.well-known/jwks.json", &[]).await.json());
    }
    assert_eq!(
        jwks[0]["keys"].as_array().unwrap().len(),
        2,
        "one active and one next key: {:?}",
        jwks[0]
    );
    assert_eq!(jwks[0], jwks[1]);
    assert_eq!(jwks[0], jwks[2]);
    // A token signed on one verifies on the others.
    let client = a.client("/ping.read", &["--format", "jwt"]);
    let (at, _) = tokens(&a.grant(&client, "/ping.read").await);
    assert_eq!(b.ping(&at).await, 200);
    assert_eq!(c.ping(&at).await, 200);
}

#[tokio::test]
async fn tessera_migrate_prepares_a_postgres_database_and_serve_needs_the_master_key() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let run = |args: &[&str], key: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(args)
            .arg("--database-url")
            .arg(&db.url)
            .env_remove("TESSERA_MASTER_KEY")
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_DATABASE_URL");
        if let Some(key) = key {
            cmd.env("TESSERA_MASTER_KEY", key);
        }
        cmd.output().expect("run tessera")
    };
    for _ in 0..2 {
        let out = run(&["migrate"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_name IN ('meta', 'clients', 'token_families', 'access_tokens', \
         'refresh_tokens', 'signing_keys')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 6);
    let _ = conn.close().await;

    let out = run(&["serve", "--listen", "127.0.0.1:0"], None);
    assert!(!out.status.success(), "no master key, no PostgreSQL");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no master key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["client", "list", "--json"], Some(&new_master_key()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the load saw during an outage.
#[derive(Default)]
struct Seen {
    /// 2xx token responses.
    ok: usize,
    /// 503 responses (each with Retry-After).
    unavailable: usize,
    /// Access tokens answered with 200 and never revoked by the load.
    committed: Vec<String>,
    /// Access tokens whose revocation was answered 204.
    revoked: Vec<String>,
    /// Anything not allowed: a 5xx other than 503, a 503 without Retry-After, a 4xx.
    wrong: Vec<String>,
}

impl Seen {
    fn check_unavailable(&mut self, what: &str, r: &Reply) {
        if r.status == 503 && r.header("retry-after").is_some() {
            self.unavailable += 1;
        } else {
            self.wrong.push(format!("{what}: {} {}", r.status, r.text));
        }
    }
}

/// One load worker: grants, refreshes each new refresh token once, revokes every third
/// access token, and checks a bearer token, until `stop`.
async fn load(app: Arc<TestApp>, c: TestClient, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = ping_grant(&app, &c).await;
        if r.status != 200 {
            seen.lock().unwrap().check_unavailable("grant", &r);
            continue;
        }
        let (at, rt) = tokens(&r.json());
        {
            let mut s = seen.lock().unwrap();
            s.ok += 1;
            s.committed.push(at.clone());
        }
        // Each refresh token is presented once, so no answer can be a reuse refusal.
        let r = app.refresh(&c, &rt).await;
        if r.status == 200 {
            let mut s = seen.lock().unwrap();
            s.ok += 1;
            s.committed.push(tokens(&r.json()).0);
        } else {
            seen.lock().unwrap().check_unavailable("refresh", &r);
        }
        let p = app
            .get("/ping", &[("authorization", &format!("Bearer {at}"))])
            .await;
        if p.status != 200 {
            seen.lock().unwrap().check_unavailable("ping", &p);
        }
        if n.is_multiple_of(3) {
            let rv = app.revoke(&c, &[("token", &at)]).await;
            let mut s = seen.lock().unwrap();
            // Whatever the answer, this token is no longer known to be live.
            s.committed.retain(|t| t != &at);
            if rv.status == 204 {
                s.revoked.push(at);
            } else {
                s.check_unavailable("revoke", &rv);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_gives_503_with_retry_after_and_service_resumes_by_itself() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    let app = Arc::new(app);
    let db = app.pg.clone().unwrap();
    let c = app.client("/ping.read", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut workers = JoinSet::new();
    for _ in 0..4 {
        workers.spawn(load(app.clone(), c.clone(), stop.clone(), seen.clone()));
    }
    let ok = || seen.lock().unwrap().ok;
    let unavailable = || seen.lock().unwrap().unavailable;
    let ready = |app: Arc<TestApp>| async move { app.get("/readyz", &[]).await };
    assert!(eventually(Duration::from_secs(60), || async { ok() >= 20 }).await);

    // 1. Connections killed under load, again and again: the pool replaces them.
    for _ in 0..5 {
        db.kill_connections().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. The database refuses every connection for a while.
    db.allow_connections(false).await;
    db.kill_connections().await;
    let before = unavailable();
    let went_down = eventually(Duration::from_secs(30), || async {
        ready(app.clone()).await.status == 503
    })
    .await;
    let load_saw_it = eventually(Duration::from_secs(30), || async {
        unavailable() >= before + 10
    })
    .await;
    let readyz = ready(app.clone()).await;
    db.allow_connections(true).await;
    assert!(went_down, "/readyz reports the outage");
    assert!(load_saw_it, "the load ran into the outage");
    assert_eq!(readyz.status, 503);
    assert!(readyz.header("retry-after").is_some());

    // 3. Back by itself: no restart, no operator.
    assert!(
        eventually(Duration::from_secs(60), || async {
            ready(app.clone()).await.status == 200
        })
        .await,
        "/readyz recovers"
    );
    let after = ok();
    assert!(
        eventually(Duration::from_secs(60), || async { ok() >= after + 20 }).await,
        "tokens are issued again"
    );
    stop.store(true, Ordering::Relaxed);
    workers.join_all().await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.wrong.is_empty(),
        "only 2xx or 503 + Retry-After: {:?}",
        seen.wrong
    );
    // Every 200 was committed: its access token works now; every 204 revocation holds.
    for at in &seen.committed {
        assert_eq!(
            app.ping(at).await,
            200,
            "a token answered 200 was not committed"
        );
    }
    for at in &seen.revoked {
        assert_eq!(
            app.ping(at).await,
            401,
            "a revocation answered 204 was lost"
        );
    }
    eprintln!(
        "outage: {} tokens issued, {} answers 503, {} revocations",
        seen.ok,
        seen.unavailable,
        seen.revoked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_gives_503_not_a_hang() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    let db = app.pg.clone().unwrap();
    let c = app.client("/ping.read", &[]);
    app.grant(&c, "/ping.read").await;
    // Another session holds a lock every token request needs, and does not let go.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let r = ping_grant(&app, &c).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let _ = blocker.close().await;
    app.grant(&c, "/ping.read").await;
}

#[tokio::test]
async fn text_postgres_cannot_store_is_refused_like_any_bad_input() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    let c = app.client("/ping.read", &[]);
    // PostgreSQL text cannot hold a NUL character; a client id carrying one is just unknown.
    for id in ["a\u{0}b", "\u{0}", &format!("{}\u{0}", c.id)] {
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": id,
            "client_secret": c.secret,
            "scope": "/ping.read",
        });
        let r = app
            .post("/oauth2/token", Some(JSON), body.to_string(), &[])
            .await;
        assert_oauth_error(&r, 401, "invalid_client");
        let r = app
            .post(
                "/oauth2/revoke",
                Some(JSON),
                serde_json::json!({"token": "x", "client_id": id, "client_secret": "s"})
                    .to_string(),
                &[],
            )
            .await;
        assert_oauth_error(&r, 401, "invalid_client");
        let r = app
            .get("/ping", &[("authorization", &basic(id, &c.secret))])
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
}
