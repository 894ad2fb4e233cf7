//! Group commit for the SQLite store.
//!
//! SQLite has one writer at a time, and with `synchronous = FULL` every commit waits for the
//! disk. Committing each token request on its own would cap throughput at the disk's flush rate,
//! and sending each statement to a database thread and back costs more than the statement
//! itself. So the hot-path writes (issue, refresh, revoke, audit, and the background cleanup)
//! are handed to one dedicated writer thread with its own connection, which takes every job
//! waiting at that moment (up to [`MAX_BATCH`]), runs them in **one** transaction, and commits
//! once. Only after that commit does any job learn its result, so a `2xx` is still sent only
//! after the work it reports is durable. A job the writer has not taken within
//! [`QUEUE_TIMEOUT`] (the disk stalled, another process holds the write lock) is withdrawn by
//! its caller and never runs; one it has taken is answered with its batch's real outcome
//! ([`super::queue`]). Under light load a batch is one job and nothing waits;
//! under heavy load batches grow and the cost of a flush is shared.
//!
//! Each job must behave as if it ran alone: a job that fails or loses a race (a refresh whose
//! token was consumed first) must leave nothing behind. Wrapping every job in a `SAVEPOINT`
//! guarantees that, but costs about as much as the job's own inserts (statement text parsed
//! twice, pages copied to the sub-journal). So a batch first runs **without** savepoints, and
//! checks after each job that it either succeeded and wants its writes kept, or changed no row
//! at all (`total_changes` did not move: the hot-path jobs check their conditions before they
//! write, so a lost race writes nothing). Only if some job failed after writing does the writer
//! roll the whole batch back and run it again, this time with one savepoint per job. Jobs are
//! re-runnable closures for that reason, and nobody sees a result from the discarded run.
//!
//! Jobs run one after another inside the batch, so they see each other's effects exactly as if
//! they had committed separately: two refreshes of one token in the same batch still produce one
//! `Rotated` and one `Lost`. Other processes (the CLI) and the store's rare writes use other
//! connections and meet this one on SQLite's write lock (`BEGIN IMMEDIATE`, busy timeout).
//!
//! Checkpoints (copying the write-ahead log back into the database file) stay on this thread:
//! SQLite's automatic checkpoint runs right after a commit once the log holds 1,000 pages. The
//! log can only be rewound to its beginning by a write transaction that starts after a
//! checkpoint has copied *every* frame; a checkpointer on another thread (tried) always lagged
//! the next commit under sustained load, so the log was never rewound and grew by gigabytes
//! within a minute of the soak. Here the next batch starts right after the checkpoint, and the
//! readers, whose transactions last microseconds, rarely pin the log. When the log is rewound,
//! a file grown past 64 MiB by a burst is truncated back to that (`journal_size_limit`).

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::super::queue::{self, QUEUE_TIMEOUT, Reply};
use super::super::{StoreError, StoreResult};
use super::files::DatabaseFiles;

/// Most jobs in one transaction.
pub const MAX_BATCH: usize = 512;

/// One queued write: run (possibly twice, see the module docs), then told the outcome.
trait Job: Send {
    /// Makes the job the writer's to run; false if its caller withdrew it or went away, and
    /// it must be skipped ([`super::queue`]).
    fn take(&self) -> bool;
    /// Runs the job on the writer's connection. Returns whether its writes stand.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the job's result, or the batch's commit error, to the caller.
    fn deliver(self: Box<Self>, commit_error: Option<&StoreError>);
}

struct Pending<T, F> {
    op: F,
    result: Option<StoreResult<(T, bool)>>,
    reply: Reply<T>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: Fn(&Connection) -> StoreResult<(T, bool)> + Send,
{
    fn take(&self) -> bool {
        self.reply.take()
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.op)(conn);
        let keep = matches!(result, Ok((_, true)));
        self.result = Some(result);
        keep
    }

    fn deliver(self: Box<Self>, commit_error: Option<&StoreError>) {
        let out = match (self.result, commit_error) {
            (None, _) => Err(StoreError::Unavailable(
                "the SQLite writer did not run this write".into(),
            )),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Some(e)) => Err(match e.duplicate() {
                StoreError::Other(e) => {
                    StoreError::Other(e.context("the batch transaction failed"))
                }
                kept => kept,
            }),
            (Some(Ok((value, _))), None) => Ok(value),
        };
        // The caller may have gone (client disconnected): the work stands anyway.
        self.reply.send(out);
    }
}

/// Maps a `rusqlite` error like the sqlx one: a uniqueness or foreign-key violation (a row
/// written for one a concurrent call deleted) is a conflict; busy or locked beyond the timeout,
/// and the environment failing under the database (disk full, I/O error, a file that cannot be
/// opened or written), are unavailable (`503`, retry later); anything else is a failure.
pub fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    let extended = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    };
    match (e.sqlite_error_code(), extended) {
        (Some(code), _) if is_environmental(code) => StoreError::Unavailable(e.to_string()),
        (
            _,
            Some(
                ffi::SQLITE_CONSTRAINT_UNIQUE
                | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                | ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
            ),
        ) => StoreError::Conflict(e.to_string()),
        _ => StoreError::Other(anyhow::Error::new(e)),
    }
}

