//! The admin API: authorization, clients, keys, bulk revocation, audit, metrics (issue 5).

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_admin_api_needs_the_admin_token_and_is_not_on_the_public_listener() {
    let app = spawn_app().await;
    let r = app.admin_as("GET", "/admin/clients", None, None).await;
    assert_oauth_error(&r, 401, "unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"tessera-admin\"")
    );
    assert_envelope(&r);
    let r = app
        .admin_as("GET", "/admin/clients", None, Some("tes_ak_wrong"))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(app.admin("GET", "/admin/clients", None).await.status, 200);
    // Nothing of it on the public listener, credential or not.
    for path in ["/admin/clients", "/admin/keys", "/admin/audit", "/metrics"] {
        let r = app
            .get(path, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))])
            .await;
        assert_eq!(r.status, 404, "{path} on the public listener");
    }
    // Health is open on both.
    assert_eq!(app.admin_as("GET", "/readyz", None, None).await.status, 200);
}

#[tokio::test]
async fn metrics_are_scraped_without_a_credential_by_default() {
    let app = spawn_app().await;
    let r = app.admin_as("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    assert!(
        r.text.contains("tessera_store_pool_connections"),
        "{}",
        r.text
    );
    // Still nothing of it on the public listener.
    assert_eq!(app.get("/metrics", &[]).await.status, 404);
}

#[tokio::test]
async fn with_a_metrics_token_only_that_token_scrapes_and_it_opens_nothing_else() {
    const METRICS_TOKEN: &str = "tes_mt_a-read-only-token-for-the-prometheus-scraper";
    let app = spawn_app_with(&[("metrics_token", METRICS_TOKEN)]).await;
    let r = app.admin_as("GET", "/metrics", None, None).await;
    assert_oauth_error(&r, 401, "unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"tessera-admin\"")
    );
    assert!(!r.text.contains("tessera_"), "{}", r.text);
    // The admin token is not a metrics token.
    let r = app.admin("GET", "/metrics", None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let wrong = format!("{METRICS_TOKEN}x");
    let r = app.admin_as("GET", "/metrics", None, Some(&wrong)).await;
    assert_eq!(r.status, 401);
    let r = app
        .admin_as("GET", "/metrics", None, Some(METRICS_TOKEN))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("tessera_http_requests_total"), "{}", r.text);
    // The metrics token opens no admin endpoint.
    for (method, path) in [
        ("GET", "/admin/clients"),
        ("GET", "/admin/keys"),
        ("GET", "/admin/audit"),
        ("POST", "/admin/keys/rotate"),
    ] {
        let r = app.admin_as(method, path, None, Some(METRICS_TOKEN)).await;
        assert_oauth_error(&r, 401, "unauthorized");
    }
    assert_eq!(app.admin("GET", "/admin/clients", None).await.status, 200);
}

