//! Faults of the environment, created for real (docs/fault-model.md): a full disk (a small
//! tmpfs filled up), the database file removed under a running server, several processes
//! starting at once on a fresh file, a missing master key file. The rule checked throughout:
//! a `503` means nothing was committed, a `2xx` means it was.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

/// A tmpfs mounted on a directory for one test, unmounted when dropped (also when the test
/// fails). Mounting needs root; where it is refused the test fails under `CI` and is skipped
/// loudly otherwise.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self {
                path: dir.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "cannot mount a tmpfs and CI is set: {why}"
                );
                eprintln!(
                    "\n********************************************************************\n\
                     SKIPPED: cannot mount a tmpfs ({why}).\n\
                     The full-disk test did not run; it needs root (mount -t tmpfs).\n\
                     With CI set this is a failure.\n\
                     ********************************************************************\n"
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: still detaches if a file on it is open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeroes into `dir/filler` until the file system is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..100_000 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    path
}

fn assert_unavailable(r: &Reply) {
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert_eq!(r.json()["error"], "temporarily_unavailable", "{}", r.text);
}

async fn readyz(app: &TestApp) -> Reply {
    app.get("/readyz", &[]).await
}

/// Polls `/readyz` until it answers `want` (bounded); returns the last answer.
async fn readyz_until(app: &TestApp, want: u16) -> Reply {
    let mut last = readyz(app).await;
    for _ in 0..100 {
        if last.status == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = readyz(app).await;
    }
    last
}

#[tokio::test]
async fn a_full_disk_answers_503_and_not_ready_then_serves_again_once_space_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(tmpfs) = Tmpfs::mount(dir.path(), "8m") else {
        return;
    };
    let app = spawn_in(dir, &[]).await;
    let c = app.client("/ping.read", &[]);
    let first = app.grant(&c, "/ping.read").await;
    let refresh_token = first["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(app.token_rows().await, (1, 1, 1));
    assert_eq!(readyz(&app).await.status, 200);

    let filler = fill(app.dir.path());
    for _ in 0..3 {
        let grant = app
            .token(
                &c,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ],
            )
            .await;
        assert_unavailable(&grant);
    }
    assert_unavailable(&app.refresh(&c, &refresh_token).await);
    // The admin API's writes (on the store's other connection) answer the same way.
    let created = app
        .admin(
            "POST",
            "/admin/clients",
            Some(serde_json::json!({"name": "full", "scopes": "/ping.read"})),
        )
        .await;
    assert_unavailable(&created);
    let ready = readyz(&app).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.header("retry-after"), Some("1"));
    assert_eq!(ready.json()["status"], "unavailable");
    // The 503s committed nothing: no new rows, and the refresh token is still unused.
    assert_eq!(app.token_rows().await, (1, 1, 1));

    std::fs::remove_file(&filler).expect("free the space");
    assert_eq!(readyz_until(&app, 200).await.status, 200, "ready again");
    app.grant(&c, "/ping.read").await;
    let refreshed = app.refresh(&c, &refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert_eq!(app.token_rows().await, (2, 3, 3));
    let listed = app.admin("GET", "/admin/clients", None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.text.matches("\"client_id\"").count(),
        1,
        "{}",
        listed.text
    );

    let dir = app.stop().await;
    drop(tmpfs);
    drop(dir);
}

#[tokio::test]
async fn a_database_file_removed_under_the_server_turns_writes_and_readiness_into_503() {
    let app = spawn_serve_in(tempfile::tempdir().expect("tempdir"), &[]).await;
    let c = app.client("/ping.read", &[]);
    let first = app.grant(&c, "/ping.read").await;
    assert_eq!(readyz(&app).await.status, 200);
    let db = app.db_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        std::fs::remove_file(&name).expect("remove a database file");
    }

    let grant = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ],
        )
        .await;
    assert_unavailable(&grant);
    let refresh_token = first["refresh_token"].as_str().expect("refresh");
    assert_unavailable(&app.refresh(&c, refresh_token).await);
    let ready = readyz(&app).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.header("retry-after"), Some("1"));
    // The server did not open a new, empty database at the path.
    assert!(!db.exists(), "a database file was created again");
    let logged = app.log_lines().into_iter().find(|line| {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        event["level"] == "ERROR"
            && event["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("was removed") && m.contains("restart the server"))
    });
    let logged =
        logged.unwrap_or_else(|| panic!("no error logged:\n{}", app.log_lines().join("\n")));
    assert!(logged.contains(&db.display().to_string()), "{logged}");
}

