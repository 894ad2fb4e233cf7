//! The one PostgreSQL batcher: requests of one kind that wait at the same moment are run as
//! one statement (grants, rotations, family revocations, lookups), with what each kind needs
//! said by its [`BatchOp`].
//!
//! Batches form by themselves: a collector task takes the first waiting request, waits for one
//! of [`BatchOp::IN_FLIGHT`] slots, and takes every other request that arrived meanwhile (up to
//! [`MAX_BATCH`]). Under light load a batch is one request.
//!
//! A batch is one statement, so it commits entirely or not at all. If it fails because the
//! database is unavailable, every caller gets that error. A write ([`BatchOp::ONE_BY_ONE`])
//! that fails for any other reason (one grant's client was deleted a moment ago, say) is run
//! again one request at a time, so that only the request at fault fails; a batch of one write
//! is that one-request statement. A lookup is one statement whatever the batch's size, and its
//! failure is every lookup's.
//!
//! A request is run only if a batch took it before its caller withdrew it after
//! [`QUEUE_TIMEOUT`] ([`super::super::queue`]); once taken, it runs to its real outcome and its
//! caller waits for that.

use std::future::Future;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use tokio::sync::{Semaphore, mpsc};

use super::super::queue::{self, QUEUE_TIMEOUT, Reply};
use super::super::{StoreError, StoreResult};

/// Most requests in one statement.
pub const MAX_BATCH: usize = 256;

/// A kind of request the batcher runs: the statement for many, and the one for one.
pub trait BatchOp: Send + Sync + 'static {
    /// A request.
    type Item: Send + Sync + 'static;
    /// Its answer.
    type Out: Send + 'static;
    /// Batches of this kind being run at once. Each batch costs PostgreSQL a statement and a
    /// commit (a log flush) whatever its size, so fewer, larger batches are cheaper; two keep
    /// the database busy while the next batch gathers.
    const IN_FLIGHT: usize = 2;
    /// The batch-size histogram, its label and the label's value (docs/operating.md).
    const METRIC: (&'static str, &'static str, &'static str);
    /// True for writes: a batch of one is run by [`Self::one`], and a batch that fails for a
    /// reason other than unavailability is run again one request at a time.
    const ONE_BY_ONE: bool;

    /// Runs `items` as one statement; an answer per item, in order.
    fn many(
        pool: &PgPool,
        items: &[&Self::Item],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<Self::Out>>>> + Send;

    /// Runs one item on its own (writes only: see [`Self::ONE_BY_ONE`]).
    fn one(
        pool: &PgPool,
        item: &Self::Item,
    ) -> impl Future<Output = StoreResult<Self::Out>> + Send {
        async move {
            let mut answers = Self::many(pool, &[item]).await?;
            answers.pop().unwrap_or_else(|| Err(no_answer()))
        }
    }

    /// Requests that must not share a statement have the same key (two rotations of one
    /// family): a batch is run in rounds, each taking the first waiting request of every key,
    /// in arrival order. `None`: any requests may share one.
    fn round_key(_item: &Self::Item) -> Option<&str> {
        None
    }
}

fn no_answer() -> StoreError {
    StoreError::Other(anyhow::anyhow!(
        "a batched statement gave no answer for a request"
    ))
}

/// A request waiting in a batcher, with where its answer goes ([`super::super::queue`]).
struct Pending<T, R> {
    item: T,
    reply: Reply<R>,
}

impl<T, R> Pending<T, R> {
    /// Makes the request the batch's to run ([`Reply::take`]).
    fn take(&self) -> bool {
        self.reply.take()
    }
}

type PendingOf<Op> = Pending<<Op as BatchOp>::Item, <Op as BatchOp>::Out>;

/// Collects requests of kind `Op` and runs them in batches (see the module docs).
pub struct Batcher<Op: BatchOp> {
    queue: mpsc::Sender<PendingOf<Op>>,
}

impl<Op: BatchOp> Clone for Batcher<Op> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Op: BatchOp> std::fmt::Debug for Batcher<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<Op: BatchOp> Batcher<Op> {
    /// Starts the collector on the current runtime.
    pub fn start(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(collect::<Op>(pool, rx));
        Self { queue }
    }

    /// Queues `item`; returns its answer once its batch is done, or "unavailable" (nothing
    /// run) if no batch took it within [`QUEUE_TIMEOUT`].
    ///
    /// # Errors
    /// The batch's error for this request.
    pub async fn submit(&self, item: Op::Item) -> StoreResult<Op::Out> {
        const WHAT: &str = "the PostgreSQL batcher";
        let (reply, waiting) = queue::queued();
        let pending = Pending { item, reply };
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
        waiting.outcome(WHAT).await
    }
}

async fn collect<Op: BatchOp>(pool: PgPool, mut rx: mpsc::Receiver<PendingOf<Op>>) {
    let slots = Arc::new(Semaphore::new(Op::IN_FLIGHT));
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
            let mut batch = batch;
            while !batch.is_empty() {
                let mut keys = std::collections::HashSet::new();
                let (round, later): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| {
                    Op::round_key(&p.item).is_none_or(|k| keys.insert(k.to_owned()))
                });
                run_round::<Op>(&pool, round).await;
                batch = later;
            }
            drop(slot);
        });
    }
}

/// Runs one round: as one statement, or one request at a time (see the module docs).
async fn run_round<Op: BatchOp>(pool: &PgPool, round: Vec<PendingOf<Op>>) {
    let (histogram, label, value) = Op::METRIC;
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!(histogram, label => value).record(round.len() as f64);
    if !Op::ONE_BY_ONE || round.len() > 1 {
        let items: Vec<&Op::Item> = round.iter().map(|p| &p.item).collect();
        match Op::many(pool, &items).await {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for p in round {
                    p.reply
                        .send(answers.next().unwrap_or_else(|| Err(no_answer())));
                }
                return;
            }
            Err(e) if !Op::ONE_BY_ONE || matches!(e, StoreError::Unavailable(_)) => {
                for p in round {
                    p.reply.send(Err(e.duplicate()));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, size = round.len(), kind = value, "a batch failed; running its requests one by one");
            }
        }
    }
    for p in round {
        let answer = Op::one(pool, &p.item).await;
        p.reply.send(answer);
    }
}
