//! DPoP (RFC 9449): proofs made by an independent signer (`jsonwebtoken`, keys generated with
//! aws-lc-rs), tokens bound to the proof's key at the token endpoint, introspection's `cnf`,
//! refresh, nonces, `/ping` as a DPoP resource server, and replay across instances.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::pg::TestDb;

const ALGS: [Algorithm; 4] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::PS256,
    Algorithm::RS256,
];

/// A client's DPoP key pair, with its public JWK as `jsonwebtoken` computes it.
struct ProofKey {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl ProofKey {
    fn new(alg: Algorithm) -> Self {
        let mut ed_public = None;
        let key = match alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().unwrap();
                ed_public = Some(URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()));
                EncodingKey::from_ed_der(pair.to_pkcs8().unwrap().as_ref())
            }
            Algorithm::ES256 => EncodingKey::from_ec_der(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .unwrap()
                    .to_pkcs8v1()
                    .unwrap()
                    .as_ref(),
            ),
            _ => {
                let pair =
                    aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                        .unwrap();
                let pkcs8 = pair.as_der().unwrap();
                EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap()
            }
        };
        // jsonwebtoken derives the public JWK of EC and RSA keys, not of Ed25519 ones.
        let jwk = match ed_public {
            Some(x) => json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            None => serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap(),
        };
        Self { alg, key, jwk }
    }

    /// The RFC 7638 thumbprint, as `jsonwebtoken` computes it.
    fn thumbprint(&self) -> String {
        let jwk: Jwk = serde_json::from_value(self.jwk.clone()).unwrap();
        jwk.thumbprint(ThumbprintHash::SHA256).unwrap()
    }

    /// A compact JWS of `header` and `claims`, signed with this key as `alg`.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, self.alg).unwrap();
        format!("{input}.{sig}")
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": alg_name(self.alg), "jwk": self.jwk})
    }

    /// A fresh proof for `htm` and `htu`, with `extra` claims.
    fn proof_with(&self, htm: &str, htu: &str, extra: Value) -> String {
        let mut claims = json!({
            "jti": uuid::Uuid::now_v7().to_string(),
            "htm": htm,
            "htu": htu,
            "iat": now(),
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        self.sign(&self.header(), &claims)
    }

    fn proof(&self, htm: &str, htu: &str) -> String {
        self.proof_with(htm, htu, json!({}))
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::PS256 => "PS256",
        _ => "RS256",
    }
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

impl TestApp {
    /// `POST /oauth2/token` with Basic and extra headers.
    async fn token_with(
        &self,
        c: &TestClient,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let auth = basic(&c.id, &c.secret);
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.post("/oauth2/token", Some(FORM), form(fields), &all)
            .await
    }

    /// A client_credentials grant with a DPoP proof.
    async fn dpop_grant(&self, c: &TestClient, key: &ProofKey, scope: &str) -> Reply {
        let proof = key.proof("POST", &self.url("/oauth2/token"));
        self.token_with(
            c,
            &[("grant_type", "client_credentials"), ("scope", scope)],
            &[("dpop", &proof)],
        )
        .await
    }

    async fn introspect(&self, c: &TestClient, token: &str) -> Value {
        let r = self
            .post(
                "/oauth2/introspect",
                Some(FORM),
                form(&[("token", token)]),
                &[("authorization", &basic(&c.id, &c.secret))],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// `GET /ping` with `Authorization: DPoP` and a proof.
    async fn dpop_ping(&self, token: &str, proof: &str) -> Reply {
        self.get(
            "/ping",
            &[("authorization", &format!("DPoP {token}")), ("dpop", proof)],
        )
        .await
    }
}

fn access_token(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_proof_of_every_algorithm_binds_opaque_and_jwt_tokens_to_its_key() {
    let app = spawn_app().await;
    for format in ["opaque", "jwt"] {
        let c = app.client("/ping.read", &["--format", format]);
        for alg in ALGS {
            let key = ProofKey::new(alg);
            let r = app.dpop_grant(&c, &key, "/ping.read").await;
            assert_eq!(r.status, 200, "{format} {alg:?}: {}", r.text);
            let t = r.json();
            assert_eq!(t["token_type"], "DPoP", "{format} {alg:?}");
            let token = t["access_token"].as_str().unwrap();
            if format == "jwt" {
                let claims = verify_with_jwks(&app.url("/.well-known/jwks.json"), token)
                    .await
                    .unwrap();
                assert_eq!(claims["cnf"], json!({"jkt": key.thumbprint()}), "{alg:?}");
            }
            let v = app.introspect(&c, token).await;
            assert_eq!(v["active"], true);
            assert_eq!(v["token_type"], "DPoP");
            assert_eq!(
                v["cnf"],
                json!({"jkt": key.thumbprint()}),
                "{format} {alg:?}"
            );
            // The refresh token is not key-bound (confidential client): no cnf.
            let v = app
                .introspect(&c, t["refresh_token"].as_str().unwrap())
                .await;
            assert_eq!(v["active"], true);
            assert!(v.get("cnf").is_none(), "{v}");
        }
        // Without a proof the token is a bearer token, as before.
        let t = app.grant(&c, "/ping.read").await;
        assert_ne!(t["token_type"], "DPoP");
        let v = app
            .introspect(&c, t["access_token"].as_str().unwrap())
            .await;
        assert!(v.get("cnf").is_none(), "{v}");
    }
}

#[tokio::test]
async fn every_profile_answers_dpop_token_type_and_refuses_bad_proofs_with_400() {
    let app = spawn_app().await;
    let key = ProofKey::new(Algorithm::ES256);
    for profile in ["seed", "moov", "rfc6749"] {
        let c = app.client("/ping.read", &["--profile", profile]);
        let r = app.dpop_grant(&c, &key, "/ping.read").await;
        assert_eq!(r.json()["token_type"], "DPoP", "{profile}: {}", r.text);
        let bad = key.proof("POST", &app.url("/oauth2/revoke"));
        let r = app
            .token_with(
                &c,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
                &[("dpop", &bad)],
            )
            .await;
        assert_oauth_error(&r, 400, "invalid_dpop_proof");
    }
}

#[tokio::test]
async fn bad_proofs_are_refused_with_invalid_dpop_proof() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let key = ProofKey::new(Algorithm::ES256);
    let htu = app.url("/oauth2/token");
    let claims = |extra: Value| {
        let mut c = json!({"jti": uuid::Uuid::now_v7().to_string(), "htm": "POST", "htu": htu, "iat": now()});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let mut private_jwk = key.jwk.clone();
    private_jwk["d"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
    let hs256 = {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD
                .encode(json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk}).to_string()),
            URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(b"a shared secret"),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{sig}")
    };
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD
            .encode(json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    let other = ProofKey::new(Algorithm::ES256);
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong typ",
            key.sign(
                &json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk}),
                &claims(json!({})),
            ),
        ),
        (
            "no jwk",
            key.sign(
                &json!({"typ": "dpop+jwt", "alg": "ES256"}),
                &claims(json!({})),
            ),
        ),
        (
            "private key in jwk",
            key.sign(
                &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private_jwk}),
                &claims(json!({})),
            ),
        ),
        ("alg none", none),
        ("alg HS256", hs256),
        (
            "signed by another key",
            other.sign(&key.header(), &claims(json!({}))),
        ),
        (
            "htm mismatch",
            key.sign(&key.header(), &claims(json!({"htm": "GET"}))),
        ),
        (
            "htu mismatch",
            key.sign(
                &key.header(),
                &claims(json!({"htu": app.url("/oauth2/introspect")})),
            ),
        ),
        (
            "htu of another host",
            key.sign(
                &key.header(),
                &claims(json!({"htu": "https://elsewhere.example/oauth2/token"})),
            ),
        ),
        (
            "iat too old",
            key.sign(&key.header(), &claims(json!({"iat": now() - 3600}))),
        ),
        (
            "iat too far ahead",
            key.sign(&key.header(), &claims(json!({"iat": now() + 3600}))),
        ),
        (
            "missing jti",
            key.sign(&key.header(), &claims(json!({"jti": null}))),
        ),
        ("not a JWS", "garbage".to_owned()),
    ];
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];
    for (what, proof) in &cases {
        let r = app.token_with(&c, &fields, &[("dpop", proof)]).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert_eq!(
            r.json()["error"],
            "invalid_dpop_proof",
            "{what}: {}",
            r.text
        );
    }
    // Two DPoP headers, each valid on its own.
    let (a, b) = (key.proof("POST", &htu), key.proof("POST", &htu));
    let r = app
        .token_with(&c, &fields, &[("dpop", &a), ("dpop", &b)])
        .await;
    assert_oauth_error(&r, 400, "invalid_dpop_proof");
    // None of the refused requests issued anything; a good proof still works.
    assert_eq!(app.token_rows().await.0, 0);
    assert_eq!(app.dpop_grant(&c, &key, "/ping.read").await.status, 200);
}

