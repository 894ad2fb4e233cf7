//! Races between operators (issue 14, part 8): concurrent key rotations, retirements and
//! revocations, through the admin API of one server, of two servers on one PostgreSQL
//! database, and the CLI at the same time; concurrent changes and deletion of one client.
//! Every answer is a success or a retryable `409 conflict` (or, for a client deleted
//! meanwhile, `404`) — never a 5xx — and the keys end consistent: exactly one active, exactly
//! one next, and one retired key per rotation that answered 200.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

/// Asserts a `409 conflict` in the admin shape, marked retryable.
fn assert_conflict(r: &Reply) {
    assert_oauth_error(r, 409, "conflict");
    assert_eq!(r.header("retry-after"), Some("1"), "{}", r.text);
    assert_envelope(r);
}

/// The keys by state, from `GET /admin/keys`.
async fn key_states(app: &TestApp) -> Vec<(String, String)> {
    let r = app.admin("GET", "/admin/keys", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(keys: &[(String, String)], state: &str) -> usize {
    keys.iter().filter(|(_, s)| s == state).count()
}

/// Sorts rotation answers: the `active` kid of each 200, and how many 409s; fails on anything
/// else.
fn tally(answers: &[Reply]) -> (Vec<String>, usize) {
    let mut activated = Vec::new();
    let mut conflicts = 0;
    for r in answers {
        match r.status {
            200 => activated.push(r.json()["active"].as_str().unwrap().to_owned()),
            409 => {
                assert_conflict(r);
                conflicts += 1;
            }
            _ => panic!("a rotation answered {}: {}", r.status, r.text),
        }
    }
    (activated, conflicts)
}

/// After `rotations` successful rotations from the initial active + next pair: one active,
/// one next, `rotations` retired keys, each rotation activating a different key, the last of
/// which is the active one; as many `key.rotated` audit events.
async fn assert_consistent_after(app: &TestApp, activated: &[String]) {
    let keys = key_states(app).await;
    assert_eq!(count(&keys, "active"), 1, "{keys:?}");
    assert_eq!(count(&keys, "next"), 1, "{keys:?}");
    assert_eq!(count(&keys, "retired"), activated.len(), "{keys:?}");
    assert_eq!(keys.len(), activated.len() + 2, "{keys:?}");
    let distinct: HashSet<&String> = activated.iter().collect();
    assert_eq!(distinct.len(), activated.len(), "a key activated twice");
    let active = keys.iter().find(|(_, s)| s == "active").unwrap();
    assert!(activated.contains(&active.0), "{keys:?} / {activated:?}");
    let audit = app
        .admin("GET", "/admin/audit?event=key.rotated&limit=1000", None)
        .await
        .json();
    assert_eq!(
        audit["events"].as_array().unwrap().len(),
        activated.len(),
        "{audit}"
    );
}

/// Fires `n` key rotations at once, spread over `apps` in turn.
async fn rotate_at_once(apps: &[Arc<TestApp>], n: usize) -> Vec<Reply> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let app = apps[i % apps.len()].clone();
        set.spawn(async move { app.admin("POST", "/admin/keys/rotate", None).await });
    }
    set.join_all().await
}

