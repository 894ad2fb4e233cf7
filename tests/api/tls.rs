//! Native TLS over real loopback connections: certificates made here with rcgen, clients
//! (reqwest, curl, the `oauth2` crate, rustls itself) trusting the test CA, the real binary for
//! what must stop the server at start, and a reload under traffic.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, ClientSecret, RevocationUrl, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tessera::http::server::{self, Rules, Transport};
use tessera::http::tls::{ClientCertificate, ProxyCertHeader, Tls, TlsFiles};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;
use crate::interop::send;

/// A test certificate authority.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM, and the certificate's DER.
struct Issued {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Issued {
    /// Writes the pair as `cert.pem` and `key.pem` in `dir` (each through a rename, as a
    /// deployment tool would replace them).
    fn write(&self, dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        for (path, text) in [(&files.key, &self.key), (&files.cert, &self.cert)] {
            let staged = path.with_extension("new");
            std::fs::write(&staged, text).unwrap();
            std::fs::rename(&staged, path).unwrap();
        }
        files
    }
}

fn params(names: &[&str], serial: u8, years: (i32, i32)) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    p.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
    p.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    p.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    p
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = params(&[], 1, (2020, 2099));
        p.distinguished_name.push(DnType::CommonName, name);
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

    /// A server certificate for 127.0.0.1 and localhost with an ECDSA P-256 key.
    fn server(&self, serial: u8) -> Issued {
        self.server_with(serial, (2020, 2099), KeyPair::generate().unwrap())
    }

    fn server_with(&self, serial: u8, years: (i32, i32), key: KeyPair) -> Issued {
        let mut p = params(&["127.0.0.1", "localhost"], serial, years);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()
    }

    /// A reqwest client that trusts only this CA, and reports the server's certificate.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([self.reqwest_root()])
            .tls_info(true)
            .build()
            .unwrap()
    }
}

/// A self-signed client certificate, as RFC 8705 `self_signed_tls_client_auth` clients hold.
fn client_certificate(name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut p = params(&[], 7, (2020, 2099));
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.self_signed(&key).unwrap();
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn x5t(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tessera::domain::crypto::sha256(der))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An app serving https with `files` (and extra settings).
async fn spawn_tls_app(files: &TlsFiles, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("tls_cert", path_str(&files.cert)),
        ("tls_key", path_str(&files.key)),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://{addr}{path}")
}

/// The certificate the server presented on a reqwest response's connection.
fn served_certificate(r: &reqwest::Response) -> Option<Vec<u8>> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
}

async fn token_request(http: &reqwest::Client, app: &TestApp, c: &TestClient) -> reqwest::Response {
    http.post(https(app.addr, "/oauth2/token"))
        .basic_auth(&c.id, Some(&c.secret))
        .header("content-type", FORM)
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("scope", "/ping.read"),
        ]))
        .send()
        .await
        .expect("token request")
}