#[tokio::test]
async fn an_htu_differing_only_in_query_case_or_default_port_is_the_same_endpoint() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let key = ProofKey::new(Algorithm::EdDSA);
    let host = app.addr.to_string().to_uppercase();
    for htu in [
        format!("http://{}/oauth2/token?x=1", app.addr),
        format!("http://{}/oauth2/token#f", app.addr),
        format!("HTTP://{host}/oauth2/tok%65n"),
    ] {
        let proof = key.proof("POST", &htu);
        let r = app
            .token_with(
                &c,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
                &[("dpop", &proof)],
            )
            .await;
        assert_eq!(r.status, 200, "{htu}: {}", r.text);
    }
}

#[tokio::test]
async fn a_proof_is_used_once_unless_its_request_failed() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let key = ProofKey::new(Algorithm::EdDSA);
    let proof = key.proof("POST", &app.url("/oauth2/token"));
    // The request fails (a scope the client may not have): the proof is not used up.
    let r = app
        .token_with(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/accounts.write"),
            ],
            &[("dpop", &proof)],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];
    let r = app.token_with(&c, &fields, &[("dpop", &proof)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.token_with(&c, &fields, &[("dpop", &proof)]).await;
    assert_oauth_error(&r, 400, "invalid_dpop_proof");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("used"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_proof_replayed_on_a_second_instance_is_refused_and_the_binding_holds_there() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let db = Arc::new(db);
    let master = new_master_key();
    let args = &["--issuer", "https://tessera.test"];
    let (a, b) = tokio::join!(
        spawn_serve(&db, &master, args),
        spawn_serve(&db, &master, args)
    );
    let c = a.client("/ping.read", &[]);
    let key = ProofKey::new(Algorithm::ES256);
    let proof = key.proof("POST", "https://tessera.test/oauth2/token");
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];
    let first = a.token_with(&c, &fields, &[("dpop", &proof)]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["token_type"], "DPoP");
    let replay = b.token_with(&c, &fields, &[("dpop", &proof)]).await;
    assert_oauth_error(&replay, 400, "invalid_dpop_proof");
    // A fresh proof works on the second instance, and its token is bound there too.
    let fresh = key.proof("POST", "https://tessera.test/oauth2/token");
    let token = access_token(&b.token_with(&c, &fields, &[("dpop", &fresh)]).await);
    let v = a.introspect(&c, &token).await;
    assert_eq!(v["cnf"]["jkt"], key.thumbprint());
    // The grant made on the first instance is DPoP-bound on the second: its refresh there needs
    // a proof, and binds to that proof's key.
    let rt = first.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_oauth_error(&b.refresh(&c, &rt).await, 400, "invalid_dpop_proof");
    let other = ProofKey::new(Algorithm::EdDSA);
    let proof = other.proof("POST", "https://tessera.test/oauth2/token");
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt.as_str()),
    ];
    let token = access_token(&b.token_with(&c, &refresh, &[("dpop", &proof)]).await);
    assert_eq!(
        a.introspect(&c, &token).await["cnf"]["jkt"],
        other.thumbprint()
    );
}

