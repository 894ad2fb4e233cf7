//! The store conformance suite: every test in `suite.rs` runs unchanged against SQLite (a temp
//! file) and against PostgreSQL (a fresh database), so the two backends cannot drift.
//!
//! PostgreSQL tests need the server CI starts (see `tests/common/pg.rs`): without it they fail
//! when `CI` is set and are skipped loudly otherwise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../common/pg.rs"]
mod pg;
mod suite;

use std::sync::Arc;

use tessera::store::postgres::PostgresStore;
use tessera::store::sqlite::SqliteStore;
use tessera::store::{KeyStore as _, Maintenance as _, Store};

/// Keeps a test's database alive until the test ends.
#[allow(dead_code)]
enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres(pg::TestDb),
}

async fn sqlite_store() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), Guard::Sqlite(dir))
}

/// `None`: PostgreSQL is unreachable and this is not CI (skip).
async fn postgres_store() -> Option<(Arc<dyn Store>, Guard)> {
    let db = pg::TestDb::create().await?;
    let store = PostgresStore::open(&db.url, 16).await.unwrap();
    store.migrate().await.unwrap();
    Some((Arc::new(store), Guard::Postgres(db)))
}

/// Instantiates each suite function once per backend, as `sqlite::<name>` and
/// `postgres::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _guard) = crate::sqlite_store().await;
                    crate::suite::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((store, _guard)) = crate::postgres_store().await else { return };
                    crate::suite::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    migrations_can_run_again,
    clients_round_trip_every_field,
    client_auth_settings_round_trip,
    a_duplicate_client_id_is_a_conflict,
    issued_tokens_are_found_by_hash_and_by_id,
    a_refresh_token_rotates_once,
    the_grace_window_counts_from_the_first_use,
    a_revoked_family_cannot_rotate,
    revoking_a_family_revokes_its_successors,
    revoking_an_access_token_revokes_only_it,
    a_disabled_client_s_tokens_read_as_revoked,
    a_client_update_from_a_stale_copy_writes_nothing,
    deleting_a_client_deletes_its_tokens,
    signing_keys_follow_their_lifecycle,
    revoking_a_key_revokes_the_jwts_it_signed,
    meta_keeps_the_first_value_and_replaces_only_what_it_expects,
    the_cleanup_deletes_only_expired_and_revoked_rows,
    the_cleanup_works_in_batches,
    racing_rotations_of_one_token_rotate_it_once,
    a_rotation_racing_a_revocation_leaves_no_live_successor,
    instances_creating_the_first_key_at_once_agree_on_one,
    clients_are_listed_a_page_at_a_time,
    a_client_s_tokens_are_revoked_together,
    tokens_issued_before_a_time_are_revoked,
    audit_events_are_recorded_queried_and_purged,
    pool_figures_are_reported,
    concurrent_grants_commit_together_and_fail_alone,
    token_lookups_made_together_each_get_their_own_answer,
    rotations_made_together_each_get_their_own_outcome,
    family_revocations_made_together_are_each_written,
    dpop_bindings_are_stored_with_grants_and_rotations,
    a_jwt_id_is_used_once,
    an_expired_jwt_id_may_be_used_again,
    a_forgotten_jwt_id_may_be_used_again,
    concurrent_first_uses_of_one_jwt_id_let_one_through,
    the_cleanup_deletes_expired_jwt_ids,
);

/// PostgreSQL only: what the conformance suite cannot see (several instances on one database,
/// connections killed or abandoned, rows read directly).
mod postgres_only {
    use super::*;

    /// A fresh PostgreSQL store, and a connection of the test's own to read its rows directly.
    async fn postgres_store_with_witness() -> Option<(Arc<dyn Store>, Guard, sqlx::PgConnection)> {
        let (store, guard) = postgres_store().await?;
        let Guard::Postgres(db) = &guard else {
            unreachable!()
        };
        let witness = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        Some((store, guard, witness))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_migrating_at_once_apply_each_migration_once() {
        let Some(db) = pg::TestDb::create().await else {
            return;
        };
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let url = db.url.clone();
            tasks.push(tokio::spawn(async move {
                let store = PostgresStore::open(&url, 2).await?;
                store.migrate().await?;
                store.meta_insert_or_get("probe", "x").await
            }));
        }
        for task in tasks {
            task.await
                .unwrap()
                .expect("every instance migrates without error");
        }
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let shipped =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
                .unwrap()
                .count();
        assert_eq!(applied, i64::try_from(shipped).unwrap());
    }

