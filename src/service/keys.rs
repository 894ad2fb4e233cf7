//! The master key's source, and the signing keys in memory.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::Settings;
use crate::domain::audit::{Actor, AuditEvent, AuditKind};
use crate::domain::clock::UnixTime;
use crate::domain::crypto::{DerivedKeys, MasterKey, RootKey};
use std::sync::Arc;

use crate::domain::jwt::{Algorithm, KeyState, SigningKey};
use crate::store::{Store, StoredKey};

const ROOT_KEY: &str = "root_key";

/// Finds the master key: `master_key` (e.g. `TESSERA_MASTER_KEY`), else `master_key_file`,
/// else — for the embedded SQLite default only — `<database file>.master-key`, generated with a
/// warning on first use (mode 0600).
///
/// A key is generated only for a database that no master key has initialised yet (no root key
/// in `meta`). When the file is missing beside an initialised database, a new key could open
/// nothing in it (signing keys, client secrets): the start is refused, nothing is written, and
/// the error names the missing file.
///
/// # Errors
/// A malformed key, an unreadable or missing file, no key for a database that is not a local
/// file, or a store failure.
pub async fn resolve_master_key(
    settings: &Settings,
    store: &dyn Store,
) -> anyhow::Result<MasterKey> {
    if let Some(text) = &settings.tokens.master_key {
        return MasterKey::parse(text.expose()).context("TESSERA_MASTER_KEY");
    }
    let path = match &settings.tokens.master_key_file {
        Some(p) => p.clone(),
        None => default_key_file(&settings.database.url).context(
            "no master key: set TESSERA_MASTER_KEY (or master_key_file); see docs/configuration.md",
        )?,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            MasterKey::parse(&text).with_context(|| format!("master key file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let initialised = store.meta_get(ROOT_KEY).await?.is_some();
            // A process starting on the same fresh database links its generated key file into
            // place before it writes the root key, so a root key found now with the file seen
            // missing a moment ago may be that process's: look again before refusing.
            if initialised && path.exists() {
                return read_key_file(&path);
            }
            if initialised {
                anyhow::bail!(
                    "the master key file {} is missing, but the database {} was initialised with \
                     a master key; refusing to start, and no new key was written (a new key \
                     cannot open the signing keys and client secrets stored there). Restore the \
                     file from your backup, or give the key with TESSERA_MASTER_KEY or \
                     master_key_file",
                    path.display(),
                    crate::store::redact_url(&settings.database.url),
                );
            }
            if settings.tokens.master_key_file.is_some() {
                anyhow::bail!(
                    "the master key file {} (master_key_file) is missing; create it with \
                     `tessera gen-master-key` (mode 0600) or give the key with TESSERA_MASTER_KEY",
                    path.display()
                );
            }
            let key = generate_key_file(&path)?;
            tracing::warn!(
                path = %path.display(),
                "no master key configured: generated one next to the database. Back it up; \
                 without it the signing keys and client secrets cannot be used. Set \
                 TESSERA_MASTER_KEY in production."
            );
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading master key file {}", path.display())),
    }
}

/// Generates a master key into the new file `path`, or reads the one another process starting
/// on the same fresh database put there first. The key is written whole to a private temporary
/// file that is then linked to `path` (which fails if `path` exists), so a reader never sees a
/// half-written key, and two processes end up with the same key.
fn generate_key_file(path: &std::path::Path) -> anyhow::Result<MasterKey> {
    let key = MasterKey::generate()?;
    let mut nonce = [0u8; 8];
    crate::domain::crypto::random_fill(&mut nonce)?;
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", crate::domain::crypto::hex(&nonce)));
    let temporary = PathBuf::from(name);
    write_private_file(&temporary, &key.encode(), false)?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // The new name on disk before any data depends on the key (best effort: not
                // every file system syncs a directory).
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(_) => {
            // A file system without hard links: create the file in place instead (a process
            // starting at the same moment could then read it before it is whole).
            match write_private_file(path, &key.encode(), false) {
                Ok(()) => Ok(key),
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists) =>
                {
                    read_key_file(path)
                }
                Err(e) => Err(e),
            }
        }
    }
}

