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
//!   [`PostgresStore::rotate_refresh`](super::TokenStore::rotate_refresh).
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

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::postgres_batch::{
    self, Batcher, FamilyRevocation, Grant, Rotation, TokenLookup, access_columns, access_joins,
};
use super::rows::{
    AccessRow, AuditRow, ClientRow, KeyRow, bind_access_token, bind_audit_event,
    bind_client_fields, bind_refresh_token,
};
use super::{
    AccessKey, AccessRecord, ClientUpdate, NewAccessToken, NewFamily, NewRefreshToken, PoolStats,
    Purged, RotateOutcome, AuditStore, CleanupPolicy, ClientStore, KeyStore, Maintenance, TokenStore, StoreError, StoreResult, StoredKey,
};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::client::Client;
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::token::TokenRef;

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
    /// Grants are written in batches (see [`super::postgres_batch`]).
    grants: Batcher<Grant, ()>,
    /// Client lookups are read in batches.
    clients: Batcher<String, Option<Client>>,
    /// Access-token lookups (introspection, `/ping`) are read in batches.
    access: Batcher<TokenLookup, Option<AccessRecord>>,
    /// Refresh-token lookups are read in batches.
    refresh: Batcher<TokenLookup, Option<RefreshRecord>>,
    /// Rotations are written in batches.
    rotations: Batcher<Rotation, RotateOutcome>,
    /// Family revocations are written in batches.
    revocations: Batcher<FamilyRevocation, ()>,
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
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Other(anyhow::anyhow!(
                    "invalid PostgreSQL URL {}: {e}",
                    redact_url(url)
                ))
            })?
            .application_name("tessera");
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
        let grants = Batcher::start(
            pool.clone(),
            postgres_batch::GRANTS_IN_FLIGHT,
            |pool, batch| postgres_batch::write_grants(pool, batch, issue_one),
        );
        let clients = Batcher::start(
            pool.clone(),
            postgres_batch::READS_IN_FLIGHT,
            postgres_batch::read_clients,
        );
        let access = Batcher::start(
            pool.clone(),
            postgres_batch::READS_IN_FLIGHT,
            postgres_batch::read_access,
        );
        let refresh = Batcher::start(
            pool.clone(),
            postgres_batch::READS_IN_FLIGHT,
            postgres_batch::read_refresh,
        );
        let rotations = Batcher::start(
            pool.clone(),
            postgres_batch::ROTATIONS_IN_FLIGHT,
            |pool, batch| postgres_batch::write_rotations(pool, batch, rotate_one),
        );
        let revocations = Batcher::start(
            pool.clone(),
            postgres_batch::REVOCATIONS_IN_FLIGHT,
            |pool, batch| postgres_batch::write_revocations(pool, batch, revoke_one),
        );
        let store = Self {
            pool,
            grants,
            clients,
            access,
            refresh,
            rotations,
            revocations,
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
            .await?;
        if sync == "off" {
            tracing::warn!(
                "PostgreSQL synchronous_commit is off: a token answered 200 may be lost if the \
                 database crashes. Set synchronous_commit = on for Tessera's database."
            );
        }
        Ok(store)
    }

    /// Runs a read under [`OPERATION_TIMEOUT`]: abandoning a read changes nothing.
    async fn bounded<T>(&self, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
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
    async fn written<T>(&self, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
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
    async fn detached<T, F, Fut>(&self, work: F) -> StoreResult<T>
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
    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(unavailable)
    }

    /// A transaction on a pooled connection. Failing to get a connection or to start the
    /// transaction means the database is unavailable.
    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(unavailable)
    }
}

