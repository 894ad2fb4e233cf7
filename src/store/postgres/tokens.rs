//! Tokens on PostgreSQL: grants, rotations and family revocations go through their batchers
//! ([`super::grants`], [`super::rotations`], [`super::revocations`]), lookups through theirs
//! ([`super::lookups`]); the rarer revocations are one statement or transaction each.

use async_trait::async_trait;

use super::super::rows::bind_audit_event;
use super::super::{
    AccessKey, AccessRecord, AuditStore as _, NewAccessToken, NewFamily, NewRefreshToken,
    RotateOutcome, StoreResult, TokenStore,
};
use super::audit::insert_audit;
use super::grants::Grant;
use super::lookups::TokenLookup;
use super::revocations::FamilyRevocation;
use super::rotations::Rotation;
use super::{PostgresStore, map_err, storable};
use crate::domain::audit::AuditEvent;
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::token::TokenRef;

// The hot-path writes below are each **one** statement: PostgreSQL's data-modifying `WITH`
// runs every part exactly once, atomically, and checks foreign keys at the end of the
// statement, so a grant that took `BEGIN`, four `INSERT`s and `COMMIT` (six round trips, each
// costing the server a protocol exchange and a context switch) takes one. Values are bound by
// the `bind_*` helpers of `rows.rs`, in their documented order, so each part's placeholders
// are consecutive.

/// Revokes an access token ($1 now, $2 token id) and records the audit event ($3–$9).
const REVOKE_ACCESS_SQL: &str = "WITH done AS (\
     UPDATE access_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL \
     RETURNING 1) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($3, $4, $5, $6, $7, $8, $9)";

/// Revokes every family of a client ($1 now, $2 client) and records the audit event
/// ($3–$9); returns how many families.
/// The families are locked in family-id order first (the lock order of
/// [`super::rotations`]).
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
    /// Found by the id inside the token, checking the stored hash.
    async fn find_refresh(&self, token: &TokenRef) -> StoreResult<Option<RefreshRecord>> {
        let lookup = TokenLookup {
            id: token.id.clone(),
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
    ///    the family) or [`revoke_family`](crate::store::TokenStore::revoke_family) on another instance needs the
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
    /// ([`super::rotations`]): one transaction first locks every family of the
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
            old_id: old.id.clone(),
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
            AccessKey::Opaque(TokenRef { id, hash }) => TokenLookup {
                id: id.clone(),
                hash: Some(hash.0.to_vec()),
            },
            AccessKey::Id(id) => TokenLookup {
                id: id.to_owned(),
                hash: None,
            },
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
                // `super::rotations`).
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
