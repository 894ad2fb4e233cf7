//! Interop with independent client libraries in other languages: panva's `oauth4webapi`,
//! `openid-client` and `jose` on Node.js, and `requests-oauth2client` (with `jwskate`) on
//! Python, drive a Tessera served over real HTTP (docs/interop.md). The scripts are in `tests/interop/`; `tests/interop/setup` installs the
//! pinned packages into `target/interop` (once per test process; a no-op when already done).
//! Each test registers its clients through the admin API, runs a script with the issuer and the
//! client's credentials in its environment, and asserts on the JSON the script prints.
//!
//! Node.js, npm or Python missing, or an install that fails: the test fails when `CI` is set
//! and is skipped with a loud message otherwise, like the PostgreSQL tests.
//!
//! The tests of client secrets and of JWT access tokens (EdDSA, ES256, RS256, PS256) cover what
//! Tessera does now; the others (private_key_jwt, DPoP, FAPI 2.0, replay across instances) are
//! the acceptance tests of issue 16 and use its registration fields `auth_methods`, `jwks`,
//! `jwks_uri`, `require_dpop` and `fapi2`, and its `dpop_nonce` setting.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::helpers::*;

/// How long one script may run before it is killed (a hung request must not hang the suite).
const SCRIPT_TIMEOUT_SECS: &str = "60";

/// The server setting that makes the token endpoint and `/ping` demand DPoP nonces (issue 16).
const DPOP_NONCE_SETTING: &str = "dpop_nonce";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lib {
    /// oauth4webapi + jose on Node.js (`tests/interop/oauth4webapi.mjs`).
    Node,
    /// openid-client on Node.js (`tests/interop/openid_client.mjs`).
    OpenidClient,
    /// requests-oauth2client + jwskate on Python (`tests/interop/ro2c_client.py`).
    Python,
}

