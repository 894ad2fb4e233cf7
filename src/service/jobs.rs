//! Background jobs of the service: the cleanup of expired and revoked tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Tessera;
use crate::store::CleanupRun;

/// When and how much the cleanup deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupSchedule {
    /// Time between runs.
    pub interval: Duration,
    /// Most rows per table a round deletes (the `cleanup_batch` setting).
    pub batch: u32,
    /// Seconds an expired or revoked token is kept (the `token_retention` setting).
    pub retention: u32,
}

/// Deletes expired and revoked tokens (older than `retention` seconds) in small rounds, so
/// each write transaction stays short; runs until its task is aborted. Every instance runs it;
/// the store keeps concurrent runs on one database from getting in each other's way.
///
/// Every `interval` a run starts, and its rounds go on while each finds a backlog. How large a
/// round is and how many audit events it takes is the store's cleanup policy
/// ([`crate::store::cleanup`]); a round starts no earlier than the previous round's
/// [`period`](crate::store::CleanupRound::period) after that one started, a longer one while
/// requests are in flight (`in_flight`, the requests being served) during the first `interval`
/// of a run, so that a burst's backlog drains gently under the load that follows it.
pub async fn cleanup(tessera: &Tessera, schedule: CleanupSchedule, in_flight: &AtomicUsize) {
    let mut run = CleanupRun::new(schedule.batch);
    loop {
        tokio::time::sleep(schedule.interval).await;
        let run_started = Instant::now();
        loop {
            let started = Instant::now();
            match tessera.cleanup_round(&mut run, schedule.retention).await {
                Ok(round) if round.backlog() => {
                    let yielding = run_started.elapsed() < schedule.interval
                        && in_flight.load(Ordering::Relaxed) > 0;
                    let period = round.period(yielding);
                    tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
                }
                Ok(round) => {
                    if round.rows > 0 {
                        tracing::debug!(rows = round.rows, "expired tokens deleted");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expired-token cleanup failed; will retry");
                    break;
                }
            }
        }
    }
}