    /// A store call abandoned half-way (the HTTP client disconnected, or the operation
    /// timeout fired) must not leave its pooled connection inside a transaction: the next
    /// statement on that connection would run in it, answer as if committed, and be rolled
    /// back later. Rotations are abandoned at many points, and after each a grant must be
    /// visible from another connection at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_calls_leave_no_transaction_open() {
        use suite::{DAY, HOUR, T0};
        use tessera::domain::clock::UnixTime;
        let Some((store, _guard, mut witness)) = postgres_store_with_witness().await else {
            return;
        };
        let c = suite::new_client(store.as_ref()).await;
        for round in 0..600_i64 {
            let g = suite::grant_at(&c.id, T0 + round, HOUR, DAY);
            suite::issue(store.as_ref(), &g).await;
            let a = suite::access_token(&g.family.id, &c.id, T0 + round + 1, HOUR);
            let r = suite::refresh_token(&g.family.id, &c.id, T0 + round + 1, DAY);
            let rotating = {
                let store = store.clone();
                let old = g.refresh.key();
                async move {
                    store
                        .rotate_refresh(&old, UnixTime::MAX, &a, &r, &suite::ev())
                        .await
                }
            };
            let after = std::time::Duration::from_micros(u64::try_from(round % 41).unwrap() * 15);
            let _ = tokio::time::timeout(after, rotating).await;
            let fresh = suite::grant_at(&c.id, T0 + round, HOUR, DAY);
            suite::issue(store.as_ref(), &fresh).await;
            let seen: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = $1")
                    .bind(fresh.refresh.hash.0.to_vec())
                    .fetch_one(&mut witness)
                    .await
                    .unwrap();
            assert_eq!(seen, 1, "round {round}: a grant answered Ok is committed");
        }
    }

    /// A rotation that loses (the token was already used) writes nothing, not even the family
    /// update its statement begins with: the family keeps the refresh time and expiry of the
    /// rotation that won. (The store suite can only see the tokens; this reads the row.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_rotation_leaves_its_family_untouched() {
        use suite::{DAY, HOUR, T0};
        use tessera::domain::clock::UnixTime;
        use tessera::store::RotateOutcome;
        let Some((store, _guard, mut witness)) = postgres_store_with_witness().await else {
            return;
        };
        let c = suite::new_client(store.as_ref()).await;
        let g = suite::grant_at(&c.id, T0, HOUR, DAY);
        suite::issue(store.as_ref(), &g).await;
        let family_sql = "SELECT refreshed_at, expires_at FROM token_families WHERE family_id = $1";
        let family =
            || sqlx::query_as::<_, (Option<i64>, i64)>(family_sql).bind(g.family.id.clone());
        let rotate = |at: i64, refresh_ttl: i64| {
            let a = suite::access_token(&g.family.id, &c.id, at, HOUR);
            let r = suite::refresh_token(&g.family.id, &c.id, at, refresh_ttl);
            let (store, old) = (store.clone(), g.refresh.key());
            async move {
                store
                    .rotate_refresh(&old, UnixTime::MAX, &a, &r, &suite::ev())
                    .await
                    .unwrap()
            }
        };
        assert_eq!(rotate(T0 + 60, 2 * DAY).await, RotateOutcome::Rotated);
        let won = (Some(T0 + 60), T0 + 60 + 2 * DAY);
        assert_eq!(family().fetch_one(&mut witness).await.unwrap(), won);
        assert_eq!(rotate(T0 + 120, 3 * DAY).await, RotateOutcome::Lost);
        assert_eq!(family().fetch_one(&mut witness).await.unwrap(), won);
        // The connection that carried the failed statement is fine for the next request.
        let next = suite::grant_at(&c.id, T0 + 130, HOUR, DAY);
        suite::issue(store.as_ref(), &next).await;
    }

    /// Two instances rotate the same tokens in batches while a client's tokens are revoked,
    /// everything issued before a time is revoked, a client is deleted, and both instances
    /// revoke another client's families one by one, all at once. The
    /// family ids are in another order than the rows were written, so a writer that locked
    /// rows in the order it finds them would deadlock with one that locks in id order (and
    /// PostgreSQL would abort one of them: an error here). Every call must answer, every token
    /// rotate at most once, and a lost rotation leave its family's row as the winner wrote it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_rotating_in_batches_while_revoking_neither_deadlock_nor_rotate_twice() {
        use suite::{DAY, HOUR, T0};
        use tessera::domain::clock::UnixTime;
        use tessera::domain::token::{TokenHash, TokenRef};
        use tessera::store::RotateOutcome;
        let Some((one, guard, mut witness)) = postgres_store_with_witness().await else {
            return;
        };
        let Guard::Postgres(db) = &guard else {
            unreachable!()
        };
        let other: Arc<dyn Store> = Arc::new(PostgresStore::open(&db.url, 16).await.unwrap());
        // Rounds of fresh clients: a deadlock needs an unlucky interleaving.
        for _ in 0..4 {
            let clients = [
                suite::new_client(one.as_ref()).await,
                suite::new_client(one.as_ref()).await,
                suite::new_client(one.as_ref()).await,
                suite::new_client(one.as_ref()).await,
            ];
            let mut grants = Vec::new();
            for (n, c) in clients.iter().enumerate() {
                // Client 1's tokens are older: the revocation of what was issued before `T0 - 5`
                // takes them (and only them).
                let issued = if n == 1 { T0 - 10 } else { T0 };
                for i in 0..120 {
                    let mut g = suite::grant_at(&c.id, issued, HOUR, DAY);
                    // Ids in another order than the rows' (a time-ordered id reversed).
                    let id: String = g.family.id.chars().rev().collect();
                    (g.family.id, g.access.family_id, g.refresh.family_id) =
                        (id.clone(), id.clone(), id);
                    suite::issue(one.as_ref(), &g).await;
                    grants.push((n, i, g, issued));
                }
            }
            let (won_at, lost_at) = (T0 + 60, T0 + 120);
            let mut rotations = Vec::new();
            for (n, i, g, _) in &grants {
                let forged = TokenRef {
                    id: g.refresh.key().id,
                    hash: TokenHash::of(&format!("forged {n} {i}")),
                };
                // Both instances rotate the token; one of them may also see a forged copy, which
                // would move the family's times further if it wrote anything.
                for (store, old, at) in [
                    (&one, g.refresh.key(), won_at),
                    (&other, g.refresh.key(), won_at),
                    (&one, forged, lost_at),
                ] {
                    let (store, c) = (store.clone(), clients[*n].id.clone());
                    let a = suite::access_token(&g.family.id, &c, at, HOUR);
                    let r = suite::refresh_token(&g.family.id, &c, at, (at - T0) * DAY);
                    let key = (*n, *i);
                    rotations.push(tokio::spawn(async move {
                        let outcome = store
                            .rotate_refresh(&old, UnixTime::MAX, &a, &r, &suite::ev())
                            .await;
                        (key, outcome, r.key())
                    }));
                }
            }
            let revocations = {
                let (one, other) = (one.clone(), other.clone());
                let (revoked, deleted) = (clients[1].id.clone(), clients[2].id.clone());
                let (ev1, ev2) = (suite::ev(), suite::ev());
                tokio::spawn(async move {
                    tokio::join!(
                        one.revoke_client_tokens(&revoked, T0 + 61, &ev1),
                        other.revoke_issued_before(T0 - 5, T0 + 61, &ev2),
                        other.delete_client(&deleted),
                    )
                })
            };
            // Client 3's families are revoked one by one (in batches) by both instances.
            let family_revocations: Vec<_> = grants
                .iter()
                .filter(|(n, ..)| *n == 3)
                .flat_map(|(_, _, g, _)| {
                    [
                        (one.clone(), g.family.id.clone()),
                        (other.clone(), g.family.id.clone()),
                    ]
                })
                .map(|(store, family)| {
                    tokio::spawn(async move {
                        store.revoke_family(&family, T0 + 61, &suite::ev()).await
                    })
                })
                .collect();
            for task in family_revocations {
                task.await.unwrap().expect("no family revocation fails");
            }
            let mut winners = std::collections::BTreeMap::new();
            for task in rotations {
                let (key, outcome, successor) = task.await.unwrap();
                match outcome.expect("no rotation fails (a deadlock would be an error)") {
                    RotateOutcome::Rotated => {
                        assert!(
                            winners.insert(key, successor).is_none(),
                            "{key:?} rotated twice"
                        );
                    }
                    RotateOutcome::Lost => {}
                }
            }
            let (revoked, before, deleted) = revocations.await.unwrap();
            revoked.expect("the client's revocation answers");
            before.expect("the revocation of old tokens answers");
            assert!(deleted.expect("the deletion answers"));
            for (n, i, g, issued) in &grants {
                let family: Option<(Option<i64>, i64)> = sqlx::query_as(
                    "SELECT refreshed_at, expires_at FROM token_families WHERE family_id = $1",
                )
                .bind(&g.family.id)
                .fetch_optional(&mut witness)
                .await
                .unwrap();
                let successor = winners.get(&(*n, *i));
                match (*n, family) {
                    (2, family) => {
                        assert!(family.is_none(), "the deleted client's families are gone")
                    }
                    (_, None) => panic!("family {n}/{i} is gone"),
                    (_, Some(times)) => {
                        // Rotated: the winner's times; otherwise untouched.
                        let expected = match successor {
                            Some(_) => (Some(won_at), won_at + 60 * DAY),
                            None => (None, *issued + DAY),
                        };
                        assert_eq!(times, expected, "family {n}/{i}");
                    }
                }
                if *n == 0 {
                    assert!(
                        successor.is_some(),
                        "nothing else stops family 0/{i} from rotating"
                    );
                }
                if let (1 | 3, Some(key)) = (*n, successor) {
                    let found = one.find_refresh(key).await.unwrap().unwrap();
                    assert!(
                        found.revoked,
                        "a successor in a revoked client's family is revoked"
                    );
                }
            }
        }
    }

    /// On PostgreSQL a cleanup round keeps up with the audit trail, the table written most: it
    /// deletes as many old events as token rows, not one batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cleanup_round_deletes_as_many_audit_events_as_token_rows() {
        use suite::{DAY, HOUR, T0};
        use tessera::domain::audit::{Actor, AuditEvent, AuditKind};
        let Some((store, guard)) = postgres_store().await else {
            return;
        };
        let Guard::Postgres(db) = &guard else {
            unreachable!()
        };
        let c = suite::new_client(store.as_ref()).await;
        let old = || {
            AuditEvent::new(
                AuditKind::TokenIssued,
                T0,
                &Actor::cli(),
                Some(&c.id),
                serde_json::json!({}),
            )
        };
        for _ in 0..200 {
            store.record_audit(&old()).await.unwrap();
        }
        // 20 grants that expired long ago (their own events are recent).
        for _ in 0..20 {
            let g = suite::grant_at(&c.id, T0, HOUR, DAY);
            let recent = AuditEvent::new(
                AuditKind::TokenIssued,
                T0 + 2 * DAY,
                &Actor::cli(),
                None,
                serde_json::json!({}),
            );
            store
                .issue(&g.family, &g.access, &g.refresh, &recent)
                .await
                .unwrap();
        }
        let key = tessera::domain::crypto::MasterKey::generate()
            .unwrap()
            .encode();
        let settings = tessera::config::Settings::load_from(
            None,
            |_| None,
            &[
                ("database_url", db.url.clone()),
                ("master_key", key),
                ("audit_retention", "60".to_owned()),
            ],
        )
        .unwrap();
        let clock = Arc::new(tessera::domain::clock::FixedClock(T0 + 2 * DAY));
        let app = tessera::service::Tessera::with_store(&settings, store.clone(), clock)
            .await
            .unwrap();
        let old_events = || async {
            let q = tessera::domain::audit::AuditQuery {
                client_id: Some(c.id.clone()),
                limit: 1000,
                ..Default::default()
            };
            store
                .list_audit(&q)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.at == T0)
                .count() as u64
        };
        assert_eq!(old_events().await, 200);
        let purged = app.purge_expired(10, 0).await.unwrap();
        let events = 200 - old_events().await;
        let tokens = purged.rows - events;
        assert!(tokens > 10, "the round deleted {tokens} token rows");
        assert_eq!(events, tokens.div_ceil(10) * 10, "{tokens} token rows");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_connections_are_unavailable_then_replaced() {
        let Some((store, guard)) = postgres_store().await else {
            return;
        };
        let Guard::Postgres(db) = &guard else {
            unreachable!()
        };
        store.ping().await.unwrap();
        db.allow_connections(false).await;
        db.kill_connections().await;
        assert!(db.wait_for_no_connections().await);
        let during = store.ping().await;
        assert!(
            matches!(during, Err(tessera::store::StoreError::Unavailable(_))),
            "expected Unavailable while the database refuses connections, got {during:?}"
        );
        db.allow_connections(true).await;
        store.ping().await.expect("the pool reconnects by itself");
    }
}