fn read_key_file(path: &std::path::Path) -> anyhow::Result<MasterKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading master key file {}", path.display()))?;
    MasterKey::parse(&text).with_context(|| format!("master key file {}", path.display()))
}

fn default_key_file(database_url: &str) -> Option<PathBuf> {
    crate::store::beside_database(database_url, ".master-key")
}

/// Writes a credential to a file only its owner can read (mode 0600), flushed to disk.
/// `replace`: overwrite an existing file; otherwise refuse to.
///
/// # Errors
/// When the file cannot be created or written.
pub(crate) fn write_private_file(
    path: &std::path::Path,
    text: &str,
    replace: bool,
) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{text}")?;
    file.sync_all()?;
    Ok(())
}

/// Opens the deployment's root key with the master key: on first use a fresh root key is
/// generated and stored wrapped (two instances starting at once agree on one, because the
/// store keeps the first value written).
///
/// # Errors
/// When the database was initialised under another master key.
pub async fn open_root_key(store: &dyn Store, master: &MasterKey) -> anyhow::Result<DerivedKeys> {
    let fresh = URL_SAFE_NO_PAD.encode(master.wrap(&RootKey::generate()?)?);
    let stored = store.meta_insert_or_get(ROOT_KEY, &fresh).await?;
    let wrapped = URL_SAFE_NO_PAD
        .decode(stored.trim())
        .context("stored root key is not base64")?;
    let root = master.unwrap(&wrapped).map_err(|_| {
        anyhow::anyhow!(
            "this database was initialised with a different master key; refusing to start \
             (client secrets and signing keys would not work)"
        )
    })?;
    Ok(root.derive()?)
}

/// One loaded signing key and its lifecycle facts.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// The key.
    pub key: Arc<SigningKey>,
    /// Its state.
    pub state: KeyState,
    /// Creation time.
    pub created_at: UnixTime,
    /// For a retired key, when it leaves the JWKS.
    pub published_until: Option<UnixTime>,
}

/// The signing keys in memory: the active one signs; every unrevoked one verifies; `next`,
/// `active` and unexpired `retired` keys are published.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<LoadedKey>,
}

impl KeyRing {
    /// Loads the unrevoked keys from the store, reusing already parsed keys of `previous`.
    ///
    /// # Errors
    /// A store failure, or a key that cannot be opened with this root key.
    pub async fn load(
        store: &dyn Store,
        keys: &DerivedKeys,
        previous: Option<&KeyRing>,
    ) -> anyhow::Result<Self> {
        let mut ring = Vec::new();
        for k in store.list_keys().await? {
            let state = k.state;
            if state == KeyState::Revoked {
                continue;
            }
            let key = match previous.and_then(|p| p.find_arc(&k.kid)) {
                Some(key) => key,
                None => {
                    let alg: Algorithm = k.alg.parse().map_err(|e: String| anyhow::anyhow!(e))?;
                    let pkcs8 = keys
                        .open(&k.sealed_private_key, k.kid.as_bytes())
                        .with_context(|| format!("opening signing key {}", k.kid))?;
                    Arc::new(SigningKey::from_pkcs8(alg, &pkcs8)?)
                }
            };
            ring.push(LoadedKey {
                key,
                state,
                created_at: k.created_at,
                published_until: k.published_until,
            });
        }
        Ok(Self { keys: ring })
    }

    /// The key that signs new tokens.
    #[must_use]
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .map(|k| k.key.as_ref())
    }

    /// An unrevoked key by id.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys
            .iter()
            .find(|k| k.key.kid() == kid)
            .map(|k| k.key.as_ref())
    }

    fn find_arc(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys
            .iter()
            .find(|k| k.key.kid() == kid)
            .map(|k| k.key.clone())
    }

    /// The keys and their states.
    #[must_use]
    pub fn keys(&self) -> &[LoadedKey] {
        &self.keys
    }

    fn published(&self, now: UnixTime) -> impl Iterator<Item = &LoadedKey> {
        self.keys.iter().filter(move |k| match k.state {
            KeyState::Next | KeyState::Active => true,
            KeyState::Retired => k.published_until.is_some_and(|t| t >= now),
            KeyState::Revoked => false,
        })
    }

    /// The JWKS document at `now`.
    #[must_use]
    pub fn jwks(&self, now: UnixTime) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .published(now)
            .map(|k| k.key.public_jwk().clone())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The algorithms of the published keys, without repetition.
    #[must_use]
    pub fn algorithms(&self, now: UnixTime) -> Vec<&'static str> {
        let mut algs: Vec<&'static str> = Vec::new();
        for k in self.published(now) {
            let a = k.key.alg().as_str();
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
        algs
    }
}

