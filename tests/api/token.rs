//! `POST /oauth2/token`: SPEC §2.1 and the wire profiles of §3.

use serde_json::{Value, json};

use crate::helpers::*;

fn assert_authtoken(v: &Value) {
    let obj = v.as_object().expect("object");
    for key in [
        "token_type",
        "access_token",
        "refresh_token",
        "expires_in",
        "scope",
    ] {
        assert!(obj.contains_key(key), "missing {key}: {v}");
    }
    assert_eq!(obj.len(), 5, "exactly the five AuthToken fields: {v}");
    assert!(v["access_token"].as_str().unwrap().len() <= 4096);
    assert!(v["refresh_token"].as_str().unwrap().starts_with("tes_rt_"));
    assert!(
        i32::try_from(v["expires_in"].as_i64().unwrap()).is_ok(),
        "expires_in fits int32"
    );
}

#[tokio::test]
async fn client_credentials_in_the_seed_profile_answers_a_seed_authtoken() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read", &[]);
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/accounts.read /ping.read"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let v = r.json();
    assert_authtoken(&v);
    assert_eq!(v["token_type"], "opaque");
    assert!(v["access_token"].as_str().unwrap().starts_with("tes_at_"));
    let exp = v["expires_in"].as_i64().unwrap();
    assert!(
        (exp - (now() + 3600)).abs() <= 5,
        "expires_in is a Unix timestamp: {exp}"
    );
    assert_eq!(v["scope"], "/accounts.read /ping.read");
}

#[tokio::test]
async fn moov_profile_answers_bearer_with_a_timestamp() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--profile", "moov"]);
    let v = app.grant(&c, "/ping.read").await;
    assert_authtoken(&v);
    assert_eq!(v["token_type"], "Bearer");
    assert!((v["expires_in"].as_i64().unwrap() - (now() + 3600)).abs() <= 5);
}

#[tokio::test]
async fn rfc6749_profile_answers_bearer_with_seconds() {
    let app = spawn_app().await;
    let c = app.client(
        "/ping.read",
        &["--profile", "rfc6749", "--access-ttl", "900"],
    );
    let v = app.grant(&c, "/ping.read").await;
    assert_authtoken(&v);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
}

#[tokio::test]
async fn server_default_profile_applies_to_clients_without_one() {
    let app = spawn_app_with(&[("default_profile", "rfc6749")]).await;
    let c = app.client("/ping.read", &[]);
    let v = app.grant(&c, "/ping.read").await;
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
}

#[tokio::test]
async fn credentials_may_come_in_the_body_in_basic_or_in_both_when_they_agree() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
        ("client_id", &c.id),
        ("client_secret", &c.secret),
    ]);
    let r = app
        .post("/oauth2/token", Some(FORM), body.clone(), &[])
        .await;
    assert_eq!(r.status, 200, "body credentials: {}", r.text);
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            body,
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    assert_eq!(r.status, 200, "both: {}", r.text);

    let other = app.client("/ping.read", &[]);
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
        ("client_id", &other.id),
    ]);
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            body,
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("disagree")
    );
}

#[tokio::test]
async fn json_bodies_and_json_labelled_as_form_are_accepted() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let body = json!({"grant_type": "client_credentials", "scope": "/ping.read", "client_id": c.id,
                      "client_secret": c.secret, "unknown_field": {"ignored": true}})
    .to_string();
    let r = app
        .post("/oauth2/token", Some(JSON), body.clone(), &[])
        .await;
    assert_eq!(r.status, 200, "json: {}", r.text);
    let r = app.post("/oauth2/token", Some(FORM), body, &[]).await;
    assert_eq!(r.status, 200, "json labelled as form: {}", r.text);
    let r = app
        .post(
            "/oauth2/token",
            Some("application/json; charset=utf-8"),
            json!({"grant_type": "client_credentials", "scope": "/ping.read"}).to_string(),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    assert_eq!(r.status, 200, "json with charset and basic: {}", r.text);
}

