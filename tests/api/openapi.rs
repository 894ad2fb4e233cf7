//! The OpenAPI documents describe the real responses: every response this test provokes is
//! documented for its path, method and status, and its body validates against the documented
//! schema (checked with the `jsonschema` crate).

use serde_json::{Value, json};

use crate::helpers::*;

/// Validates `reply` against `doc` for the templated `path` and `method`.
fn check(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let status = reply.status.to_string();
    let response = &doc["paths"][path][method]["responses"][&status];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which is not documented"
    );
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() {
        assert!(
            reply.text.is_empty() || !reply.header("content-type").unwrap_or("").contains("json"),
            "{method} {path} {status}: undocumented JSON body {}",
            reply.text
        );
        return;
    }
    let mut root = doc.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["allOf"] = json!([schema]);
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("schema for {method} {path} {status}: {e}"));
    let body: Value = serde_json::from_str(&reply.text)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {}", reply.text));
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {body} does not match the document: {errors:?}"
    );
}

#[tokio::test]
async fn public_responses_match_the_public_document() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", &[]).await.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let t = "/oauth2/token";
    for profile in ["seed", "moov", "rfc6749"] {
        for format in ["opaque", "jwt"] {
            let c = app.client(
                "/ping.read /accounts.read",
                &["--profile", profile, "--format", format],
            );
            let ok = app
                .token(
                    &c,
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", "/ping.read"),
                    ],
                )
                .await;
            check(&doc, t, "post", &ok);
            check(
                &doc,
                t,
                "post",
                &app.token(
                    &c,
                    &[("grant_type", "client_credentials"), ("scope", "/fed.read")],
                )
                .await,
            );
            let at = ok.json()["access_token"].as_str().unwrap().to_owned();
            let auth = basic(&c.id, &c.secret);
            let h = [("authorization", auth.as_str())];
            let active = app
                .post(
                    "/oauth2/introspect",
                    Some(FORM),
                    form(&[("token", &at)]),
                    &h,
                )
                .await;
            assert_eq!(active.json()["active"], true);
            check(&doc, "/oauth2/introspect", "post", &active);
            check(
                &doc,
                "/oauth2/introspect",
                "post",
                &app.post(
                    "/oauth2/introspect",
                    Some(FORM),
                    form(&[("token", "x")]),
                    &h,
                )
                .await,
            );
            check(
                &doc,
                "/oauth2/revoke",
                "post",
                &app.post("/oauth2/revoke", Some(FORM), form(&[("token", &at)]), &h)
                    .await,
            );
            check(
                &doc,
                "/oauth2/revoke",
                "post",
                &app.post("/oauth2/revoke", Some(FORM), form(&[]), &h).await,
            );
        }
    }
    // A rate-limited answer.
    let limited_app = spawn_app_with(&[("rate_limit_per_client", "1")]).await;
    let c = limited_app.client("/ping.read", &[]);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = limited_app
            .token(
                &c,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
            )
            .await;
        statuses.push(r.status);
        check(&doc, t, "post", &r);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    check(
        &doc,
        t,
        "post",
        &app.post(t, Some("text/plain"), "x", &[]).await,
    );
    check(
        &doc,
        t,
        "post",
        &app.post(
            t,
            Some(FORM),
            form(&[("grant_type", "client_credentials")]),
            &[],
        )
        .await,
    );
    check(
        &doc,
        t,
        "post",
        &app.post(t, Some(FORM), "x=".repeat(10_000), &[]).await,
    );
    let c = app.client("/accounts.read", &[]);
    let at = app.grant(&c, "/accounts.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    check(
        &doc,
        "/ping",
        "get",
        &app.get("/ping", &[("authorization", &format!("Bearer {at}"))])
            .await,
    );
    check(&doc, "/ping", "get", &app.get("/ping", &[]).await);
    check(
        &doc,
        "/.well-known/jwks.json",
        "get",
        &app.get("/.well-known/jwks.json", &[]).await,
    );
    check(
        &doc,
        "/.well-known/oauth-authorization-server",
        "get",
        &app.get("/.well-known/oauth-authorization-server", &[])
            .await,
    );
    check(&doc, "/healthz", "get", &app.get("/healthz", &[]).await);
    check(&doc, "/readyz", "get", &app.get("/readyz", &[]).await);
}