/// Generates a key of `alg` and stores it in `state` (`active` only if there is none, `next`
/// only if there is none).
async fn create_key(
    store: &dyn Store,
    keys: &DerivedKeys,
    alg: Algorithm,
    state: KeyState,
    now: UnixTime,
) -> anyhow::Result<()> {
    let (key, pkcs8) = SigningKey::generate(alg)?;
    let stored = StoredKey {
        kid: key.kid().to_owned(),
        alg: key.alg().as_str().to_owned(),
        state,
        sealed_private_key: keys.seal(&pkcs8, key.kid().as_bytes())?,
        created_at: now,
        published_until: None,
    };
    match state {
        KeyState::Active => store.insert_first_active_key(&stored).await?,
        _ => store.insert_next_key(&stored).await?,
    }
    tracing::info!(kid = key.kid(), alg = %key.alg(), state = state.as_str(), "created a signing key");
    Ok(())
}

/// Makes sure an active and a next key exist (creating them with `alg`), so that the key the
/// next rotation activates has been published since the previous one.
///
/// # Errors
/// A store failure.
pub async fn ensure_keys(
    store: &dyn Store,
    keys: &DerivedKeys,
    alg: Algorithm,
    now: UnixTime,
) -> anyhow::Result<()> {
    let stored = store.list_keys().await?;
    if !stored.iter().any(|k| k.state == KeyState::Active) {
        create_key(store, keys, alg, KeyState::Active, now).await?;
    }
    if !stored.iter().any(|k| k.state == KeyState::Next) {
        create_key(store, keys, alg, KeyState::Next, now).await?;
    }
    Ok(())
}

/// Re-wraps the root key under a new master key. Secrets, tokens and signing keys stay valid;
/// every instance must be restarted with the new master key afterwards (running instances keep
/// working, since they already hold the root key).
///
/// # Errors
/// `current` is not the database's master key, or the store fails.
pub async fn rotate_master_key(
    store: &dyn Store,
    current: &MasterKey,
    new: &MasterKey,
    now: UnixTime,
) -> anyhow::Result<()> {
    let fresh = URL_SAFE_NO_PAD.encode(current.wrap(&RootKey::generate()?)?);
    let stored = store.meta_insert_or_get(ROOT_KEY, &fresh).await?;
    let wrapped = URL_SAFE_NO_PAD
        .decode(stored.trim())
        .context("stored root key is not base64")?;
    let root = current
        .unwrap(&wrapped)
        .map_err(|_| anyhow::anyhow!("the current master key does not open this database"))?;
    let rewrapped = URL_SAFE_NO_PAD.encode(new.wrap(&root)?);
    if !store.meta_replace(ROOT_KEY, &stored, &rewrapped).await? {
        anyhow::bail!("the root key changed during the rotation; run the command again");
    }
    let event = AuditEvent::new(
        AuditKind::MasterKeyRotated,
        now,
        &Actor::cli(),
        None,
        serde_json::json!({}),
    );
    store.record_audit(&event).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes generating the key of one fresh database: the second finds the first's
    /// file in place, whole, and uses that key. No temporary file is left.
    #[test]
    fn a_key_file_generated_by_another_process_first_is_the_one_used()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db.master-key");
        let first = generate_key_file(&path)?;
        let second = generate_key_file(&path)?;
        assert_eq!(second.encode(), first.encode());
        assert_eq!(
            MasterKey::parse(&std::fs::read_to_string(&path)?)?.encode(),
            first.encode()
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, vec![std::ffi::OsString::from("t.db.master-key")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        Ok(())
    }
}
