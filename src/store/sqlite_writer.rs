//! Group commit for the SQLite store.
//!
//! SQLite has one writer at a time, and with `synchronous = FULL` every commit waits for the
//! disk. Committing each token request on its own would cap throughput at the disk's flush
//! rate. Instead, the hot-path writes (issue, refresh, revoke, audit) are sent to one task,
//! which takes every job waiting at that moment (up to [`MAX_BATCH`]), runs them in **one**
//! transaction — each inside its own `SAVEPOINT`, so a job that fails or loses a race is rolled
//! back alone — and commits once. Only after that commit does any job learn its result, so a
//! `2xx` is still sent only after the work it reports is durable. Under light load a batch is
//! one job and nothing waits; under heavy load batches grow and the cost of a flush is shared.
//!
//! Jobs run one after another inside the batch, so they see each other's effects exactly as
//! if they had committed separately: two refreshes of one token in the same batch still
//! produce one `Rotated` and one `Lost`.

use std::future::Future;
use std::pin::Pin;

use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, StoreResult};

/// Most jobs in one transaction.
pub const MAX_BATCH: usize = 512;

/// A boxed future borrowing the connection.
pub type JobFuture<'c, T> = Pin<Box<dyn Future<Output = StoreResult<(T, bool)>> + Send + 'c>>;

type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> Pin<Box<dyn Future<Output = (bool, Deliver)> + Send + 'c>>
        + Send,
>;

/// The handle the store writes through.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Other(e) => {
            StoreError::Other(anyhow::anyhow!("the batch transaction failed: {e:#}"))
        }
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> StoreResult<()> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(super::sqlite::map_err)
}

impl GroupWriter {
    /// Starts the writer task on `pool` (a pool of one connection).
    #[must_use]
    pub fn start(pool: SqlitePool) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(run(pool, rx));
        Self { jobs: tx }
    }

    /// Runs `op` in the next batch. `op` returns its value and whether to keep its writes
    /// (`false` rolls back to its savepoint, e.g. a refresh that lost a race). The result is
    /// returned only after the batch has committed.
    ///
    /// # Errors
    /// The job's own error, or the batch's commit error.
    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = op(conn).await;
                let keep = matches!(result, Ok((_, true)));
                let deliver: Deliver = Box::new(move |commit_error| {
                    let out = match (result, commit_error) {
                        (Err(e), _) => Err(e),
                        (Ok(_), Some(e)) => Err(copy(e)),
                        (Ok((value, _)), None) => Ok(value),
                    };
                    // The caller may have gone (client disconnected): the work stands anyway.
                    let _ = reply.send(out);
                });
                (keep, deliver)
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("tessera_sqlite_batch_size").record(jobs.len() as f64);
        let mut delivers = Vec::with_capacity(jobs.len());
        let outcome = match pool.acquire().await {
            Ok(mut conn) => run_batch(&mut conn, jobs, &mut delivers).await,
            Err(e) => {
                // Nothing ran: dropping the jobs tells every caller the writer is unavailable.
                drop(jobs);
                Err(super::sqlite::map_err(e))
            }
        };
        let error = outcome.err();
        for deliver in delivers {
            deliver(error.as_ref());
        }
    }
}

/// Runs the jobs in one transaction; collects their deliveries; returns the commit outcome.
async fn run_batch(
    conn: &mut SqliteConnection,
    jobs: Vec<Job>,
    delivers: &mut Vec<Deliver>,
) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE").await?;
    let mut failed = None;
    for job in jobs {
        if failed.is_some() {
            // The transaction is already lost; the job is dropped and its caller told below.
            drop(job);
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT job").await {
            failed = Some(e);
            continue;
        }
        let (keep, deliver) = job(conn).await;
        delivers.push(deliver);
        let end = if keep {
            exec(conn, "RELEASE job").await
        } else {
            match exec(conn, "ROLLBACK TO job").await {
                Ok(()) => exec(conn, "RELEASE job").await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = end {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        let _ = exec(conn, "ROLLBACK").await;
        return Err(e);
    }
    if let Err(e) = exec(conn, "COMMIT").await {
        let _ = exec(conn, "ROLLBACK").await;
        return Err(e);
    }
    Ok(())
}
