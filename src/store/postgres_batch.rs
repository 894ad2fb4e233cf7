//! Batching on PostgreSQL: group commit for grants, rotations and family revocations, and one
//! query for the lookups that arrive together.
//!
//! A `client_credentials` grant is four inserts. As one statement per grant, PostgreSQL spends
//! most of its time not on the rows but around them: opening four tables and their indexes,
//! building an executor, and flushing its write-ahead log at each commit (profiled in
//! BENCHMARKS.md). So grants waiting at the same moment are written together: one statement
//! that inserts every family, access token, refresh token and audit event of the batch from
//! arrays (`UNNEST`), and one commit. A caller is answered only after that commit, so a `2xx`
//! still means the grant is durable.
//!
//! Batches form by themselves: a collector task takes the first waiting grant, waits for one of
//! [`GRANTS_IN_FLIGHT`] slots, and takes every other grant that arrived meanwhile (up to
//! [`MAX_BATCH`]). Under light load a batch is one grant, written by the one-grant statement.
//!
//! A batch is one statement, so it commits entirely or not at all. If it fails because the
//! database is unavailable, every caller gets that error. If it fails for any other reason (one
//! grant's client was deleted a moment ago, say), the grants are written again one by one, so
//! that only the grant at fault fails.
//!
//! Refresh-token rotations are batched too ([`write_rotations`]), though each takes row locks
//! that decide races with other instances: a batch's transaction first locks all its families
//! and old tokens in family-id order (the lock order every writer keeps, so batches and
//! revocations wait for each other instead of deadlocking), then one statement consumes every
//! old token it can and writes only those rotations' successors. Each caller learns whether its
//! own rotation was written. Family revocations (a refresh token revoked, reuse detected, an
//! operator's revocation of a family) are batched the same way, in the same lock order, as one
//! statement ([`write_revocations`]). The revocation of single access tokens stays one
//! statement each: the revocation of every token issued before a time locks access tokens in
//! no particular order, and it is the rarer request.
//!
//! Every token request also reads its client; introspection and `/ping` read the access token
//! with its family, client and signing key; a refresh (and the introspection of a refresh
//! token) reads the refresh token with its family. Those reads are batched the same way (one
//! query for the lookups of a kind waiting at that moment): each request still reads the
//! database after it arrived, so a client disabled or a token revoked a moment ago is seen, but
//! PostgreSQL parses, plans and runs one statement for many lookups instead of one each.

use std::future::Future;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::queue::{self, QUEUE_TIMEOUT, Ticket};
use super::rows::{AccessRow, ClientRow, RefreshRow};
use super::{
    AccessRecord, NewAccessToken, NewFamily, NewRefreshToken, RotateOutcome, StoreError,
    StoreResult,
};
use crate::domain::audit::AuditEvent;
use crate::domain::client::Client;
use crate::domain::grant::RefreshRecord;

/// Most grants in one statement.
pub const MAX_BATCH: usize = 256;
/// Grant batches being written at once. Each batch costs PostgreSQL a statement and a commit
/// (a log flush) whatever its size, so fewer, larger batches are cheaper; two keep the
/// database busy while the next batch gathers.
pub const GRANTS_IN_FLIGHT: usize = 2;
/// Lookup batches of one kind (clients, access tokens, refresh tokens) being read at once.
pub const READS_IN_FLIGHT: usize = 2;
/// Rotation batches being written at once (as for grants).
pub const ROTATIONS_IN_FLIGHT: usize = 2;
/// Family-revocation batches being written at once.
pub const REVOCATIONS_IN_FLIGHT: usize = 2;

/// The columns of an access-token lookup, its revocation facts folded into `revoked` (token,
/// family, disabled client, revoked signing key), and the tables they come from after
/// `access_tokens a`. Shared by the one-token statements and the batch.
macro_rules! access_columns {
    () => {
        "a.token_id, a.client_id, a.family_id, a.format, a.scope, a.audience, a.issued_at, \
         a.expires_at, (a.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL OR c.disabled \
         OR COALESCE(k.state = 'revoked', FALSE)) AS revoked "
    };
}
macro_rules! access_joins {
    () => {
        "JOIN token_families f ON f.family_id = a.family_id \
         JOIN clients c ON c.client_id = a.client_id \
         LEFT JOIN signing_keys k ON k.kid = a.signing_kid "
    };
}
pub(super) use {access_columns, access_joins};

