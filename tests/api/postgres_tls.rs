//! TLS to PostgreSQL, against a throwaway PostgreSQL 15 cluster each test starts itself: TLS on
//! (`ssl = on`, a certificate for `localhost` from a test CA), and a `pg_hba.conf` that accepts
//! only TLS connections (`hostssl`, with `trust` or client-certificate `cert` authentication),
//! on a free loopback port. The cluster is stopped and its
//! directory deleted when the test ends, also when it fails.
//!
//! Without the PostgreSQL binaries (`/usr/lib/postgresql/15/bin`, or `TESSERA_TEST_PG_BIN`) the
//! tests fail when `CI` is set and are skipped loudly otherwise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use tessera::config::Settings;
use tessera::http::Application;

use crate::helpers::{ADMIN_TOKEN, TestClient, basic, form, new_master_key, spawn_app_on_url};

const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running throwaway cluster; stopped (and its files deleted) on drop.
struct TlsCluster {
    dir: tempfile::TempDir,
    runner: Runner,
    bin: PathBuf,
    port: u16,
    /// The CA that issued the server's certificate.
    ca: PathBuf,
    /// A CA that did not.
    other_ca: PathBuf,
    /// A client certificate for the user `postgres` from `ca`, and its key.
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// Who the cluster lets in, over TLS only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Anyone (`trust`).
    Trust,
    /// Only clients presenting a certificate from the test CA for their user name (`cert`).
    ClientCertificate,
}

/// Who runs the cluster: as root, the `postgres` user (PostgreSQL refuses to run as root),
/// through `runuser`, owning the cluster's files; otherwise the current user.
#[derive(Clone, Copy)]
enum Runner {
    Postgres { uid: u32, gid: u32 },
    Me,
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

impl Runner {
    /// `None`: root, but no `postgres` user.
    fn find() -> Option<Self> {
        if id(&["-u"])? != 0 {
            return Some(Self::Me);
        }
        Some(Self::Postgres {
            uid: id(&["-u", "postgres"])?,
            gid: id(&["-g", "postgres"])?,
        })
    }

    fn command(self, program: &Path) -> Command {
        match self {
            Self::Postgres { .. } => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            }
            Self::Me => Command::new(program),
        }
    }

    fn own(self, path: &Path) {
        if let Self::Postgres { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
        }
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// PEM of a CA and what it issued.
struct Pki {
    ca: String,
    /// The server's certificate, for `localhost`, and its key.
    server: (String, String),
    /// A client certificate for the user `postgres` (for `cert` authentication), and its key.
    client: (String, String),
}

/// A CA, a server certificate for `localhost` and a client certificate it issued.
fn certificates(ca_name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().expect("server key");
    let cert = server.signed_by(&key, &ca).expect("server certificate");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "postgres");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("client key");
    let client_cert = client
        .signed_by(&client_key, &ca)
        .expect("client certificate");
    Pki {
        ca: ca.pem(),
        server: (cert.pem(), key.serialize_pem()),
        client: (client_cert.pem(), client_key.serialize_pem()),
    }
}

impl TlsCluster {
    /// Starts a cluster; `None` means skip (no PostgreSQL binaries, `CI` unset).
    fn start(auth: Auth) -> Option<Self> {
        let bin = std::env::var_os("TESSERA_TEST_PG_BIN")
            .map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from);
        let runner = Runner::find();
        if !bin.join("initdb").is_file() || runner.is_none() {
            let why = format!(
                "no PostgreSQL binaries in {} or no postgres user to run them",
                bin.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}, and CI is set");
            }
            eprintln!(
                "\n********************************************************************\n\
                 SKIPPED: {why}.\n\
                 This PostgreSQL TLS test did not run; with CI set this is a failure.\n\
                 ********************************************************************\n"
            );
            return None;
        }
        let runner = runner.expect("runner");
        let dir = tempfile::tempdir().expect("tempdir");
        runner.own(dir.path());
        let data = dir.path().join("data");
        run(runner
            .command(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        let pki = certificates("Tessera test CA");
        let other = certificates("Some other CA");
        let write = |path: &Path, text: &str, private: bool| {
            std::fs::write(path, text).expect("write");
            runner.own(path);
            if private {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
            }
        };
        write(&data.join("server.crt"), &pki.server.0, false);
        write(&data.join("server.key"), &pki.server.1, true);
        write(&data.join("root.crt"), &pki.ca, false);
        let cluster = Self {
            ca: dir.path().join("ca.pem"),
            other_ca: dir.path().join("other-ca.pem"),
            client_cert: dir.path().join("client.pem"),
            client_key: dir.path().join("client.key"),
            port: free_port(),
            runner,
            bin,
            dir,
        };
        write(&cluster.ca, &pki.ca, false);
        write(&cluster.other_ca, &other.ca, false);
        write(&cluster.client_cert, &pki.client.0, false);
        write(&cluster.client_key, &pki.client.1, true);
        // Only TLS over TCP: a plaintext connection finds no pg_hba.conf line.
        let method = match auth {
            Auth::Trust => "trust",
            Auth::ClientCertificate => "cert",
        };
        write(
            &data.join("pg_hba.conf"),
            &format!("local all all trust\nhostssl all all 127.0.0.1/32 {method}\n"),
            false,
        );
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'root.crt'\nfsync = off\nmax_connections = 40\n",
            cluster.port,
            cluster.dir.path().display()
        );
        let mut file = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        file.push_str(&conf);
        write(&data.join("postgresql.conf"), &file, false);
        run(runner
            .command(&cluster.bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.path().join("server.log"))
            .arg("start"));
        Some(cluster)
    }