#[tokio::test]
async fn refreshing_a_bound_grant_needs_a_proof_and_binds_the_new_token_to_its_key() {
    let app = spawn_app().await;
    for format in ["opaque", "jwt"] {
        let c = app.client("/ping.read", &["--format", format]);
        let first = ProofKey::new(Algorithm::EdDSA);
        let t = app.dpop_grant(&c, &first, "/ping.read").await.json();
        let rt = t["refresh_token"].as_str().unwrap();
        let refresh = [("grant_type", "refresh_token"), ("refresh_token", rt)];
        // No downgrade to a bearer token.
        let r = app.refresh(&c, rt).await;
        assert_oauth_error(&r, 400, "invalid_dpop_proof");
        // With a new key: the new access token is bound to it.
        let second = ProofKey::new(Algorithm::PS256);
        let proof = second.proof("POST", &app.url("/oauth2/token"));
        let r = app.token_with(&c, &refresh, &[("dpop", &proof)]).await;
        assert_eq!(r.status, 200, "{format}: {}", r.text);
        let t2 = r.json();
        assert_eq!(t2["token_type"], "DPoP");
        let v = app
            .introspect(&c, t2["access_token"].as_str().unwrap())
            .await;
        assert_eq!(v["cnf"]["jkt"], second.thumbprint(), "{format}");
        // The family stays bound for the next refresh too.
        let r = app.refresh(&c, t2["refresh_token"].as_str().unwrap()).await;
        assert_oauth_error(&r, 400, "invalid_dpop_proof");
    }
}

