//! `private_key_jwt` client authentication (RFC 7523, OIDC Core §9): assertions signed by an
//! independent library (`jsonwebtoken`) with keys generated here (aws-lc-rs), registered
//! inline (`jwks`) or served by a small HTTP server on loopback (`jwks_uri`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client key: the private half for jsonwebtoken, the public half as a JWK.
struct Key {
    alg: jsonwebtoken::Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    kid: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(der)
    )
}

fn key(alg: &str, kid: &str) -> Key {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let (alg, encoding, jwk) = match alg {
        "EdDSA" => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            (
                jsonwebtoken::Algorithm::EdDSA,
                EncodingKey::from_ed_der(pkcs8.as_ref()),
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
            )
        }
        "ES256" => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let point = pair.public_key().as_ref();
            (
                jsonwebtoken::Algorithm::ES256,
                EncodingKey::from_ec_der(pkcs8.as_ref()),
                json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            )
        }
        "PS256" | "RS256" => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let pkcs8 = pair.as_der().unwrap();
            let public = pair.public_key();
            (
                if alg == "PS256" {
                    jsonwebtoken::Algorithm::PS256
                } else {
                    jsonwebtoken::Algorithm::RS256
                },
                EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap(),
                json!({"kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero())}),
            )
        }
        other => panic!("no key type for {other}"),
    };
    let mut jwk = jwk;
    jwk["kid"] = json!(kid);
    Key {
        alg,
        encoding,
        jwk,
        kid: kid.to_owned(),
    }
}