impl Lib {
    /// The part of `tests/interop/setup` that installs it.
    fn part(self) -> &'static str {
        match self {
            Lib::Node | Lib::OpenidClient => "node",
            Lib::Python => "python",
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/interop` of the target directory this test binary was built into
/// (`target/debug/deps/api-…` → `target`), so a custom `CARGO_TARGET_DIR` is honoured.
fn interop_dir() -> PathBuf {
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| repo().join("target"));
    target.join("interop")
}

/// Runs `tests/interop/setup PART` once per test process and remembers the outcome.
fn setup(lib: Lib) -> &'static Result<(), String> {
    static NODE: OnceLock<Result<(), String>> = OnceLock::new();
    static PYTHON: OnceLock<Result<(), String>> = OnceLock::new();
    let once = match lib.part() {
        "node" => &NODE,
        _ => &PYTHON,
    };
    once.get_or_init(|| {
        let out = Command::new(repo().join("tests/interop/setup"))
            .arg(lib.part())
            .env("TESSERA_INTEROP_DIR", interop_dir())
            .output()
            .map_err(|e| format!("cannot run tests/interop/setup: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/interop/setup {} failed ({}): {}",
                lib.part(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
}

/// Whether the library is installed. Fails the test when it is not and `CI` is set; otherwise
/// says loudly that the test is skipped.
fn installed(lib: Lib) -> bool {
    match setup(lib) {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("the interop client library could not be installed and CI is set: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: {e}\n\
                 This interop test did not run. Install Node.js 20+ and npm, or Python 3\n\
                 with venv and pip, and let the registries be reachable; with CI set\n\
                 this is a failure.\n\
                 ********************************************************************\n"
            );
            false
        }
    }
}

/// Runs one flow of the library's script with `env`, asserting it succeeded; its JSON report.
async fn run(lib: Lib, args: &[&str], env: &[(&str, String)]) -> Value {
    let interop = interop_dir();
    let mut cmd = Command::new("timeout");
    cmd.arg(SCRIPT_TIMEOUT_SECS);
    match lib {
        Lib::Node => cmd
            .arg("node")
            .arg(repo().join("tests/interop/oauth4webapi.mjs")),
        Lib::OpenidClient => cmd
            .arg("node")
            .arg(repo().join("tests/interop/openid_client.mjs")),
        Lib::Python => cmd
            .arg(interop.join("venv/bin/python"))
            .arg(repo().join("tests/interop/ro2c_client.py")),
    };
    cmd.args(args)
        .env("TESSERA_INTEROP_DIR", &interop)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    // The in-process server runs on this test's runtime: wait for the script off it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run the interop script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    assert!(
        out.status.success() && report["ok"] == true,
        "{lib:?} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    report
}

/// A client registered through the admin API.
struct Registered {
    id: String,
    secret: Option<String>,
}

async fn register(app: &TestApp, body: Value) -> Registered {
    let r = app
        .admin("POST", "/admin/clients", Some(body.clone()))
        .await;
    assert_eq!(r.status, 201, "POST /admin/clients {body}: {}", r.text);
    let v = r.json();
    Registered {
        id: v["client_id"].as_str().expect("client_id").to_owned(),
        secret: v["client_secret"].as_str().map(str::to_owned),
    }
}

fn issuer(app: &TestApp) -> String {
    app.url("")
}

/// The environment for a client authenticating with its secret.
fn secret_env(app: &TestApp, c: &Registered, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TESSERA_ISSUER", issuer(app)),
        ("TESSERA_CLIENT_ID", c.id.clone()),
        (
            "TESSERA_CLIENT_SECRET",
            c.secret.clone().expect("a client secret"),
        ),
        ("TESSERA_SCOPE", scope.to_owned()),
    ]
}

/// A key pair for `alg` generated by the library itself: the private JWK is written to a file
/// in the app's directory, the public JWK (with `kid`, `alg`, `use`) is returned.
async fn keygen(app: &TestApp, lib: Lib, alg: &str) -> (PathBuf, Value) {
    let file = app
        .dir
        .path()
        .join(format!("{}-{alg}-{}.jwk", lib.part(), uuid::Uuid::now_v7()));
    let path = file.to_str().expect("utf-8 path").to_owned();
    let v = run(lib, &["keygen", alg, &path], &[]).await;
    let public = v["public_jwk"].clone();
    assert!(public["kid"].is_string(), "{v}");
    assert!(
        public.get("d").is_none() && public.get("p").is_none(),
        "a private member in the public JWK: {public}"
    );
    (file, public)
}

/// A client with private_key_jwt as its only authentication method, its public key inline.
async fn key_client(app: &TestApp, public: &Value, extra: Value) -> Registered {
    let mut body = json!({
        "name": "interop private_key_jwt",
        "scopes": "/ping.read /accounts.read",
        "profile": "rfc6749",
        "auth_methods": ["private_key_jwt"],
        "jwks": {"keys": [public]},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    register(app, body).await
}

fn key_env(app: &TestApp, c: &Registered, key: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TESSERA_ISSUER", issuer(app)),
        ("TESSERA_CLIENT_ID", c.id.clone()),
        (
            "TESSERA_CLIENT_KEY",
            key.to_str().expect("utf-8 path").to_owned(),
        ),
        ("TESSERA_SCOPE", "/ping.read /accounts.read".to_owned()),
    ];
    if let Some(s) = &c.secret {
        env.push(("TESSERA_CLIENT_SECRET", s.clone()));
    }
    env
}

fn lower(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_ascii_lowercase()
}

/// The checks common to every library's `secrets` flow, against the issuer `iss`.
fn assert_secrets_flow(v: &Value, iss: &str, c: &Registered, scope: &str) {
    assert_eq!(v["discovery"]["issuer"], iss, "{v}");
    assert_eq!(
        v["discovery"]["token_endpoint"],
        format!("{iss}/oauth2/token"),
        "{v}"
    );
    for grant in ["basic", "post", "refreshed"] {
        let t = &v[grant];
        assert_eq!(lower(&t["token_type"]), "bearer", "{grant}: {v}");
        assert_eq!(t["scope"], scope, "{grant}: {v}");
        assert_eq!(t["has_refresh_token"], true, "{grant}: {v}");
        let expires_in = t["expires_in"].as_f64().expect("expires_in in seconds");
        assert!(
            expires_in > 0.0 && expires_in <= 31_536_000.0,
            "{grant}: expires_in is not a lifetime in seconds: {v}"
        );
    }
    assert_eq!(v["ping"]["status"], 200, "{v}");
    assert_eq!(v["refresh_rotated"], true, "{v}");
    let access = &v["introspect_access"];
    assert_eq!(access["active"], true, "{v}");
    assert_eq!(access["client_id"], c.id.as_str(), "{v}");
    assert_eq!(access["scope"], scope, "{v}");
    assert_eq!(access["iss"], iss, "{v}");
    assert_eq!(v["introspect_refresh"]["active"], true, "{v}");
    assert_eq!(v["after_revoke"]["access"], json!({"active": false}), "{v}");
    assert_eq!(
        v["after_revoke"]["refresh"],
        json!({"active": false}),
        "{v}"
    );
    assert_eq!(v["after_revoke"]["ping"]["status"], 401, "{v}");
    assert_eq!(v["other_family"]["active"], true, "{v}");
    assert_eq!(v["reuse"]["error"], "invalid_grant", "{v}");
    for wrong in ["wrong_secret_basic", "wrong_secret_post"] {
        assert_eq!(v[wrong]["status"], 401, "{wrong}: {v}");
    }
    assert_eq!(v["wrong_secret_post"]["error"], "invalid_client", "{v}");
    assert_eq!(v["scope_not_allowed"]["error"], "invalid_scope", "{v}");
    assert_eq!(v["scope_not_allowed"]["status"], 400, "{v}");
}

// ---------------------------------------------------------------------------------------------
// What Tessera does today.

#[tokio::test]
async fn oauth4webapi_discovers_and_obtains_refreshes_introspects_and_revokes_with_client_secrets()
{
    if !installed(Lib::Node) {
        return;
    }
    let app = spawn_app().await;
    let scope = "/ping.read /accounts.read";
    let c = register(
        &app,
        json!({"name": "interop oauth4webapi", "scopes": scope, "profile": "rfc6749"}),
    )
    .await;
    let v = run(Lib::Node, &["secrets"], &secret_env(&app, &c, scope)).await;
    assert_secrets_flow(&v, &issuer(&app), &c, scope);
    assert_eq!(
        v["discovery"]["jwks_uri"],
        app.url("/.well-known/jwks.json")
    );
}

#[tokio::test]
async fn requests_oauth2client_obtains_refreshes_introspects_and_revokes_with_client_secrets() {
    if !installed(Lib::Python) {
        return;
    }
    let app = spawn_app().await;
    let scope = "/ping.read /accounts.read";
    let c = register(
        &app,
        json!({"name": "interop requests-oauth2client", "scopes": scope, "profile": "rfc6749"}),
    )
    .await;
    let v = run(Lib::Python, &["secrets"], &secret_env(&app, &c, scope)).await;
    assert_secrets_flow(&v, &issuer(&app), &c, scope);
    assert_eq!(v["basic"]["class"], "BearerToken", "{v}");
    assert_eq!(v["revoked"], true, "{v}");
}

#[tokio::test]
async fn openid_client_obtains_refreshes_introspects_and_revokes_with_client_secrets() {
    if !installed(Lib::OpenidClient) {
        return;
    }
    let app = spawn_app().await;
    let scope = "/ping.read /accounts.read";
    let c = register(
        &app,
        json!({"name": "interop openid-client", "scopes": scope, "profile": "rfc6749"}),
    )
    .await;
    let v = run(
        Lib::OpenidClient,
        &["secrets"],
        &secret_env(&app, &c, scope),
    )
    .await;
    assert_secrets_flow(&v, &issuer(&app), &c, scope);
}

/// A test CA and a server certificate for 127.0.0.1 written to `dir`; (ca.pem, cert.pem,
/// key.pem).
fn tls_files(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "interop test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(&paths.1, cert.pem()).expect("write cert.pem");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key.pem");
    paths
}

/// Every library over https:// with the server's native TLS, trusting only what the
/// environment says (the test CA), with none of the options that allow plain HTTP.
#[tokio::test]
async fn every_library_works_over_https_without_insecure_options() {
    let node = installed(Lib::Node);
    let python = installed(Lib::Python);
    if !node && !python {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(certs.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let app = spawn_app_with(&[("tls_cert", &cert), ("tls_key", &key)]).await;
    let iss = format!("https://{}", app.addr);
    let scope = "/ping.read /accounts.read";
    let mut libs = Vec::new();
    if node {
        libs.extend([Lib::Node, Lib::OpenidClient]);
    }
    if python {
        libs.push(Lib::Python);
    }
    for lib in libs {
        // The admin listener serves the same certificate: this client comes from the CLI.
        let t = app.client(scope, &["--profile", "rfc6749"]);
        let c = Registered {
            id: t.id,
            secret: Some(t.secret.clone()),
        };
        let env = vec![
            ("TESSERA_ISSUER", iss.clone()),
            ("TESSERA_CLIENT_ID", c.id.clone()),
            ("TESSERA_CLIENT_SECRET", t.secret.clone()),
            ("TESSERA_SCOPE", scope.to_owned()),
            ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
            ("REQUESTS_CA_BUNDLE", ca.display().to_string()),
        ];
        let v = run(lib, &["secrets"], &env).await;
        assert_secrets_flow(&v, &iss, &c, scope);
    }
}

/// A JWT access token checked by the library against the JWKS from discovery, for one signing
/// algorithm: by jose, and by oauth4webapi's RFC 9068 validator as a resource server would; or
/// by jwskate's JwtVerifier.
async fn jwt_access_tokens_verify(lib: Lib, signing_alg: &str) {
    let app = spawn_app_with(&[("signing_alg", signing_alg)]).await;
    let c = register(
        &app,
        json!({"name": "interop jwt", "scopes": "/ping.read", "profile": "rfc6749", "format": "jwt"}),
    )
    .await;
    let v = run(lib, &["jwt"], &secret_env(&app, &c, "/ping.read")).await;
    assert_eq!(v["header"]["alg"], signing_alg, "{v}");
    assert_eq!(v["header"]["typ"], "at+jwt", "{v}");
    let claims = &v["claims"];
    assert_eq!(claims["iss"], issuer(&app).as_str(), "{v}");
    assert_eq!(claims["aud"], issuer(&app).as_str(), "{v}");
    assert_eq!(claims["client_id"], c.id.as_str(), "{v}");
    assert_eq!(claims["sub"], c.id.as_str(), "{v}");
    assert_eq!(claims["scope"], "/ping.read", "{v}");
    match lib {
        Lib::Node => {
            assert_eq!(v["rfc9068_client_id"], c.id.as_str(), "{v}");
            assert_eq!(
                v["tampered"]["name"], "JWSSignatureVerificationFailed",
                "{v}"
            );
        }
        Lib::Python => assert_eq!(v["tampered"]["name"], "InvalidSignature", "{v}"),
        Lib::OpenidClient => unreachable!("openid_client.mjs has no jwt flow"),
    }
}

#[tokio::test]
async fn jose_and_oauth4webapi_verify_jwt_access_tokens_signed_with_eddsa_es256_and_rs256() {
    if !installed(Lib::Node) {
        return;
    }
    for alg in ["EdDSA", "ES256", "RS256"] {
        jwt_access_tokens_verify(Lib::Node, alg).await;
    }
}

#[tokio::test]
async fn jose_and_oauth4webapi_verify_ps256_jwt_access_tokens() {
    if !installed(Lib::Node) {
        return;
    }
    jwt_access_tokens_verify(Lib::Node, "PS256").await;
}

#[tokio::test]
async fn jwskate_verifies_jwt_access_tokens_signed_with_eddsa_es256_rs256_and_ps256() {
    if !installed(Lib::Python) {
        return;
    }
    for alg in ["EdDSA", "ES256", "RS256", "PS256"] {
        jwt_access_tokens_verify(Lib::Python, alg).await;
    }
}

#[tokio::test]
async fn oauth4webapi_verifies_jwt_introspection_responses_signed_with_every_algorithm() {
    if !installed(Lib::Node) {
        return;
    }
    for alg in ["EdDSA", "ES256", "RS256", "PS256"] {
        let app = spawn_app_with(&[("signing_alg", alg)]).await;
        let c = register(
            &app,
            json!({"name": "interop RFC 9701", "scopes": "/ping.read", "profile": "rfc6749"}),
        )
        .await;
        let v = run(
            Lib::Node,
            &["introspection-jwt"],
            &secret_env(&app, &c, "/ping.read"),
        )
        .await;
        assert_eq!(
            v["introspection_signing_alg_values_supported"],
            json!([alg]),
            "{v}"
        );
        for ct in v["content_types"].as_array().expect("content types") {
            assert_eq!(ct, "application/token-introspection+jwt", "{v}");
        }
        let access = &v["introspect_access"];
        assert_eq!(access["active"], true, "{v}");
        assert_eq!(access["client_id"], c.id.as_str(), "{v}");
        assert_eq!(access["token_type"], "Bearer", "{v}");
        assert_eq!(v["introspect_refresh"]["active"], true, "{v}");
        assert_eq!(v["after_revoke"], json!({"active": false}), "{v}");
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 16: keys instead of shared secrets, and tokens bound to their holder.

/// The checks common to every library's `private-key-jwt` flow.
fn assert_private_key_jwt_flow(v: &Value, c: &Registered) {
    let scope = "/ping.read /accounts.read";
    for grant in ["token", "refreshed"] {
        assert_eq!(lower(&v[grant]["token_type"]), "bearer", "{grant}: {v}");
        assert_eq!(v[grant]["scope"], scope, "{grant}: {v}");
    }
    assert_eq!(v["ping"]["status"], 200, "{v}");
    let access = &v["introspect_access"];
    assert_eq!(access["active"], true, "{v}");
    assert_eq!(access["client_id"], c.id.as_str(), "{v}");
    // RFC 7662 §2.2: the token_type of the access token, as the token endpoint named it.
    assert_eq!(access["token_type"], "Bearer", "{v}");
    assert_eq!(v["after_revoke"], json!({"active": false}), "{v}");
}

#[tokio::test]
async fn oauth4webapi_authenticates_with_private_key_jwt_es256_eddsa_and_ps256_keys() {
    if !installed(Lib::Node) {
        return;
    }
    let app = spawn_app().await;
    for alg in ["ES256", "EdDSA", "PS256"] {
        let (key, public) = keygen(&app, Lib::Node, alg).await;
        let c = key_client(&app, &public, json!({})).await;
        let v = run(Lib::Node, &["private-key-jwt"], &key_env(&app, &c, &key)).await;
        assert_eq!(v["client_key"]["alg"], alg, "{v}");
        let methods = &v["discovery"]["token_endpoint_auth_methods_supported"];
        assert!(
            methods
                .as_array()
                .is_some_and(|m| m.contains(&json!("private_key_jwt"))),
            "discovery does not list private_key_jwt: {v}"
        );
        assert_private_key_jwt_flow(&v, &c);
        if c.secret.is_some() {
            // A Basic refusal: 401 with the Basic challenge, which the library reports.
            assert_eq!(v["secret_refused"]["status"], 401, "{v}");
        }
    }
}

#[tokio::test]
async fn requests_oauth2client_authenticates_with_private_key_jwt_es256_eddsa_and_ps256_keys() {
    if !installed(Lib::Python) {
        return;
    }
    let app = spawn_app().await;
    for alg in ["ES256", "EdDSA", "PS256"] {
        let (key, public) = keygen(&app, Lib::Python, alg).await;
        let c = key_client(&app, &public, json!({})).await;
        let v = run(Lib::Python, &["private-key-jwt"], &key_env(&app, &c, &key)).await;
        assert_eq!(v["client_key"]["alg"], alg, "{v}");
        assert_private_key_jwt_flow(&v, &c);
        assert_eq!(lower(&v["token_issuer_aud"]["token_type"]), "bearer", "{v}");
        assert_eq!(v["revoked"], true, "{v}");
    }
}

/// A loopback HTTP server that serves `jwks` at `/jwks.json`, for clients registered by
/// `jwks_uri`; stops when the returned sender is dropped.
async fn serve_jwks(jwks: Value) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = jwks.to_string();
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (format!("http://{addr}/jwks.json"), stop)
}

#[tokio::test]
async fn oauth4webapi_authenticates_with_private_key_jwt_keys_fetched_from_jwks_uri() {
    if !installed(Lib::Node) {
        return;
    }
    // The key server in the test is plain HTTP, which registration refuses unless allowed.
    let app = spawn_app_with(&[("jwks_uri_allow_http", "true")]).await;
    let (key, public) = keygen(&app, Lib::Node, "ES256").await;
    let (jwks_uri, _stop) = serve_jwks(json!({"keys": [public]})).await;
    let c = register(
        &app,
        json!({
            "name": "interop jwks_uri",
            "scopes": "/ping.read /accounts.read",
            "profile": "rfc6749",
            "auth_methods": ["private_key_jwt"],
            "jwks_uri": jwks_uri,
        }),
    )
    .await;
    let v = run(Lib::Node, &["private-key-jwt"], &key_env(&app, &c, &key)).await;
    assert_private_key_jwt_flow(&v, &c);
}

/// The checks common to every library's `dpop` flow.
fn assert_dpop_flow(v: &Value, c: &Registered) {
    let jkt = v["jkt"].as_str().expect("the library's thumbprint");
    // RFC 9449 §5.2: a client registered for DPoP-bound tokens is refused without a proof.
    assert_eq!(v["without_dpop"]["status"], 400, "{v}");
    assert!(
        ["invalid_dpop_proof", "invalid_request"]
            .contains(&lower(&v["without_dpop"]["error"]).as_str()),
        "{v}"
    );
    for grant in ["token", "refreshed"] {
        assert_eq!(lower(&v[grant]["token_type"]), "dpop", "{grant}: {v}");
    }
    assert_eq!(v["ping"]["status"], 200, "{v}");
    assert_eq!(v["ping_as_bearer"]["status"], 401, "{v}");
    for introspection in ["introspect_access", "introspect_refreshed"] {
        let i = &v[introspection];
        assert_eq!(i["active"], true, "{introspection}: {v}");
        assert_eq!(i["client_id"], c.id.as_str(), "{introspection}: {v}");
        assert_eq!(i["token_type"], "DPoP", "{introspection}: {v}");
        assert_eq!(i["cnf"]["jkt"], jkt, "{introspection}: {v}");
    }
    assert_eq!(v["ping_refreshed"]["status"], 200, "{v}");
    assert_eq!(v["after_revoke"], json!({"active": false}), "{v}");
    assert_eq!(v["ping_after_revoke"]["status"], 401, "{v}");
}

#[tokio::test]
async fn oauth4webapi_obtains_uses_refreshes_introspects_and_revokes_dpop_bound_tokens() {
    if !installed(Lib::Node) {
        return;
    }
    let app = spawn_app().await;
    // Opaque tokens with an EdDSA proof key, JWTs (cnf.jkt checked by the library's RFC 9068
    // validator) with an ES256 one and with a PS256 one.
    for (format, client_alg, dpop_alg) in [
        ("opaque", "ES256", "EdDSA"),
        ("jwt", "EdDSA", "ES256"),
        ("jwt", "PS256", "PS256"),
    ] {
        let (key, public) = keygen(&app, Lib::Node, client_alg).await;
        let c = key_client(
            &app,
            &public,
            json!({"format": format, "require_dpop": true}),
        )
        .await;
        let mut env = key_env(&app, &c, &key);
        env.push(("TESSERA_DPOP_ALG", dpop_alg.to_owned()));
        let v = run(Lib::Node, &["dpop"], &env).await;
        assert_dpop_flow(&v, &c);
        assert_eq!(v["ping_other_key"]["status"], 401, "{v}");
        let algs = &v["discovery"]["dpop_signing_alg_values_supported"];
        assert!(
            algs.as_array()
                .is_some_and(|a| a.contains(&json!(dpop_alg))),
            "discovery does not list {dpop_alg} for DPoP: {v}"
        );
        if format == "jwt" {
            assert_eq!(v["jwt_cnf"]["jkt"], v["jkt"], "{v}");
        }
    }
}

#[tokio::test]
async fn requests_oauth2client_obtains_uses_refreshes_introspects_and_revokes_dpop_bound_tokens() {
    if !installed(Lib::Python) {
        return;
    }
    let app = spawn_app().await;
    for (format, dpop_alg) in [("opaque", "ES256"), ("jwt", "EdDSA")] {
        let (key, public) = keygen(&app, Lib::Python, "ES256").await;
        let c = key_client(
            &app,
            &public,
            json!({"format": format, "require_dpop": true}),
        )
        .await;
        let mut env = key_env(&app, &c, &key);
        env.push(("TESSERA_DPOP_ALG", dpop_alg.to_owned()));
        let v = run(Lib::Python, &["dpop"], &env).await;
        assert_dpop_flow(&v, &c);
        assert_eq!(v["token"]["class"], "DPoPToken", "{v}");
        assert_eq!(v["refreshed_same_key"], true, "{v}");
    }
}

#[tokio::test]
async fn openid_client_obtains_uses_refreshes_introspects_and_revokes_dpop_bound_tokens() {
    if !installed(Lib::OpenidClient) {
        return;
    }
    let app = spawn_app().await;
    let (key, public) = keygen(&app, Lib::Node, "PS256").await;
    let c = key_client(
        &app,
        &public,
        json!({"format": "jwt", "require_dpop": true}),
    )
    .await;
    let mut env = key_env(&app, &c, &key);
    env.push(("TESSERA_DPOP_ALG", "EdDSA".to_owned()));
    let v = run(Lib::OpenidClient, &["dpop"], &env).await;
    assert_dpop_flow(&v, &c);
}

#[tokio::test]
async fn every_library_retries_with_the_servers_dpop_nonce() {
    let node = installed(Lib::Node);
    let python = installed(Lib::Python);
    if !node && !python {
        return;
    }
    let app = spawn_app_with(&[(DPOP_NONCE_SETTING, "true")]).await;
    if node {
        // oauth4webapi leaves the retry to its caller (the script retries on isDPoPNonceError).
        let (key, public) = keygen(&app, Lib::Node, "ES256").await;
        let c = key_client(&app, &public, json!({"require_dpop": true})).await;
        let v = run(Lib::Node, &["dpop"], &key_env(&app, &c, &key)).await;
        assert_dpop_flow(&v, &c);
        let retries = v["nonce_retries"]["token"].as_u64().unwrap_or(0);
        assert!(retries >= 1, "the token endpoint asked for no nonce: {v}");
        // openid-client retries by itself.
        let c = key_client(&app, &public, json!({"require_dpop": true})).await;
        let v = run(Lib::OpenidClient, &["dpop"], &key_env(&app, &c, &key)).await;
        assert_dpop_flow(&v, &c);
        let asked = v["nonce_requests"].as_u64().unwrap_or(0);
        assert!(
            asked >= 1,
            "the server asked openid-client for no nonce: {v}"
        );
    }
    if python {
        // requests-oauth2client retries by itself too.
        let (key, public) = keygen(&app, Lib::Python, "ES256").await;
        let c = key_client(&app, &public, json!({"require_dpop": true})).await;
        let v = run(Lib::Python, &["dpop"], &key_env(&app, &c, &key)).await;
        assert_dpop_flow(&v, &c);
        assert_eq!(v["as_nonce_used"], true, "{v}");
    }
}

#[tokio::test]
async fn oauth4webapi_runs_a_fapi2_client_with_private_key_jwt_and_dpop() {
    if !installed(Lib::Node) {
        return;
    }
    let app = spawn_app().await;
    let (key, public) = keygen(&app, Lib::Node, "PS256").await;
    let c = key_client(&app, &public, json!({"fapi2": true, "format": "jwt"})).await;
    let mut env = key_env(&app, &c, &key);
    env.push(("TESSERA_DPOP_ALG", "ES256".to_owned()));
    env.push(("TESSERA_RETRY_REFRESH", "1".to_owned()));
    let v = run(Lib::Node, &["dpop"], &env).await;
    assert_dpop_flow(&v, &c);
    assert_eq!(v["jwt_cnf"]["jkt"], v["jkt"], "{v}");
    // FAPI 2.0 forbids refresh-token rotation without a retry window: a retry succeeds.
    assert_eq!(lower(&v["refresh_retry"]["token_type"]), "dpop", "{v}");
}

/// Sends a request the library made (as `capture` reported it) to `app`, unchanged but for the
/// listener it goes to.
async fn replay(app: &TestApp, captured: &Value) -> Reply {
    let url = captured["url"].as_str().expect("captured url");
    let path = url
        .find("/oauth2/")
        .map(|i| &url[i..])
        .expect("a token endpoint URL");
    let headers: Vec<(String, String)> = captured["headers"]
        .as_object()
        .expect("captured headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_owned()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != "content-type")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = captured["body"].as_str().expect("captured body").to_owned();
    app.post(path, Some(FORM), body, &headers).await
}

#[tokio::test]
async fn an_assertion_or_dpop_proof_made_by_the_library_is_refused_when_replayed_on_another_instance()
 {
    if !installed(Lib::Node) {
        return;
    }
    let Some(db) = crate::pg::TestDb::create().await.map(std::sync::Arc::new) else {
        return;
    };
    let master_key = new_master_key();
    // Two instances behind one public URL: the second is configured with the first's issuer,
    // so the library's `aud` and `htu` are right for both.
    let a = spawn_serve(&db, &master_key, &[]).await;
    let b = spawn_serve(&db, &master_key, &["--issuer", &issuer(&a)]).await;

    // A private_key_jwt assertion, used once on A, then replayed on B.
    let (key, public) = keygen(&a, Lib::Node, "ES256").await;
    let c = key_client(&a, &public, json!({})).await;
    let v = run(Lib::Node, &["capture"], &key_env(&a, &c, &key)).await;
    assert_eq!(lower(&v["token"]["token_type"]), "bearer", "{v}");
    let r = replay(&b, &v["captured"]).await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = replay(&a, &v["captured"]).await;
    assert_oauth_error(&r, 401, "invalid_client");

    // A DPoP proof at the token endpoint (the client authenticates with its secret, which may
    // be sent any number of times), used once on A, then replayed on B.
    let c = register(
        &a,
        json!({"name": "interop replay", "scopes": "/ping.read", "profile": "rfc6749"}),
    )
    .await;
    let mut env = secret_env(&a, &c, "/ping.read");
    env.push(("TESSERA_DPOP_ALG", "ES256".to_owned()));
    let v = run(Lib::Node, &["capture"], &env).await;
    assert_eq!(lower(&v["token"]["token_type"]), "dpop", "{v}");
    let r = replay(&b, &v["captured"]).await;
    assert_oauth_error(&r, 400, "invalid_dpop_proof");
}