#[tokio::test]
async fn with_nonces_on_a_proof_without_one_is_answered_with_a_nonce_to_use() {
    let app = spawn_app_with(&[("dpop_nonce", "true")]).await;
    let c = app.client("/ping.read", &[]);
    let key = ProofKey::new(Algorithm::ES256);
    let htu = app.url("/oauth2/token");
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];
    let r = app
        .token_with(&c, &fields, &[("dpop", &key.proof("POST", &htu))])
        .await;
    assert_oauth_error(&r, 400, "use_dpop_nonce");
    let nonce = r.header("dpop-nonce").expect("DPoP-Nonce").to_owned();
    let stale = key.proof_with("POST", &htu, json!({"nonce": "not-a-nonce"}));
    let r = app.token_with(&c, &fields, &[("dpop", &stale)]).await;
    assert_oauth_error(&r, 400, "use_dpop_nonce");
    let proof = key.proof_with("POST", &htu, json!({"nonce": nonce}));
    let r = app.token_with(&c, &fields, &[("dpop", &proof)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["token_type"], "DPoP");
    assert!(r.header("dpop-nonce").is_some_and(|n| !n.is_empty()));
    // At /ping too: a proof without the nonce is asked for one.
    let token = access_token(&r);
    let ping_url = app.url("/ping");
    let r = app
        .dpop_ping(
            &token,
            &key.proof_with("GET", &ping_url, json!({"ath": ath(&token)})),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"use_dpop_nonce\"")
    );
    let nonce = r.header("dpop-nonce").expect("DPoP-Nonce").to_owned();
    let proof = key.proof_with(
        "GET",
        &ping_url,
        json!({"ath": ath(&token), "nonce": nonce}),
    );
    assert_eq!(app.dpop_ping(&token, &proof).await.status, 200);
}