/// The SQLite result codes that say the database's surroundings failed, not the statement: a
/// retry can succeed once the disk has room, the lock is free or the file is back. SQLite
/// rolls a transaction back by itself after some of them (see [`run_batch`]).
fn is_environmental(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::OutOfMemory
    )
}

/// Whether a primary SQLite result code (as sqlx reports it, the extended code in decimal) is
/// one of [`is_environmental`]'s.
#[must_use]
pub fn is_environmental_code(code: i32) -> bool {
    is_environmental(rusqlite::ffi::Error::new(code).code)
}

/// What the writer thread receives.
enum Message {
    Job(Box<dyn Job>),
    /// Finish the jobs already queued, close the connection, exit.
    Stop,
}

/// The handle the store writes through.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    jobs: mpsc::SyncSender<Message>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl GroupWriter {
    /// Opens the writer's connection on `path` and starts its thread. Every batch checks
    /// `files` before it commits.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn start(path: &Path, files: Arc<DatabaseFiles>) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        // Sub-journals (statement and savepoint rollback data) in memory, not in temp files.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::sync_channel::<Message>(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || {
                run(&conn, &rx, &files);
                drop(conn);
            })
            .map_err(|e| {
                StoreError::Other(anyhow::anyhow!("cannot start the SQLite writer: {e}"))
            })?;
        Ok(Self {
            jobs: tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Lets the queued jobs finish, then stops the writer thread and closes its connection;
    /// returns when it is closed. Later writes fail as unavailable.
    /// Blocks for at most one batch.
    pub fn close(&self) {
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        // A full queue still drains: wait for room rather than skip the stop.
        if self.jobs.send(Message::Stop).is_ok() {
            let _ = thread.join();
        }
    }

    /// Runs `op` in the next batch. `op` returns its value and whether to keep its writes
    /// (`false`: whatever it wrote is undone, e.g. a refresh that lost a race; it is cheapest
    /// when such a job checks before it writes, see the module docs). `op` may run twice; only
    /// the last run counts. The result is returned only after the batch has committed.
    ///
    /// # Errors
    /// The job's own error, or the batch's commit error.
    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<(T, bool)> + Send + 'static,
    {
        const WHAT: &str = "the SQLite writer";
        let (reply, waiting) = queue::queued::<T>();
        let job = Message::Job(Box::new(Pending {
            op,
            result: None,
            reply,
        }));
        // The queue is bounded; when it is full, wait for room without blocking the runtime,
        // within the same bound as the wait for a batch.
        let queued_at = std::time::Instant::now();
        let mut job = Some(job);
        loop {
            let Some(j) = job.take() else { break };
            match self.jobs.try_send(j) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(_)) if queued_at.elapsed() >= QUEUE_TIMEOUT => {
                    return Err(StoreError::Unavailable(format!(
                        "{WHAT}'s queue stayed full for {QUEUE_TIMEOUT:?}; nothing was written"
                    )));
                }
                Err(mpsc::TrySendError::Full(j)) => {
                    job = Some(j);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    return Err(StoreError::Unavailable(format!("{WHAT} has stopped")));
                }
            }
        }
        waiting.outcome(WHAT).await
    }
}

fn run(conn: &Connection, rx: &mpsc::Receiver<Message>, files: &DatabaseFiles) {
    let mut stopping = false;
    while !stopping {
        let first = match rx.recv() {
            Ok(Message::Job(job)) if job.take() => job,
            Ok(Message::Job(_)) => continue,
            Ok(Message::Stop) | Err(_) => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) if job.take() => jobs.push(job),
                Ok(Message::Job(_)) => {}
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!("tessera_sqlite_batch_size").record(jobs.len() as f64);
        let outcome = run_batch(conn, &mut jobs, files);
        let error = outcome.err();
        for job in jobs {
            job.deliver(error.as_ref());
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute([]))
        .map(|_| ())
        .map_err(map_err)
}

/// Runs the jobs in one transaction and commits; returns the commit outcome. First without
/// savepoints; again with one savepoint per job if a job failed after writing.
///
/// A batch that fails commits nothing. SQLite itself rolls the whole transaction back after
/// some failures (disk full, I/O error, out of memory): the connection is then back in
/// autocommit mode, where the jobs after that one would each commit on their own. So after
/// every job the batch checks that its transaction is still open, and stops there if not. The
/// database files are checked last, before `COMMIT`, so that nothing commits into a file that
/// was removed or replaced ([`DatabaseFiles`]). The connection needs no repair afterwards: the
/// next batch begins a new transaction, which succeeds once the disk has room again.
fn run_batch(
    conn: &Connection,
    jobs: &mut [Box<dyn Job>],
    files: &DatabaseFiles,
) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let mut clean = true;
    for job in jobs.iter_mut() {
        let before = conn.total_changes();
        let keep = job.run(conn);
        still_open(conn)?;
        if !keep && conn.total_changes() != before {
            clean = false;
            break;
        }
    }
    if !clean {
        // Discard everything and run the batch again, each job in its own savepoint.
        exec(conn, "ROLLBACK")?;
        metrics::counter!("tessera_sqlite_batch_reruns_total").increment(1);
        return run_batch_with_savepoints(conn, jobs, files);
    }
    commit(conn, files)
}