#[tokio::test]
async fn a_client_trusting_the_ca_obtains_a_token_over_https_and_discovery_says_https() {
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let issued = ca.server(2);
    let app = spawn_tls_app(&issued.write(certs.path()), &[]).await;
    let c = app.client("/ping.read", &[]);
    let http = ca.client();

    let r = token_request(&http, &app, &c).await;
    assert_eq!(served_certificate(&r), Some(issued.der.clone()));
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().expect("access_token");
    let r = http
        .get(https(app.addr, "/ping"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let meta: Value = http
        .get(https(app.addr, "/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issuer = format!("https://{}", app.addr);
    assert_eq!(meta["issuer"], issuer.as_str());
    assert_eq!(
        meta["token_endpoint"],
        format!("{issuer}/oauth2/token").as_str()
    );

    // The admin listener serves the same certificate, and plain http is not spoken.
    let r = http
        .get(https(app.admin_addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_certificate(&r), Some(issued.der.clone()));
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await;
    assert!(plain.is_err(), "plain http answered on a TLS listener");
}

#[tokio::test]
async fn the_oauth2_crate_revokes_a_token_over_https() {
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca.server(2).write(certs.path()), &[]).await;
    let c = app.client("/ping.read", &["--profile", "rfc6749"]);
    let http = ca.client();
    let meta: Value = http
        .get(https(app.addr, "/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = |k: &str| meta[k].as_str().unwrap().to_owned();
    let client = BasicClient::new(ClientId::new(c.id.clone()))
        .set_client_secret(ClientSecret::new(c.secret.clone()))
        .set_token_uri(TokenUrl::new(url("token_endpoint")).unwrap())
        .set_revocation_url(RevocationUrl::new(url("revocation_endpoint")).unwrap());
    let http_client = |req| send(http.clone(), req);
    let token = client
        .exchange_client_credentials()
        .add_scope(Scope::new("/ping.read".into()))
        .request_async(&http_client)
        .await
        .expect("client_credentials over https");
    let access = token.access_token().secret().clone();
    assert_eq!(ping_status(&http, &app, &access).await, 200);

    client
        .revoke_token(StandardRevocableToken::AccessToken(
            token.access_token().clone(),
        ))
        .expect("an https revocation endpoint")
        .request_async(&http_client)
        .await
        .expect("revocation over https");
    assert_eq!(ping_status(&http, &app, &access).await, 401);
}

async fn ping_status(http: &reqwest::Client, app: &TestApp, token: &str) -> u16 {
    http.get(https(app.addr, "/ping"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_servers_ca_fails_the_handshake() {
    let ca = TestCa::new("Tessera test CA");
    let other = TestCa::new("Some other CA");
    let certs = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca.server(2).write(certs.path()), &[]).await;
    let err = other
        .client()
        .get(https(app.addr, "/healthz"))
        .send()
        .await
        .expect_err("a handshake with an untrusted certificate");
    let chain = format!("{err:?}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    // The server is unharmed by the failed handshake.
    let r = ca
        .client()
        .get(https(app.addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A rustls client: trusting `ca`, offering `versions` and `suites`, ALPN h2 and http/1.1.
fn rustls_client(
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Vec<rustls::SupportedCipherSuite>,
) -> tokio_rustls::TlsConnector {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn tls_1_2_is_served_only_with_the_fapi_suites_and_tls_1_3_with_http_1_1() {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    use rustls::version::{TLS12, TLS13};
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let app = spawn_tls_app(
        &ca.server_with(2, (2020, 2099), rsa).write(certs.path()),
        &[],
    )
    .await;

    for fapi in [
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ] {
        let s = handshake(&rustls_client(&ca, &[&TLS12], vec![fapi]), app.addr)
            .await
            .unwrap_or_else(|e| panic!("{:?} refused: {e}", fapi.suite()));
        let conn = s.get_ref().1;
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(fapi.suite())
        );
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
    let refused = handshake(
        &rustls_client(
            &ca,
            &[&TLS12],
            vec![suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256],
        ),
        app.addr,
    )
    .await;
    assert!(
        refused.is_err(),
        "TLS 1.2 with ChaCha20-Poly1305 was accepted"
    );

    let mut s = handshake(
        &rustls_client(
            &ca,
            &[&TLS13],
            rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES.to_vec(),
        ),
        app.addr,
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // OpenSSL agrees: TLS 1.2 with a non-FAPI suite gets no handshake.
    let addr = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-tls1_2"])
            .args(["-cipher", "ECDHE-RSA-CHACHA20-POLY1305"])
            .stdin(Stdio::null())
            .output()
    })
    .await
    .unwrap();
    if let Ok(out) = out {
        assert!(
            !out.status.success(),
            "openssl s_client -tls1_2 ChaCha20 connected"
        );
    } else {
        eprintln!("openssl not found: the s_client check is skipped");
    }
}

#[tokio::test]
async fn with_an_ecdsa_certificate_tls_1_2_clients_find_no_suite_and_tls_1_3_ones_connect() {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    use rustls::version::{TLS12, TLS13};
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca.server(2).write(certs.path()), &[]).await;
    let tls12 = rustls_client(
        &ca,
        &[&TLS12],
        vec![
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
    );
    assert!(handshake(&tls12, app.addr).await.is_err());
    let tls13 = rustls_client(&ca, &[&TLS13], vec![suite::TLS13_AES_128_GCM_SHA256]);
    assert!(handshake(&tls13, app.addr).await.is_ok());
}

#[tokio::test]
async fn a_connection_that_does_not_finish_its_handshake_is_closed_at_the_header_timeout() {
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(
        &ca.server(2).write(certs.path()),
        &[("header_timeout", "1")],
    )
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    // Half a ClientHello's record header, then nothing.
    tcp.write_all(&[0x16, 0x03]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut buf))
        .await
        .expect("the server kept a silent handshake open");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

/// Runs `tessera serve` with `args` and returns its exit status and standard error, killing it
/// if it is still running after a minute (it should have stopped at once).
fn serve_fails(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .arg("--database-url")
        .arg(dir.join("tessera.db"))
        .env("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("TESSERA_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_expired_a_mismatched_or_a_half_configured_certificate_stops_the_server_at_start() {
    let ca = TestCa::new("Tessera test CA");
    let dir = tempfile::tempdir().unwrap();
    let expired = ca.server_with(2, (2020, 2021), KeyPair::generate().unwrap());
    let files = expired.write(dir.path());
    let (cert, key) = (
        path_str(&files.cert).to_owned(),
        path_str(&files.key).to_owned(),
    );
    let (code, err) = serve_fails(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("expired on 2021-01-01 00:00:00 UTC"), "{err}");
    assert!(err.contains("cert.pem"), "{err}");

    let good = ca.server(3);
    std::fs::write(&files.cert, &good.cert).unwrap();
    std::fs::write(&files.key, client_certificate("x").key).unwrap();
    let (code, err) = serve_fails(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not the key of the certificate"), "{err}");

    std::fs::write(&files.cert, "garbage\n").unwrap();
    let (code, err) = serve_fails(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds no PEM CERTIFICATE"), "{err}");

    let (code, err) = serve_fails(dir.path(), &["--tls-cert", &cert]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("tls_cert is set without tls_key"), "{err}");
}

/// Answers what the request's [`ClientCertificate`] extension holds, and whether the proxy
/// header reached the handler.
async fn echo_certificate(req: Request) -> String {
    let header = req.headers().contains_key("x-client-cert");
    match req.extensions().get::<ClientCertificate>() {
        Some(c) => format!(
            "{:?} {} chain={} header={header}",
            c.source,
            c.x5t_s256(),
            c.chain.len()
        ),
        None => format!("none header={header}"),
    }
}

/// Tessera's accept loop serving [`echo_certificate`] with `transport`.
async fn serve_echo(transport: Transport) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(echo_certificate));
    let rules = Rules {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 16,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(server::serve(
        listener, "public", router, rules, transport, stopped,
    ));
    (addr, stop)
}

/// Runs curl off the test's runtime thread (the server under test runs on it).
async fn curl(args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .args(&owned)
            .output()
            .expect("curl")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_client_certificate_reaches_every_request_of_its_connection_as_an_extension() {
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    // RSA, so that TLS 1.2 clients find a suite too.
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let files = ca.server_with(2, (2020, 2099), rsa).write(certs.path());
    let tls = Tls::open("public", files, true).unwrap();
    let (addr, _stop) = serve_echo(Transport {
        tls: Some(tls),
        cert_header: None,
    })
    .await;
    let client = client_certificate("client one");
    let dir = certs.path();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("client.pem"), &client.cert).unwrap();
    std::fs::write(dir.join("client-key.pem"), &client.key).unwrap();
    let url = format!("https://{addr}/");
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("client.pem"),
        dir.join("client-key.pem"),
    );
    let with_cert = [
        "--cacert",
        path_str(&ca_file),
        "--cert",
        path_str(&cert_file),
        "--key",
        path_str(&key_file),
    ];
    // Two requests on one connection: both carry it.
    let mut args = with_cert.to_vec();
    args.extend([url.as_str(), "--next"]);
    args.extend(with_cert);
    args.push(url.as_str());
    let both = curl(&args).await;
    let want = format!("Tls {} chain=0 header=false", x5t(&client.der));
    assert_eq!(both, format!("{want}{want}"));
    // Without a certificate the handshake still succeeds (it is asked for, not required).
    assert_eq!(
        curl(&["--cacert", path_str(&ca_file), &url]).await,
        "none header=false"
    );

    // reqwest with a client identity, TLS 1.2 this time.
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", client.key, client.cert).as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca.reqwest_root()])
        .identity(identity)
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let text = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(text, want);
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
async fn the_proxy_header_is_believed_from_a_listed_proxy_only_and_never_reaches_handlers() {
    let client = client_certificate("behind the proxy");
    let header_value = escaped(&client.cert);
    let header = |proxies: &str| {
        Some(Arc::new(ProxyCertHeader {
            name: "x-client-cert".parse().unwrap(),
            proxies: vec![tessera::http::tls::proxy_network(proxies).unwrap()],
        }))
    };
    let get = |addr: SocketAddr, value: Option<&str>| {
        let value = value.map(str::to_owned);
        async move {
            let mut req = reqwest::Client::new().get(format!("http://{addr}/"));
            if let Some(v) = value {
                req = req.header("x-client-cert", v);
            }
            req.send().await.unwrap().text().await.unwrap()
        }
    };

    let (trusted, _stop) = serve_echo(Transport {
        tls: None,
        cert_header: header("127.0.0.0/8"),
    })
    .await;
    assert_eq!(
        get(trusted, Some(&header_value)).await,
        format!("ProxyHeader {} chain=0 header=false", x5t(&client.der))
    );
    assert_eq!(get(trusted, None).await, "none header=false");
    assert_eq!(get(trusted, Some("")).await, "none header=false");
    assert_eq!(
        get(trusted, Some("not%20a%20certificate")).await,
        "none header=false"
    );

    let (untrusted, _stop) = serve_echo(Transport {
        tls: None,
        cert_header: header("10.0.0.0/8"),
    })
    .await;
    assert_eq!(
        get(untrusted, Some(&header_value)).await,
        "none header=false"
    );

    // On TLS from an unlisted address, the connection's own certificate counts, not the header.
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let tls = Tls::open("public", ca.server(2).write(certs.path()), true).unwrap();
    let (addr, _stop) = serve_echo(Transport {
        tls: Some(tls),
        cert_header: header("10.0.0.0/8"),
    })
    .await;
    let own = client_certificate("direct");
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", own.key, own.cert).as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca.reqwest_root()])
        .identity(identity)
        .build()
        .unwrap();
    let text = http
        .get(format!("https://{addr}/"))
        .header("x-client-cert", &header_value)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, format!("Tls {} chain=0 header=false", x5t(&own.der)));
}

/// Counts of a request loop.
#[derive(Default)]
struct Traffic {
    ok: AtomicUsize,
    failed: Mutex<Vec<String>>,
    /// The server certificate of the latest answer.
    last_cert: Mutex<Option<Vec<u8>>>,
}

/// Sends token requests with `http` until `stop`, counting them in `traffic`.
fn request_loop(
    http: reqwest::Client,
    url: String,
    c: TestClient,
    traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let sent = http
                .post(&url)
                .basic_auth(&c.id, Some(&c.secret))
                .header("content-type", FORM)
                .body(form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ]))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 200 => {
                    *traffic.last_cert.lock().unwrap() = served_certificate(&r);
                    traffic.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => traffic
                    .failed
                    .lock()
                    .unwrap()
                    .push(format!("status {}", r.status())),
                Err(e) => traffic.failed.lock().unwrap().push(format!("{e:?}")),
            }
        }
    })
}

/// Waits (at most a minute) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn a_reload_under_traffic_fails_no_request_and_new_handshakes_get_the_new_certificate() {
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let first = ca.server(1);
    let files = first.write(certs.path());
    let db = tempfile::tempdir().unwrap();
    let app = spawn_serve_in(
        db,
        &[
            "--tls-cert",
            path_str(&files.cert),
            "--tls-key",
            path_str(&files.key),
        ],
    )
    .await;
    let c = app.client("/ping.read", &[]);
    let url = https(app.addr, "/oauth2/token");
    let stop = Arc::new(AtomicBool::new(false));
    let kept_alive = Arc::new(Traffic::default());
    let fresh = Arc::new(Traffic::default());
    let loops = [
        request_loop(
            ca.client(),
            url.clone(),
            c.clone(),
            kept_alive.clone(),
            stop.clone(),
        ),
        request_loop(
            reqwest::Client::builder()
                .tls_certs_only([ca.reqwest_root()])
                .tls_info(true)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            url.clone(),
            c.clone(),
            fresh.clone(),
            stop.clone(),
        ),
    ];
    let served = |t: &Traffic| t.last_cert.lock().unwrap().clone();
    eventually("both loops are served", || {
        kept_alive.ok.load(Ordering::Relaxed) >= 5 && fresh.ok.load(Ordering::Relaxed) >= 5
    })
    .await;
    assert_eq!(served(&fresh), Some(first.der.clone()));
    let pid = app.pid().unwrap();

    // A key that is not the certificate's: refused, the first certificate stays.
    let mismatched = Issued {
        key: client_certificate("x").key,
        ..ca.server(2)
    };
    mismatched.write(certs.path());
    hangup(pid);
    let log_has = |needle: &'static str| {
        let app = &app;
        move || app.log_lines().iter().any(|l| l.contains(needle))
    };
    eventually(
        "the mismatched pair is refused",
        log_has("TLS certificate reload refused"),
    )
    .await;
    let before = fresh.ok.load(Ordering::Relaxed);
    eventually("new connections are served again", || {
        fresh.ok.load(Ordering::Relaxed) > before + 3
    })
    .await;
    assert_eq!(served(&fresh), Some(first.der.clone()));

    let second = ca.server(3);
    second.write(certs.path());
    hangup(pid);
    eventually("new handshakes get the new certificate", || {
        served(&fresh) == Some(second.der.clone())
    })
    .await;
    let before = (
        kept_alive.ok.load(Ordering::Relaxed),
        fresh.ok.load(Ordering::Relaxed),
    );
    eventually("both loops go on", || {
        kept_alive.ok.load(Ordering::Relaxed) > before.0 + 5
            && fresh.ok.load(Ordering::Relaxed) > before.1 + 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(*kept_alive.failed.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*fresh.failed.lock().unwrap(), Vec::<String>::new());
    // The kept-alive connection was never dropped: it still has the first certificate.
    assert_eq!(served(&kept_alive), Some(first.der.clone()));
    assert!(log_has("\"serial\":\"1003\"")(), "{:#?}", app.log_lines());
    let metrics = ca
        .client()
        .get(https(app.admin_addr, "/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tessera_tls_reloads_total{listener=\"public\",outcome=\"refused\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_tls_reloads_total{listener=\"public\",outcome=\"ok\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn replaced_files_are_picked_up_without_a_signal() {
    let ca = TestCa::new("Tessera test CA");
    let certs = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca.server(1).write(certs.path()), &[]).await;
    let probe = rustls_client(
        &ca,
        &[&rustls::version::TLS13],
        rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES.to_vec(),
    );
    let next = ca.server(2);
    next.write(certs.path());
    for _ in 0..600 {
        let s = handshake(&probe, app.addr).await.unwrap();
        let leaf = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        if leaf == Some(next.der.clone()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replaced certificate was never served");
}

#[tokio::test]
async fn a_server_without_tls_survives_sighup() {
    let app = spawn_serve_in(tempfile::tempdir().unwrap(), &[]).await;
    hangup(app.pid().unwrap());
    eventually("the signal is logged", || {
        app.log_lines()
            .iter()
            .any(|l| l.contains("SIGHUP: no TLS certificate to reload"))
    })
    .await;
    assert_eq!(app.get("/healthz", &[]).await.status, 200);
}
