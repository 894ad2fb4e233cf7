//! Whether the SQLite database files this process has open are still the ones at their paths.
//!
//! An open SQLite connection keeps writing into its file descriptors. If the database file (or
//! its `-wal` or `-shm` file) is deleted or replaced while the server runs, every commit after
//! that lands in an unlinked file or in a log that no longer belongs to the file at the path:
//! the writes succeed, the clients get `200`s, and it is all gone at the next start. `rusqlite`
//! does not expose the descriptors, so this compares the `(device, inode)` of each path with
//! the one recorded when the store opened the database: one `stat` a file, microseconds, done
//! before every commit and by every readiness check.
//!
//! When a file has gone or been replaced the store refuses: every write is answered as
//! unavailable (nothing is committed), readiness fails, and the log says why once. It does not
//! reopen the path: a new, empty database there (or a stale backup moved in place) would hand
//! out answers about clients and tokens that are not the ones the server issued. The operator
//! restores the file and restarts the server.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::super::{StoreError, StoreResult};

/// `(device, inode)` of a file.
type Identity = (u64, u64);

fn identity(path: &Path) -> std::io::Result<Identity> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// One watched file: its path and, once it has been seen, its identity.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    seen: Mutex<Option<Identity>>,
}

/// The database file and its `-wal` and `-shm` files, as opened by this process.
#[derive(Debug)]
pub struct DatabaseFiles {
    db: PathBuf,
    files: [Watched; 3],
    reported: AtomicBool,
}

impl DatabaseFiles {
    /// Watches the database at `db` and the log files beside it. Call [`Self::record`] once
    /// the store's connections have opened them.
    #[must_use]
    pub fn new(db: &Path) -> Self {
        let beside = |suffix: &str| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let watched = |path: PathBuf| Watched {
            path,
            seen: Mutex::new(None),
        };
        Self {
            db: db.to_path_buf(),
            files: [
                watched(db.to_path_buf()),
                watched(beside("-wal")),
                watched(beside("-shm")),
            ],
            reported: AtomicBool::new(false),
        }
    }

    /// Records the identity of each file that exists now. A log file that does not exist yet
    /// is recorded when it is first seen by [`Self::check`].
    pub fn record(&self) {
        for file in &self.files {
            if let (Ok(id), Ok(mut seen)) = (identity(&file.path), file.seen.lock()) {
                *seen = Some(id);
            }
        }
    }

    /// `Ok` while every recorded file is still the one at its path; otherwise
    /// [`StoreError::Unavailable`] saying which one went, logged at the first failure.
    ///
    /// # Errors
    /// A database file was removed or replaced.
    pub fn check(&self) -> StoreResult<()> {
        for file in &self.files {
            let Ok(mut seen) = file.seen.lock() else {
                continue;
            };
            let now = identity(&file.path);
            let gone = match (*seen, &now) {
                (Some(recorded), Ok(current)) => recorded != *current,
                (Some(_), Err(_)) => true,
                (None, Ok(current)) => {
                    *seen = Some(*current);
                    false
                }
                (None, Err(_)) => false,
            };
            if gone {
                let what = if now.is_ok() { "replaced" } else { "removed" };
                let message = format!(
                    "the database file {} was {what} while the server runs; writes are refused \
                     (they would be lost): restore the database file {} and restart the server",
                    file.path.display(),
                    self.db.display()
                );
                if !self.reported.swap(true, Ordering::SeqCst) {
                    tracing::error!(path = %file.path.display(), "{message}");
                }
                return Err(StoreError::Unavailable(message));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_file_is_told_and_a_late_log_file_is_recorded()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("t.db");
        std::fs::write(&db, b"db")?;
        let files = DatabaseFiles::new(&db);
        files.record();
        assert!(files.check().is_ok());
        // A log file that appears later is recorded, then watched like the others.
        let wal = dir.path().join("t.db-wal");
        std::fs::write(&wal, b"wal")?;
        assert!(files.check().is_ok());
        std::fs::remove_file(&wal)?;
        let removed = files.check();
        assert!(
            matches!(&removed, Err(StoreError::Unavailable(m)) if m.contains("t.db-wal was removed")),
            "{removed:?}"
        );
        // The database file replaced by another one (a copy moved in place).
        let files = DatabaseFiles::new(&db);
        files.record();
        let copy = dir.path().join("copy");
        std::fs::copy(&db, &copy)?;
        std::fs::rename(&copy, &db)?;
        let replaced = files.check();
        assert!(
            matches!(&replaced, Err(StoreError::Unavailable(m)) if m.contains("t.db was replaced")),
            "{replaced:?}"
        );
        Ok(())
    }
}
