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

/// True if `body` validates against the admin document's component schema `name`.
fn valid_as(doc: &Value, name: &str, body: &Value) -> bool {
    let mut root = doc.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["allOf"] = json!([{ "$ref": format!("#/components/schemas/{name}") }]);
    jsonschema::validator_for(&root).unwrap().is_valid(body)
}

#[tokio::test]
async fn the_admin_document_states_the_input_bounds_and_the_refusals() {
    let app = spawn_app().await;
    let doc = app
        .admin_as("GET", "/openapi.json", None, None)
        .await
        .json();
    let create = &doc["components"]["schemas"]["CreateClient"];
    assert_eq!(create["properties"]["name"]["maxLength"], 200, "{create}");
    assert_eq!(create["properties"]["name"]["minLength"], 1);
    assert_eq!(create["properties"]["origins"]["maxItems"], 100);
    assert_eq!(create["properties"]["origins"]["items"]["maxLength"], 2048);
    assert_eq!(create["properties"]["resources"]["maxItems"], 100);
    assert_eq!(create["properties"]["audience"]["maxLength"], 2048);
    assert_eq!(create["properties"]["resource_server"]["maxLength"], 2048);
    assert_eq!(create["required"], json!(["name", "scopes"]));
    let keep_old = &doc["components"]["schemas"]["RotateSecret"]["properties"]["keep_old"];
    assert_eq!(keep_old["maximum"], 2_592_000, "{keep_old}");
    assert_eq!(keep_old["minimum"], 0, "{keep_old}");

    // The document's bounds are the server's: what it refuses, the server refuses.
    let ok = json!({"name": "n", "scopes": "/ping.read", "origins": ["https://a.test"]});
    assert!(valid_as(&doc, "CreateClient", &ok));
    assert!(valid_as(&doc, "UpdateClient", &json!({"name": "n"})));
    let origins: Vec<String> = (0..101).map(|i| format!("https://a{i}.test")).collect();
    for bad in [
        json!({"name": "n".repeat(201), "scopes": "/ping.read"}),
        json!({"name": "", "scopes": "/ping.read"}),
        json!({"name": "n", "scopes": "/ping.read", "origins": origins}),
        json!({"name": "n", "scopes": "/ping.read", "audience": "a".repeat(2049)}),
        json!({"name": "n", "scopes": "/ping.read", "access_ttl": 0}),
    ] {
        assert!(!valid_as(&doc, "CreateClient", &bad), "{bad}");
        let r = app.admin("POST", "/admin/clients", Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        check(&doc, "/admin/clients", "post", &r);
    }
    assert!(!valid_as(
        &doc,
        "RotateSecret",
        &json!({"keep_old": 2_592_001})
    ));

    // The refusals are documented, with their body.
    let c = app.client("/ping.read", &[]);
    let one = format!("/admin/clients/{}", c.id);
    for (path, method, reply) in [
        (
            "/admin/clients",
            "get",
            app.admin("GET", "/admin/clients?limit=abc", None).await,
        ),
        (
            "/admin/audit",
            "get",
            app.admin("GET", "/admin/audit?bogus=1", None).await,
        ),
        (
            "/admin/clients/{id}",
            "patch",
            app.admin("PATCH", &one, Some(json!({"name": "a\u{1b}b"})))
                .await,
        ),
        (
            "/admin/clients/{id}",
            "get",
            app.admin("GET", "/admin/clients/%FF", None).await,
        ),
        (
            "/admin/clients/{id}/rotate-secret",
            "post",
            app.admin(
                "POST",
                &format!("{one}/rotate-secret"),
                Some(json!({"keep_old": 2_592_001})),
            )
            .await,
        ),
    ] {
        assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text);
        check(&doc, path, method, &reply);
    }
    for path in [
        "/admin/keys/rotate",
        "/admin/keys/{kid}/retire",
        "/admin/keys/{kid}/revoke",
        "/admin/clients/{id}",
    ] {
        let method = if path.starts_with("/admin/keys") {
            "post"
        } else {
            "patch"
        };
        assert!(
            doc["paths"][path][method]["responses"]["409"].is_object(),
            "{method} {path}: 409 not documented"
        );
    }
    // A real 409 of a lost rotation matches the document: rotations are raced (a bounded
    // number of rounds) until one loses.
    let mut conflict = None;
    for _ in 0..10 {
        let answers = rotations_at_once(&app).await;
        conflict = answers.into_iter().find(|r| r.status == 409);
        if conflict.is_some() {
            break;
        }
    }
    let conflict = conflict.expect("ten rounds of six concurrent rotations, and none lost");
    check(&doc, "/admin/keys/rotate", "post", &conflict);
}

/// Six key rotations at once (concurrent on one task: `join!` polls them together).
async fn rotations_at_once(app: &TestApp) -> Vec<Reply> {
    let rotate = || app.admin("POST", "/admin/keys/rotate", None);
    let (a, b, c, d, e, f) =
        tokio::join!(rotate(), rotate(), rotate(), rotate(), rotate(), rotate());
    vec![a, b, c, d, e, f]
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
