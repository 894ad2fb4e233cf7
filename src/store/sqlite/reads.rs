//! Point reads for the SQLite store's hot path.
//!
//! Every token request reads its client, and every refresh, revocation and introspection reads
//! a token. Through sqlx each such read is a hand-off to a per-connection worker thread and back,
//! which under load costs far more (queueing, context switches) than the read itself: a primary-
//! key lookup in a B-tree whose pages are in the OS cache takes a few microseconds. So these
//! reads run **inline**, on the calling task's thread, on a small pool of read-only `rusqlite`
//! connections. Blocking the runtime for a few microseconds is cheaper than any hand-off; the
//! reads never wait on the writer (WAL readers see the last committed state and take no lock
//! the writer needs), and they always go to the database, so a change made by another process
//! (the CLI disabling a client) is seen by the very next request, as with sqlx.
//!
//! Connections are opened on demand, at most one per concurrent reader, and kept up to
//! [`MAX_IDLE`]; the statements each one runs are prepared once and cached on it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::super::StoreResult;
use super::writer::map_err;

/// Idle connections kept for reuse; more concurrent readers open (and then drop) extra ones.
pub const MAX_IDLE: usize = 8;

/// A pool of read-only connections used inline.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// A pool on the database file at `path` (which must exist: the store created it).
    #[must_use]
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `read` on a pooled connection.
    ///
    /// # Errors
    /// The read's error (busy beyond the timeout is [`StoreError::Unavailable`]).
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let pooled = self.idle.lock().map_or(None, |mut idle| idle.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn).map_err(map_err);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }

    /// Closes the idle connections (on shutdown).
    pub fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