#[tokio::test]
async fn admin_responses_match_the_admin_document() {
    let app = spawn_app().await;
    let doc = app
        .admin_as("GET", "/openapi.json", None, None)
        .await
        .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let created = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "n", "scopes": "/ping.read", "origins": ["https://a.test"]})),
        )
        .await;
    check(&doc, "/admin/clients", "post", &created);
    let id = created.json()["client_id"].as_str().unwrap().to_owned();
    check(
        &doc,
        "/admin/clients",
        "post",
        &app.admin("POST", "/admin/clients", Some(json!({"name": "n"})))
            .await,
    );
    check(
        &doc,
        "/admin/clients",
        "get",
        &app.admin("GET", "/admin/clients?limit=1", None).await,
    );
    check(
        &doc,
        "/admin/clients",
        "get",
        &app.admin_as("GET", "/admin/clients", None, None).await,
    );
    let one = "/admin/clients/{id}";
    check(
        &doc,
        one,
        "get",
        &app.admin("GET", &format!("/admin/clients/{id}"), None)
            .await,
    );
    check(
        &doc,
        one,
        "get",
        &app.admin("GET", "/admin/clients/nope", None).await,
    );
    check(
        &doc,
        one,
        "patch",
        &app.admin(
            "PATCH",
            &format!("/admin/clients/{id}"),
            Some(json!({"profile": "moov", "access_ttl": null})),
        )
        .await,
    );
    check(
        &doc,
        "/admin/clients/{id}/disable",
        "post",
        &app.admin("POST", &format!("/admin/clients/{id}/disable"), None)
            .await,
    );
    check(
        &doc,
        "/admin/clients/{id}/enable",
        "post",
        &app.admin("POST", &format!("/admin/clients/{id}/enable"), None)
            .await,
    );
    check(
        &doc,
        "/admin/clients/{id}/rotate-secret",
        "post",
        &app.admin("POST", &format!("/admin/clients/{id}/rotate-secret"), None)
            .await,
    );
    check(
        &doc,
        "/admin/clients/{id}/revoke-tokens",
        "post",
        &app.admin("POST", &format!("/admin/clients/{id}/revoke-tokens"), None)
            .await,
    );
    check(
        &doc,
        "/admin/tokens/revoke-issued-before",
        "post",
        &app.admin(
            "POST",
            "/admin/tokens/revoke-issued-before",
            Some(json!({"before": 1})),
        )
        .await,
    );
    check(
        &doc,
        "/admin/keys",
        "get",
        &app.admin("GET", "/admin/keys", None).await,
    );
    check(
        &doc,
        "/admin/keys/rotate",
        "post",
        &app.admin("POST", "/admin/keys/rotate", None).await,
    );
    check(
        &doc,
        "/admin/audit",
        "get",
        &app.admin("GET", "/admin/audit", None).await,
    );
    check(
        &doc,
        one,
        "delete",
        &app.admin("DELETE", &format!("/admin/clients/{id}"), None)
            .await,
    );
}

#[test]
fn the_check_itself_rejects_a_body_that_does_not_match() {
    let doc =
        serde_json::to_value(<tessera::http::openapi::PublicApi as utoipa::OpenApi>::openapi())
            .unwrap();
    let reply = |text: &str| Reply {
        status: 200,
        headers: reqwest::header::HeaderMap::new(),
        text: text.to_owned(),
    };
    let good = r#"{"token_type":"Bearer","access_token":"a","refresh_token":"r","expires_in":1,"scope":"s"}"#;
    check(&doc, "/oauth2/token", "post", &reply(good));
    for bad in [
        r#"{"token_type":"bearer","access_token":"a","refresh_token":"r","expires_in":1,"scope":"s"}"#,
        r#"{"token_type":"Bearer","access_token":"a","expires_in":1,"scope":"s"}"#,
        r#"{"token_type":"Bearer","access_token":"a","refresh_token":"r","expires_in":"1","scope":"s"}"#,
    ] {
        let caught = std::panic::catch_unwind(|| check(&doc, "/oauth2/token", "post", &reply(bad)));
        assert!(caught.is_err(), "{bad} should not validate");
    }
}

#[tokio::test]
async fn a_malformed_moov_version_is_a_documented_400_on_every_public_endpoint() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", &[]).await.json();
    let bad = [("x-moov-version", "v2025.13.00")];
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let param = item["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "X-Moov-Version"));
        assert_eq!(
            param.map(|p| (&p["in"], &p["required"])),
            Some((&json!("header"), &json!(false))),
            "{path} documents X-Moov-Version"
        );
        for method in ["get", "post"] {
            if item[method].is_null() {
                continue;
            }
            let reply = if method == "get" {
                app.get(path, &bad).await
            } else {
                app.post(path, Some(FORM), form(&[]), &bad).await
            };
            assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text);
            assert_eq!(reply.json()["error"], "invalid_request", "{method} {path}");
            check(&doc, path, method, &reply);
            seen += 1;
        }
    }
    assert_eq!(seen, 8, "every public operation was tried");
}

#[tokio::test]
async fn the_public_document_says_how_each_endpoint_authenticates() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", &[]).await.json();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["client_basic"]["type"], "http");
    assert_eq!(schemes["client_basic"]["scheme"], "basic");
    assert_eq!(schemes["access_token"]["type"], "http");
    assert_eq!(schemes["access_token"]["scheme"], "bearer");
    let basic = json!([{ "client_basic": [] }]);
    for path in ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"] {
        assert_eq!(doc["paths"][path]["post"]["security"], basic, "{path}");
    }
    assert_eq!(
        doc["paths"]["/ping"]["get"]["security"],
        json!([{ "access_token": [] }, { "client_basic": [] }])
    );
    for path in ["/.well-known/jwks.json", "/healthz", "/readyz"] {
        assert!(doc["paths"][path]["get"]["security"].is_null(), "{path}");
    }
    // Without credentials each secured endpoint answers 401 (what schemathesis' ignored_auth
    // check relies on).
    let none: [(&str, &str); 0] = [];
    assert_eq!(app.get("/ping", &none).await.status, 401);
    for path in ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"] {
        let reply = app
            .post(
                path,
                Some(FORM),
                form(&[("token", "x"), ("grant_type", "client_credentials")]),
                &none,
            )
            .await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.text);
    }
}