fn run_batch_with_savepoints(
    conn: &Connection,
    jobs: &mut [Box<dyn Job>],
    files: &DatabaseFiles,
) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    for job in jobs.iter_mut() {
        let step = exec(conn, "SAVEPOINT job").and_then(|()| {
            let keep = job.run(conn);
            still_open(conn)?;
            if keep {
                exec(conn, "RELEASE job")
            } else {
                exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
            }
        });
        if let Err(e) = step {
            rollback(conn);
            return Err(e);
        }
    }
    commit(conn, files)
}

/// `Ok` while the batch's transaction is open; unavailable when SQLite has rolled it back
/// after a failure (the failed job has its own error; the others get this one).
fn still_open(conn: &Connection) -> StoreResult<()> {
    if conn.is_autocommit() {
        return Err(StoreError::Unavailable(
            "SQLite rolled the batch's transaction back after a write failed (disk full or I/O \
             error); nothing of it was committed"
                .into(),
        ));
    }
    Ok(())
}

/// Rolls back whatever is open; a failure (nothing open) changes nothing.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
}

/// Commits, recording how long it took: the log write and its `fsync`, and SQLite's automatic
/// checkpoint when it runs after this commit (every 1,000 log pages). Every request of the batch
/// waits for it, so a slow disk or a slow checkpoint shows here first. Refuses (rolls back)
/// when a database file was removed or replaced.
fn commit(conn: &Connection, files: &DatabaseFiles) -> StoreResult<()> {
    if let Err(e) = files.check() {
        rollback(conn);
        return Err(e);
    }
    let started = std::time::Instant::now();
    let done = exec(conn, "COMMIT");
    metrics::histogram!("tessera_sqlite_commit_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = done {
        rollback(conn);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    /// Disk full, I/O errors, a file that cannot be opened or written, busy: `503`, retry.
    /// A broken constraint or a corrupt file is not the environment's doing.
    #[test]
    fn environmental_failures_are_unavailable_and_others_are_not() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
        ] {
            assert!(
                matches!(map_err(failure(code)), StoreError::Unavailable(_)),
                "{code}"
            );
            assert!(is_environmental_code(code), "{code}");
        }
        for code in [
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_CONSTRAINT_CHECK,
            ffi::SQLITE_ERROR,
        ] {
            assert!(
                matches!(map_err(failure(code)), StoreError::Other(_)),
                "{code}"
            );
            assert!(!is_environmental_code(code), "{code}");
        }
    }

    /// Three jobs in one batch, the middle one too big for the space left (SQLite's page
    /// limit: a real `SQLITE_FULL`, after which SQLite rolls the transaction back by itself).
    /// Every job that is told it succeeded has its row, and no job told it failed has one; the
    /// full one is told it is unavailable. Once there is room, the same connection commits.
    #[test]
    fn a_write_that_finds_the_disk_full_commits_nothing_it_was_not_told()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        )?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        conn.pragma_update(None, "max_page_count", pages + 2)?;
        let files = DatabaseFiles::new(&path);
        files.record();
        let batch = |rows: &[(i64, i64)]| {
            let mut answers = Vec::new();
            let mut jobs: Vec<Box<dyn Job>> = Vec::new();
            for &(id, size) in rows {
                let (reply, answer) = queue::queued::<()>();
                jobs.push(Box::new(Pending {
                    op: move |conn: &Connection| {
                        conn.execute(
                            "INSERT INTO t (id, v) VALUES (?1, zeroblob(?2))",
                            rusqlite::params![id, size],
                        )
                        .map_err(map_err)?;
                        Ok(((), true))
                    },
                    result: None,
                    reply,
                }));
                answers.push((id, answer));
            }
            let error = run_batch(&conn, &mut jobs, &files).err();
            for job in jobs {
                job.deliver(error.as_ref());
            }
            answers
        };
        for (id, mut answer) in batch(&[(1, 10), (2, 1_000_000), (3, 10)]) {
            let told = answer.try_recv()?;
            let stored: bool =
                conn.query_row("SELECT EXISTS (SELECT 1 FROM t WHERE id = ?1)", [id], |r| {
                    r.get(0)
                })?;
            assert_eq!(told.is_ok(), stored, "job {id}: {told:?}");
            if id == 2 {
                assert!(matches!(told, Err(StoreError::Unavailable(_))), "{told:?}");
            }
        }
        conn.pragma_update(None, "max_page_count", 1_000_000)?;
        for (id, mut answer) in batch(&[(4, 1_000_000)]) {
            assert!(answer.try_recv()?.is_ok(), "job {id}");
        }
        Ok(())
    }
}