#[tokio::test]
async fn clients_can_be_managed_through_the_admin_api() {
    let app = spawn_app().await;
    let r = app
        .admin("POST", "/admin/clients", Some(json!({"name": "billing", "scopes": "/ping.read /accounts.read", "profile": "rfc6749"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    let c = TestClient {
        id: created["client_id"].as_str().unwrap().into(),
        secret: created["client_secret"].as_str().unwrap().into(),
    };
    assert_eq!(app.grant(&c, "/ping.read").await["token_type"], "Bearer");

    let shown = app
        .admin("GET", &format!("/admin/clients/{}", c.id), None)
        .await
        .json();
    assert!(shown.get("client_secret").is_none());
    let r = app
        .admin(
            "PATCH",
            &format!("/admin/clients/{}", c.id),
            Some(json!({"scopes": "/ping.read", "profile": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["profile"], Value::Null);
    assert_eq!(
        app.token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/accounts.read")
            ]
        )
        .await
        .status,
        422
    );

    assert_eq!(
        app.admin("POST", &format!("/admin/clients/{}/disable", c.id), None)
            .await
            .json()["disabled"],
        true
    );
    assert_eq!(
        app.token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read")
            ]
        )
        .await
        .status,
        401
    );
    app.admin("POST", &format!("/admin/clients/{}/enable", c.id), None)
        .await;

    let r = app
        .admin(
            "POST",
            &format!("/admin/clients/{}/rotate-secret", c.id),
            Some(json!({"keep_old": 0})),
        )
        .await;
    let rotated = TestClient {
        id: c.id.clone(),
        secret: r.json()["client_secret"].as_str().unwrap().into(),
    };
    assert_eq!(
        app.token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read")
            ]
        )
        .await
        .status,
        401
    );
    app.grant(&rotated, "/ping.read").await;

    // Bad input is a 400 with a reason; unknown ids a 404.
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "x", "scopes": "/widgets.read"})),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_scope");
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "x", "scopes": "/ping.read", "colour": "red"})),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "x", "scopes": "/ping.read", "format": "paseto"})),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert_oauth_error(
        &app.admin("GET", "/admin/clients/nope", None).await,
        404,
        "not_found",
    );

    assert_eq!(
        app.admin("DELETE", &format!("/admin/clients/{}", c.id), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.admin("GET", &format!("/admin/clients/{}", c.id), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn client_lists_are_paginated() {
    let app = spawn_app().await;
    let mut ids: Vec<String> = (0..5).map(|_| app.client("/ping.read", &[]).id).collect();
    ids.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/clients?limit=2&after={a}"),
            None => "/admin/clients?limit=2".to_owned(),
        };
        let page = app.admin("GET", &path, None).await.json();
        let got: Vec<String> = page["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client_id"].as_str().unwrap().to_owned())
            .collect();
        assert!(got.len() <= 2);
        seen.extend(got);
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn bulk_revocation_stops_the_tokens() {
    let app = spawn_app().await;
    let leaked = app.client("/ping.read", &[]);
    let other = app.client("/ping.read", &[]);
    let a = app.grant(&leaked, "/ping.read").await;
    let b = app.grant(&leaked, "/ping.read").await;
    let o = app.grant(&other, "/ping.read").await;

    // "A secret leaked": every token of one client.
    let r = app
        .admin(
            "POST",
            &format!("/admin/clients/{}/revoke-tokens", leaked.id),
            None,
        )
        .await;
    assert_eq!(r.json()["revoked_families"], 2);
    for t in [&a, &b] {
        assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 401);
        assert_eq!(
            app.refresh(&leaked, t["refresh_token"].as_str().unwrap())
                .await
                .status,
            422
        );
    }
    assert_eq!(app.ping(o["access_token"].as_str().unwrap()).await, 200);

    // One family, found through the audit trail.
    let c = app.grant(&other, "/ping.read").await;
    let events = app
        .admin(
            "GET",
            &format!(
                "/admin/audit?client_id={}&event=token.issued&limit=1",
                other.id
            ),
            None,
        )
        .await
        .json();
    let family = events["events"][0]["detail"]["family_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.admin("POST", &format!("/admin/families/{family}/revoke"), None)
            .await
            .status,
        204
    );
    assert_eq!(app.ping(c["access_token"].as_str().unwrap()).await, 401);
    assert_eq!(app.ping(o["access_token"].as_str().unwrap()).await, 200);

    // "We restored an old backup": everything issued before a time.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cutoff = now();
    let fresh = app.grant(&other, "/ping.read").await;
    let r = app
        .admin(
            "POST",
            "/admin/tokens/revoke-issued-before",
            Some(json!({"before": cutoff})),
        )
        .await;
    assert!(
        r.json()["revoked_tokens"].as_u64().unwrap() >= 2,
        "{}",
        r.text
    );
    assert_eq!(app.ping(o["access_token"].as_str().unwrap()).await, 401);
    assert_eq!(
        app.refresh(&other, o["refresh_token"].as_str().unwrap())
            .await
            .status,
        422
    );
    assert_eq!(app.ping(fresh["access_token"].as_str().unwrap()).await, 200);
}

#[tokio::test]
async fn keys_can_be_managed_through_the_admin_api() {
    let app = spawn_app().await;
    let keys = app.admin("GET", "/admin/keys", None).await.json();
    let next = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "next")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.admin("POST", "/admin/keys/rotate", None).await.json();
    assert_eq!(r["active"], next.as_str());
    let retired = r["retired"].as_str().unwrap().to_owned();
    assert_eq!(
        app.admin("POST", &format!("/admin/keys/{retired}/revoke"), None)
            .await
            .status,
        204
    );
    let new_next = r["next"].as_str().unwrap().to_owned();
    assert_eq!(
        app.admin("POST", &format!("/admin/keys/{new_next}/retire"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.admin("POST", "/admin/keys/nope/revoke", None)
            .await
            .status,
        404
    );
    let states: Vec<(String, String)> = app
        .admin("GET", "/admin/keys", None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(states.contains(&(retired, "revoked".into())));
    assert!(states.contains(&(new_next, "retired".into())));
    assert!(states.contains(&(next, "active".into())));
}

#[tokio::test]
async fn the_audit_trail_records_who_did_what_from_where() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let r2 = app.refresh(&c, t["refresh_token"].as_str().unwrap()).await;
    let rid = r2.header("x-request-id").unwrap().to_owned();
    app.refresh(&c, t["refresh_token"].as_str().unwrap()).await; // reuse
    app.token(
        &TestClient {
            id: c.id.clone(),
            secret: "wrong".into(),
        },
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
        ],
    )
    .await;
    let events = app
        .admin("GET", &format!("/admin/audit?client_id={}", c.id), None)
        .await
        .json();
    let events = events["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for k in [
        "client.created",
        "token.issued",
        "token.refreshed",
        "token.reuse_detected",
        "auth.failed",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let refreshed = events
        .iter()
        .find(|e| e["event"] == "token.refreshed")
        .unwrap();
    assert_eq!(
        refreshed["request_id"],
        rid.as_str(),
        "events carry the request id"
    );
    assert_eq!(refreshed["source"], "127.0.0.1");
    assert_eq!(
        events
            .iter()
            .find(|e| e["event"] == "client.created")
            .unwrap()["source"],
        "cli"
    );
    // Newest first, and filterable.
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    let only = app
        .admin("GET", "/admin/audit?event=auth.failed", None)
        .await
        .json();
    assert!(
        only["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"] == "auth.failed")
    );
    // The CLI reads the same trail.
    let cli = app.cli_json(&["audit", "--client", &c.id, "--json"]);
    assert_eq!(cli.as_array().unwrap().len(), events.len());
    // No secret or token value in it.
    let all = app.admin("GET", "/admin/audit?limit=1000", None).await.text;
    for secret in [
        c.secret.as_str(),
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!all.contains(secret));
    }
}

