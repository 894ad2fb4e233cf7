//! The cleanup of expired and revoked rows, a round at a time: how many rows a round deletes,
//! how long the next one waits, and how many old audit events each takes. The rules are the
//! same code for every backend; each backend states its own [`CleanupPolicy`] (whether its
//! requests wait for a round, and so whether rounds must stay short).
//!
//! docs/design.md ("Cleanup of expired and revoked tokens") states the rules, and
//! docs/benchmarks-history.md the soaks behind each.

use std::time::Duration;

use super::{Maintenance, StoreResult};
use crate::domain::clock::UnixTime;

/// How long one round should hold the database where requests wait for it: every request
/// batched with a round waits for it, so this bounds what the cleanup adds to a request's
/// latency. The time is the deletes' own ([`super::Purged`]'s `busy`), not the wait for the
/// writer's turn: rounds sized by the round trip shrank to the floor under sustained load, while
/// the wait alone exceeded the target, and the database grew without levelling off.
pub const ROUND_TARGET: Duration = Duration::from_millis(4);

/// The fewest rows per table a sized round asks for, however slow rounds are: it keeps the
/// cleanup moving when the database is slow for other reasons.
pub const MIN_SIZE: u32 = 32;

/// What is old enough to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Tokens (and families) that expired or were revoked before this time.
    pub tokens_before: UnixTime,
    /// Audit events recorded before this time.
    pub audit_before: UnixTime,
}

/// A backend's cleanup policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// The requests' writes wait while a round runs: rounds are sized to about
    /// [`ROUND_TARGET`] of deletes ([`next_size`]), and a round deletes one batch of audit
    /// events at most. Otherwise every round is a full batch, and takes as many audit events
    /// as token rows ([`audit_allowance`]).
    pub(crate) requests_wait: bool,
}

/// A cleanup in progress: the size of its next round, which carries over between rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupRun {
    size: u32,
    max: u32,
}

