//! Batching on PostgreSQL: group commit for grants, and one query for the client lookups that
//! arrive together.
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
//! that only the grant at fault fails. Only inserts of fresh keys are batched; refresh and
//! revocation take row locks and stay one statement per request.
//!
//! Every token request also reads its client; introspection and `/ping` read the access token
//! with its family, client and signing key; a refresh (and the introspection of a refresh
//! token) reads the refresh token with its family. Those reads are batched the same way (one
//! query for the lookups of a kind waiting at that moment): each request still reads the
//! database after it arrived, so a client disabled or a token revoked a moment ago is seen, but
//! PostgreSQL parses, plans and runs one statement for many lookups instead of one each. The
//! refresh read only finds the token; the rotation itself stays one conditional statement per
//! request, which decides races.

use std::future::Future;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::rows::{AccessRow, ClientRow, RefreshRow};
use super::{AccessRecord, NewAccessToken, NewFamily, NewRefreshToken, StoreError, StoreResult};
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

/// A request waiting in a batcher, with where its answer goes.
pub struct Pending<T, R> {
    item: T,
    reply: oneshot::Sender<StoreResult<R>>,
}

/// Writes one grant (the statement for a batch of one, and the fallback).
pub type WriteOne =
    fn(PgPool, Arc<Grant>) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>;

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

    /// Queues `item`; returns its answer once its batch is done.
    ///
    /// # Errors
    /// The batch's error for this request.
    pub async fn submit(&self, item: T) -> StoreResult<R> {
        let stopped = || StoreError::Unavailable("the PostgreSQL batch writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { item, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
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
    metrics::histogram!("tessera_postgres_batch_size").record(batch.len() as f64);
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
    let opt = |f: fn(&Grant) -> Option<&str>| {
        grants()
            .map(|g| f(g).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let bytes = |f: fn(&Grant) -> &[u8]| grants().map(|g| f(g).to_vec()).collect::<Vec<_>>();
    sqlx::query(INSERT_MANY_SQL)
        .bind(text(|g| &g.family.id))
        .bind(text(|g| &g.family.client_id))
        .bind(text(|g| &g.family.scope))
        .bind(text(|g| g.family.client_type.as_str()))
        .bind(int(|g| g.family.created_at))
        .bind(int(|g| g.access.expires_at.max(g.refresh.expires_at)))
        .bind(text(|g| &g.access.id))
        .bind(bytes(|g| &g.access.hash.0))
        .bind(text(|g| &g.access.family_id))
        .bind(text(|g| &g.access.client_id))
        .bind(text(|g| g.access.format.as_str()))
        .bind(text(|g| &g.access.scope))
        .bind(text(|g| &g.access.audience))
        .bind(int(|g| g.access.issued_at))
        .bind(int(|g| g.access.expires_at))
        .bind(opt(|g| g.access.signing_kid.as_deref()))
        .bind(text(|g| &g.refresh.id))
        .bind(bytes(|g| &g.refresh.hash.0))
        .bind(text(|g| &g.refresh.family_id))
        .bind(text(|g| &g.refresh.client_id))
        .bind(text(|g| &g.refresh.scope))
        .bind(int(|g| g.refresh.issued_at))
        .bind(int(|g| g.refresh.expires_at))
        .bind(text(|g| &g.audit.id))
        .bind(int(|g| g.audit.at))
        .bind(text(|g| &g.audit.event))
        .bind(opt(|g| g.audit.client_id.as_deref()))
        .bind(opt(|g| g.audit.request_id.as_deref()))
        .bind(opt(|g| g.audit.source.as_deref()))
        .bind(
            grants()
                .map(|g| g.audit.detail.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await
        .map_err(super::postgres::map_err)?;
    Ok(())
}