#[tokio::test]
async fn metrics_move_when_tokens_are_issued() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let issued = [("grant", "client_credentials"), ("outcome", "issued")];
    let before = app.metric("tessera_tokens_total", &issued).await;
    let reuse_before = app
        .metric("tessera_refresh_reuse_detected_total", &[])
        .await;
    let failures_before = app.metric("tessera_auth_failures_total", &[]).await;
    let t = app.grant(&c, "/ping.read").await;
    app.grant(&c, "/ping.read").await;
    let rt = t["refresh_token"].as_str().unwrap();
    app.refresh(&c, rt).await;
    app.refresh(&c, rt).await;
    app.token(
        &TestClient {
            id: c.id.clone(),
            secret: "wrong".into(),
        },
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert!(app.metric("tessera_tokens_total", &issued).await >= before + 2.0);
    assert!(
        app.metric("tessera_refresh_reuse_detected_total", &[])
            .await
            >= reuse_before + 1.0
    );
    assert!(app.metric("tessera_auth_failures_total", &[]).await >= failures_before + 1.0);
    let text = app.admin("GET", "/metrics", None).await.text;
    for name in [
        "tessera_http_request_duration_seconds_bucket",
        "tessera_store_operation_duration_seconds_bucket",
        "tessera_store_pool_connections",
        "tessera_signing_key_age_seconds",
        "tessera_sqlite_commit_duration_seconds_bucket",
        // Batch sizes have buckets of their own, not the latency ones.
        "tessera_sqlite_batch_size_bucket{le=\"256\"}",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(
        app.metric(
            "tessera_http_request_duration_seconds_count",
            &[("endpoint", "/oauth2/token")]
        )
        .await
            >= 5.0
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = spawn_app_with(&[
        ("rate_limit_per_client", "3"),
        ("auth_failures_per_minute", "2"),
    ])
    .await;
    let c = app.client("/ping.read", &[]);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = app
            .token(
                &c,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
            )
            .await;
        if r.status == 429 {
            let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!(after >= 1);
            assert_eq!(r.json()["error"], "too_many_requests");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );

    // Guessing a secret is slowed down, but the right secret still gets through.
    let victim = app.client("/ping.read", &[]);
    let wrong = TestClient {
        id: victim.id.clone(),
        secret: "guess".into(),
    };
    let mut guesses = Vec::new();
    for _ in 0..4 {
        guesses.push(
            app.token(
                &wrong,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
            )
            .await
            .status,
        );
    }
    assert_eq!(guesses, [401, 401, 429, 429]);
    let r = app
        .token(
            &victim,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ],
        )
        .await;
    assert_eq!(
        r.status, 200,
        "the legitimate client is not locked out: {}",
        r.text
    );
}

#[tokio::test]
async fn per_address_limits_apply_before_authentication() {
    let app = spawn_app_with(&[("rate_limit_per_ip", "2")]).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            app.post("/oauth2/revoke", Some(FORM), form(&[("token", "x")]), &[])
                .await
                .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn basic_credentials_on_ping_meet_the_same_limits() {
    let app = spawn_app_with(&[("auth_failures_per_minute", "2")]).await;
    let c = app.client("/ping.read", &[]);
    let wrong = basic(&c.id, "guess");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.get("/ping", &[("authorization", &wrong)]).await.status);
    }
    assert_eq!(statuses, [401, 401, 429]);
    assert_eq!(
        app.get("/ping", &[("authorization", &basic(&c.id, &c.secret))])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn rotating_the_admin_token_is_audited_and_the_old_one_stops_working() {
    // An app without a configured token: the generated one is in the file.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let settings = tessera::config::Settings::load_from(
        None,
        |_| None,
        &[
            ("listen", "127.0.0.1:0".into()),
            ("admin_listen", "127.0.0.1:0".into()),
            ("database_url", db.clone()),
        ],
    )
    .unwrap();
    let app = tessera::http::Application::build(settings).await.unwrap();
    let admin = app.admin_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let file = dir.path().join("t.db.admin-token");
    let first = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let get = |token: String| {
        let http = http.clone();
        async move {
            http.get(format!(
                "http://{admin}/admin/audit?event=admin_token.rotated"
            ))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
        }
    };
    assert_eq!(get(first.clone()).await.status(), 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["admin-token", "rotate", "--database-url", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        second,
        "the file follows the rotation"
    );
    assert_eq!(get(first).await.status(), 401);
    let r = get(second).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["source"], "cli");
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

/// Concurrent changes of one client each survive: none writes back the fields another one
/// changed meanwhile (each update is written only over the revision it was made from, and
/// reapplied on a fresh copy otherwise). Before client revisions, a PATCH that read the client
/// before a secret rotation wrote the old secret back, and the new one stopped working.
#[tokio::test]
async fn concurrent_changes_of_one_client_are_all_kept() {
    let app = spawn_app().await;
    for round in 0..5_u32 {
        let c = app.client("/ping.read", &[]);
        let path = format!("/admin/clients/{}", c.id);
        let name = format!("renamed {round}");
        let rotate = format!("{path}/rotate-secret");
        let (rotated, a, b, d, e, f) = tokio::join!(
            app.admin("POST", &rotate, Some(json!({"keep_old": 0}))),
            app.admin("PATCH", &path, Some(json!({"name": name}))),
            app.admin("PATCH", &path, Some(json!({"access_ttl": 120 + round}))),
            app.admin("PATCH", &path, Some(json!({"refresh_ttl": 7200 + round}))),
            app.admin(
                "PATCH",
                &path,
                Some(json!({"audience": "https://api.example"}))
            ),
            app.admin("PATCH", &path, Some(json!({"resource_server": "*"}))),
        );
        for r in [&rotated, &a, &b, &d, &e, &f] {
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let shown = app.admin("GET", &path, None).await.json();
        assert_eq!(shown["name"], name.as_str(), "{shown}");
        assert_eq!(shown["access_ttl"], 120 + round, "{shown}");
        assert_eq!(shown["refresh_ttl"], 7200 + round, "{shown}");
        assert_eq!(shown["audience"], "https://api.example", "{shown}");
        assert_eq!(shown["resource_server"], "*", "{shown}");
        let new = TestClient {
            id: c.id.clone(),
            secret: rotated.json()["client_secret"].as_str().unwrap().into(),
        };
        app.grant(&new, "/ping.read").await;
        let old = app
            .token(
                &c,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
            )
            .await;
        assert_eq!(old.status, 401, "the rotated-out secret still works");
    }
}