impl CleanupRun {
    /// A run whose rounds delete at most `max_batch` rows per table (the `cleanup_batch`
    /// setting); the first round asks for that many.
    #[must_use]
    pub fn new(max_batch: u32) -> Self {
        Self {
            size: max_batch,
            max: max_batch,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupRound {
    /// Rows deleted (tokens, families, keys and audit events).
    pub rows: u64,
    backlog: bool,
    busy: Duration,
}

impl CleanupRound {
    /// True if the round was full, so more rows are probably waiting.
    #[must_use]
    pub fn backlog(&self) -> bool {
        self.backlog
    }

    /// The least time from this round's start to the next one's while a backlog remains: twice
    /// its deletes' time, so the cleanup gets at most half of the database; five times (a
    /// fifth) when `yielding` (requests are in flight while a burst's backlog drains). The
    /// period counts from the round's start, so its wait for the writer's turn counts
    /// towards it.
    #[must_use]
    pub fn period(&self, yielding: bool) -> Duration {
        self.busy * if yielding { 5 } else { 2 }
    }
}

/// One round of `run` on `store`, by its policy (see [`Maintenance::cleanup_round`]).
pub(crate) async fn round<M: Maintenance + ?Sized>(
    store: &M,
    run: &mut CleanupRun,
    retention: Retention,
) -> StoreResult<CleanupRound> {
    let policy = store.cleanup_policy();
    let size = run.size;
    let tokens = store.purge_expired(retention.tokens_before, size).await?;
    let allowance = audit_allowance(policy, tokens.rows, size);
    let mut purged = tokens;
    let mut events = 0;
    while events < allowance {
        let audit = store.purge_audit(retention.audit_before, size).await?;
        events += audit.rows;
        purged = purged + audit;
        if audit.rows < u64::from(size) {
            break;
        }
    }
    let backlog = purged.rows >= u64::from(size);
    if backlog {
        run.size = next_size(policy, size, purged.busy, run.max);
    }
    Ok(CleanupRound {
        rows: purged.rows,
        backlog,
        busy: purged.busy,
    })
}

/// The next round's size after one of `size` rows took `took`, at most `max` (the configured
/// `cleanup_batch`) and at least [`MIN_SIZE`] (or `max`, if that is smaller). Unless requests
/// wait for rounds, always `max`.
fn next_size(policy: CleanupPolicy, size: u32, took: Duration, max: u32) -> u32 {
    let floor = MIN_SIZE.min(max);
    if !policy.requests_wait {
        max
    } else if took > ROUND_TARGET {
        (size / 2).max(floor)
    } else if took < ROUND_TARGET / 2 {
        size.saturating_mul(2).min(max)
    } else {
        size
    }
}

/// How many old audit events a round deletes, after it deleted `token_rows` token rows in
/// rounds of `batch`.
///
/// Audit events are the table written most (one per grant, refresh and revocation, against
/// one family per grant) and the cheapest to delete (one table, no cascade). Where nothing
/// waits for a round, one batch a round falls behind a saturating load while the token tables
/// keep up, so a round deletes as many events as token rows, and at least one batch. Where
/// requests wait and a round is sized to a few milliseconds of deletes in all, more events a
/// round mean fewer token rows, and the token tables fall behind instead, while one batch of
/// events a round keeps both level (the soaks: docs/benchmarks-history.md). So there a round
/// takes one batch.
fn audit_allowance(policy: CleanupPolicy, token_rows: u64, batch: u32) -> u64 {
    if policy.requests_wait {
        u64::from(batch)
    } else {
        token_rows.max(u64::from(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITING: CleanupPolicy = CleanupPolicy {
        requests_wait: true,
    };
    const NOT_WAITING: CleanupPolicy = CleanupPolicy {
        requests_wait: false,
    };

    #[test]
    fn cleanup_rounds_shrink_when_slow_and_grow_back_when_fast() {
        let slow = ROUND_TARGET * 3;
        let fast = ROUND_TARGET / 4;
        let steady = ROUND_TARGET * 3 / 4;
        assert_eq!(next_size(WAITING, 500, slow, 500), 250);
        assert_eq!(next_size(WAITING, 40, slow, 500), MIN_SIZE);
        assert_eq!(next_size(WAITING, MIN_SIZE, slow, 500), MIN_SIZE);
        assert_eq!(next_size(WAITING, 100, fast, 500), 200);
        assert_eq!(next_size(WAITING, 400, fast, 500), 500);
        assert_eq!(next_size(WAITING, 500, fast, 500), 500);
        assert_eq!(next_size(WAITING, 120, steady, 500), 120);
        // A configured batch below the floor is never exceeded.
        assert_eq!(next_size(WAITING, 10, slow, 10), 10);
        assert_eq!(next_size(WAITING, 5, fast, 10), 10);
        assert_eq!(next_size(WAITING, u32::MAX, fast, u32::MAX), u32::MAX);
        // Where nothing waits for a round (PostgreSQL), slow rounds keep their full size.
        assert_eq!(next_size(NOT_WAITING, 500, slow, 500), 500);
        assert_eq!(next_size(NOT_WAITING, 32, fast, 500), 500);
    }

    #[test]
    fn a_cleanup_round_keeps_up_with_the_audit_trail_where_nothing_waits_for_it() {
        // PostgreSQL: as many events as token rows, one batch at least.
        assert_eq!(audit_allowance(NOT_WAITING, 1_300, 500), 1_300);
        assert_eq!(audit_allowance(NOT_WAITING, 20, 500), 500);
        assert_eq!(audit_allowance(NOT_WAITING, 0, 500), 500);
        // SQLite: one batch, whatever the round deleted.
        assert_eq!(audit_allowance(WAITING, 1_300, 500), 500);
        assert_eq!(audit_allowance(WAITING, 0, 32), 32);
    }

    #[test]
    fn a_round_paces_the_next_by_its_own_time() {
        let round = CleanupRound {
            rows: 10,
            backlog: true,
            busy: Duration::from_millis(3),
        };
        assert_eq!(round.period(false), Duration::from_millis(6));
        assert_eq!(round.period(true), Duration::from_millis(15));
    }
}
