//! The scale-out store: one PostgreSQL database shared by any number of Tessera instances.
//!
//! Semantics mirror [`super::sqlite`] exactly; what differs is how they are guaranteed when
//! several processes write at once.
//!
//! - **Transactions** run at PostgreSQL's default `READ COMMITTED`. Every statement sees what
//!   was committed before it started, so an instance never acts on another instance's stale
//!   copy: there is no cache of clients or tokens, and a change committed through one instance
//!   (or the CLI) is seen by the next statement on every instance.
//! - **Races** are decided by row locks and conditional `UPDATE`s, never by timing. An
//!   `UPDATE … WHERE <condition>` that finds its row locked waits for the other transaction,
//!   then re-checks `<condition>` against the row as that transaction left it (PostgreSQL's
//!   "EvalPlanQual" recheck), so at most one of several racing conditional updates wins. The
//!   family row is the lock that orders a refresh against a revocation: see
//!   [`rotate_refresh`](tokens).
//! - **Uniqueness** that SQLite gets from its single writer is a constraint here: partial
//!   unique indexes allow one `active` and one `next` signing key, and inserts that could race
//!   use `ON CONFLICT DO NOTHING`.
//! - **Durability**: a transaction's `COMMIT` returns once PostgreSQL has made it durable under
//!   its `synchronous_commit` setting (`on` by default; [`PostgresStore::open`] warns if it is
//!   `off`). Only then does the service answer `2xx`.
//! - **Outages**: connections come from a pool with a short acquire timeout; a connection idle
//!   for more than a second is pinged before use and one that fails is dropped, so connections
//!   lost to a restart, a failover or `pg_terminate_backend` are replaced without intervention.
//!   Failing to get a connection, a dropped connection and PostgreSQL's "try again" error
//!   classes all become [`StoreError::Unavailable`] (`503` with `Retry-After`). A read is
//!   bounded by [`OPERATION_TIMEOUT`], so a server that stops answering yields `503` too, not
//!   a hang. A write is never abandoned by a timer here: its caller waits for its real outcome,
//!   which PostgreSQL bounds by cancelling any statement after [`STATEMENT_TIMEOUT_MS`] (a
//!   cancelled statement has not committed), so `503` always means nothing was written
//!   ([`super::queue`]).

mod audit;
mod batch;
mod clients;
mod grants;
mod keys;
mod lookups;
mod maintenance;
mod replay;
mod revocations;
mod rotations;
mod tls;
mod tokens;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::{StoreError, StoreResult};
use batch::Batcher;
use grants::Grants;
use lookups::{AccessLookups, ClientLookups, RefreshLookups};
use revocations::Revocations;
use rotations::Rotations;
pub use tls::{SslMode, Tls};

/// How long a request waits for a pooled connection (including opening a new one) before the
/// store reports itself unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a read may take, connection included. Past it the read is abandoned and
/// reported as unavailable. Writes are not abandoned; see [`PostgresStore::written`].
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle for longer than this is pinged before a request gets it.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Server-side bound on one statement of a request (lock waits included): PostgreSQL cancels
/// it, cleanly, so a write stalled on a lock or a slow disk is answered `503` with nothing
/// committed. Migrations are not bound by it.
const STATEMENT_TIMEOUT_MS: u32 = 8_000;

/// Server-side guard: a transaction left idle this long (an instance cut off mid-transaction)
/// is aborted by PostgreSQL, so its row locks cannot block the other instances for long.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u32 = 30_000;

/// Default number of connections per instance.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Connections for requests (with the statement timeouts).
    pool: PgPool,
    /// Grants are written in batches (see [`batch`]).
    grants: Batcher<Grants>,
    /// Client lookups are read in batches.
    clients: Batcher<ClientLookups>,
    /// Access-token lookups (introspection, `/ping`) are read in batches.
    access: Batcher<AccessLookups>,
    /// Refresh-token lookups are read in batches.
    refresh: Batcher<RefreshLookups>,
    /// Rotations are written in batches.
    rotations: Batcher<Rotations>,
    /// Family revocations are written in batches.
    revocations: Batcher<Revocations>,
    /// The URL's options alone, for the migration connection.
    options: PgConnectOptions,
}