/// PostgreSQL text cannot hold a NUL character, so no stored client id contains one. A lookup
/// by such an id (it comes from a request) finds nothing, as on SQLite, instead of failing.
fn storable(text: &str) -> bool {
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

// The hot-path writes below are each **one** statement: PostgreSQL's data-modifying `WITH`
// runs every part exactly once, atomically, and checks foreign keys at the end of the
// statement, so a grant that took `BEGIN`, four `INSERT`s and `COMMIT` (six round trips, each
// costing the server a protocol exchange and a context switch) takes one. Values are bound by
// the `bind_*` helpers of `rows.rs`, in their documented order, so each part's placeholders
// are consecutive.

/// Issues a grant: family ($1–$6), access token ($7–$16), refresh token ($17–$23), audit
/// event ($24–$30).
const ISSUE_SQL: &str = "WITH family AS (\
     INSERT INTO token_families (family_id, client_id, scope, client_type, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6)), \
     access AS (\
     INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
     audience, issued_at, expires_at, signing_kid) \
     VALUES ($7, $8, $9, $10, $11, $12, $13, $14, $15, $16)), \
     refresh AS (\
     INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
     expires_at) VALUES ($17, $18, $19, $20, $21, $22, $23)) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($24, $25, $26, $27, $28, $29, $30)";

/// Rotates a refresh token: $1 now, $2 the family's new expiry, $3 the family, $4 the old
/// token's row id, $5 its hash, $6 the reuse cutoff; the successors ($7–$16, $17–$23) and the
/// audit event ($24–$30) are inserted only if the old token was consumed. Returns how many
/// tokens were consumed (0 or 1). [`PostgresStore::rotate_refresh`] says why this is race-free.
const ROTATE_SQL: &str = "WITH family AS (\
     UPDATE token_families SET refreshed_at = $1, expires_at = GREATEST(expires_at, $2) \
     WHERE family_id = $3 AND revoked_at IS NULL RETURNING family_id), \
     consumed AS (\
     UPDATE refresh_tokens SET consumed_at = COALESCE(consumed_at, $1) \
     WHERE token_id = $4 AND token_hash = $5 AND family_id = (SELECT family_id FROM family) \
     AND revoked_at IS NULL AND (consumed_at IS NULL OR consumed_at >= $6) RETURNING 1), \
     access AS (\
     INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
     audience, issued_at, expires_at, signing_kid) \
     SELECT $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 FROM consumed), \
     refresh AS (\
     INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
     expires_at) SELECT $17, $18, $19, $20, $21, $22, $23 FROM consumed), \
     audit AS (\
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     SELECT $24, $25, $26, $27, $28, $29, $30 FROM consumed) \
     SELECT COUNT(*) FROM consumed";

/// Revokes a family ($1 now, $2 family) and records the audit event ($3–$9).
const REVOKE_FAMILY_SQL: &str = "WITH done AS (\
     UPDATE token_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL \
     RETURNING 1) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($3, $4, $5, $6, $7, $8, $9)";

/// Revokes an access token ($1 now, $2 token id) and records the audit event ($3–$9).
const REVOKE_ACCESS_SQL: &str = "WITH done AS (\
     UPDATE access_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL \
     RETURNING 1) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($3, $4, $5, $6, $7, $8, $9)";

/// Revokes every family of a client ($1 now, $2 client) and records the audit event
/// ($3–$9); returns how many families.
/// The families are locked in family-id order first (the lock order of
/// [`postgres_batch::write_rotations`]).
const REVOKE_CLIENT_SQL: &str = "WITH locked AS (\
     SELECT family_id FROM token_families WHERE client_id = $2 AND revoked_at IS NULL \
     ORDER BY family_id FOR NO KEY UPDATE), \
     done AS (\
     UPDATE token_families SET revoked_at = $1 \
     WHERE family_id IN (SELECT family_id FROM locked) AND revoked_at IS NULL RETURNING 1), \
     audit AS (\
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($3, $4, $5, $6, $7, $8, $9)) \
     SELECT COUNT(*) FROM done";

const INSERT_AUDIT_SQL: &str = "INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