/// One token lookup: by id, and (for an opaque token) only if the stored hash is this.
pub struct TokenLookup {
    /// The token id (an opaque token's embedded id or its row's key, or a JWT's `jti`).
    pub id: String,
    /// The presented opaque token's hash; `None` for a JWT, whose signature was checked.
    pub hash: Option<Vec<u8>>,
}

/// One grant to write.
pub struct Grant {
    /// The new family.
    pub family: NewFamily,
    /// Its access token.
    pub access: NewAccessToken,
    /// Its refresh token.
    pub refresh: NewRefreshToken,
    /// The audit event.
    pub audit: AuditEvent,
}

/// One refresh-token rotation to write: consume `old_id` (if its hash is `old_hash` and it is
/// unconsumed, or was consumed at or after `reuse_cutoff`), then write the successors and the
/// audit event, and move the family's refresh time and expiry on.
pub struct Rotation {
    /// The old refresh token's row id.
    pub old_id: String,
    /// The presented token's hash.
    pub old_hash: Vec<u8>,
    /// A token consumed at or after this time may be consumed again (the grace window).
    pub reuse_cutoff: i64,
    /// The family's expiry after the rotation, if later than its current one.
    pub family_expires_at: i64,
    /// The new access token (its `issued_at` is the rotation's time).
    pub access: NewAccessToken,
    /// The new refresh token (its `family_id` is the family rotated).
    pub refresh: NewRefreshToken,
    /// The audit event.
    pub audit: AuditEvent,
}

/// One family revocation to write, with its audit event.
pub struct FamilyRevocation {
    /// The family.
    pub family_id: String,
    /// When.
    pub now: i64,
    /// The audit event.
    pub audit: AuditEvent,
}

/// A request waiting in a batcher, with where its answer goes and the ticket that decides
/// whether a batch runs it or its caller withdrew it ([`super::queue`]).
pub struct Pending<T, R> {
    item: T,
    reply: oneshot::Sender<StoreResult<R>>,
    ticket: Ticket,
}

impl<T, R> Pending<T, R> {
    /// Makes the request the batch's to run; false if its caller withdrew it or went away
    /// (the HTTP client disconnected), and nobody would see its answer.
    fn take(&self) -> bool {
        !self.reply.is_closed() && self.ticket.take()
    }
}

/// Writes one grant (the statement for a batch of one, and the fallback).
pub type WriteOne =
    fn(PgPool, Arc<Grant>) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>;

/// Writes one rotation (the statement for a batch of one, and the fallback).
pub type RotateOne =
    fn(
        PgPool,
        Arc<Rotation>,
    ) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<RotateOutcome>> + Send>>;

/// Writes one family revocation (the statement for a batch of one, and the fallback).
pub type RevokeOne = fn(
    PgPool,
    Arc<FamilyRevocation>,
) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>;

/// Collects requests of one kind and runs them in batches (see the module docs).
pub struct Batcher<T, R> {
    queue: mpsc::Sender<Pending<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the collector on the current runtime; `run` handles one batch and answers every
    /// request in it.
    pub fn start<F, Fut>(pool: PgPool, in_flight: usize, run: F) -> Self
    where
        F: Fn(PgPool, Vec<Pending<T, R>>) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(collect(pool, in_flight, run, rx));
        Self { queue }
    }

    /// Queues `item`; returns its answer once its batch is done, or "unavailable" (nothing
    /// run) if no batch took it within [`super::queue::QUEUE_TIMEOUT`].
    ///
    /// # Errors
    /// The batch's error for this request.
    pub async fn submit(&self, item: T) -> StoreResult<R> {
        const WHAT: &str = "the PostgreSQL batcher";
        let (reply, answer) = oneshot::channel();
        let ticket = Ticket::new();
        let pending = Pending {
            item,
            reply,
            ticket: ticket.clone(),
        };
        // The queue holds 4 × MAX_BATCH requests; a full one waits here, within the same
        // bound as the wait for a batch.
        match tokio::time::timeout(QUEUE_TIMEOUT, self.queue.send(pending)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(StoreError::Unavailable(format!("{WHAT} has stopped"))),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "{WHAT}'s queue stayed full for {QUEUE_TIMEOUT:?}; nothing was written"
                )));
            }
        }
        queue::outcome(&ticket, answer, WHAT).await
    }
}

