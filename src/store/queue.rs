//! The rule for writes that wait in a queue (the SQLite group writer, the PostgreSQL batchers):
//! **an answer of "unavailable" means nothing was written; any other answer is the write's
//! real outcome.**
//!
//! A caller can be answered "unavailable" in two ways only:
//!
//! - its write was never started: it waited [`QUEUE_TIMEOUT`] without being taken into a
//!   batch, and withdrew it. The [`Ticket`] decides that race: either the caller withdraws the
//!   write (and no batch will run it) or a batch takes it (and the caller waits for that
//!   batch's outcome), never both;
//! - its batch failed, and the database rolled it back (a statement cancelled by PostgreSQL's
//!   `statement_timeout`, a lock SQLite could not get within its busy timeout, a full disk).
//!
//! So once a write is taken, its caller waits for the real outcome, however long the database
//! takes; the stores bound that time on the database's side (statement timeouts, busy timeouts),
//! where a cancelled statement is known not to have committed. A timer on the caller's side
//! could only guess: the statement it abandons may still commit, and a client told `503` for a
//! refresh that did commit retries with a consumed token and has its family revoked as stolen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// How long a write may wait for a batch to take it before its caller withdraws it and is
/// answered "unavailable". Under load a write waits milliseconds; this long only while the
/// database is stalled or unreachable, when shedding the queue is the right answer.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

/// A queued write's state, shared by its caller and the batch that may run it.
#[derive(Debug, Clone, Default)]
pub struct Ticket(Arc<AtomicU8>);

impl Ticket {
    /// A new ticket for a queued write.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The batch's side: true if the write is now the batch's to run; false if its caller
    /// withdrew it (the batch must skip it).
    #[must_use]
    pub fn take(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The caller's side: true if the write was withdrawn before any batch took it (so it
    /// will never run); false if a batch took it first.
    #[must_use]
    pub fn withdraw(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The batch's end of a queued write: where its answer goes, and its [`Ticket`].
#[derive(Debug)]
pub struct Reply<R> {
    sender: oneshot::Sender<StoreResult<R>>,
    ticket: Ticket,
}

/// The caller's end of a queued write: [`Waiting::outcome`] gives its answer.
#[derive(Debug)]
pub struct Waiting<R> {
    answer: oneshot::Receiver<StoreResult<R>>,
    ticket: Ticket,
}

/// A new queued write's two ends.
#[must_use]
pub fn queued<R>() -> (Reply<R>, Waiting<R>) {
    let (sender, answer) = oneshot::channel();
    let ticket = Ticket::new();
    (
        Reply {
            sender,
            ticket: ticket.clone(),
        },
        Waiting { answer, ticket },
    )
}

impl<R> Reply<R> {
    /// Makes the write the batch's to run; false if its caller withdrew it or went away (the
    /// HTTP client disconnected), and nobody would see its answer: the batch skips it.
    #[must_use]
    pub fn take(&self) -> bool {
        !self.sender.is_closed() && self.ticket.take()
    }

    /// Answers the caller (who may have gone: the work stands anyway).
    pub fn send(self, result: StoreResult<R>) {
        let _ = self.sender.send(result);
    }
}

impl<R> Waiting<R> {
    /// The answer if it has been sent, without waiting (unit tests that run a batch by hand).
    ///
    /// # Errors
    /// No answer yet, or the batch dropped the write.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Result<StoreResult<R>, oneshot::error::TryRecvError> {
        self.answer.try_recv()
    }

    /// The write's real outcome if a batch takes it within [`QUEUE_TIMEOUT`] (then however
    /// long the batch takes), or "unavailable" if none did and the caller withdrew it. `what`
    /// names the queue in that error.
    ///
    /// # Errors
    /// The write's own error, or [`StoreError::Unavailable`] when it was withdrawn or its
    /// queue's worker has stopped.
    pub async fn outcome(self, what: &str) -> StoreResult<R> {
        let stopped = || StoreError::Unavailable(format!("{what} has stopped"));
        let Self { mut answer, ticket } = self;
        if let Ok(reply) = tokio::time::timeout(QUEUE_TIMEOUT, &mut answer).await {
            return reply.map_err(|_| stopped())?;
        }
        if ticket.withdraw() {
            metrics::counter!("tessera_store_writes_withdrawn_total").increment(1);
            return Err(StoreError::Unavailable(format!(
                "the write waited {QUEUE_TIMEOUT:?} for {what} and was withdrawn; nothing was \
                 written"
            )));
        }
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_either_taken_or_withdrawn_never_both() {
        let t = Ticket::new();
        assert!(t.take());
        assert!(!t.withdraw());
        assert!(!t.take());
        let t = Ticket::new();
        assert!(t.withdraw());
        assert!(!t.take());
        assert!(!t.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_took_is_withdrawn_after_the_queue_timeout() {
        let (reply, waiting) = queued::<()>();
        let out = waiting.outcome("the test queue").await;
        assert!(matches!(out, Err(StoreError::Unavailable(m)) if m.contains("withdrawn")));
        assert!(!reply.ticket.take(), "a withdrawn write must not run");
    }

    #[tokio::test(start_paused = true)]
    async fn a_taken_write_waits_for_its_real_outcome_past_the_queue_timeout() {
        let (reply, waiting) = queued::<u8>();
        assert!(reply.take());
        let batch = tokio::spawn(async move {
            tokio::time::sleep(QUEUE_TIMEOUT * 3).await;
            reply.send(Ok(7));
        });
        assert_eq!(waiting.outcome("the test queue").await.ok(), Some(7));
        batch.await.ok();
    }
}