#[tokio::test]
async fn twenty_concurrent_key_rotations_answer_200_or_409_and_leave_the_keys_consistent() {
    let app = Arc::new(spawn_app().await);
    let answers = rotate_at_once(std::slice::from_ref(&app), 20).await;
    let (activated, conflicts) = tally(&answers);
    assert!(!activated.is_empty(), "no rotation succeeded");
    assert_eq!(activated.len() + conflicts, 20);
    assert_consistent_after(&app, &activated).await;
    // A rotation after the race works as usual.
    let r = app.admin("POST", "/admin/keys/rotate", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn key_rotations_from_the_cli_and_the_api_at_once_succeed_or_report_a_conflict() {
    let app = Arc::new(spawn_app().await);
    let cli = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::scope(|s| {
                let runs: Vec<_> = (0..3)
                    .map(|_| s.spawn(|| app.cli(&["keys", "rotate", "--json"])))
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
    };
    let api = rotate_at_once(std::slice::from_ref(&app), 10).await;
    let (mut activated, _) = tally(&api);
    for out in cli.await.unwrap() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            activated.push(v["active"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.starts_with("error: conflict: another key rotation happened"),
                "{stderr}"
            );
        }
    }
    assert!(!activated.is_empty());
    assert_consistent_after(&app, &activated).await;
}

#[tokio::test]
async fn concurrent_rotations_retirements_and_revocations_never_answer_a_5xx() {
    let app = Arc::new(spawn_app().await);
    for _ in 0..3 {
        let keys = key_states(&app).await;
        let kid = |state: &str| {
            keys.iter()
                .find(|(_, s)| s == state)
                .map(|(k, _)| k.clone())
                .unwrap()
        };
        let (active, next) = (kid("active"), kid("next"));
        let mut set = JoinSet::new();
        for path in [
            "/admin/keys/rotate".to_owned(),
            "/admin/keys/rotate".to_owned(),
            format!("/admin/keys/{active}/revoke"),
            format!("/admin/keys/{active}/revoke"),
            format!("/admin/keys/{active}/retire"),
            format!("/admin/keys/{next}/retire"),
            format!("/admin/keys/{next}/revoke"),
        ] {
            let app = app.clone();
            set.spawn(async move { (path.clone(), app.admin("POST", &path, None).await) });
        }
        for (path, r) in set.join_all().await {
            match r.status {
                200 | 204 => {}
                409 => assert_conflict(&r),
                // Retiring a key another call revoked meanwhile.
                400 if path.ends_with("/retire") => {
                    assert_oauth_error(&r, 400, "invalid_request");
                }
                _ => panic!("{path} answered {}: {}", r.status, r.text),
            }
        }
        let keys = key_states(&app).await;
        assert_eq!(count(&keys, "active"), 1, "{keys:?}");
        assert_eq!(count(&keys, "next"), 1, "{keys:?}");
    }
}

#[tokio::test]
async fn two_revocations_of_one_key_at_once_both_succeed() {
    let app = spawn_app().await;
    let keys = key_states(&app).await;
    let next = keys.iter().find(|(_, s)| s == "next").unwrap().0.clone();
    let path = format!("/admin/keys/{next}/revoke");
    let (a, b) = tokio::join!(
        app.admin("POST", &path, None),
        app.admin("POST", &path, None)
    );
    assert_eq!((a.status, b.status), (204, 204), "{} / {}", a.text, b.text);
    let keys = key_states(&app).await;
    assert!(keys.contains(&(next, "revoked".to_owned())), "{keys:?}");
    assert_eq!(count(&keys, "next"), 1, "{keys:?}");
}

#[tokio::test]
async fn twenty_key_rotations_on_two_postgres_instances_answer_200_or_409() {
    let Some(db) = crate::pg::TestDb::create().await else {
        return;
    };
    let db = Arc::new(db);
    let key = new_master_key();
    let (a, b) = tokio::join!(
        spawn_serve(&db, &key, &["--issuer", "https://tessera.test"]),
        spawn_serve(&db, &key, &["--issuer", "https://tessera.test"])
    );
    let apps = [Arc::new(a), Arc::new(b)];
    let answers = rotate_at_once(&apps, 20).await;
    let (activated, conflicts) = tally(&answers);
    assert!(!activated.is_empty(), "no rotation succeeded");
    assert_eq!(activated.len() + conflicts, 20);
    assert_consistent_after(&apps[0], &activated).await;
    // Both instances read the same keys.
    assert_eq!(key_states(&apps[0]).await, key_states(&apps[1]).await);
}

/// Concurrent changes, secret rotations, token revocations and the deletion of one client:
/// each answers success, or `404` once the client is gone — never a 5xx.
async fn race_changes_with_deletion(app: Arc<TestApp>) {
    for round in 0..5 {
        let c = app.client("/ping.read", &[]);
        let base = format!("/admin/clients/{}", c.id);
        let mut set = JoinSet::new();
        let calls: Vec<(&str, String, Option<Value>)> = vec![
            (
                "PATCH",
                base.clone(),
                Some(json!({"name": format!("r{round}")})),
            ),
            ("PATCH", base.clone(), Some(json!({"access_ttl": 60}))),
            (
                "POST",
                format!("{base}/rotate-secret"),
                Some(json!({"keep_old": 0})),
            ),
            ("POST", format!("{base}/disable"), None),
            ("POST", format!("{base}/revoke-tokens"), None),
            ("DELETE", base.clone(), None),
            ("DELETE", base.clone(), None),
        ];
        for (method, path, body) in calls {
            let app = app.clone();
            set.spawn(async move {
                let r = app.admin(method, &path, body).await;
                (method, path, r)
            });
        }
        // Token requests of the client while it is changed and deleted.
        for _ in 0..4 {
            let app = app.clone();
            let c = c.clone();
            set.spawn(async move {
                let r = app
                    .token(
                        &c,
                        &[
                            ("grant_type", "client_credentials"),
                            ("scope", "/ping.read"),
                        ],
                    )
                    .await;
                ("TOKEN", String::new(), r)
            });
        }
        let mut deleted = 0;
        for (method, path, r) in set.join_all().await {
            match (method, r.status) {
                ("DELETE", 204) => deleted += 1,
                ("TOKEN", 200 | 401) | (_, 200) => {}
                ("TOKEN", 503) => assert!(r.header("retry-after").is_some(), "{}", r.text),
                (_, 404) => assert_oauth_error(&r, 404, "not_found"),
                (_, 409) => assert_conflict(&r),
                _ => panic!("{method} {path} answered {}: {}", r.status, r.text),
            }
        }
        assert_eq!(deleted, 1, "exactly one deletion of the client succeeds");
        let r = app.admin("GET", &base, None).await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
}

#[tokio::test]
async fn a_client_changed_and_deleted_at_once_never_answers_a_5xx() {
    race_changes_with_deletion(Arc::new(spawn_app().await)).await;
}

#[tokio::test]
async fn a_client_changed_and_deleted_at_once_never_answers_a_5xx_on_postgres() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    race_changes_with_deletion(Arc::new(app)).await;
}