async fn collect<T, R, F, Fut>(
    pool: PgPool,
    in_flight: usize,
    run: F,
    mut rx: mpsc::Receiver<Pending<T, R>>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(PgPool, Vec<Pending<T, R>>) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // The slot first, then the requests: a request is taken only when its batch can start
        // at once, so one that waited for a slot past its queue timeout is skipped, not run.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = loop {
            match rx.recv().await {
                Some(p) if p.take() => break p,
                Some(_) => {}
                None => return,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) if p.take() => batch.push(p),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            run(pool, batch).await;
            drop(slot);
        });
    }
}

/// Writes a batch of grants: all in one statement, or one by one if that fails for a reason
/// other than unavailability. `one` writes a single grant.
pub async fn write_grants(pool: PgPool, batch: Vec<Pending<Grant, ()>>, one: WriteOne) {
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("tessera_postgres_batch_size", "write" => "grant")
        .record(batch.len() as f64);
    if batch.len() > 1 {
        match insert_many(&pool, &batch).await {
            Ok(()) => {
                for p in batch {
                    let _ = p.reply.send(Ok(()));
                }
                return;
            }
            Err(e @ StoreError::Unavailable(_)) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.duplicate()));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, size = batch.len(), "a batch of grants failed; writing them one by one");
            }
        }
    }
    for p in batch {
        let grant = Arc::new(p.item);
        let _ = p.reply.send(one(pool.clone(), grant).await);
    }
}

/// Reads the clients of a batch of lookups with one query.
pub async fn read_clients(pool: PgPool, batch: Vec<Pending<String, Option<Client>>>) {
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("tessera_postgres_read_batch_size", "read" => "client")
        .record(batch.len() as f64);
    let ids: Vec<String> = batch.iter().map(|p| p.item.clone()).collect();
    let found: StoreResult<Vec<Client>> = async {
        let rows: Vec<ClientRow> =
            sqlx::query_as("SELECT * FROM clients WHERE client_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&pool)
                .await
                .map_err(super::postgres::map_err)?;
        rows.into_iter().map(Client::try_from).collect()
    }
    .await;
    match found {
        Ok(clients) => {
            for p in batch {
                let client = clients.iter().find(|c| c.id == p.item).cloned();
                let _ = p.reply.send(Ok(client));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.duplicate()));
            }
        }
    }
}

/// The lookups of a batch as rows numbered from 1 (`WITH ORDINALITY`), for a join that keeps a
/// token only if its id and (when given) its hash match. The number says whose row it is: two
/// lookups of one id with different hashes must not share an answer.
macro_rules! numbered_lookups {
    () => {
        "FROM UNNEST($1::TEXT[], $2::BYTEA[]) WITH ORDINALITY AS p(token_id, token_hash, ord) "
    };
}

/// Access tokens (introspection, `/ping`).
const READ_ACCESS_SQL: &str = concat!(
    "SELECT p.ord, ",
    access_columns!(),
    numbered_lookups!(),
    "JOIN access_tokens a ON a.token_id = p.token_id \
     AND (p.token_hash IS NULL OR a.token_hash = p.token_hash) ",
    access_joins!()
);

/// Refresh tokens with their families (refresh, introspection); the columns of
/// [`RefreshRow`].
const READ_REFRESH_SQL: &str = concat!(
    "SELECT p.ord, r.family_id, r.client_id, r.scope, r.issued_at, r.expires_at, \
     r.consumed_at, (r.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL) AS revoked, \
     f.client_type ",
    numbered_lookups!(),
    "JOIN refresh_tokens r ON r.token_id = p.token_id AND r.token_hash = p.token_hash \
     JOIN token_families f ON f.family_id = r.family_id"
);

/// A row of a numbered lookup: the lookup's number (`ord`) and the row.
struct Numbered<R> {
    ord: i64,
    row: R,
}

impl<'r, R: sqlx::FromRow<'r, PgRow>> sqlx::FromRow<'r, PgRow> for Numbered<R> {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            ord: row.try_get("ord")?,
            row: R::from_row(row)?,
        })
    }
}

