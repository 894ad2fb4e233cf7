//! Family revocations (a refresh token revoked, reuse detected, an operator's revocation of a
//! family), for one family and for a batch, in the lock order of [`super::rotations`]. The
//! revocation of single access tokens stays one statement each ([`super::tokens`]): the
//! revocation of every token issued before a time locks access tokens in no particular order,
//! and it is the rarer request.

use sqlx::postgres::PgPool;

use super::super::StoreResult;
use super::super::rows::bind_audit_event;
use super::audit::bind_audit_events;
use super::batch::BatchOp;
use super::map_err;
use super::rotations::audit_insert_columns;
use crate::domain::audit::AuditEvent;

/// One family revocation to write, with its audit event.
pub struct FamilyRevocation {
    /// The family.
    pub family_id: String,
    /// When.
    pub now: i64,
    /// The audit event.
    pub audit: AuditEvent,
}

/// Family revocations, batched.
pub struct Revocations;

impl BatchOp for Revocations {
    type Item = FamilyRevocation;
    type Out = ();
    const METRIC: (&'static str, &'static str, &'static str) =
        ("tessera_postgres_batch_size", "write", "revocation");
    const ONE_BY_ONE: bool = true;

    /// [`REVOKE_FAMILIES_SQL`]: one statement and one commit.
    async fn many(pool: &PgPool, batch: &[&FamilyRevocation]) -> StoreResult<Vec<StoreResult<()>>> {
        let events: Vec<&AuditEvent> = batch.iter().map(|r| &r.audit).collect();
        let query = sqlx::query(REVOKE_FAMILIES_SQL)
            .bind(
                batch
                    .iter()
                    .map(|r| r.family_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|r| r.now).collect::<Vec<_>>());
        bind_audit_events(query, &events)
            .execute(pool)
            .await
            .map_err(map_err)?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    /// [`REVOKE_FAMILY_SQL`].
    async fn one(pool: &PgPool, r: &FamilyRevocation) -> StoreResult<()> {
        let query = sqlx::query(REVOKE_FAMILY_SQL)
            .bind(r.now)
            .bind(&r.family_id);
        bind_audit_event(query, &r.audit)
            .execute(pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// Revokes a family ($1 now, $2 family) and records the audit event ($3–$9).
const REVOKE_FAMILY_SQL: &str = "WITH done AS (\
     UPDATE token_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL \
     RETURNING 1) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($3, $4, $5, $6, $7, $8, $9)";

/// Revokes the families of a batch and records every request's audit event, in one statement.
/// The families are locked in family-id order first (the lock order of [`super::rotations`]),
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