async fn insert_audit(tx: &mut Transaction<'static, Postgres>, e: &AuditEvent) -> StoreResult<()> {
    bind_audit_event(sqlx::query(INSERT_AUDIT_SQL), e)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Writes one grant with [`ISSUE_SQL`]: a batch of one, and the fallback when a batch fails.
fn issue_one(
    pool: PgPool,
    grant: Arc<Grant>,
) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>> {
    Box::pin(async move {
        let g = &*grant;
        let query = sqlx::query(ISSUE_SQL)
            .bind(&g.family.id)
            .bind(&g.family.client_id)
            .bind(&g.family.scope)
            .bind(g.family.client_type.as_str())
            .bind(g.family.created_at)
            .bind(g.access.expires_at.max(g.refresh.expires_at));
        let query = bind_refresh_token(bind_access_token(query, &g.access), &g.refresh);
        bind_audit_event(query, &g.audit)
            .execute(&pool)
            .await
            .map_err(map_err)?;
        Ok(())
    })
}

/// Writes one rotation with [`ROTATE_SQL`] in a transaction of its own: a batch of one, and
/// the fallback when a batch fails. [`PostgresStore::rotate_refresh`] says why it is race-free.
fn rotate_one(
    pool: PgPool,
    rotation: Arc<Rotation>,
) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<RotateOutcome>> + Send>> {
    Box::pin(async move {
        let r = &*rotation;
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let query = sqlx::query(ROTATE_SQL)
            .bind(r.refresh.issued_at)
            .bind(r.family_expires_at)
            .bind(&r.refresh.family_id)
            .bind(&r.old_id)
            .bind(&r.old_hash)
            .bind(r.reuse_cutoff);
        let query = bind_refresh_token(bind_access_token(query, &r.access), &r.refresh);
        let consumed: i64 = bind_audit_event(query, &r.audit)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| sqlx::Row::try_get(&row, 0))
            .map_err(map_err)?;
        if consumed != 1 {
            // Lost: undo the family update too; nothing of this rotation is written.
            tx.rollback().await.map_err(map_err)?;
            return Ok(RotateOutcome::Lost);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(RotateOutcome::Rotated)
    })
}

/// Revokes one family with [`REVOKE_FAMILY_SQL`]: a batch of one, and the fallback when a
/// batch fails.
fn revoke_one(
    pool: PgPool,
    revocation: Arc<FamilyRevocation>,
) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>> {
    Box::pin(async move {
        let r = &*revocation;
        let query = sqlx::query(REVOKE_FAMILY_SQL)
            .bind(r.now)
            .bind(&r.family_id);
        bind_audit_event(query, &r.audit)
            .execute(&pool)
            .await
            .map_err(map_err)?;
        Ok(())
    })
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[async_trait]
impl ClientStore for PostgresStore {
    async fn insert_client(&self, c: &Client) -> StoreResult<()> {
        self.written(async {
            let mut conn = self.conn().await?;
            let query = sqlx::query(
                "INSERT INTO clients (client_id, name, secret_hash, previous_secret_hash, \
                 previous_secret_expires_at, scopes, token_format, profile, access_ttl, \
                 refresh_ttl, origins, audience, resource_server, resources, disabled, \
                 created_at, updated_at, revision) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18)",
            )
            .bind(&c.id);
            bind_client_fields(query, c)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(c.revision)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        if !storable(id) {
            return Ok(None);
        }
        self.bounded(self.clients.submit(id.to_owned())).await
    }
    async fn list_clients(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Client>> {
        if after.is_some_and(|a| !storable(a)) {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows: Vec<ClientRow> = sqlx::query_as(
                "SELECT * FROM clients WHERE ($1::TEXT IS NULL OR client_id > $1) \
                 ORDER BY client_id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            rows.into_iter().map(Client::try_from).collect()
        })
        .await
    }
    /// One statement: the update, and whether the client exists (in the statement's snapshot,
    /// so a client deleted meanwhile reads as not found, not as stale).
    async fn update_client(&self, c: &Client) -> StoreResult<ClientUpdate> {
        self.written(async {
            let mut conn = self.conn().await?;
            let query = sqlx::query(
                "WITH updated AS (UPDATE clients SET name = $1, secret_hash = $2, \
                 previous_secret_hash = $3, previous_secret_expires_at = $4, scopes = $5, \
                 token_format = $6, profile = $7, access_ttl = $8, refresh_ttl = $9, \
                 origins = $10, audience = $11, resource_server = $12, resources = $13, \
                 disabled = $14, updated_at = $15, revision = revision + 1 \
                 WHERE client_id = $16 AND revision = $17 RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM updated), \
                 EXISTS (SELECT 1 FROM clients WHERE client_id = $16)",
            );
            let row = bind_client_fields(query, c)
                .bind(c.updated_at)
                .bind(&c.id)
                .bind(c.revision)
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?;
            let updated: bool = sqlx::Row::try_get(&row, 0).map_err(map_err)?;
            let exists: bool = sqlx::Row::try_get(&row, 1).map_err(map_err)?;
            Ok(match (updated, exists) {
                (true, _) => ClientUpdate::Updated,
                (false, true) => ClientUpdate::Stale,
                (false, false) => ClientUpdate::NotFound,
            })
        })
        .await
    }
    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let id = id.to_owned();
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            // The deletion cascades to the client's families and their tokens; locking the
            // families first, in family-id order, keeps the lock order of
            // `postgres_batch::write_rotations`.
            sqlx::query(
                "SELECT 1 FROM token_families WHERE client_id = $1 ORDER BY family_id FOR UPDATE",
            )
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)
        })
        .await
    }
    async fn meta_insert_or_get(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            // If another instance inserts the same key concurrently, ON CONFLICT waits for its
            // transaction and then does nothing; the SELECT, a new statement, sees its value.
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key)
            .bind(&value)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(stored)
        })
        .await
    }
    async fn meta_replace(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool> {
        self.written(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query("UPDATE meta SET value = $1 WHERE key = $2 AND value = $3")
                .bind(value)
                .bind(key)
                .bind(expected)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows: Vec<KeyRow> = sqlx::query_as(
                "SELECT kid, alg, state, private_key, created_at, published_until \
                 FROM signing_keys ORDER BY created_at, kid",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(rows.into_iter().map(StoredKey::from).collect())
        })
        .await
    }
    async fn insert_first_active_key(&self, k: &StoredKey) -> StoreResult<()> {
        self.written(async {
            let mut conn = self.conn().await?;
            // NOT EXISTS alone would let two instances starting together both insert (neither
            // sees the other's uncommitted row); the unique index on the active state makes the
            // second insert wait for the first and then do nothing.
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, state, private_key, created_at, activated_at) \
                 SELECT $1, $2, 'active', $3, $4, $4 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = 'active') \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&k.kid)
            .bind(&k.alg)
            .bind(&k.sealed_private_key)
            .bind(k.created_at)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn insert_next_key(&self, k: &StoredKey) -> StoreResult<()> {
        self.written(async {
            let mut conn = self.conn().await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, state, private_key, created_at) \
                 SELECT $1, $2, 'next', $3, $4 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = 'next') \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&k.kid)
            .bind(&k.alg)
            .bind(&k.sealed_private_key)
            .bind(k.created_at)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn activate_next_key(
        &self,
        next_kid: &str,
        now: UnixTime,
        retired_until: UnixTime,
    ) -> StoreResult<bool> {
        let next_kid = next_kid.to_owned();
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            // Lock the next key first: of two concurrent activations, the second waits here,
            // then finds the key no longer `next` and changes nothing.
            let next: Option<String> = sqlx::query_scalar(
                "SELECT kid FROM signing_keys WHERE kid = $1 AND state = 'next' FOR UPDATE",
            )
            .bind(&next_kid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
            if next.is_none() {
                tx.rollback().await.map_err(map_err)?;
                return Ok(false);
            }
            sqlx::query(
                "UPDATE signing_keys SET state = 'retired', retired_at = $1, published_until = $2 \
                 WHERE state = 'active'",
            )
            .bind(now)
            .bind(retired_until)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            sqlx::query(
                "UPDATE signing_keys SET state = 'active', activated_at = $1 \
                 WHERE kid = $2 AND state = 'next'",
            )
            .bind(now)
            .bind(&next_kid)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(true)
        })
        .await
    }
    async fn set_key_state(
        &self,
        kid: &str,
        state: &str,
        published_until: Option<UnixTime>,
    ) -> StoreResult<bool> {
        self.written(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query(
                "UPDATE signing_keys SET state = $1, published_until = $2, \
                 retired_at = COALESCE(retired_at, $2) \
                 WHERE kid = $3 AND state NOT IN ('active', 'revoked')",
            )
            .bind(state)
            .bind(published_until)
            .bind(kid)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn issue(
        &self,
        family: &NewFamily,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let grant = Grant {
            family: family.clone(),
            access: access.clone(),
            refresh: refresh.clone(),
            audit: audit.clone(),
        };
        self.written(self.grants.submit(grant)).await
    }
    /// Found by the id inside the token, checking the stored hash (migration 0003 says why);
    /// a token minted before ids were embedded by the id that migration gave its row.
    async fn find_refresh(&self, token: &TokenRef) -> StoreResult<Option<RefreshRecord>> {
        let lookup = TokenLookup {
            id: token.refresh_row_id(),
            hash: Some(token.hash.0.to_vec()),
        };
        // A NUL cannot be stored, and in a batch it would fail every lookup with it.
        if !storable(&lookup.id) {
            return Ok(None);
        }
        self.bounded(self.refresh.submit(lookup)).await
    }
    /// Why this is race-free across instances, at `READ COMMITTED` ([`ROTATE_SQL`] is one
    /// statement inside a transaction):
    ///
    /// 1. The family row is updated first, `WHERE revoked_at IS NULL` (the token update reads
    ///    the family's id from that update, so it cannot run before it). That takes the
    ///    family's row lock and holds it until commit. A concurrent rotation (of any token of
    ///    the family) or [`revoke_family`](super::TokenStore::revoke_family) on another instance needs the
    ///    same lock, so they run one after the other, never interleaved. If a revocation
    ///    committed while we waited, PostgreSQL re-checks the `WHERE` against the row's
    ///    newest version, it fails, no family id comes out, and nothing is consumed: `Lost`.
    /// 2. Holding that lock, the token is consumed with a conditional `UPDATE`. Its row may have
    ///    been consumed by another instance after this statement's snapshot was taken; then
    ///    PostgreSQL again re-checks the `WHERE` against the newest version of the row before
    ///    updating it, `consumed_at IS NULL` no longer holds (outside the grace window), and
    ///    this rotation is `Lost`.
    /// 3. The successors and the audit event are inserted from the consumed row, so only if
    ///    the token was consumed; if it was not, the transaction is rolled back, family update
    ///    included. A revocation waiting on the family lock then revokes the family,
    ///    successors included (tokens inherit the family's revocation), so a refresh racing a
    ///    revoke can never leave a live successor of a revoked token.
    ///
    /// The lock order is always family, then token, as in every other writer (the cleanup
    /// skips locked rows), so racing calls queue rather than deadlock.
    ///
    /// Rotations waiting at the same moment are written together
    /// ([`postgres_batch::write_rotations`]): one transaction first locks every family of the
    /// batch and its old token, in family-id order, then consumes and writes in one statement.
    /// The same three guarantees hold, because the statement that checks them runs after the
    /// locks are held and sees every change committed before; a rotation that cannot consume
    /// its token writes nothing. Two rotations of one family are never in the same statement.
    async fn rotate_refresh(
        &self,
        old: &TokenRef,
        reuse_cutoff: UnixTime,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<RotateOutcome> {
        let rotation = Rotation {
            old_id: old.refresh_row_id(),
            old_hash: old.hash.0.to_vec(),
            reuse_cutoff,
            family_expires_at: access.expires_at.max(refresh.expires_at),
            access: access.clone(),
            refresh: refresh.clone(),
            audit: audit.clone(),
        };
        if !storable(&rotation.old_id) {
            return Ok(RotateOutcome::Lost);
        }
        self.written(self.rotations.submit(rotation)).await
    }
    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let revocation = FamilyRevocation {
            family_id: family_id.to_owned(),
            now,
            audit: audit.clone(),
        };
        // A NUL cannot be stored (so no family has it), and in a batch it would fail every
        // revocation with it; the audit event is still recorded, as for any unknown family.
        if !storable(family_id) {
            return self.record_audit(audit).await;
        }
        self.written(self.revocations.submit(revocation)).await
    }
    async fn find_access(&self, key: AccessKey<'_>) -> StoreResult<Option<AccessRecord>> {
        let lookup = match key {
            AccessKey::Opaque(TokenRef { id: Some(id), hash }) => TokenLookup {
                id: id.clone(),
                hash: Some(hash.0.to_vec()),
            },
            AccessKey::Id(id) => TokenLookup {
                id: id.to_owned(),
                hash: None,
            },
            // Minted before ids were embedded: the partial index of such rows (0003). Rare,
            // so not batched.
            AccessKey::Opaque(TokenRef { id: None, hash }) => {
                return self
                    .bounded(async {
                        let mut conn = self.conn().await?;
                        let row: Option<AccessRow> = sqlx::query_as(concat!(
                            "SELECT ",
                            access_columns!(),
                            "FROM access_tokens a ",
                            access_joins!(),
                            "WHERE a.token_hash = $1 AND a.legacy_hash"
                        ))
                        .bind(hash.0.to_vec())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(map_err)?;
                        row.map(AccessRecord::try_from).transpose()
                    })
                    .await;
            }
        };
        // A NUL cannot be stored, and in a batch it would fail every lookup with it.
        if !storable(&lookup.id) {
            return Ok(None);
        }
        self.bounded(self.access.submit(lookup)).await
    }
    async fn revoke_access(&self, id: &str, now: UnixTime, audit: &AuditEvent) -> StoreResult<()> {
        self.written(async {
            let query = sqlx::query(REVOKE_ACCESS_SQL).bind(now).bind(id);
            bind_audit_event(query, audit)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        self.written(async {
            let query = sqlx::query(REVOKE_CLIENT_SQL).bind(now).bind(client_id);
            let n: i64 = bind_audit_event(query, audit)
                .fetch_one(&self.pool)
                .await
                .and_then(|row| sqlx::Row::try_get(&row, 0))
                .map_err(map_err)?;
            Ok(u64::try_from(n).unwrap_or_default())
        })
        .await
    }
    async fn revoke_issued_before(
        &self,
        before: UnixTime,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let audit = audit.clone();
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            let mut n = 0;
            for sql in [
                "UPDATE access_tokens SET revoked_at = $1 WHERE issued_at < $2 AND revoked_at IS NULL",
                // Locked in family-id order first (the lock order of
                // `postgres_batch::write_rotations`).
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE token_id IN (\
                 SELECT token_id FROM refresh_tokens WHERE issued_at < $2 AND revoked_at IS NULL \
                 ORDER BY family_id, token_id FOR NO KEY UPDATE) AND revoked_at IS NULL",
            ] {
                n += sqlx::query(sql)
                    .bind(now)
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
            }
            insert_audit(&mut tx, &audit).await?;
            tx.commit().await.map_err(map_err)?;
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.written(async {
            bind_audit_event(sqlx::query(INSERT_AUDIT_SQL), event)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let texts = [
            q.client_id.as_deref(),
            q.event.as_deref(),
            q.before_id.as_deref(),
        ];
        if texts.into_iter().flatten().any(|t| !storable(t)) {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, at, event, client_id, request_id, source, detail FROM audit_events \
                 WHERE ($1::TEXT IS NULL OR client_id = $1) AND ($2::TEXT IS NULL OR event = $2) \
                 AND ($3::BIGINT IS NULL OR at >= $3) AND ($4::TEXT IS NULL OR id < $4) \
                 ORDER BY id DESC LIMIT $5",
            )
            .bind(&q.client_id)
            .bind(&q.event)
            .bind(q.since)
            .bind(&q.before_id)
            .bind(i64::from(q.limit.clamp(1, 1000)))
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            rows.into_iter().map(AuditEvent::try_from).collect()
        })
        .await
    }
}

#[async_trait]
impl Maintenance for PostgresStore {
    /// Applies the embedded migrations on a connection of its own.
    ///
    /// Several instances may start at once: sqlx's PostgreSQL migrator takes a session-level
    /// `pg_advisory_lock` (keyed on the database name) before it even creates its
    /// `_sqlx_migrations` table, and releases it when done (sqlx-postgres 0.9,
    /// `src/migrate.rs`, `lock`/`unlock`, called first and last by `Migrator::run_direct`). The
    /// others wait on that lock, then find every migration applied. The connection is a pool
    /// of one of its own, closed afterwards, so the session lock cannot outlive a failed run
    /// inside a connection the requests share. No [`OPERATION_TIMEOUT`] here: waiting for
    /// another instance's migration is correct.
    async fn migrate(&self) -> StoreResult<()> {
        let single = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(OPERATION_TIMEOUT)
            // "relation _sqlx_migrations already exists, skipping" on every start is noise.
            .connect_with(
                self.options
                    .clone()
                    .options([("client_min_messages", "warning")]),
            )
            .await
            .map_err(unavailable)?;
        let outcome = MIGRATOR
            .run(&single)
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("migration failed: {e}")));
        single.close().await;
        outcome
    }
    /// Nothing waits for a cleanup round here: it runs on a connection of its own and skips
    /// locked rows. Rounds sized to a few milliseconds shrank to the floor under a saturating
    /// load and the soak's database grew without levelling off; at one batch of audit events a
    /// round the audit trail fell behind (BENCHMARKS.md, "Soak"). So every round is a full
    /// batch and takes as many audit events as token rows.
    fn cleanup_policy(&self) -> CleanupPolicy {
        CleanupPolicy {
            requests_wait: false,
        }
    }
    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        }
    }
    async fn close(&self) {
        self.pool.close().await;
    }
    async fn ping(&self) -> StoreResult<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn purge_audit(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        self.written(async {
            let started = std::time::Instant::now();
            let mut conn = self.conn().await?;
            let done = sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
                 WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before)
            .bind(i64::from(batch))
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(Purged::since(started, done.rows_affected()))
        })
        .await
    }
    /// Every instance runs the cleanup. `FOR UPDATE SKIP LOCKED` makes concurrent runs take
    /// disjoint batches instead of waiting on (or deadlocking with) each other, and never
    /// blocks on a family a request is refreshing at that moment.
    async fn purge_expired(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        const BATCHES: [&str; 3] = [
            "DELETE FROM token_families WHERE family_id IN (SELECT family_id FROM token_families \
             WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM access_tokens WHERE token_id IN (SELECT token_id FROM access_tokens \
             WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM refresh_tokens WHERE token_id IN (SELECT token_id FROM refresh_tokens \
             WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        ];
        self.detached(move |store| async move {
            let started = std::time::Instant::now();
            let mut tx = store.begin().await?;
            let mut deleted = 0;
            for sql in BATCHES {
                deleted += sqlx::query(sql)
                    .bind(before)
                    .bind(i64::from(batch))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
            }
            // A retired key also stays while any token it signed is unexpired, whatever
            // lifetime the process that retired it assumed.
            deleted += sqlx::query(
                "DELETE FROM signing_keys WHERE state = 'retired' AND published_until < $1 \
                 AND NOT EXISTS (SELECT 1 FROM access_tokens a \
                                 WHERE a.signing_kid = signing_keys.kid AND a.expires_at >= $1)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            tx.commit().await.map_err(map_err)?;
            Ok(Purged::since(started, deleted))
        })
        .await
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
