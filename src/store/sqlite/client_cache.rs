//! The SQLite store's client cache.
//!
//! Every token, revocation and introspection request reads its client. On SQLite that read is a
//! read transaction, and beginning and ending one takes SQLite's shared-memory locks: `fcntl`
//! calls on the `-shm` file and a process-wide mutex. Under load that locking, not the B-tree
//! lookup, is about a quarter of the server's CPU for introspection, which reads twice (the
//! caller, then the token): docs/benchmarks-history.md. So the store keeps the clients it has read.
//!
//! A cached client must never outlive a change to it, whichever process makes the change (the
//! CLI writes the same file while the server runs). Every change to the `clients` table goes
//! through [`SqliteStore`](super::sqlite::SqliteStore)'s three client writes, which, **after**
//! their commit, write a fresh random value into a small file beside the database, the
//! *generation* (`<db>.clients-generation`). A cached entry remembers the generation it was read
//! under, and is used only while the file still holds that value; reading it is one `pread` of
//! 16 bytes from a page-cached file, with no lock. So:
//!
//! - a request that starts after the command that changed a client has returned sees the
//!   change, as it did with no cache (the generation is read before the row, so a change that
//!   commits between the two reads only causes one more reload);
//! - the only stale window is between a change's commit and its generation write, microseconds
//!   in the process making the change. If that process dies inside the window, the value is not
//!   written; then an entry still expires [`MAX_AGE`] after it was read, which bounds the
//!   staleness in that rare case;
//! - unknown ids are cached too (as absent), so a known id and an unknown one cost the same, as
//!   they did before (a cache hit either way after the first request; a read either way before);
//! - a process that cannot write the file (it belongs to another user, say) must not change
//!   clients, since no other process would hear of the change: the store refuses its client
//!   writes before they begin ([`ClientCache::can_signal`]), and it does not cache either;
//! - the signal is written by a guard ([`ClientCache::signal_after`]) that fires when the
//!   write's future ends, also when it is dropped half-way (an abandoned admin request): the
//!   commit may still complete on the database's thread after that, so such a signal can come
//!   too early, and the entry expiry above bounds that case too. A spurious signal costs one
//!   reload per client;
//! - migrations signal too, in case one changes the `clients` table.
//!
//! The cache holds at most [`MAX_ENTRIES`] ids and is emptied when it would grow past that, so
//! a client probing random ids costs memory only up to that bound.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::client::Client;
use crate::domain::crypto::random_fill;

/// How long an entry is trusted without a change signal: the bound on staleness if a process
/// dies between committing a client change and writing the generation.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Most ids cached at once.
pub const MAX_ENTRIES: usize = 10_000;

/// The change signal's contents: random, so that two changes never leave the same value.
type Generation = [u8; 16];

struct Entry {
    client: Option<Client>,
    generation: Generation,
    read_at: Instant,
}