impl Key {
    /// A DPoP proof (RFC 9449) for a `POST` to `htu`, made with this key as `alg`.
    fn dpop_proof(&self, alg: jsonwebtoken::Algorithm, htu: &str) -> String {
        let mut header = Header::new(alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(self.jwk.clone()).unwrap());
        let claims = json!({"jti": uuid::Uuid::now_v7().to_string(), "htm": "POST", "htu": htu, "iat": now()});
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn claims(client_id: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 120,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

async fn spawn() -> TestApp {
    spawn_app_with(&[
        ("default_profile", "rfc6749"),
        ("jwks_uri_allow_http", "true"),
    ])
    .await
}

async fn issuer(app: &TestApp) -> String {
    let r = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    r.json()["issuer"].as_str().unwrap().to_owned()
}

/// Creates a client through the admin API; returns its id.
async fn create(app: &TestApp, body: Value) -> Value {
    let mut body = body;
    body["name"] = json!("keyed");
    body["scopes"] = json!("/ping.read");
    body["profile"] = json!("rfc6749");
    let r = app.admin("POST", "/admin/clients", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()
}

async fn keyed_client(app: &TestApp, keys: &[&Key]) -> String {
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let v = create(
        app,
        json!({"auth_methods": ["private_key_jwt"], "jwks": jwks}),
    )
    .await;
    assert!(
        v.get("client_secret").is_none(),
        "a keys-only client is shown no secret: {v}"
    );
    v["client_id"].as_str().unwrap().to_owned()
}

async fn with_assertion(
    app: &TestApp,
    path: &str,
    assertion: &str,
    fields: &[(&str, &str)],
) -> Reply {
    let mut all = vec![
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    all.extend_from_slice(fields);
    app.post(path, Some(FORM), form(&all), &[]).await
}

async fn grant(app: &TestApp, assertion: &str) -> Reply {
    with_assertion(
        app,
        "/oauth2/token",
        assertion,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
        ],
    )
    .await
}

fn assert_invalid_client(r: &Reply, contains: &str) {
    assert_oauth_error(r, 401, "invalid_client");
    let d = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(d.contains(contains), "{d:?} does not contain {contains:?}");
}

#[tokio::test]
async fn every_algorithm_obtains_refreshes_introspects_and_revokes() {
    let app = spawn().await;
    let iss = issuer(&app).await;
    for alg in ["EdDSA", "ES256", "PS256", "RS256"] {
        let k = key(alg, &format!("{alg}-1"));
        let id = keyed_client(&app, &[&k]).await;
        let r = grant(&app, &k.sign(&claims(&id, &iss))).await;
        assert_eq!(r.status, 200, "{alg}: {}", r.text);
        let t = r.json();
        let access = t["access_token"].as_str().unwrap().to_owned();
        let refresh = t["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(app.ping(&access).await, 200);

        // The token endpoint URL is an accepted audience too, and an array works.
        let aud = json!([format!("{iss}/oauth2/token"), "https://other.example"]);
        let mut c = claims(&id, &iss);
        c["aud"] = aud;
        let r = with_assertion(
            &app,
            "/oauth2/token",
            &k.sign(&c),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        assert_eq!(r.status, 200, "{alg} refresh: {}", r.text);
        let access2 = r.json()["access_token"].as_str().unwrap().to_owned();

        // The URL of the endpoint called is accepted as aud at introspection.
        let mut c = claims(&id, &iss);
        c["aud"] = json!(format!("{iss}/oauth2/introspect"));
        let r = with_assertion(
            &app,
            "/oauth2/introspect",
            &k.sign(&c),
            &[("token", &access2)],
        )
        .await;
        assert_eq!(r.status, 200, "{alg} introspect: {}", r.text);
        assert_eq!(r.json()["active"], true);
        assert_eq!(r.json()["client_id"], id.as_str());

        let r = with_assertion(
            &app,
            "/oauth2/revoke",
            &k.sign(&claims(&id, &iss)),
            &[("token", &access2)],
        )
        .await;
        assert_eq!(r.status, 200, "{alg} revoke: {}", r.text);
        assert_eq!(app.ping(&access2).await, 401);
    }
}

#[tokio::test]
async fn every_broken_assertion_rule_is_invalid_client() {
    let app = spawn().await;
    let iss = issuer(&app).await;
    let k = key("ES256", "k1");
    let stranger = key("ES256", "k1");
    let id = keyed_client(&app, &[&k]).await;
    let now = now();
    let with = |changes: Value| {
        let mut c = claims(&id, &iss);
        for (name, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(name);
            } else {
                c[name] = v.clone();
            }
        }
        c
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "iss differs from sub",
            k.sign(&with(json!({"sub": "someone-else"}))),
            "iss and sub",
        ),
        (
            "wrong aud",
            k.sign(&with(json!({"aud": "https://elsewhere.example"}))),
            "aud",
        ),
        ("no exp", k.sign(&with(json!({"exp": null}))), "no exp"),
        (
            "exp too far ahead",
            k.sign(&with(json!({"exp": now + 3600}))),
            "exp",
        ),
        (
            "expired",
            k.sign(&with(json!({"exp": now - 600, "iat": now - 700}))),
            "expired",
        ),
        (
            "iat 60 s ahead",
            k.sign(&with(json!({"iat": now + 60}))),
            "iat",
        ),
        (
            "nbf 60 s ahead",
            k.sign(&with(json!({"nbf": now + 60}))),
            "nbf",
        ),
        ("no jti", k.sign(&with(json!({"jti": null}))), "jti"),
        (
            "unknown kid",
            {
                let mut h = Header::new(k.alg);
                h.kid = Some("nope".into());
                jsonwebtoken::encode(&h, &with(json!({})), &k.encoding).unwrap()
            },
            "kid",
        ),
        ("wrong key", stranger.sign(&with(json!({}))), "signature"),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(with(json!({})).to_string())
            ),
            "algorithm",
        ),
        (
            "HS256",
            jsonwebtoken::encode(
                &Header::new(jsonwebtoken::Algorithm::HS256),
                &with(json!({})),
                &EncodingKey::from_secret(b"shared secret of thirty-two bytes!"),
            )
            .unwrap(),
            "algorithm",
        ),
        ("not a JWT", "not.a.jwt".to_owned(), "refused"),
    ];
    for (label, assertion, contains) in cases {
        let r = grant(&app, &assertion).await;
        assert_envelope(&r);
        assert!(
            !r.text.contains(&assertion),
            "{label}: the answer echoes the assertion"
        );
        assert_invalid_client(&r, contains);
    }

    // A client_id field that differs from iss/sub.
    let r = with_assertion(
        &app,
        "/oauth2/token",
        &k.sign(&claims(&id, &iss)),
        &[("grant_type", "client_credentials"), ("client_id", "other")],
    )
    .await;
    assert_invalid_client(&r, "client_id");
    // A wrong client_assertion_type.
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
                ),
                ("client_assertion", &k.sign(&claims(&id, &iss))),
            ]),
            &[],
        )
        .await;
    assert_invalid_client(&r, "client_assertion_type");
    // An empty client_assertion_type beside Basic is not taken as absent.
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ""),
            ]),
            &[("authorization", &basic(&id, "whatever"))],
        )
        .await;
    assert_invalid_client(&r, "more than one");
    // Two methods at once: an assertion and Basic, an assertion and client_secret.
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &k.sign(&claims(&id, &iss))),
            ]),
            &[("authorization", &basic(&id, "whatever"))],
        )
        .await;
    assert_invalid_client(&r, "more than one");
    let r = with_assertion(
        &app,
        "/oauth2/token",
        &k.sign(&claims(&id, &iss)),
        &[("grant_type", "client_credentials"), ("client_secret", "x")],
    )
    .await;
    assert_invalid_client(&r, "more than one");

    // 10 s ahead is within the tolerated clock difference.
    let r = grant(
        &app,
        &k.sign(&with(json!({"iat": now + 10, "nbf": now + 10}))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Failures are audited as auth.failed, with the assertion's reason.
    let audit = app
        .admin(
            "GET",
            &format!("/admin/audit?client_id={id}&event=auth.failed"),
            None,
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert!(audit.text.contains("bad_assertion"), "{}", audit.text);
}

#[tokio::test]
async fn a_method_the_client_is_not_allowed_is_refused() {
    let app = spawn().await;
    let iss = issuer(&app).await;
    // A secret-only client cannot send an assertion.
    let k = key("EdDSA", "k");
    let v = create(&app, json!({"jwks": {"keys": [k.jwk.clone()]}})).await;
    let secret_client = v["client_id"].as_str().unwrap().to_owned();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    let r = grant(&app, &k.sign(&claims(&secret_client, &iss))).await;
    assert_invalid_client(&r, "private_key_jwt is not allowed");
    // A keys-only client cannot use a secret, even its real one (rotated in to know it).
    let keyed = keyed_client(&app, &[&k]).await;
    let r = app
        .admin(
            "POST",
            &format!("/admin/clients/{keyed}/rotate-secret"),
            Some(json!({"keep_old": 0})),
        )
        .await;
    let keyed_secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    let c = TestClient {
        id: keyed.clone(),
        secret: keyed_secret,
    };
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ],
        )
        .await;
    assert_invalid_client(&r, "client_secret_basic is not allowed");
    // client_secret_post only: Basic is refused, the body works.
    let r = app
        .admin(
            "PATCH",
            &format!("/admin/clients/{secret_client}"),
            Some(json!({"auth_methods": ["client_secret_post"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = TestClient {
        id: secret_client.clone(),
        secret: secret.clone(),
    };
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ],
        )
        .await;
    assert_invalid_client(&r, "client_secret_basic is not allowed");
    let r = app
        .post(
            "/oauth2/token",
            Some(FORM),
            form(&[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
                ("client_id", &secret_client),
                ("client_secret", &secret),
            ]),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_but_one_whose_request_failed_may_be_sent_again() {
    let app = spawn().await;
    let iss = issuer(&app).await;
    let k = key("EdDSA", "k");
    let id = keyed_client(&app, &[&k]).await;

    let assertion = k.sign(&claims(&id, &iss));
    assert_eq!(grant(&app, &assertion).await.status, 200);
    let r = grant(&app, &assertion).await;
    assert_invalid_client(&r, "already used");

    // A request that fails after authentication (a scope the client may not have) records
    // nothing: the same assertion then succeeds.
    let assertion = k.sign(&claims(&id, &iss));
    let r = with_assertion(
        &app,
        "/oauth2/token",
        &assertion,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/accounts.write"),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"], "invalid_scope", "{}", r.text);
    assert_eq!(grant(&app, &assertion).await.status, 200);
    assert_invalid_client(&grant(&app, &assertion).await, "already used");
}

#[tokio::test]
async fn a_fapi2_client_uses_only_private_key_jwt_and_fapi_algorithms() {
    let app = spawn().await;
    let iss = issuer(&app).await;
    let ps = key("PS256", "ps");
    let mut rs_jwk = key("RS256", "rs").jwk;
    rs_jwk["alg"] = json!("RS256");
    // Refused at registration: a secret method, a key meant for RS256.
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "f", "scopes": "/ping.read", "fapi2": true,
                "jwks": {"keys": [ps.jwk.clone()]}})),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("auth_methods")
    );
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "f", "scopes": "/ping.read", "fapi2": true,
                "auth_methods": ["private_key_jwt"], "jwks": {"keys": [rs_jwk]}})),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("jwks")
    );

    let v = create(
        &app,
        json!({"fapi2": true, "auth_methods": ["private_key_jwt"], "jwks": {"keys": [ps.jwk.clone()]}}),
    )
    .await;
    assert_eq!(v["fapi2"], true);
    assert!(v.get("client_secret").is_none());
    let id = v["client_id"].as_str().unwrap().to_owned();
    // An RS256 assertion made with the same RSA key is refused for a FAPI client.
    let rs_signer = Key {
        alg: jsonwebtoken::Algorithm::RS256,
        encoding: ps.encoding.clone(),
        jwk: ps.jwk.clone(),
        kid: ps.kid.clone(),
    };
    let r = grant(&app, &rs_signer.sign(&claims(&id, &iss))).await;
    assert_invalid_client(&r, "RS256 is not allowed");
    // FAPI 2.0 requires DPoP: no proof, or an RS256 proof, gets no token.
    let token_url = format!("{}/oauth2/token", iss.trim_end_matches('/'));
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];
    let with_proof = |assertion: String,
                      proof: Option<String>,
                      fields: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut all: Vec<(&str, &str)> = vec![
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ];
            all.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
            let headers: Vec<(&str, &str)> = proof.iter().map(|p| ("dpop", p.as_str())).collect();
            app.post("/oauth2/token", Some(FORM), form(&all), &headers)
                .await
        }
    };
    let owned = |f: &[(&'static str, &str)]| {
        f.iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    let r = grant(&app, &ps.sign(&claims(&id, &iss))).await;
    assert_oauth_error(&r, 400, "invalid_dpop_proof");
    let rs_proof = ps.dpop_proof(jsonwebtoken::Algorithm::RS256, &token_url);
    let r = with_proof(ps.sign(&claims(&id, &iss)), Some(rs_proof), owned(&fields)).await;
    assert_oauth_error(&r, 400, "invalid_dpop_proof");
    let proof = ps.dpop_proof(jsonwebtoken::Algorithm::PS256, &token_url);
    let r = with_proof(ps.sign(&claims(&id, &iss)), Some(proof), owned(&fields)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["token_type"], "DPoP");

    // A retried refresh succeeds within the FAPI retry window (refresh_grace is 0 here).
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let again = |assertion: String| {
        let proof = ps.dpop_proof(jsonwebtoken::Algorithm::PS256, &token_url);
        with_proof(
            assertion,
            Some(proof),
            owned(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
        )
    };
    let first = again(ps.sign(&claims(&id, &iss))).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let retried = again(ps.sign(&claims(&id, &iss))).await;
    assert_eq!(retried.status, 200, "a retried refresh: {}", retried.text);
}

/// A JWK Set served on loopback http, counting its fetches; its keys can be replaced.
struct KeyServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    keys: Arc<std::sync::Mutex<Value>>,
}

async fn key_server(keys: Value) -> KeyServer {
    let fetches = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(std::sync::Mutex::new(keys));
    let (f, k) = (fetches.clone(), keys.clone());
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (f, k) = (f.clone(), k.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                let body = k.lock().unwrap().to_string();
                (
                    [
                        ("content-type", "application/jwk-set+json"),
                        ("cache-control", "max-age=600"),
                    ],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    KeyServer {
        url: format!("http://{addr}/jwks.json"),
        fetches,
        keys,
    }
}

#[tokio::test]
async fn keys_from_a_jwks_uri_are_cached_and_a_rotation_is_picked_up_by_its_new_kid() {
    let app = spawn().await;
    let iss = issuer(&app).await;
    let old = key("ES256", "2026-01");
    let server = key_server(json!({"keys": [old.jwk.clone()]})).await;
    let v = create(
        &app,
        json!({"auth_methods": ["private_key_jwt"], "jwks_uri": server.url}),
    )
    .await;
    assert_eq!(v["jwks_uri"], server.url.as_str());
    let id = v["client_id"].as_str().unwrap().to_owned();

    for _ in 0..3 {
        let r = grant(&app, &old.sign(&claims(&id, &iss))).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        1,
        "cached for its max-age"
    );

    // The client rotates: the new key is published, the assertion names it.
    let new = key("EdDSA", "2026-02");
    *server.keys.lock().unwrap() = json!({"keys": [old.jwk.clone(), new.jwk.clone()]});
    let r = grant(&app, &new.sign(&claims(&id, &iss))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "refetched for the unknown kid"
    );

    // A made-up kid right after does not fetch again (at most one refetch per interval).
    let stranger = key("EdDSA", "made-up");
    let r = grant(&app, &stranger.sign(&claims(&id, &iss))).await;
    assert_invalid_client(&r, "kid");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_jwks_uri_must_be_https_without_the_development_setting() {
    let app = spawn_app().await;
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "k", "scopes": "/ping.read",
                "auth_methods": ["private_key_jwt"], "jwks_uri": "http://127.0.0.1:9/jwks.json"})),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("jwks_uri")
    );
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_on_a_second_instance() {
    let Some(db) = crate::pg::TestDb::create().await else {
        return;
    };
    let db = Arc::new(db);
    let master = new_master_key();
    let args = [
        "--issuer",
        "https://tessera.test",
        "--default-profile",
        "rfc6749",
    ];
    let (a, b) = tokio::join!(
        spawn_serve(&db, &master, &args),
        spawn_serve(&db, &master, &args)
    );
    let k = key("ES256", "k");
    let id = keyed_client(&a, &[&k]).await;
    let assertion = k.sign(&claims(&id, "https://tessera.test"));
    let r = grant(&a, &assertion).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = grant(&b, &assertion).await;
    assert_invalid_client(&r, "already used");
    // A fresh one works on the second instance.
    let r = grant(&b, &k.sign(&claims(&id, "https://tessera.test"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn admin_auth_fields_round_trip_and_are_validated_naming_the_field() {
    let app = spawn().await;
    let k = key("EdDSA", "k");
    let v = create(
        &app,
        json!({"auth_methods": ["private_key_jwt", "client_secret_post"], "jwks": {"keys": [k.jwk.clone()]},
            "require_dpop": true}),
    )
    .await;
    let id = v["client_id"].as_str().unwrap().to_owned();
    assert!(v["client_secret"].is_string(), "a secret method: a secret");
    let shown = app
        .admin("GET", &format!("/admin/clients/{id}"), None)
        .await
        .json();
    assert_eq!(
        shown["auth_methods"],
        json!(["private_key_jwt", "client_secret_post"])
    );
    assert_eq!(shown["jwks"]["keys"][0]["kid"], "k");
    assert_eq!(shown["require_dpop"], true);
    assert_eq!(shown["fapi2"], false);
    assert_eq!(shown["jwks_uri"], Value::Null);

    let refused = |r: &Reply, field: &str| {
        assert_oauth_error(r, 400, "invalid_request");
        let d = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(d.starts_with(field), "{d:?} does not name {field}");
    };
    let bad: Vec<(&str, Value)> = vec![
        (
            "auth_methods",
            json!({"auth_methods": ["client_secret_jwt"]}),
        ),
        ("auth_methods", json!({"auth_methods": []})),
        (
            "jwks",
            json!({"jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"}]}}),
        ),
        ("jwks", json!({"jwks": "not a set"})),
        ("jwks_uri", json!({"jwks_uri": "ftp://keys.example/jwks"})),
        (
            "jwks_uri",
            json!({"jwks": {"keys": [k.jwk.clone()]}, "jwks_uri": "https://keys.example/jwks"}),
        ),
    ];
    for (field, body) in &bad {
        let mut create_body = body.clone();
        create_body["name"] = json!("x");
        create_body["scopes"] = json!("/ping.read");
        refused(
            &app.admin("POST", "/admin/clients", Some(create_body)).await,
            field,
        );
        refused(
            &app.admin("PATCH", &format!("/admin/clients/{id}"), Some(body.clone()))
                .await,
            field,
        );
    }
    // private_key_jwt without keys.
    refused(
        &app.admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "x", "scopes": "/ping.read", "auth_methods": ["private_key_jwt"]})),
        )
        .await,
        "jwks",
    );
    refused(
        &app.admin(
            "PATCH",
            &format!("/admin/clients/{id}"),
            Some(json!({"jwks": null})),
        )
        .await,
        "jwks",
    );
    // Switching from inline keys to a jwks_uri: clear one, set the other.
    let r = app
        .admin(
            "PATCH",
            &format!("/admin/clients/{id}"),
            Some(json!({"jwks": null, "jwks_uri": "https://keys.example/jwks.json"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["jwks_uri"], "https://keys.example/jwks.json");
    assert_eq!(r.json()["jwks"], Value::Null);
}

#[tokio::test]
async fn the_cli_registers_keys_from_a_file_and_shows_them() {
    let app = spawn().await;
    let k = key("ES256", "cli-key");
    let file = app.dir.path().join("jwks.json");
    std::fs::write(&file, json!({"keys": [k.jwk.clone()]}).to_string()).unwrap();
    let v = app.cli_json(&[
        "client",
        "create",
        "--name",
        "cli",
        "--scope",
        "/ping.read",
        "--auth-method",
        "private_key_jwt",
        "--jwks",
        file.to_str().unwrap(),
        "--require-dpop",
        "--json",
    ]);
    assert_eq!(v["auth_methods"], json!(["private_key_jwt"]));
    assert_eq!(v["jwks"]["keys"][0]["kid"], "cli-key");
    assert_eq!(v["require_dpop"], true);
    assert!(v.get("client_secret").is_none());
    let id = v["client_id"].as_str().unwrap();
    let v = app.cli_json(&[
        "client",
        "update",
        id,
        "--clear-jwks",
        "--jwks-uri",
        "https://keys.example/jwks.json",
        "--require-dpop=false",
        "--json",
    ]);
    assert_eq!(v["jwks"], Value::Null);
    assert_eq!(v["jwks_uri"], "https://keys.example/jwks.json");
    assert_eq!(v["require_dpop"], false);
    let out = app.cli(&["client", "show", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("private_key_jwt"), "{text}");
    assert!(text.contains("https://keys.example/jwks.json"), "{text}");
    // A refused setting fails naming the field.
    let out = app.cli(&[
        "client",
        "update",
        id,
        "--fapi2",
        "--auth-method",
        "client_secret_basic",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_methods"));
}

#[tokio::test]
async fn discovery_lists_private_key_jwt_and_its_algorithms() {
    let app = spawn().await;
    let v = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    for endpoint in ["token", "revocation", "introspection"] {
        let methods = &v[format!("{endpoint}_endpoint_auth_methods_supported")];
        assert!(
            methods
                .as_array()
                .unwrap()
                .contains(&json!("private_key_jwt")),
            "{v}"
        );
        let algs = v[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")]
            .as_array()
            .unwrap()
            .clone();
        for alg in ["PS256", "ES256", "EdDSA", "Ed25519", "RS256"] {
            assert!(algs.contains(&json!(alg)), "{v}");
        }
        assert!(!algs.contains(&json!("none")) && !algs.contains(&json!("HS256")));
    }
}
