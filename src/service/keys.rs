//! The master key's source, and the signing keys in memory.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::Settings;
use crate::domain::clock::UnixTime;
use crate::domain::crypto::{DerivedKeys, MasterKey, RootKey};
use crate::domain::jwt::{Algorithm, SigningKey};
use crate::store::{Store, StoredKey};

const ROOT_KEY: &str = "root_key";

/// Finds the master key: `master_key` (e.g. `TESSERA_MASTER_KEY`), else `master_key_file`,
/// else — for the embedded SQLite default only — `<database file>.master-key`, generated with a
/// warning on first use (mode 0600).
///
/// # Errors
/// A malformed key, an unreadable file, or no key for a database that is not a local file.
pub fn resolve_master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    if let Some(text) = &settings.master_key {
        return MasterKey::parse(text.expose()).context("TESSERA_MASTER_KEY");
    }
    let path = match &settings.master_key_file {
        Some(p) => p.clone(),
        None => default_key_file(&settings.database_url).context(
            "no master key: set TESSERA_MASTER_KEY (or master_key_file); see docs/configuration.md",
        )?,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            MasterKey::parse(&text).with_context(|| format!("master key file {}", path.display()))
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && settings.master_key_file.is_none() =>
        {
            let key = MasterKey::generate()?;
            write_new_key_file(&path, &key)?;
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

fn default_key_file(database_url: &str) -> Option<PathBuf> {
    if database_url.starts_with("postgres") {
        return None;
    }
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .unwrap_or(database_url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(format!("{path}.master-key")))
}

fn write_new_key_file(path: &std::path::Path, key: &MasterKey) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating master key file {}", path.display()))?;
    writeln!(file, "{}", key.encode())?;
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

/// The signing keys in memory: the active one signs; every published one verifies.
#[derive(Debug)]
pub struct KeyRing {
    active: usize,
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// Loads the stored keys, creating the first active key if there is none.
    ///
    /// # Errors
    /// A store failure, or a key that cannot be opened with this master key.
    pub async fn load_or_create(
        store: &dyn Store,
        keys: &DerivedKeys,
        now: UnixTime,
    ) -> anyhow::Result<Self> {
        let mut stored = store.list_keys().await?;
        if !stored.iter().any(|k| k.state == "active") {
            let (key, pkcs8) = SigningKey::generate(Algorithm::EdDsa)?;
            let sealed = keys.seal(&pkcs8, key.kid().as_bytes())?;
            store
                .insert_first_active_key(&StoredKey {
                    kid: key.kid().to_owned(),
                    alg: key.alg().as_str().to_owned(),
                    state: "active".into(),
                    sealed_private_key: sealed,
                    created_at: now,
                    published_until: None,
                })
                .await?;
            tracing::info!(kid = key.kid(), alg = %key.alg(), "created the first signing key");
            stored = store.list_keys().await?;
        }
        let mut ring = Vec::new();
        let mut active = None;
        for k in stored.iter().filter(|k| k.state != "revoked") {
            let alg: Algorithm = k.alg.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let pkcs8 = keys
                .open(&k.sealed_private_key, k.kid.as_bytes())
                .with_context(|| format!("opening signing key {}", k.kid))?;
            let key = SigningKey::from_pkcs8(alg, &pkcs8)?;
            if k.state == "active" {
                active = Some(ring.len());
            }
            ring.push(key);
        }
        let active = active.context("no active signing key")?;
        Ok(Self { active, keys: ring })
    }

    /// The key that signs new tokens.
    #[must_use]
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.get(self.active)
    }

    /// A published key by id.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid() == kid)
    }

    /// The JWKS document.
    #[must_use]
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }
}