/// Reads the access tokens of a batch of lookups with one query.
pub async fn read_access(pool: PgPool, batch: Vec<Pending<TokenLookup, Option<AccessRecord>>>) {
    read_numbered::<AccessRow, _>(pool, READ_ACCESS_SQL, "access_token", batch).await;
}

/// Reads the refresh tokens of a batch of lookups with one query.
pub async fn read_refresh(pool: PgPool, batch: Vec<Pending<TokenLookup, Option<RefreshRecord>>>) {
    read_numbered::<RefreshRow, _>(pool, READ_REFRESH_SQL, "refresh_token", batch).await;
}

/// Runs a numbered lookup `sql` for `batch` and answers each lookup with its own row, or
/// nothing; a failed query is every lookup's error.
async fn read_numbered<Row, Rec>(
    pool: PgPool,
    sql: &'static str,
    kind: &'static str,
    batch: Vec<Pending<TokenLookup, Option<Rec>>>,
) where
    Row: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    Rec: TryFrom<Row, Error = StoreError>,
{
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("tessera_postgres_read_batch_size", "read" => kind)
        .record(batch.len() as f64);
    let ids: Vec<&str> = batch.iter().map(|p| p.item.id.as_str()).collect();
    let hashes: Vec<Option<&[u8]>> = batch.iter().map(|p| p.item.hash.as_deref()).collect();
    let found: StoreResult<Vec<Numbered<Row>>> = sqlx::query_as(sql)
        .bind(&ids)
        .bind(&hashes)
        .fetch_all(&pool)
        .await
        .map_err(super::postgres::map_err);
    let mut answers: Vec<StoreResult<Option<Rec>>> = (0..batch.len()).map(|_| Ok(None)).collect();
    match found {
        Ok(rows) => {
            for n in rows {
                let slot = usize::try_from(n.ord - 1)
                    .ok()
                    .and_then(|i| answers.get_mut(i));
                if let Some(slot) = slot {
                    *slot = Rec::try_from(n.row).map(Some);
                }
            }
        }
        Err(e) => answers.iter_mut().for_each(|a| *a = Err(e.duplicate())),
    }
    for (p, answer) in batch.into_iter().zip(answers) {
        let _ = p.reply.send(answer);
    }
}

/// Every grant of the batch in one statement: family, access token, refresh token and audit
/// event rows from arrays, in the column orders of the one-grant statement.
const INSERT_MANY_SQL: &str = "WITH family AS (\
     INSERT INTO token_families (family_id, client_id, scope, client_type, created_at, expires_at) \
     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], \
     $6::BIGINT[])), \
     access AS (\
     INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
     audience, issued_at, expires_at, signing_kid) \
     SELECT * FROM UNNEST($7::TEXT[], $8::BYTEA[], $9::TEXT[], $10::TEXT[], $11::TEXT[], \
     $12::TEXT[], $13::TEXT[], $14::BIGINT[], $15::BIGINT[], $16::TEXT[])), \
     refresh AS (\
     INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
     expires_at) \
     SELECT * FROM UNNEST($17::TEXT[], $18::BYTEA[], $19::TEXT[], $20::TEXT[], $21::TEXT[], \
     $22::BIGINT[], $23::BIGINT[])) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     SELECT * FROM UNNEST($24::TEXT[], $25::BIGINT[], $26::TEXT[], $27::TEXT[], $28::TEXT[], \
     $29::TEXT[], $30::TEXT[])";

async fn insert_many(pool: &PgPool, batch: &[Pending<Grant, ()>]) -> StoreResult<()> {
    let grants = || batch.iter().map(|p| &p.item);
    let text = |f: fn(&Grant) -> &str| grants().map(|g| f(g).to_owned()).collect::<Vec<_>>();
    let int = |f: fn(&Grant) -> i64| grants().map(f).collect::<Vec<_>>();
    let query = sqlx::query(INSERT_MANY_SQL)
        .bind(text(|g| &g.family.id))
        .bind(text(|g| &g.family.client_id))
        .bind(text(|g| &g.family.scope))
        .bind(text(|g| g.family.client_type.as_str()))
        .bind(int(|g| g.family.created_at))
        .bind(int(|g| g.access.expires_at.max(g.refresh.expires_at)));
    let successors: Vec<_> = grants()
        .map(|g| (&g.access, &g.refresh, &g.audit))
        .collect();
    bind_successors(query, &successors)
        .execute(pool)
        .await
        .map_err(super::postgres::map_err)?;
    Ok(())
}