#[tokio::test]
async fn failed_client_authentication_is_401_invalid_client() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];

    // Wrong secret via Basic: challenge included.
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&fields),
            &[("authorization", &basic(&c.id, "tes_sk_wrong"))],
        )
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert_envelope(&r);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"tessera\"")
    );

    // Wrong secret in the body: no Basic was used, so no challenge.
    let mut body = fields.to_vec();
    body.extend([("client_id", c.id.as_str()), ("client_secret", "nope")]);
    let r = app
        .post("/oauth2/token", Some(FORM), form(&body), &[])
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert_eq!(r.header("www-authenticate"), None);

    // Unknown client, missing credentials, malformed Basic.
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&fields),
            &[("authorization", &basic("nobody", "x"))],
        )
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = app
        .post("/oauth2/token", Some(FORM), form(&fields), &[])
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&fields),
            &[("authorization", "Basic %%%")],
        )
        .await;
    assert_oauth_error(&r, 401, "invalid_client");

    // A disabled client.
    app.cli_json(&["client", "disable", &c.id, "--json"]);
    let r = app.token(&c, &fields).await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert_eq!(app.token_rows().await, (0, 0, 0));
}

#[tokio::test]
async fn malformed_requests_are_400_invalid_request_and_leave_no_trace() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let auth = basic(&c.id, &c.secret);
    let h = [("authorization", auth.as_str())];
    let good = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ]);
    let cases: Vec<(Option<&str>, String, &str)> = vec![
        (Some("text/plain"), good.clone(), "unsupported content type"),
        (None, good.clone(), "Content-Type"),
        (Some(JSON), "{\"grant_type\": ".into(), "JSON"),
        (Some(JSON), "[\"grant_type\"]".into(), "JSON"),
        (
            Some(JSON),
            r#"{"grant_type":"client_credentials","grant_type":"refresh_token"}"#.into(),
            "repeated",
        ),
        (
            Some(FORM),
            "grant_type=client_credentials&scope=/ping.read&scope=/ping.read".into(),
            "repeated",
        ),
        (Some(FORM), "{not json".into(), "JSON"),
    ];
    for (ct, body, needle) in cases {
        let r = app.post("/oauth2/token", ct, body.clone(), &h).await;
        assert_oauth_error(&r, 400, "invalid_request");
        assert_envelope(&r);
        let d = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(
            d.contains(needle),
            "{body:?}: {d:?} should mention {needle:?}"
        );
    }
    // Oversized body.
    let big = format!(
        "grant_type=client_credentials&scope=/ping.read&pad={}",
        "x".repeat(20_000)
    );
    let r = app.post("/oauth2/token", Some(FORM), big, &h).await;
    assert_oauth_error(&r, 413, "invalid_request");
    // Non-UTF-8 form.
    let r = app
        .post("/oauth2/token", Some(FORM), vec![0xffu8, 0xfe, 0x3d], &h)
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert_eq!(app.token_rows().await, (0, 0, 0));
}

/// Request fields, the field named by the Moov 422 body, its message, the RFC error code.
type FieldCase = (
    Vec<(&'static str, &'static str)>,
    &'static str,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn field_errors_are_422_in_moov_profiles_and_400_in_rfc6749() {
    let app = spawn_app().await;
    for profile in ["seed", "moov", "rfc6749"] {
        let c = app.client(
            "/ping.read /accounts/*/profile.read",
            &["--profile", profile],
        );
        let cases: Vec<FieldCase> = vec![
            (
                vec![("scope", "/ping.read")],
                "grant_type",
                "grant_type is required",
                "invalid_request",
            ),
            (
                vec![("grant_type", "password"), ("scope", "/ping.read")],
                "grant_type",
                "not supported",
                "unsupported_grant_type",
            ),
            (
                vec![("grant_type", "client_credentials")],
                "scope",
                "scope is required",
                "invalid_request",
            ),
            (
                vec![
                    ("grant_type", "client_credentials"),
                    ("scope", "/accounts.write"),
                ],
                "scope",
                "not allowed for this client",
                "invalid_scope",
            ),
            (
                vec![
                    ("grant_type", "client_credentials"),
                    ("scope", "/widgets.read"),
                ],
                "scope",
                "not a known scope",
                "invalid_scope",
            ),
            (
                vec![
                    ("grant_type", "client_credentials"),
                    ("scope", "/accounts/a/b/profile.read"),
                ],
                "scope",
                "not a known scope",
                "invalid_scope",
            ),
            (
                vec![
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                    ("client_type", "browser"),
                ],
                "client_type",
                "client_type must be",
                "invalid_request",
            ),
            (
                vec![("grant_type", "refresh_token")],
                "refresh_token",
                "refresh_token is required",
                "invalid_request",
            ),
            (
                vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "tes_rt_forged"),
                ],
                "refresh_token",
                "invalid",
                "invalid_grant",
            ),
        ];
        for (fields, field, msg, code) in cases {
            let r = app.token(&c, &fields).await;
            if profile == "rfc6749" {
                assert_oauth_error(&r, 400, code);
            } else {
                assert_field_error(&r, field, msg);
            }
            assert_envelope(&r);
        }
    }
    assert_eq!(app.token_rows().await, (0, 0, 0));
}