#[tokio::test]
async fn ping_checks_the_proof_the_binding_and_answers_dpop_challenges() {
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read", &["--format", "jwt"]);
    let key = ProofKey::new(Algorithm::EdDSA);
    let token = access_token(&app.dpop_grant(&c, &key, "/ping.read").await);
    let ping_url = app.url("/ping");
    let good = || key.proof_with("GET", &ping_url, json!({"ath": ath(&token)}));
    let proof = good();
    assert_eq!(app.dpop_ping(&token, &proof).await.status, 200);
    let challenge = |r: &Reply| r.header("www-authenticate").unwrap_or_default().to_owned();
    // The same proof again: replay.
    let r = app.dpop_ping(&token, &proof).await;
    assert_eq!(r.status, 401);
    assert!(
        challenge(&r).starts_with("DPoP algs=\""),
        "{}",
        challenge(&r)
    );
    assert!(challenge(&r).contains("error=\"invalid_dpop_proof\""));
    // Wrong ath, no ath, another key, no proof, another method.
    let cases = [
        (
            "wrong ath",
            key.proof_with("GET", &ping_url, json!({"ath": ath("another token")})),
        ),
        ("no ath", key.proof("GET", &ping_url)),
        (
            "another key",
            ProofKey::new(Algorithm::EdDSA).proof_with(
                "GET",
                &ping_url,
                json!({"ath": ath(&token)}),
            ),
        ),
        (
            "htm POST",
            key.proof_with("POST", &ping_url, json!({"ath": ath(&token)})),
        ),
    ];
    for (what, proof) in &cases {
        let r = app.dpop_ping(&token, proof).await;
        assert_eq!(r.status, 401, "{what}");
        assert!(
            challenge(&r).contains("error=\"invalid_dpop_proof\""),
            "{what}: {}",
            challenge(&r)
        );
        assert_eq!(r.json()["error"], "invalid_dpop_proof");
    }
    let r = app
        .get("/ping", &[("authorization", &format!("DPoP {token}"))])
        .await;
    assert!(challenge(&r).contains("error=\"invalid_dpop_proof\""));
    // A bound token sent as Bearer.
    let r = app
        .get("/ping", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(r.status, 401);
    assert!(challenge(&r).starts_with("DPoP "), "{}", challenge(&r));
    assert!(challenge(&r).contains("error=\"invalid_token\""));
    // A bearer token sent as DPoP; an unknown token.
    let bearer = app.grant(&c, "/ping.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.ping(&bearer).await, 200);
    for t in [bearer.as_str(), "tes_at_forged"] {
        let p = key.proof_with("GET", &ping_url, json!({"ath": ath(t)}));
        let r = app.dpop_ping(t, &p).await;
        assert_eq!(r.status, 401);
        assert!(
            challenge(&r).contains("error=\"invalid_token\""),
            "{}",
            challenge(&r)
        );
    }
    // A bound token without /ping.read.
    let other = access_token(&app.dpop_grant(&c, &key, "/accounts.read").await);
    let p = key.proof_with("GET", &ping_url, json!({"ath": ath(&other)}));
    let r = app.dpop_ping(&other, &p).await;
    assert_eq!(r.status, 403);
    assert!(challenge(&r).contains("error=\"insufficient_scope\""));
    // No credentials: every scheme is offered.
    let r = app.get("/ping", &[]).await;
    assert_eq!(r.status, 401);
    assert!(challenge(&r).contains("DPoP algs=\""), "{}", challenge(&r));
    // Still good with a fresh proof.
    assert_eq!(app.dpop_ping(&token, &good()).await.status, 200);
}

#[tokio::test]
async fn discovery_lists_the_dpop_algorithms() {
    let app = spawn_app().await;
    let v = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    let algs: Vec<&str> = v["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for alg in ["EdDSA", "Ed25519", "ES256", "PS256", "RS256"] {
        assert!(algs.contains(&alg), "{algs:?}");
    }
}

#[tokio::test]
async fn the_public_document_describes_the_dpop_headers_and_token_type() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", &[]).await.json();
    for (path, method) in [("/oauth2/token", "post"), ("/ping", "get")] {
        let op = &doc["paths"][path][method];
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "DPoP" && p["in"] == "header"),
            "{path}: {params:?}"
        );
        assert!(
            op["responses"]["200"]["headers"]
                .get("DPoP-Nonce")
                .is_some(),
            "{path}"
        );
    }
    let types = doc["components"]["schemas"]["TokenTypeDoc"].to_string();
    assert!(types.contains("DPoP"), "{types}");
}

#[tokio::test]
async fn a_client_that_requires_dpop_gets_no_token_without_a_proof() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--require-dpop"]);
    let r = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_dpop_proof");
    assert_eq!(app.token_rows().await.0, 0, "nothing issued");
    let key = ProofKey::new(Algorithm::ES256);
    let r = app.dpop_grant(&c, &key, "/ping.read").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["token_type"], "DPoP");
}
