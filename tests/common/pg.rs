//! A fresh PostgreSQL database per test, dropped when the test ends (also when it fails).
//!
//! The server is the one CI starts: `postgres://postgres@127.0.0.1:5432/test` (trust auth), or
//! `TESSERA_TEST_POSTGRES_URL`. Each test creates its own database with a random name from that
//! connection and drops it afterwards (`WITH (FORCE)`, so connections the test left open do not
//! stop it). If the server is unreachable, the test fails when `CI` is set, and otherwise is
//! skipped with a loud message on stderr.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The maintenance database's URL.
pub fn admin_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database of its own for one test.
pub struct TestDb {
    /// The database's name (`tessera_test_<random>`).
    pub name: String,
    /// Its URL, for `--database-url`.
    pub url: String,
    admin: String,
}

/// Connects to the maintenance database, or says why not.
pub async fn admin_connection() -> Result<PgConnection, String> {
    let url = admin_url();
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("{e}")),
        Err(_) => Err("connection timed out".into()),
    }
}

impl TestDb {
    /// Creates a fresh database. `None` means "skip this test" (PostgreSQL unreachable and
    /// `CI` unset); with `CI` set an unreachable server fails the test.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let mut conn = match admin_connection().await {
            Ok(conn) => conn,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL at {admin} is unreachable and CI is set: {e}");
                }
                eprintln!(
                    "\n********************************************************************\n\
                     SKIPPED: PostgreSQL at {admin} is unreachable ({e}).\n\
                     This PostgreSQL test did not run. Start PostgreSQL (or set\n\
                     TESSERA_TEST_POSTGRES_URL); with CI set this is a failure.\n\
                     ********************************************************************\n"
                );
                return None;
            }
        };
        let name = format!("tessera_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        Some(Self {
            url: format!("{server}/{name}{query}"),
            name,
            admin,
        })
    }

    /// Runs one statement on the maintenance database (e.g. to block or kill this database's
    /// connections).
    pub async fn admin_exec(&self, sql: String) {
        let mut conn = PgConnection::connect(&self.admin)
            .await
            .expect("connect to the maintenance database");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("admin statement");
        let _ = conn.close().await;
    }

    /// Terminates every connection to this database, as an operator or a failover would.
    pub async fn kill_connections(&self) {
        self.admin_exec(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        ))
        .await;
    }

    /// Waits (bounded) until no session is connected to this database; true if none is.
    pub async fn wait_for_no_connections(&self) -> bool {
        for _ in 0..400 {
            if self.connections().await == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// How many sessions are connected to this database.
    pub async fn connections(&self) -> i64 {
        let mut conn = PgConnection::connect(&self.admin)
            .await
            .expect("connect to the maintenance database");
        let n = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .expect("count connections");
        let _ = conn.close().await;
        n
    }

    /// Makes the database refuse (`false`) or accept (`true`) new connections.
    pub async fn allow_connections(&self, allow: bool) {
        self.admin_exec(format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allow}",
            self.name
        ))
        .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime: do the async work on a thread with its own.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