#[tokio::test]
async fn errors_before_the_client_is_known_use_the_server_default_profile() {
    // A non-string client_id is a field error found before authentication.
    let body = json!({"grant_type": "client_credentials", "client_id": 5, "client_secret": "x"})
        .to_string();
    let seed = spawn_app().await;
    let r = seed
        .post("/oauth2/token", Some(JSON), body.clone(), &[])
        .await;
    assert_field_error(&r, "client_id", "must be a string");
    let rfc = spawn_app_with(&[("default_profile", "rfc6749")]).await;
    let r = rfc.post("/oauth2/token", Some(JSON), body, &[]).await;
    assert_oauth_error(&r, 400, "invalid_request");
    // After authentication, the client's own profile applies.
    let c = rfc.client("/ping.read", &["--profile", "seed"]);
    let r = rfc.token(&c, &[("scope", "/ping.read")]).await;
    assert_field_error(&r, "grant_type", "required");
}

#[tokio::test]
async fn wildcard_patterns_grant_concrete_account_scopes() {
    let app = spawn_app().await;
    let c = app.client("/accounts/*/transfers.write /ping.read", &[]);
    let acct = "0b9f7a3c-1d2e-4f5a-8b6c-7d8e9f0a1b2c";
    let scope = format!("/accounts/{acct}/transfers.write /ping.read /ping.read");
    let v = app.grant(&c, &scope).await;
    assert_eq!(
        v["scope"],
        format!("/accounts/{acct}/transfers.write /ping.read"),
        "duplicates folded, order kept"
    );
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/accounts/*/transfers.write"),
            ],
        )
        .await;
    assert_field_error(&r, "scope", "not a known scope");
}

#[tokio::test]
async fn web_clients_with_origins_must_send_a_matching_origin() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--origin", "https://app.example.com"]);
    let auth = basic(&c.id, &c.secret);
    let body = |t: &str| {
        form(&[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
            ("client_type", t),
        ])
    };
    let ok = app
        .post(
            "/oauth2/token",
            Some(FORM),
            body("web"),
            &[
                ("authorization", &auth),
                ("origin", "https://app.example.com"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let ok = app
        .post(
            "/oauth2/token",
            Some(FORM),
            body("w"),
            &[
                ("authorization", &auth),
                ("referer", "https://app.example.com/checkout?x=1"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "referer: {}", ok.text);
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            body("web"),
            &[
                ("authorization", &auth),
                ("origin", "https://evil.example.com"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ]),
            &[("authorization", &auth)],
        )
        .await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    for t in ["service", "s", "device", "d"] {
        let r = app
            .post(
                "/oauth2/token",
                Some(FORM),
                body(t),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(r.status, 200, "{t}: {}", r.text);
    }
}

#[tokio::test]
async fn x_moov_version_is_accepted_and_a_malformed_one_rejected() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ]);
    let auth = basic(&c.id, &c.secret);
    for v in ["v2025.01.00", "v2024.07.12", "latest"] {
        let r = app
            .post(
                "/oauth2/token",
                Some(FORM),
                body.clone(),
                &[("authorization", &auth), ("x-moov-version", v)],
            )
            .await;
        assert_eq!(r.status, 200, "{v}: {}", r.text);
    }
    for v in [
        "2025.01.00",
        "v2025.13.00",
        "v2025.1.0",
        "v25.01.00",
        "newest",
    ] {
        let r = app
            .post(
                "/oauth2/token",
                Some(FORM),
                body.clone(),
                &[("authorization", &auth), ("x-moov-version", v)],
            )
            .await;
        assert_oauth_error(&r, 400, "invalid_request");
        assert_envelope(&r);
    }
    assert_eq!(app.token_rows().await.0, 3);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_with_the_envelope() {
    let app = spawn_app().await;
    let r = app.get("/nope", &[]).await;
    assert_oauth_error(&r, 404, "not_found");
    assert_envelope(&r);
    let r = app.get("/oauth2/token", &[]).await;
    assert_oauth_error(&r, 405, "invalid_request");
    assert_envelope(&r);
    let r = app.get("/healthz", &[]).await;
    assert_eq!(r.status, 200);
    let r = app.get("/readyz", &[]).await;
    assert_eq!(r.status, 200);
}