/// Binds the access tokens, refresh tokens and audit events of a batch as ten, seven and seven
/// arrays, in the column orders of the one-grant statement (`$7`–`$30` of both batch
/// statements).
fn bind_successors<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[(&NewAccessToken, &NewRefreshToken, &AuditEvent)],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let access = || rows.iter().map(|r| r.0);
    let refresh = || rows.iter().map(|r| r.1);
    let owned = |s: &str| s.to_owned();
    let query = query
        .bind(access().map(|a| a.id.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.hash.0.to_vec()).collect::<Vec<_>>())
        .bind(access().map(|a| a.family_id.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.client_id.clone()).collect::<Vec<_>>())
        .bind(
            access()
                .map(|a| owned(a.format.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(access().map(|a| a.scope.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.audience.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.issued_at).collect::<Vec<_>>())
        .bind(access().map(|a| a.expires_at).collect::<Vec<_>>())
        .bind(access().map(|a| a.signing_kid.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.id.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.hash.0.to_vec()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.family_id.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.client_id.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.scope.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.issued_at).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.expires_at).collect::<Vec<_>>());
    let events: Vec<&AuditEvent> = rows.iter().map(|r| r.2).collect();
    bind_audit_events(query, &events)
}

/// Binds audit events as seven arrays, in the column order of `audit_events`.
fn bind_audit_events<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &[&AuditEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let audit = || events.iter();
    query
        .bind(audit().map(|e| e.id.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.at).collect::<Vec<_>>())
        .bind(audit().map(|e| e.event.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.client_id.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.request_id.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.source.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.detail.to_string()).collect::<Vec<_>>())
}

/// Locks the families of a batch of rotations and their old refresh tokens, in the order of
/// the family ids: the lock order every PostgreSQL writer keeps (a family before its tokens;
/// several families, or tokens of several families, in family-id order; see
/// [`write_rotations`]), so that two batches, or a batch and a revocation, wait for each other
/// instead of deadlocking. `$1` the families, `$2` the old tokens' ids.
const LOCK_ROTATIONS_SQL: &str = "SELECT f.family_id \
     FROM UNNEST($1::TEXT[], $2::TEXT[]) AS i(family_id, token_id) \
     JOIN token_families f ON f.family_id = i.family_id \
     JOIN refresh_tokens r ON r.token_id = i.token_id AND r.family_id = f.family_id \
     ORDER BY f.family_id FOR NO KEY UPDATE OF f, r";

/// The columns of an `access_tokens` and of a `refresh_tokens` insert, in the order of the
/// one-grant statement and of [`bind_successors`].
macro_rules! access_insert_columns {
    () => {
        "token_id, token_hash, family_id, client_id, format, scope, audience, issued_at, \
         expires_at, signing_kid"
    };
}
macro_rules! refresh_insert_columns {
    () => {
        "token_id, token_hash, family_id, client_id, scope, issued_at, expires_at"
    };
}
macro_rules! audit_insert_columns {
    () => {
        "id, at, event, client_id, request_id, source, detail"
    };
}

/// Every rotation of a batch in one statement, run after [`LOCK_ROTATIONS_SQL`] in the same
/// transaction (so its snapshot sees every change committed before the locks were granted).
/// `$1`–`$6`: each rotation's time, family expiry, family, old token id, old token hash and
/// reuse cutoff; `$7`–`$30` the successors and audit events ([`bind_successors`]). A rotation
/// is written only if its old token is consumed, which needs the token live (unconsumed, or
/// consumed within the grace window) in a family not revoked; the statement returns the
/// numbers (from 1) of the rotations written. The same conditions as the one-rotation
/// statement, in the opposite order: there the family's update comes first because it is what
/// takes the family's lock.
const ROTATE_MANY_SQL: &str = concat!(
    "WITH i AS (SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], \
     $5::BYTEA[], $6::BIGINT[]) WITH ORDINALITY \
     AS i(now, family_expires_at, family_id, old_id, old_hash, reuse_cutoff, ord)), \
     consumed AS (\
     UPDATE refresh_tokens r SET consumed_at = COALESCE(r.consumed_at, i.now) \
     FROM i JOIN token_families f ON f.family_id = i.family_id AND f.revoked_at IS NULL \
     WHERE r.token_id = i.old_id AND r.token_hash = i.old_hash AND r.family_id = i.family_id \
     AND r.revoked_at IS NULL AND (r.consumed_at IS NULL OR r.consumed_at >= i.reuse_cutoff) \
     RETURNING i.ord), \
     family AS (\
     UPDATE token_families f SET refreshed_at = i.now, \
     expires_at = GREATEST(f.expires_at, i.family_expires_at) \
     FROM i JOIN consumed c ON c.ord = i.ord WHERE f.family_id = i.family_id), \
     access AS (INSERT INTO access_tokens (",
    access_insert_columns!(),
    ") SELECT ",
    access_insert_columns!(),
    " FROM UNNEST($7::TEXT[], $8::BYTEA[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], \
     $13::TEXT[], $14::BIGINT[], $15::BIGINT[], $16::TEXT[]) WITH ORDINALITY AS a(",
    access_insert_columns!(),
    ", ord) JOIN consumed USING (ord)), \
     refresh AS (INSERT INTO refresh_tokens (",
    refresh_insert_columns!(),
    ") SELECT ",
    refresh_insert_columns!(),
    " FROM UNNEST($17::TEXT[], $18::BYTEA[], $19::TEXT[], $20::TEXT[], $21::TEXT[], \
     $22::BIGINT[], $23::BIGINT[]) WITH ORDINALITY AS r(",
    refresh_insert_columns!(),
    ", ord) JOIN consumed USING (ord)), \
     audit AS (INSERT INTO audit_events (",
    audit_insert_columns!(),
    ") SELECT ",
    audit_insert_columns!(),
    " FROM UNNEST($24::TEXT[], $25::BIGINT[], $26::TEXT[], $27::TEXT[], $28::TEXT[], \
     $29::TEXT[], $30::TEXT[]) WITH ORDINALITY AS e(",
    audit_insert_columns!(),
    ", ord) JOIN consumed USING (ord)) \
     SELECT ord FROM consumed"
);

/// Writes a batch of rotations.
///
/// A statement rotates at most one token per family: a row can be updated only once in a
/// statement, and a second rotation of a family waiting at the same moment (a client retrying
/// within the grace window, or a replayed token) must see the first one's outcome, as it would
/// one request after the other. So the batch is written in rounds, each taking the first
/// waiting rotation of every family, in arrival order.
///
/// A round of one is the one-rotation statement (`one`). A larger round is a transaction of two
/// statements: [`LOCK_ROTATIONS_SQL`] takes the row locks in family-id order, then
/// [`ROTATE_MANY_SQL`] writes every rotation whose old token it can consume; a rotation that
/// cannot (revoked, consumed by another instance, wrong hash) is `Lost` and writes nothing,
/// the family's row included. If the round fails for a reason other than unavailability, its
/// rotations are written again one by one, so only the one at fault fails.
///
/// The lock order, kept by every PostgreSQL writer that locks more than one row of these
/// tables: a family before its refresh tokens, and families (or the tokens of several
/// families) in family-id order. The one-rotation statement locks its family, then its token;
/// a family revocation locks one family; a client's revocation and deletion lock its families
/// in order; the revocation of everything issued before a time locks refresh tokens in
/// family-id order; the cleanup skips locked rows.
pub async fn write_rotations(
    pool: PgPool,
    mut batch: Vec<Pending<Rotation, RotateOutcome>>,
    one: RotateOne,
) {
    while !batch.is_empty() {
        let mut families = std::collections::HashSet::new();
        let (round, later): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|p| families.insert(p.item.refresh.family_id.clone()));
        rotate_round(&pool, round, one).await;
        batch = later;
    }
}

