//! Mutual-TLS client authentication and certificate-bound access tokens (RFC 8705) over real
//! TLS on loopback: certificates made here with rcgen, clients (reqwest with an identity, curl
//! --cert) presenting them, and the trusted proxy header for a TLS-terminating proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::Value;

use crate::helpers::*;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM, and the certificate's DER.
struct Cert {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Cert {
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.key, self.cert).as_bytes()).unwrap()
    }

    /// RFC 8705 `x5t#S256`: base64url of the DER's SHA-256, computed here independently.
    fn x5t(&self) -> String {
        use aws_lc_rs::digest::{SHA256, digest};
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest(&SHA256, &self.der))
    }
}

fn params(subject: &[(DnType, &str)]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let mut dn = DistinguishedName::new();
    for (t, v) in subject {
        dn.push(t.clone(), *v);
    }
    p.distinguished_name = dn;
    p
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = params(&[(DnType::CommonName, name)]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn server(&self) -> Cert {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2099, 1, 1);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Cert {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client certificate with this subject (most significant RDN first) and SANs.
    fn client(&self, subject: &[(DnType, &str)], sans: Vec<SanType>) -> Cert {
        let key = KeyPair::generate().unwrap();
        let mut p = params(subject);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Cert {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A self-signed client certificate.
fn self_signed(name: &str) -> Cert {
    let key = KeyPair::generate().unwrap();
    let mut p = params(&[(DnType::CommonName, name)]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.self_signed(&key).unwrap();
    Cert {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// The subject of the CA-issued client certificates: `C=DE, O=Acme, CN=client one` in the
/// certificate, `CN=client one,O=Acme,C=DE` in RFC 4514 order.
fn acme_subject() -> [(DnType, &'static str); 3] {
    [
        (DnType::CountryName, "DE"),
        (DnType::OrganizationName, "Acme"),
        (DnType::CommonName, "client one"),
    ]
}

/// The settings of an https app whose `tls_client_ca` is `client_ca`, files kept in `dir`.
fn mtls_settings(dir: &Path, server_ca: &Ca, client_ca: &Ca) -> [(&'static str, String); 3] {
    let server = server_ca.server();
    let (cert, key, ca) = (
        dir.join("server.pem"),
        dir.join("server-key.pem"),
        dir.join("client-ca.pem"),
    );
    std::fs::write(&cert, &server.cert).unwrap();
    std::fs::write(&key, &server.key).unwrap();
    std::fs::write(&ca, &client_ca.pem).unwrap();
    [
        ("tls_cert", cert.display().to_string()),
        ("tls_key", key.display().to_string()),
        ("tls_client_ca", ca.display().to_string()),
    ]
}

/// An https app whose `tls_client_ca` is `client_ca`, files kept in `dir`.
async fn spawn_mtls_app(dir: &Path, server_ca: &Ca, client_ca: &Ca) -> TestApp {
    let settings = mtls_settings(dir, server_ca, client_ca);
    let refs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(&refs).await
}

/// A reqwest client trusting `ca`, presenting `identity` if given.
fn https_client(ca: &Ca, identity: Option<&Cert>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()]);
    if let Some(c) = identity {
        b = b.identity(c.identity());
    }
    b.build().unwrap()
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://{addr}{path}")
}

/// Creates a client (JWT access tokens unless `extra` names a format, RFC 6749 answers) through the CLI; returns its view (with `client_secret` when it has one).
fn create(app: &TestApp, extra: &[&str]) -> Value {
    let mut args = vec![
        "client",
        "create",
        "--name",
        "mtls client",
        "--scope",
        "/ping.read",
        "--profile",
        "rfc6749",
        "--json",
    ];
    if !extra.contains(&"--format") {
        args.extend(["--format", "jwt"]);
    }
    args.extend_from_slice(extra);
    app.cli_json(&args)
}

fn id_of(v: &Value) -> String {
    v["client_id"].as_str().expect("client_id").to_owned()
}

/// POSTs a form to `path` with `http`; returns status and JSON body.
async fn post_form(
    http: &reqwest::Client,
    url: String,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = http
        .post(url)
        .header("content-type", FORM)
        .body(form(fields));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn mtls_token(http: &reqwest::Client, addr: SocketAddr, client_id: &str) -> (u16, Value) {
    post_form(
        http,
        https(addr, "/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
            ("client_id", client_id),
        ],
        &[],
    )
    .await
}

async fn ping(http: &reqwest::Client, url: String, token: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = http.get(url).bearer_auth(token);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Verifies a JWT access token with the published keys, as a resource server would.
async fn verified_claims(http: &reqwest::Client, jwks_url: String, token: &str) -> Value {
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
    let set: JwkSet = http
        .get(jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = decode_header(token).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = Validation::new(header.alg);
    v.validate_aud = false;
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

fn assert_invalid_client(status: u16, body: &Value) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
}

#[tokio::test]
async fn tls_client_auth_with_the_registered_subject_dn_gets_a_token_bound_to_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let app = spawn_mtls_app(dir.path(), &server_ca, &client_ca).await;
    // Registered in another spelling than the certificate's own: case and spaces differ.
    let v = create(
        &app,
        &[
            "--auth-method",
            "tls_client_auth",
            "--tls-subject-dn",
            "cn=Client One, o=ACME, c=de",
        ],
    );
    assert!(v.get("client_secret").is_none(), "{v}");
    assert_eq!(
        v["tls_client_auth_subject_dn"],
        "cn=Client One, o=ACME, c=de"
    );
    let id = id_of(&v);
    let cert = client_ca.client(&acme_subject(), vec![]);
    let http = https_client(&server_ca, Some(&cert));

    let (status, body) = mtls_token(&http, app.addr, &id).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = verified_claims(&http, https(app.addr, "/.well-known/jwks.json"), &token).await;
    assert_eq!(claims["cnf"]["x5t#S256"], cert.x5t(), "{claims}");
    assert!(claims["cnf"].get("jkt").is_none(), "{claims}");

    // Introspection, authenticated by the same certificate, shows the binding.
    let (status, info) = post_form(
        &http,
        https(app.addr, "/oauth2/introspect"),
        &[("token", &token), ("client_id", &id)],
        &[],
    )
    .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["cnf"]["x5t#S256"], cert.x5t(), "{info}");
    assert_eq!(info["token_type"], "Bearer", "{info}");

    // /ping: with the certificate ok; replayed without it, or with another one, refused.
    let ping_url = https(app.addr, "/ping");
    assert_eq!(ping(&http, ping_url.clone(), &token, &[]).await, 200);
    let stolen = https_client(&server_ca, None);
    let r = stolen
        .get(ping_url.clone())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(www.contains("invalid_token"), "{www}");
    let other = client_ca.client(&acme_subject(), vec![]);
    assert_eq!(
        ping(
            &https_client(&server_ca, Some(&other)),
            ping_url,
            &token,
            &[]
        )
        .await,
        401
    );

    // Revocation by mTLS too; the token is then dead.
    let (status, body) = post_form(
        &http,
        https(app.addr, "/oauth2/revoke"),
        &[("token", &token), ("client_id", &id)],
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ping(&http, https(app.addr, "/ping"), &token, &[]).await,
        401
    );
}

#[tokio::test]
async fn tls_client_auth_refuses_another_ca_another_subject_and_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let app = spawn_mtls_app(dir.path(), &server_ca, &client_ca).await;
    let dn = create(
        &app,
        &[
            "--auth-method",
            "tls_client_auth",
            "--tls-subject-dn",
            "CN=client one,O=Acme,C=DE",
        ],
    );
    let san = create(
        &app,
        &[
            "--auth-method",
            "tls_client_auth",
            "--tls-san-dns",
            "Billing.Example",
        ],
    );
    let (dn, san) = (id_of(&dn), id_of(&san));

    // The right subject from a CA the server does not trust.
    let rogue = Ca::new("client CA");
    let forged = rogue.client(&acme_subject(), vec![]);
    let (status, body) = mtls_token(&https_client(&server_ca, Some(&forged)), app.addr, &dn).await;
    assert_invalid_client(status, &body);
    // The trusted CA, another subject (the RDNs in the other order).
    let reordered = client_ca.client(
        &[
            (DnType::CommonName, "client one"),
            (DnType::OrganizationName, "Acme"),
            (DnType::CountryName, "DE"),
        ],
        vec![],
    );
    let (status, body) =
        mtls_token(&https_client(&server_ca, Some(&reordered)), app.addr, &dn).await;
    assert_invalid_client(status, &body);
    // No certificate at all.
    let (status, body) = mtls_token(&https_client(&server_ca, None), app.addr, &dn).await;
    assert_invalid_client(status, &body);
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("none was presented")),
        "{body}"
    );

    // A dNSName SAN matches case-insensitively; another name does not.
    let good = client_ca.client(
        &[(DnType::CommonName, "billing")],
        vec![SanType::DnsName("billing.example".try_into().unwrap())],
    );
    let (status, body) = mtls_token(&https_client(&server_ca, Some(&good)), app.addr, &san).await;
    assert_eq!(status, 200, "{body}");
    let bad = client_ca.client(
        &[(DnType::CommonName, "billing")],
        vec![SanType::DnsName("billing.example.org".try_into().unwrap())],
    );
    let (status, body) = mtls_token(&https_client(&server_ca, Some(&bad)), app.addr, &san).await;
    assert_invalid_client(status, &body);
    // The DN client's certificate does not authenticate the SAN client.
    let (status, body) = mtls_token(
        &https_client(&server_ca, Some(&client_ca.client(&acme_subject(), vec![]))),
        app.addr,
        &san,
    )
    .await;
    assert_invalid_client(status, &body);

    // The failures are audited like other authentication failures.
    let audit = app.cli_json(&["audit", "--json"]);
    let text = audit.to_string();
    assert!(text.contains("untrusted_certificate"), "{text}");
    assert!(text.contains("wrong_subject"), "{text}");
}

#[tokio::test]
async fn self_signed_tls_client_auth_accepts_a_registered_certificate_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let app = spawn_mtls_app(dir.path(), &server_ca, &client_ca).await;
    let mine = self_signed("mine");
    let pem_file = dir.path().join("mine.pem");
    std::fs::write(&pem_file, &mine.cert).unwrap();
    // Registered once by thumbprint, once as a PEM file: both store the thumbprint.
    let by_thumbprint = create(
        &app,
        &[
            "--auth-method",
            "self_signed_tls_client_auth",
            "--tls-thumbprint",
            &mine.x5t(),
        ],
    );
    let by_pem = create(
        &app,
        &[
            "--auth-method",
            "self_signed_tls_client_auth",
            "--tls-certificate",
            pem_file.to_str().unwrap(),
        ],
    );
    assert_eq!(by_pem["tls_client_certificates"][0], mine.x5t(), "{by_pem}");
    let http = https_client(&server_ca, Some(&mine));
    for id in [id_of(&by_thumbprint), id_of(&by_pem)] {
        let (status, body) = mtls_token(&http, app.addr, &id).await;
        assert_eq!(status, 200, "{body}");
        let claims = verified_claims(
            &http,
            https(app.addr, "/.well-known/jwks.json"),
            body["access_token"].as_str().unwrap(),
        )
        .await;
        assert_eq!(claims["cnf"]["x5t#S256"], mine.x5t());
    }
    let (status, body) = mtls_token(
        &https_client(&server_ca, Some(&self_signed("someone else"))),
        app.addr,
        &id_of(&by_thumbprint),
    )
    .await;
    assert_invalid_client(status, &body);
    // A client not registered for mTLS is not authenticated by a certificate.
    let secret_client = create(&app, &[]);
    let (status, body) = mtls_token(&http, app.addr, &id_of(&secret_client)).await;
    assert_invalid_client(status, &body);
}

#[tokio::test]
async fn a_certificate_bound_grant_refreshes_only_with_a_certificate_and_binds_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let app = spawn_mtls_app(dir.path(), &server_ca, &client_ca).await;
    // A secret client asking for certificate-bound tokens.
    let v = create(&app, &["--tls-bound-tokens"]);
    assert_eq!(v["tls_client_certificate_bound_access_tokens"], true, "{v}");
    let (id, secret) = (id_of(&v), v["client_secret"].as_str().unwrap().to_owned());
    let basic_header = basic(&id, &secret);
    let auth = [("authorization", basic_header.as_str())];
    let (first, second) = (self_signed("first"), self_signed("second"));
    let jwks_url = https(app.addr, "/.well-known/jwks.json");

    let http1 = https_client(&server_ca, Some(&first));
    let (status, body) = post_form(
        &http1,
        https(app.addr, "/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
        ],
        &auth,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = verified_claims(
        &http1,
        jwks_url.clone(),
        body["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(claims["cnf"]["x5t#S256"], first.x5t());
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // Without a certificate the bound grant does not refresh (and the token is not used up).
    let (status, body) = post_form(
        &https_client(&server_ca, None),
        https(app.addr, "/oauth2/token"),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        &auth,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");

    // With another certificate it does, bound to that one.
    let http2 = https_client(&server_ca, Some(&second));
    let (status, body) = post_form(
        &http2,
        https(app.addr, "/oauth2/token"),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        &auth,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = verified_claims(&http2, jwks_url, &token).await;
    assert_eq!(claims["cnf"]["x5t#S256"], second.x5t());
    assert_eq!(
        ping(&http2, https(app.addr, "/ping"), &token, &[]).await,
        200
    );
    assert_eq!(
        ping(&http1, https(app.addr, "/ping"), &token, &[]).await,
        401
    );

    // A client without the setting that authenticates by secret gets unbound tokens, even
    // over a connection with a certificate.
    let plain = create(&app, &[]);
    let plain_basic = basic(&id_of(&plain), plain["client_secret"].as_str().unwrap());
    let (status, body) = post_form(
        &http1,
        https(app.addr, "/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
        ],
        &[("authorization", plain_basic.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = verified_claims(&http1, https(app.addr, "/.well-known/jwks.json"), token).await;
    assert!(claims.get("cnf").is_none(), "{claims}");
    assert_eq!(
        ping(
            &https_client(&server_ca, None),
            https(app.addr, "/ping"),
            token,
            &[]
        )
        .await,
        200
    );
}

/// `pem` escaped as nginx's `$ssl_client_escaped_cert`.
fn escaped(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_certificate_header_authenticates_and_binds() {
    let dir = tempfile::tempdir().unwrap();
    let client_ca = Ca::new("client CA");
    let ca_file = dir.path().join("client-ca.pem");
    std::fs::write(&ca_file, &client_ca.pem).unwrap();
    let app = spawn_app_with(&[
        ("tls_client_cert_header", "x-client-cert"),
        ("tls_client_cert_proxies", "127.0.0.0/8"),
        ("tls_client_ca", ca_file.to_str().unwrap()),
    ])
    .await;
    let id = id_of(&create(
        &app,
        &[
            "--auth-method",
            "tls_client_auth",
            "--tls-san-uri",
            "spiffe://acme/billing",
        ],
    ));
    let cert = client_ca.client(
        &[(DnType::CommonName, "billing")],
        vec![SanType::URI("spiffe://acme/billing".try_into().unwrap())],
    );
    let header = escaped(&cert.cert);
    let http = reqwest::Client::new();
    let (status, body) = post_form(
        &http,
        app.url("/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
            ("client_id", &id),
        ],
        &[("x-client-cert", &header)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = verify_with_jwks(&app.url("/.well-known/jwks.json"), &token)
        .await
        .unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], cert.x5t());
    assert_eq!(
        ping(
            &http,
            app.url("/ping"),
            &token,
            &[("x-client-cert", &header)]
        )
        .await,
        200
    );
    assert_eq!(ping(&http, app.url("/ping"), &token, &[]).await, 401);
    // Without the header the client is not authenticated.
    let (status, body) = post_form(
        &http,
        app.url("/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
            ("client_id", &id),
        ],
        &[],
    )
    .await;
    assert_invalid_client(status, &body);

    // Discovery: bound tokens and the aliases, since certificates reach the server.
    let meta: Value = http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        meta["mtls_endpoint_aliases"]["token_endpoint"],
        meta["token_endpoint"]
    );
    let methods = meta["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("\"tls_client_auth\""), "{methods}");
    assert!(
        methods.contains("\"self_signed_tls_client_auth\""),
        "{methods}"
    );
}

#[tokio::test]
async fn without_tls_or_a_proxy_header_discovery_offers_no_mtls() {
    let app = spawn_app().await;
    let meta = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert!(meta.get("mtls_endpoint_aliases").is_none(), "{meta}");
    assert!(
        meta.get("tls_client_certificate_bound_access_tokens")
            .is_none()
    );
    assert!(
        !meta["token_endpoint_auth_methods_supported"]
            .to_string()
            .contains("tls_client_auth")
    );
}

#[tokio::test]
async fn curl_with_a_client_certificate_obtains_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let app = spawn_mtls_app(dir.path(), &server_ca, &client_ca).await;
    let id = id_of(&create(
        &app,
        &[
            "--auth-method",
            "tls_client_auth",
            "--tls-subject-dn",
            "CN=client one,O=Acme,C=DE",
        ],
    ));
    let cert = client_ca.client(&acme_subject(), vec![]);
    let p = dir.path();
    std::fs::write(p.join("ca.pem"), &server_ca.pem).unwrap();
    std::fs::write(p.join("client.pem"), &cert.cert).unwrap();
    std::fs::write(p.join("client-key.pem"), &cert.key).unwrap();
    let url = https(app.addr, "/oauth2/token");
    let data = format!("grant_type=client_credentials&scope=/ping.read&client_id={id}");
    let args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "60".into(),
        "--cacert".into(),
        p.join("ca.pem").display().to_string(),
        "--cert".into(),
        p.join("client.pem").display().to_string(),
        "--key".into(),
        p.join("client-key.pem").display().to_string(),
        "-d".into(),
        data,
        url,
    ];
    let out = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output())
        .await
        .unwrap()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(body["access_token"].is_string(), "{body}");
}

#[tokio::test]
async fn a_fapi2_client_authenticated_by_mtls_needs_no_dpop() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let app = spawn_mtls_app(dir.path(), &server_ca, &client_ca).await;
    let mine = self_signed("fapi client");
    let v = create(
        &app,
        &[
            "--fapi2",
            "--auth-method",
            "self_signed_tls_client_auth",
            "--tls-thumbprint",
            &mine.x5t(),
        ],
    );
    assert_eq!(v["fapi2"], true, "{v}");
    let http = https_client(&server_ca, Some(&mine));
    let (status, body) = mtls_token(&http, app.addr, &id_of(&v)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = verified_claims(&http, https(app.addr, "/.well-known/jwks.json"), token).await;
    assert_eq!(claims["cnf"]["x5t#S256"], mine.x5t());
    assert_eq!(ping(&http, https(app.addr, "/ping"), token, &[]).await, 200);

    // A FAPI client may not use a secret method alongside mTLS.
    let out = app.cli(&[
        "client",
        "create",
        "--name",
        "fapi with secret",
        "--scope",
        "/ping.read",
        "--fapi2",
        "--auth-method",
        "self_signed_tls_client_auth",
        "--auth-method",
        "client_secret_basic",
        "--tls-thumbprint",
        &mine.x5t(),
    ]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_admin_api_registers_mtls_clients_and_refuses_bad_registrations() {
    let app = spawn_app().await;
    let mine = self_signed("admin");
    let admin = |path: &str| format!("http://{}{path}", app.admin_addr);
    let http = reqwest::Client::new();
    let send = |body: Value| {
        let http = http.clone();
        let url = admin("/admin/clients");
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = send(serde_json::json!({
        "name": "pem client", "scopes": "/ping.read",
        "auth_methods": ["self_signed_tls_client_auth"],
        "tls_client_certificates": [mine.cert],
        "tls_client_certificate_bound_access_tokens": true,
    }))
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v["tls_client_certificates"],
        serde_json::json!([mine.x5t()])
    );
    for (body, field) in [
        (
            serde_json::json!({"name": "x", "scopes": "/ping.read", "auth_methods": ["tls_client_auth"]}),
            "tls_client_auth_subject_dn",
        ),
        (
            serde_json::json!({"name": "x", "scopes": "/ping.read", "auth_methods": ["tls_client_auth"],
                "tls_client_auth_san_dns": "a.example", "tls_client_auth_san_ip": "10.0.0.1"}),
            "tls_client_auth_san_ip",
        ),
        (
            serde_json::json!({"name": "x", "scopes": "/ping.read", "auth_methods": ["tls_client_auth"],
                "tls_client_auth_san_ip": "10.0.0"}),
            "tls_client_auth_san_ip",
        ),
        (
            serde_json::json!({"name": "x", "scopes": "/ping.read", "auth_methods": ["self_signed_tls_client_auth"]}),
            "tls_client_certificates",
        ),
        (
            serde_json::json!({"name": "x", "scopes": "/ping.read", "auth_methods": ["self_signed_tls_client_auth"],
                "tls_client_certificates": ["not a thumbprint"]}),
            "tls_client_certificates",
        ),
    ] {
        let (status, v) = send(body).await;
        assert_eq!(status, 400, "{v}");
        assert!(v.to_string().contains(field), "{field}: {v}");
    }
}

#[tokio::test]
async fn on_postgresql_an_mtls_client_gets_bound_tokens_and_refreshes_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let settings = mtls_settings(dir.path(), &server_ca, &client_ca);
    let refs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(app) = spawn_app_pg(&refs).await else {
        return;
    };
    let id = id_of(&create(
        &app,
        &[
            "--auth-method",
            "tls_client_auth",
            "--tls-san-email",
            "ops@acme.example",
            "--format",
            "opaque",
        ],
    ));
    let issue = |n: &str| {
        client_ca.client(
            &[(DnType::CommonName, n)],
            vec![SanType::Rfc822Name("ops@acme.example".try_into().unwrap())],
        )
    };
    let (first, second) = (issue("first"), issue("renewed"));
    let http1 = https_client(&server_ca, Some(&first));
    let (status, body) = mtls_token(&http1, app.addr, &id).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // An opaque token's binding is in the store: introspection and /ping read it there.
    let (_, info) = post_form(
        &http1,
        https(app.addr, "/oauth2/introspect"),
        &[("token", &token), ("client_id", &id)],
        &[],
    )
    .await;
    assert_eq!(info["cnf"]["x5t#S256"], first.x5t(), "{info}");
    assert_eq!(
        ping(&http1, https(app.addr, "/ping"), &token, &[]).await,
        200
    );
    assert_eq!(
        ping(
            &https_client(&server_ca, None),
            https(app.addr, "/ping"),
            &token,
            &[]
        )
        .await,
        401
    );

    // The renewed certificate refreshes the grant; the new token is bound to it.
    let http2 = https_client(&server_ca, Some(&second));
    let (status, body) = post_form(
        &http2,
        https(app.addr, "/oauth2/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &id),
        ],
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let next = body["access_token"].as_str().unwrap().to_owned();
    let (_, info) = post_form(
        &http2,
        https(app.addr, "/oauth2/introspect"),
        &[("token", &next), ("client_id", &id)],
        &[],
    )
    .await;
    assert_eq!(info["cnf"]["x5t#S256"], second.x5t(), "{info}");
    assert_eq!(
        ping(&http2, https(app.addr, "/ping"), &next, &[]).await,
        200
    );
    assert_eq!(
        ping(&http1, https(app.addr, "/ping"), &next, &[]).await,
        401
    );
}
