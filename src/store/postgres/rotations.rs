//! Refresh-token rotations: consume the old token and write its successors, for one rotation
//! and for a batch.
//!
//! Rotations are batched ([`super::batch`]) though each takes row locks that decide races with
//! other instances: a batch's transaction first locks all its families and old tokens in
//! family-id order (the lock order every writer keeps, so batches and revocations wait for each
//! other instead of deadlocking), then one statement consumes every old token it can and writes
//! only those rotations' successors. Each caller learns whether its own rotation was written.

use sqlx::Row as _;
use sqlx::postgres::PgPool;

use super::super::rows::{bind_access_token, bind_audit_event, bind_refresh_token};
use super::super::{NewAccessToken, NewRefreshToken, RotateOutcome, StoreResult};
use super::batch::BatchOp;
use super::grants::bind_successors;
use super::{map_err, unavailable};
use crate::domain::audit::AuditEvent;

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

/// A statement rotates at most one token per family: a row can be updated only once in a
/// statement, and a second rotation of a family waiting at the same moment (a client retrying
/// within the grace window, or a replayed token) must see the first one's outcome, as it would
/// one request after the other. So the batch is written in rounds, each taking the first
/// waiting rotation of every family, in arrival order.
///
/// A round of one is the one-rotation statement ([`ROTATE_SQL`]). A larger round is a transaction of two
/// statements: [`LOCK_ROTATIONS_SQL`] takes the row locks in family-id order, then
/// [`ROTATE_MANY_SQL`] writes every rotation whose old token it can consume; a rotation that
/// cannot (revoked, consumed by another instance, wrong hash) is `Lost` and writes nothing,
/// the family's row included. If the round fails for a reason other than unavailability, its
/// rotations are written again one by one, so only the one at fault fails.
///
/// The lock order, kept by every PostgreSQL writer that locks more than one row of these
/// tables: a family before its refresh tokens, and families (or the tokens of several
/// families) in family-id order. The one-rotation statement locks its family, then its token;
/// a family revocation locks one family; a client's revocation locks its families in order,
/// and its deletion the client row (`FOR NO KEY UPDATE`), then its families in order; the
/// revocation of everything issued before a time locks refresh tokens in
/// family-id order; the cleanup skips locked rows.
pub struct Rotations;

impl BatchOp for Rotations {
    type Item = Rotation;
    type Out = RotateOutcome;
    const METRIC: (&'static str, &'static str, &'static str) =
        ("tessera_postgres_batch_size", "write", "rotation");
    const ONE_BY_ONE: bool = true;

    async fn many(
        pool: &PgPool,
        round: &[&Rotation],
    ) -> StoreResult<Vec<StoreResult<RotateOutcome>>> {
        let written = rotate_many(pool, round).await?;
        Ok((1_i64..)
            .zip(round)
            .map(|(ord, _)| {
                Ok(if written.contains(&ord) {
                    RotateOutcome::Rotated
                } else {
                    RotateOutcome::Lost
                })
            })
            .collect())
    }

    /// [`ROTATE_SQL`] in a transaction of its own. [`super::super::TokenStore::rotate_refresh`]
    /// on [`super::PostgresStore`] says why it is race-free.
    async fn one(pool: &PgPool, r: &Rotation) -> StoreResult<RotateOutcome> {
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
            .bind(r.access.dpop_jkt.clone())
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
    }

    /// A statement rotates at most one token per family: a row can be updated only once in a
    /// statement, and a second rotation of a family waiting at the same moment (a client
    /// retrying within the grace window, or a replayed token) must see the first one's outcome,
    /// as it would one request after the other.
    fn round_key(r: &Rotation) -> Option<&str> {
        Some(&r.refresh.family_id)
    }
}

/// Rotates a refresh token: $1 now, $2 the family's new expiry, $3 the family, $4 the old
/// token's row id, $5 its hash, $6 the reuse cutoff; the successors ($7–$16 and the access
/// token's `dpop_jkt` $31, $17–$23) and the audit event ($24–$30) are inserted only if the old
/// token was consumed. Returns how many
/// tokens were consumed (0 or 1). [`super::tokens`] says why this is race-free.
const ROTATE_SQL: &str = "WITH family AS (\
     UPDATE token_families SET refreshed_at = $1, expires_at = GREATEST(expires_at, $2) \
     WHERE family_id = $3 AND revoked_at IS NULL RETURNING family_id), \
     consumed AS (\
     UPDATE refresh_tokens SET consumed_at = COALESCE(consumed_at, $1) \
     WHERE token_id = $4 AND token_hash = $5 AND family_id = (SELECT family_id FROM family) \
     AND revoked_at IS NULL AND (consumed_at IS NULL OR consumed_at >= $6) RETURNING 1), \
     access AS (\
     INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
     audience, issued_at, expires_at, signing_kid, dpop_jkt) \
     SELECT $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $31 FROM consumed), \
     refresh AS (\
     INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
     expires_at) SELECT $17, $18, $19, $20, $21, $22, $23 FROM consumed), \
     audit AS (\
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     SELECT $24, $25, $26, $27, $28, $29, $30 FROM consumed) \
     SELECT COUNT(*) FROM consumed";

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
         expires_at, signing_kid, dpop_jkt"
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
pub(super) use audit_insert_columns;

/// Every rotation of a batch in one statement, run after [`LOCK_ROTATIONS_SQL`] in the same
/// transaction (so its snapshot sees every change committed before the locks were granted).
/// `$1`–`$6`: each rotation's time, family expiry, family, old token id, old token hash and
/// reuse cutoff; `$7`–`$31` the successors and audit events ([`bind_successors`]). A rotation
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
     $13::TEXT[], $14::BIGINT[], $15::BIGINT[], $16::TEXT[], $31::TEXT[]) WITH ORDINALITY AS a(",
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

/// The transaction of a round of more than one rotation; returns the numbers (from 1) of the
/// rotations written.
async fn rotate_many(
    pool: &PgPool,
    round: &[&Rotation],
) -> StoreResult<std::collections::HashSet<i64>> {
    let rotations = || round.iter().copied();
    let families: Vec<&str> = rotations().map(|r| r.refresh.family_id.as_str()).collect();
    let old_ids: Vec<&str> = rotations().map(|r| r.old_id.as_str()).collect();
    let mut tx = pool.begin().await.map_err(unavailable)?;
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