/// Clients by id, each valid while the generation file holds the value it was read under.
pub struct ClientCache {
    path: PathBuf,
    signal: Option<File>,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache")
            .field("enabled", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientCache {
    /// The cache of the database at `db`, signalled through `<db>.clients-generation`
    /// (created if missing, with the database file's permissions, so that whoever may write the
    /// database may signal). Without that file there is no cache.
    #[must_use]
    pub fn open(db: &Path) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push(".clients-generation");
        let path = PathBuf::from(name);
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        let signal = match options.clone().create_new(true).open(&path) {
            Ok(created) => {
                if let Ok(meta) = std::fs::metadata(db) {
                    let mode = meta.permissions().mode() & 0o666;
                    let _ = created.set_permissions(std::fs::Permissions::from_mode(mode));
                }
                Ok(created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => options.open(&path),
            Err(e) => Err(e),
        };
        if let Err(e) = &signal {
            tracing::warn!(file = ?path, error = %e, "client cache disabled, and client changes refused: cannot open the change signal");
        }
        Self {
            path,
            signal: signal.ok(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The current generation; `None` when there is no cache or the signal cannot be read.
    fn generation(&self) -> Option<Generation> {
        let file = self.signal.as_ref()?;
        let mut value = Generation::default();
        // A fresh file is empty (all zeroes); a short read leaves zeroes too.
        file.read_at(&mut value, 0).ok()?;
        Some(value)
    }

    /// The client `id`, from the cache if its entry is current, else from `read`, which is then
    /// cached.
    ///
    /// # Errors
    /// `read`'s error (nothing is cached then).
    pub fn get<E>(
        &self,
        id: &str,
        read: impl FnOnce() -> Result<Option<Client>, E>,
    ) -> Result<Option<Client>, E> {
        let Some(generation) = self.generation() else {
            return read();
        };
        if let Ok(entries) = self.entries.lock()
            && let Some(e) = entries.get(id)
            && e.generation == generation
            && e.read_at.elapsed() < MAX_AGE
        {
            return Ok(e.client.clone());
        }
        let read_at = Instant::now();
        let client = read()?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(id) {
                entries.clear();
            }
            entries.insert(
                id.to_owned(),
                Entry {
                    client: client.clone(),
                    generation,
                    read_at,
                },
            );
        }
        Ok(client)
    }

    /// Whether this process can tell the others about a client change; the store refuses
    /// client writes when it cannot.
    #[must_use]
    pub fn can_signal(&self) -> bool {
        self.signal.is_some()
    }

    /// The change signal's file, `<db>.clients-generation`.
    #[must_use]
    pub fn signal_path(&self) -> &Path {
        &self.path
    }

    /// A guard that signals a client change when dropped: create it before a client write
    /// commits, and keep it until the write's result is known.
    #[must_use]
    pub fn signal_after(&self) -> SignalOnDrop<'_> {
        SignalOnDrop(self)
    }

    /// Tells every process that clients changed.
    pub fn changed(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
        let Some(file) = &self.signal else { return };
        let mut fresh = Generation::default();
        let written = random_fill(&mut fresh)
            .map_err(std::io::Error::other)
            .and_then(|()| file.write_all_at(&fresh, 0));
        if let Err(e) = written {
            // Other processes then see the change only when their entries expire (MAX_AGE).
            tracing::warn!(error = %e, "could not signal a client change to other processes");
        }
    }
}

/// Signals a client change when dropped (see [`ClientCache::signal_after`]).
pub struct SignalOnDrop<'a>(&'a ClientCache);

impl Drop for SignalOnDrop<'_> {
    fn drop(&mut self) {
        self.0.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> Client {
        Client {
            name: name.to_owned(),
            ..Client::fixture()
        }
    }

    #[test]
    fn an_entry_is_used_until_any_cache_on_the_same_file_signals_a_change()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("t.db");
        let (server, cli) = (ClientCache::open(&db), ClientCache::open(&db));
        let read = |name: &'static str| move || Ok::<_, ()>(Some(client(name)));
        let name = |c: Result<Option<Client>, ()>| c.ok().flatten().map(|c| c.name);
        assert_eq!(name(server.get("a", read("v1"))), Some("v1".into()));
        // Cached: the reader is not consulted.
        assert_eq!(name(server.get("a", read("v2"))), Some("v1".into()));
        // Another process (another cache on the same file) changes a client.
        cli.changed();
        assert_eq!(name(server.get("a", read("v2"))), Some("v2".into()));
        // Absent ids are cached as absent, and invalidated the same way.
        assert_eq!(name(server.get("b", || Ok(None))), None);
        assert_eq!(name(server.get("b", read("new"))), None);
        cli.changed();
        assert_eq!(name(server.get("b", read("new"))), Some("new".into()));
        // A failed read caches nothing.
        assert!(server.get("c", || Err(())).is_err());
        assert_eq!(name(server.get("c", read("c"))), Some("c".into()));
        Ok(())
    }

    #[test]
    fn entries_expire_without_a_signal() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cache = ClientCache::open(&dir.path().join("t.db"));
        let _ = cache.get("a", || Ok::<_, ()>(Some(client("v1"))));
        if let Ok(mut entries) = cache.entries.lock()
            && let Some(e) = entries.get_mut("a")
        {
            e.read_at = Instant::now().checked_sub(MAX_AGE).unwrap_or(e.read_at);
        }
        let again = cache.get("a", || Ok::<_, ()>(Some(client("v2"))));
        assert_eq!(again.ok().flatten().map(|c| c.name), Some("v2".into()));
        Ok(())
    }

    #[test]
    fn without_its_signal_file_there_is_no_cache() {
        let cache = ClientCache::open(Path::new("/nonexistent-dir/t.db"));
        assert!(!cache.can_signal());
        let _ = cache.get("a", || Ok::<_, ()>(Some(client("v1"))));
        let again = cache.get("a", || Ok::<_, ()>(Some(client("v2"))));
        assert_eq!(again.ok().flatten().map(|c| c.name), Some("v2".into()));
    }
}