/// A `postgres://` URL with its password (if any) replaced by `***`, fit for logs and errors.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` or `postgresql://` URL, with at most
    /// `max_connections` pooled connections. The database must exist; the schema is created by
    /// [`super::Maintenance::migrate`].
    ///
    /// # Errors
    /// A malformed URL, or a database that does not answer.
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        Self::open_with_tls(url, max_connections, &Tls::default()).await
    }

    /// [`Self::open`] with the `database_ssl*` settings laid over the URL's ([`Tls`]).
    /// The first connection is made here, so a certificate that does not verify (a wrong CA,
    /// or under `verify-full` a certificate for another host) fails the start with the TLS
    /// error, at once: it is not retried.
    ///
    /// # Errors
    /// As [`Self::open`], and unreadable certificate files.
    pub async fn open_with_tls(url: &str, max_connections: u32, tls: &Tls) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Other(anyhow::anyhow!(
                    "invalid PostgreSQL URL {}: {e}",
                    redact_url(url)
                ))
            })?
            .application_name("tessera");
        let (options, mode) = tls
            .apply(url, options)
            .map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?;
        let target = format!(
            "PostgreSQL at {}:{} (sslmode {})",
            options.get_host(),
            options.get_port(),
            mode
        );
        let request_options = options.clone().options([
            ("statement_timeout", STATEMENT_TIMEOUT_MS),
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT_MS,
            ),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection killed by the server while idle (restart, failover,
            // pg_terminate_backend) must be replaced, not handed to a request. Pinging before
            // every use would cost each store call a round trip, so only connections idle for
            // longer than a second are pinged; under load they are in constant use. (sqlx also
            // pings each connection when it is released, off the request path, and drops it if
            // that fails.)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(request_options);
        let store = Self {
            grants: Batcher::start(pool.clone()),
            clients: Batcher::start(pool.clone()),
            access: Batcher::start(pool.clone()),
            refresh: Batcher::start(pool.clone()),
            rotations: Batcher::start(pool.clone()),
            revocations: Batcher::start(pool.clone()),
            pool,
            options,
        };
        let sync: String = store
            .bounded(async {
                let mut conn = store.conn().await?;
                sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(map_err)
            })
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => StoreError::Unavailable(format!("{target}: {m}")),
                StoreError::Other(e) => StoreError::Other(e.context(target.clone())),
                other => other,
            })?;
        tracing::debug!(target = %target, "connected");
        if sync == "off" {
            tracing::warn!(
                "PostgreSQL synchronous_commit is off: a token answered 200 may be lost if the \
                 database crashes. Set synchronous_commit = on for Tessera's database."
            );
        }
        Ok(store)
    }

    /// Runs a read under [`OPERATION_TIMEOUT`]: abandoning a read changes nothing.
    pub(super) async fn bounded<T>(
        &self,
        work: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        tokio::time::timeout(OPERATION_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer from PostgreSQL within {OPERATION_TIMEOUT:?}"
                )))
            })
    }

    /// Runs a write to its real outcome ([`super::queue`] says why no timer on this side may
    /// cut it short). PostgreSQL bounds it: each statement is cancelled, and so not committed,
    /// after [`STATEMENT_TIMEOUT_MS`], and getting a connection gives up after
    /// [`ACQUIRE_TIMEOUT`], before anything is sent.
    pub(super) async fn written<T>(
        &self,
        work: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        work.await
    }

    /// Runs a **transaction** on a task of its own, to its real outcome, so that it always
    /// runs to its end (commit or rollback) even if the caller goes away (the HTTP client
    /// disconnects). A transaction future dropped half-way can leave its pooled connection
    /// inside the transaction (observed: a `BEGIN` that had reached the server while sqlx had
    /// not yet recorded it), and the next statement on that connection — another request's
    /// grant — then runs inside it, is answered as committed, and is rolled back later.
    /// `abandoned_calls_leave_no_transaction_open` in `tests/store` reproduced exactly that.
    /// As for [`Self::written`], the caller waits for the outcome; `statement_timeout` bounds
    /// each statement and `idle_in_transaction_session_timeout` the transaction.
    pub(super) async fn detached<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = StoreResult<T>> + Send + 'static,
    {
        match tokio::spawn(work(self.clone())).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Other(anyhow::anyhow!("store task failed: {e}"))),
        }
    }

    /// A pooled connection. Any failure to get one means the database is unavailable.
    pub(super) async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(unavailable)
    }

    /// A transaction on a pooled connection. Failing to get a connection or to start the
    /// transaction means the database is unavailable.
    pub(super) async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(unavailable)
    }
}

/// PostgreSQL text cannot hold a NUL character, so no stored client id contains one. A lookup
/// by such an id (it comes from a request) finds nothing, as on SQLite, instead of failing.
pub(super) fn storable(text: &str) -> bool {
    !text.contains('\0')
}

pub(super) fn unavailable(e: sqlx::Error) -> StoreError {
    match map_err(e) {
        StoreError::Other(e) => StoreError::Unavailable(format!("{e:#}")),
        other => other,
    }
}

/// SQLSTATEs after which trying again later can succeed: nothing was committed, and the
/// database (or this connection to it) is going away, starting, overloaded or contended.
fn is_transient(code: &str) -> bool {
    code.starts_with("08") // connection_exception
        || code.starts_with("53") // insufficient_resources (e.g. too_many_connections)
        || matches!(
            code,
            "57P01" // admin_shutdown (also pg_terminate_backend)
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "57P05" // idle_session_timeout
                | "57014" // query_canceled
                | "25P03" // idle_in_transaction_session_timeout
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "55000" // "database … is not currently accepting connections"
                | "58030" // io_error: the server's disk failed under it
        )
}

pub(super) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            // A duplicate, or a row written for one that a concurrent call deleted (a grant
            // for a client deleted a moment ago): the write lost a race.
            if db.is_unique_violation() || db.is_foreign_key_violation() {
                return StoreError::Conflict(db.message().to_owned());
            }
            match db.code() {
                Some(code) if is_transient(&code) => {
                    StoreError::Unavailable(format!("{} ({code})", db.message()))
                }
                _ => StoreError::Other(anyhow::Error::new(e)),
            }
        }
        _ => StoreError::Other(anyhow::Error::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_only() {
        assert_eq!(
            redact_url("postgres://tessera:s3cret@db.example:5432/tessera?sslmode=require"),
            "postgres://tessera:***@db.example:5432/tessera?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://tessera@db/tessera"),
            "postgres://tessera@db/tessera"
        );
        assert_eq!(redact_url("postgresql://db/x"), "postgresql://db/x");
    }

    #[test]
    fn connection_loss_and_contention_are_transient_other_errors_are_not() {
        for code in ["08006", "57P01", "53300", "40P01", "55000"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
