//! Group commit for the SQLite store.
//!
//! SQLite has one writer at a time, and with `synchronous = FULL` every commit waits for the
//! disk. Committing each token request on its own would cap throughput at the disk's flush rate,
//! and sending each statement to a database thread and back costs more than the statement
//! itself. So the hot-path writes (issue, refresh, revoke, audit) are handed to one dedicated
//! writer thread with its own connection, which takes every job waiting at that moment (up to
//! [`MAX_BATCH`]), runs them in **one** transaction — each inside its own `SAVEPOINT`, so a job
//! that fails or loses a race is rolled back alone — and commits once. Only after that commit
//! does any job learn its result, so a `2xx` is still sent only after the work it reports is
//! durable. Under light load a batch is one job and nothing waits; under heavy load batches grow
//! and the cost of a flush is shared.
//!
//! Jobs run one after another inside the batch, so they see each other's effects exactly as if
//! they had committed separately: two refreshes of one token in the same batch still produce one
//! `Rotated` and one `Lost`. Other processes (the CLI) and the store's rare writes use other
//! connections and meet this one on SQLite's write lock (`BEGIN IMMEDIATE`, busy timeout).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// Most jobs in one transaction.
pub const MAX_BATCH: usize = 512;

type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

/// Maps a `rusqlite` error like the sqlx one: busy/locked is transient, a uniqueness
/// violation is a conflict, anything else is a failure.
pub fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        Some(ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Other(anyhow::Error::new(e)),
    }
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

/// The handle the store writes through.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    jobs: mpsc::SyncSender<Job>,
}

impl GroupWriter {
    /// Opens the writer's connection on `path` and starts its thread.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn start(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::sync_channel::<Job>(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || run(&conn, &rx))
            .map_err(|e| {
                StoreError::Other(anyhow::anyhow!("cannot start the SQLite writer: {e}"))
            })?;
        Ok(Self { jobs: tx })
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
        F: FnOnce(&Connection) -> StoreResult<(T, bool)> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
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
        });
        // The queue is bounded; when it is full, wait for room without blocking the runtime.
        let mut job = Some(job);
        loop {
            let Some(j) = job.take() else { break };
            match self.jobs.try_send(j) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(j)) => {
                    job = Some(j);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    return Err(StoreError::Unavailable(
                        "the SQLite writer has stopped".into(),
                    ));
                }
            }
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }
}

fn run(conn: &Connection, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!("tessera_sqlite_batch_size").record(jobs.len() as f64);
        let mut delivers = Vec::with_capacity(jobs.len());
        let outcome = run_batch(conn, jobs, &mut delivers);
        let error = outcome.err();
        for deliver in delivers {
            deliver(error.as_ref());
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.execute_batch(sql).map_err(map_err)
}

/// Runs the jobs in one transaction; collects their deliveries; returns the commit outcome.
/// A job dropped without running (the transaction was already lost) tells its caller the
/// writer is unavailable (its reply channel closes).
fn run_batch(conn: &Connection, jobs: Vec<Job>, delivers: &mut Vec<Deliver>) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let mut failed = None;
    for job in jobs {
        if failed.is_some() {
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            failed = Some(e);
            continue;
        }
        let (keep, deliver) = job(conn);
        delivers.push(deliver);
        let end = if keep {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job; RELEASE job")
        };
        if let Err(e) = end {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        let _ = exec(conn, "ROLLBACK");
        return Err(e);
    }
    if let Err(e) = exec(conn, "COMMIT") {
        let _ = exec(conn, "ROLLBACK");
        return Err(e);
    }
    Ok(())
}
