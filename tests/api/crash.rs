//! SIGKILL under load: a `tessera serve` process killed while it is minting, refreshing and
//! revoking restarts on the same database without manual steps, and everything it answered
//! `200` is still there. A request cut off by the kill got no answer, and may or may not have
//! happened; that is the only uncertainty the kill leaves.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::helpers::*;
use crate::pg::TestDb;

/// Concurrent clients of the load, and how long it runs before the kill.
const CLIENTS: usize = 6;
const LOAD: Duration = Duration::from_millis(1_500);

/// What one client of the load saw.
#[derive(Debug, Default)]
struct Seen {
    /// Access tokens answered `200` and not revoked by this client.
    live_access: Vec<String>,
    /// Access tokens whose revocation was answered `2xx`.
    revoked: Vec<String>,
    /// The newest refresh token answered `200`.
    refresh: Option<String>,
    /// True if the client's last request got no answer (cut off by the kill).
    cut_off: bool,
    /// Requests answered `200`.
    answered: usize,
}

/// One `POST /oauth2/token`, or `None` when the connection failed (the server was killed).
async fn token(app: &TestApp, c: &TestClient, fields: &[(&str, &str)]) -> Option<(u16, String)> {
    let resp = app
        .http
        .post(app.url("/oauth2/token"))
        .header("content-type", FORM)
        .header("authorization", basic(&c.id, &c.secret))
        .body(form(fields))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Grants, refreshes and revocations in a loop until the server stops answering.
async fn load(app: Arc<TestApp>, c: TestClient) -> Seen {
    let mut seen = Seen::default();
    for round in 0usize.. {
        let fields: Vec<(&str, String)> = match &seen.refresh {
            Some(rt) if round % 4 != 0 => vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", rt.clone()),
            ],
            _ => vec![
                ("grant_type", "client_credentials".into()),
                ("scope", "/ping.read".into()),
            ],
        };
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let Some((status, body)) = token(&app, &c, &fields).await else {
            seen.cut_off = true;
            return seen;
        };
        assert_eq!(status, 200, "under load, before the kill: {body}");
        seen.answered += 1;
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        seen.live_access
            .push(v["access_token"].as_str().expect("at").to_owned());
        seen.refresh = Some(v["refresh_token"].as_str().expect("rt").to_owned());
        if round % 7 == 6 {
            // Revoke the oldest access token; it must stay revoked after the restart.
            let old = seen.live_access.remove(0);
            let revoked = app
                .http
                .post(app.url("/oauth2/revoke"))
                .header("content-type", FORM)
                .header("authorization", basic(&c.id, &c.secret))
                .body(form(&[
                    ("token", &old),
                    ("token_type_hint", "access_token"),
                ]))
                .send()
                .await;
            match revoked {
                Ok(r) if r.status().is_success() => seen.revoked.push(old),
                Ok(r) => panic!("revocation answered {}", r.status()),
                Err(_) => {
                    // Cut off: the revocation may or may not have happened.
                    seen.cut_off = true;
                    return seen;
                }
            }
        }
    }
    seen
}

/// Runs the load on `app`, kills it, restarts it with `restart`, checks what survived, and
/// gives back the restarted app.
async fn killed_under_load<F, Fut>(app: TestApp, restart: F) -> TestApp
where
    F: FnOnce(tempfile::TempDir) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let clients: Vec<TestClient> = (0..CLIENTS)
        .map(|_| app.client("/ping.read", &[]))
        .collect();
    let app = Arc::new(app);
    let mut running = JoinSet::new();
    for c in clients.iter().cloned() {
        running.spawn(load(app.clone(), c));
    }
    tokio::time::sleep(LOAD).await;
    let pid = app.pid().expect("a tessera serve process");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut seen = Vec::new();
    while let Some(s) = running.join_next().await {
        seen.push(s.expect("load task"));
    }
    let app = Arc::into_inner(app).expect("the load tasks have ended");
    let dir = app.kill();
    assert!(
        seen.iter().map(|s| s.answered).sum::<usize>() > CLIENTS,
        "the load must have been answered before the kill"
    );

    let app = restart(dir).await;
    assert_eq!(app.get("/readyz", &[]).await.status, 200);
    for (c, s) in clients.iter().zip(&seen) {
        for access in &s.live_access {
            assert_eq!(
                app.ping(access).await,
                200,
                "an access token answered 200 before the kill works after the restart"
            );
        }
        for access in &s.revoked {
            assert_eq!(
                app.ping(access).await,
                401,
                "a revocation answered before the kill holds after the restart"
            );
        }
        let Some(rt) = &s.refresh else { continue };
        let r = app.refresh(c, rt).await;
        if s.cut_off && r.status != 200 {
            // The cut-off request may have consumed this token (a refresh) before the kill;
            // then this is reuse, refused like any other.
            assert!(matches!(r.status, 400 | 422), "{r:?}");
        } else {
            assert_eq!(
                r.status, 200,
                "the newest refresh token answered 200 before the kill is still live: {}",
                r.text
            );
        }
    }
    // A client created after the restart works too.
    let c = app.client("/ping.read", &[]);
    let fresh = app.grant(&c, "/ping.read").await;
    assert_eq!(
        app.ping(fresh["access_token"].as_str().expect("at")).await,
        200
    );
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_under_load_restarts_with_every_answered_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_serve_in(dir, &[]).await;
    let app = killed_under_load(app, |dir| spawn_serve_in(dir, &[])).await;
    let conn = rusqlite::Connection::open(app.db_path()).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load_restarts_with_every_answered_token() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let db = Arc::new(db);
    let key = new_master_key();
    let app = spawn_serve(&db, &key, &[]).await;
    killed_under_load(app, |_| async { spawn_serve(&db, &key, &[]).await }).await;
}