/// One round of [`write_rotations`]: rotations of distinct families.
async fn rotate_round(pool: &PgPool, round: Vec<Pending<Rotation, RotateOutcome>>, one: RotateOne) {
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("tessera_postgres_batch_size", "write" => "rotation")
        .record(round.len() as f64);
    if round.len() > 1 {
        match rotate_many(pool, &round).await {
            Ok(written) => {
                for (ord, p) in (1_i64..).zip(round) {
                    let outcome = if written.contains(&ord) {
                        RotateOutcome::Rotated
                    } else {
                        RotateOutcome::Lost
                    };
                    let _ = p.reply.send(Ok(outcome));
                }
                return;
            }
            Err(e @ StoreError::Unavailable(_)) => {
                for p in round {
                    let _ = p.reply.send(Err(e.duplicate()));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, size = round.len(), "a batch of rotations failed; writing them one by one");
            }
        }
    }
    for p in round {
        let rotation = Arc::new(p.item);
        let _ = p.reply.send(one(pool.clone(), rotation).await);
    }
}

/// The transaction of a round of more than one rotation; returns the numbers (from 1) of the
/// rotations written.
async fn rotate_many(
    pool: &PgPool,
    round: &[Pending<Rotation, RotateOutcome>],
) -> StoreResult<std::collections::HashSet<i64>> {
    use super::postgres::map_err;
    let rotations = || round.iter().map(|p| &p.item);
    let families: Vec<&str> = rotations().map(|r| r.refresh.family_id.as_str()).collect();
    let old_ids: Vec<&str> = rotations().map(|r| r.old_id.as_str()).collect();
    let mut tx = pool.begin().await.map_err(super::postgres::unavailable)?;
    sqlx::query(LOCK_ROTATIONS_SQL)
        .bind(&families)
        .bind(&old_ids)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let query = sqlx::query(ROTATE_MANY_SQL)
        .bind(rotations().map(|r| r.refresh.issued_at).collect::<Vec<_>>())
        .bind(rotations().map(|r| r.family_expires_at).collect::<Vec<_>>())
        .bind(&families)
        .bind(&old_ids)
        .bind(
            rotations()
                .map(|r| r.old_hash.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(rotations().map(|r| r.reuse_cutoff).collect::<Vec<_>>());
    let successors: Vec<_> = rotations()
        .map(|r| (&r.access, &r.refresh, &r.audit))
        .collect();
    let written = bind_successors(query, &successors)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(written)
}

/// Revokes the families of a batch and records every request's audit event, in one statement.
/// The families are locked in family-id order first (the lock order of [`write_rotations`]),
/// and only then updated. A family named twice is revoked once (either time will do: both are
/// this moment), and each request's event is recorded, as one by one. `$1` the families, `$2`
/// each one's time, `$3`–`$9` the events.
const REVOKE_FAMILIES_SQL: &str = concat!(
    "WITH locked AS (\
     SELECT family_id FROM token_families WHERE family_id = ANY($1::TEXT[]) \
     ORDER BY family_id FOR NO KEY UPDATE), \
     done AS (\
     UPDATE token_families f SET revoked_at = i.now \
     FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS i(family_id, now) \
     WHERE f.family_id = i.family_id AND f.family_id IN (SELECT family_id FROM locked) \
     AND f.revoked_at IS NULL) \
     INSERT INTO audit_events (",
    audit_insert_columns!(),
    ") SELECT * FROM UNNEST($3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], \
     $8::TEXT[], $9::TEXT[])"
);

/// Writes a batch of family revocations: in one statement and one commit, or one by one if
/// that fails for a reason other than unavailability (as [`write_grants`]).
pub async fn write_revocations(
    pool: PgPool,
    batch: Vec<Pending<FamilyRevocation, ()>>,
    one: RevokeOne,
) {
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("tessera_postgres_batch_size", "write" => "revocation")
        .record(batch.len() as f64);
    if batch.len() > 1 {
        let revocations = || batch.iter().map(|p| &p.item);
        let events: Vec<&AuditEvent> = revocations().map(|r| &r.audit).collect();
        let query = sqlx::query(REVOKE_FAMILIES_SQL)
            .bind(
                revocations()
                    .map(|r| r.family_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(revocations().map(|r| r.now).collect::<Vec<_>>());
        let done = bind_audit_events(query, &events)
            .execute(&pool)
            .await
            .map_err(super::postgres::map_err);
        match done {
            Ok(_) => {
                for p in batch {
                    let _ = p.reply.send(Ok(()));
                }
                return;
            }
            Err(e @ StoreError::Unavailable(_)) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.duplicate()));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, size = batch.len(), "a batch of revocations failed; writing them one by one");
            }
        }
    }
    for p in batch {
        let revocation = Arc::new(p.item);
        let _ = p.reply.send(one(pool.clone(), revocation).await);
    }
}