/// Runs `tessera` with `args` on the SQLite file `db` (the master key beside it), with no
/// other configuration.
fn tessera(db: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .env_remove("TESSERA_MASTER_KEY")
        .env_remove("TESSERA_CONFIG")
        .env_remove("TESSERA_DATABASE_URL")
        .stdin(Stdio::null());
    cmd
}

#[tokio::test]
async fn processes_starting_together_on_a_fresh_file_all_migrate_and_serve() {
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations")
        .count();
    let shipped = i64::try_from(shipped).expect("count");
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("tessera.db");
        let url = format!("sqlite://{}", db.display());
        // Two `serve` and two `migrate` processes, started at once.
        let migrations: Vec<_> = (0..2)
            .map(|_| {
                tessera(&db, &["migrate"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start tessera migrate")
            })
            .collect();
        let (a, b) = tokio::join!(spawn_serve_on(&url, &[]), spawn_serve_on(&url, &[]));
        for child in migrations {
            let out = child.wait_with_output().expect("tessera migrate");
            assert!(
                out.status.success(),
                "round {round}: migrate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for app in [&a, &b] {
            assert_eq!(readyz(app).await.status, 200, "round {round}");
        }
        // Both servers use the one master key and root key: a client created through one
        // authenticates on the other.
        let c = a.client("/ping.read", &[]);
        b.grant(&c, "/ping.read").await;
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=ro"))
            .await
            .expect("open");
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await
                .expect("migrations");
        assert_eq!(applied, shipped, "round {round}");
        pool.close().await;
        drop((a, b));
    }
}

#[tokio::test]
async fn a_missing_master_key_file_beside_an_initialised_database_refuses_to_start_and_writes_nothing()
 {
    let app = spawn_serve_in(tempfile::tempdir().expect("tempdir"), &[]).await;
    let c = app.client("/ping.read", &[]);
    app.grant(&c, "/ping.read").await;
    let dir = app.stop().await;
    let db = dir.path().join("tessera.db");
    let key_file = dir.path().join("tessera.db.master-key");
    let saved = std::fs::read(&key_file).expect("generated key file");
    std::fs::remove_file(&key_file).expect("remove the key file");

    let mut child = tessera(
        &db,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    )
    .current_dir(dir.path())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start tessera serve");
    let mut exited = None;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("tessera serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited.is_some(),
        "serve started without its master key: {err}"
    );
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the master key file {} is missing",
            key_file.display()
        )) && err.contains("initialised with a master key")
            && err.contains("Restore the file"),
        "{err}"
    );
    assert!(!key_file.exists(), "a new master key file was written");
    // The CLI refuses the same way.
    let out = tessera(&db, &["client", "list", "--json"])
        .current_dir(dir.path())
        .output()
        .expect("tessera client list");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing"));
    assert!(!key_file.exists(), "a new master key file was written");

    // With the file restored, the database opens again.
    std::fs::write(&key_file, saved).expect("restore");
    let out = tessera(&db, &["client", "list", "--json"])
        .current_dir(dir.path())
        .output()
        .expect("tessera client list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["client_id"], c.id.as_str());
}

#[tokio::test]
async fn a_missing_master_key_file_for_an_initialised_postgres_database_refuses_to_start() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    let url = app.database_url();
    let db = app.pg.clone().expect("pg");
    let dir = app.stop().await;
    let key_file = dir.path().join("master.key");
    let settings = tessera::config::Settings::load_from(
        None,
        |_| None,
        &[
            ("listen", "127.0.0.1:0".into()),
            ("admin_listen", "127.0.0.1:0".into()),
            ("database_url", url),
            ("master_key_file", key_file.display().to_string()),
        ],
    )
    .expect("settings");
    let err = tessera::http::Application::build(settings)
        .await
        .err()
        .expect("refuses to start");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "the master key file {} is missing",
            key_file.display()
        )) && err.contains("initialised with a master key"),
        "{err}"
    );
    assert!(!key_file.exists(), "a master key file was written");
    drop(db);
}