    /// `postgres://postgres@HOST:PORT/postgres` with `query` appended.
    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let stopped = self
            .runner
            .command(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-w", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
        if !stopped.is_ok_and(|o| o.status.success()) {
            eprintln!("warning: could not stop the throwaway PostgreSQL cluster");
        }
    }
}

/// Builds the app on `url` with `master_key` and `extra` settings; the start's error, as
/// text, if it fails. Bounded, so a start that retries forever fails the test.
async fn start_error(url: &str, master_key: &str, extra: &[(&str, &str)]) -> Option<String> {
    let mut flags: Vec<(&str, String)> = vec![
        ("listen", "127.0.0.1:0".into()),
        ("admin_listen", "127.0.0.1:0".into()),
        ("admin_token", ADMIN_TOKEN.into()),
        ("database_url", url.to_owned()),
        ("master_key", master_key.to_owned()),
    ];
    flags.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let settings = Settings::load_from(None, |_| None, &flags).expect("settings");
    match tokio::time::timeout(Duration::from_secs(30), Application::build(settings)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => panic!("the start neither succeeded nor failed within 30 s"),
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_mints_and_introspects_a_token_over_tls() {
    let Some(pg) = TlsCluster::start(Auth::Trust) else {
        return;
    };
    let ca = path_text(&pg.ca);
    let app = spawn_app_on_url(
        &pg.url("localhost", ""),
        &[
            ("database_sslmode", "verify-full"),
            ("database_ssl_root_cert", &ca),
        ],
    )
    .await;
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"name": "over tls", "scopes": "/ping.read"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = TestClient {
        id: r.json()["client_id"].as_str().expect("id").to_owned(),
        secret: r.json()["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    };
    let token = app.grant(&c, "/ping.read").await;
    let access = token["access_token"].as_str().expect("access token");
    let r = app
        .post(
            "/oauth2/introspect",
            Some("application/x-www-form-urlencoded"),
            form(&[("token", access)]),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["active"], true, "{}", r.text);
    // The server saw every connection of Tessera's pool over TLS.
    let url = format!(
        "{}&sslrootcert={ca}",
        pg.url("localhost", "?sslmode=verify-full")
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect with verify-full");
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'tessera'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_ssl");
    assert!(tls >= 1, "no TLS connection from Tessera");
    assert_eq!(plain, 0, "Tessera has plaintext connections");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_check_the_server_as_libpq_does_and_refuse_clearly_at_start() {
    let Some(pg) = TlsCluster::start(Auth::Trust) else {
        return;
    };
    let (ca, other_ca) = (path_text(&pg.ca), path_text(&pg.other_ca));
    // One master key: the first start that succeeds initialises the database with it.
    let key = new_master_key();

    // A certificate from another CA: refused at start, saying why.
    let e = start_error(
        &pg.url("localhost", ""),
        &key,
        &[
            ("database_sslmode", "verify-full"),
            ("database_ssl_root_cert", &other_ca),
        ],
    )
    .await
    .expect("a wrong CA is refused");
    assert!(e.contains("sslmode verify-full"), "{e}");
    assert!(
        e.contains("certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );

    // The right CA, but the certificate names `localhost`, not `127.0.0.1`: verify-full
    // refuses, verify-ca (which does not check the name) accepts.
    let e = start_error(
        &pg.url("127.0.0.1", ""),
        &key,
        &[
            ("database_sslmode", "verify-full"),
            ("database_ssl_root_cert", &ca),
        ],
    )
    .await
    .expect("a certificate for another host is refused under verify-full");
    assert!(e.contains("not valid for name"), "{e}");
    // verify-ca given in the URL's own parameters, which keep working.
    let verify_ca = format!("?sslmode=verify-ca&sslrootcert={ca}");
    assert_eq!(
        start_error(&pg.url("127.0.0.1", &verify_ca), &key, &[]).await,
        None
    );
    // `require` with a root certificate checks the chain, as in libpq.
    let e = start_error(
        &pg.url(
            "localhost",
            &format!("?sslmode=require&sslrootcert={other_ca}"),
        ),
        &key,
        &[],
    )
    .await
    .expect("require with a root certificate checks the chain");
    assert!(e.contains("UnknownIssuer"), "{e}");

    // `require` without a CA encrypts without checking the certificate.
    assert_eq!(
        start_error(&pg.url("127.0.0.1", "?sslmode=require"), &key, &[]).await,
        None
    );
    // The setting wins over the URL: `disable` over the URL's `require` connects in plain
    // text, which this server's pg_hba.conf (hostssl only) refuses.
    let e = start_error(
        &pg.url("127.0.0.1", "?sslmode=require"),
        &key,
        &[("database_sslmode", "disable")],
    )
    .await
    .expect("a plaintext connection is refused by a hostssl-only server");
    assert!(e.contains("sslmode disable"), "{e}");
    assert!(e.contains("no encryption"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_the_settings_passes_cert_authentication() {
    let Some(pg) = TlsCluster::start(Auth::ClientCertificate) else {
        return;
    };
    let key = new_master_key();
    let (ca, cert, client_key) = (
        path_text(&pg.ca),
        path_text(&pg.client_cert),
        path_text(&pg.client_key),
    );
    let url = pg.url("localhost", "");
    let verify = [
        ("database_sslmode", "verify-full"),
        ("database_ssl_root_cert", ca.as_str()),
    ];
    // Without a client certificate, `cert` authentication refuses the connection.
    let e = start_error(&url, &key, &verify)
        .await
        .expect("no client certificate, no connection");
    assert!(e.contains("requires a valid client certificate"), "{e}");
    // A key without its certificate is a configuration error, before any connection.
    let mut lone = verify.to_vec();
    lone.push(("database_ssl_key", client_key.as_str()));
    let e = start_error(&url, &key, &lone).await.expect("a lone key");
    assert!(e.contains("must be set together"), "{e}");
    let mut with_cert = verify.to_vec();
    with_cert.extend([
        ("database_ssl_cert", cert.as_str()),
        ("database_ssl_key", client_key.as_str()),
    ]);
    assert_eq!(start_error(&url, &key, &with_cert).await, None);
}
