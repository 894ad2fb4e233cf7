//! Configuration: defaults, overridden by a TOML file, overridden by `TESSERA_*` environment
//! variables, overridden by command-line flags.
//!
//! Every setting has one name used in all three places: `access_ttl` in the TOML file is
//! `TESSERA_ACCESS_TTL` in the environment and `--access-ttl` on `tessera serve`. The table in
//! `docs/configuration.md` documents each one; [`SETTINGS`] is the list they are read from.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Deserializer};

use crate::domain::client::{Profile, TokenFormat};
use crate::domain::jwt::Algorithm;

/// Longest token lifetime accepted (one year), so `exp` always fits an int32 until 2037.
pub const MAX_TTL: u32 = 365 * 24 * 3600;

/// Longest header, body or idle timeout accepted (one hour).
pub const MAX_CONNECTION_TIMEOUT: u32 = 3600;

/// The shortest configured `admin_token`, in characters. 32 random base64 characters carry
/// 192 bits; `openssl rand -base64 32` gives 44.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Where the store lives: what [`crate::store::open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// `sqlite:` URL, plain file path, or `postgres://` URL.
    pub url: String,
    /// Most pooled connections (PostgreSQL).
    pub max_connections: u32,
}

/// How a setting's text (from the environment or a flag) becomes a TOML value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Taken as is.
    Text,
    /// A non-negative integer.
    Integer,
    /// A whitespace-separated list.
    List,
    /// `true` or `false`.
    Bool,
}

/// Every setting's name and kind.
pub const SETTINGS: &[(&str, Kind)] = &[
    ("listen", Kind::Text),
    ("database_url", Kind::Text),
    ("database_max_connections", Kind::Integer),
    ("issuer", Kind::Text),
    ("master_key", Kind::Text),
    ("master_key_file", Kind::Text),
    ("default_profile", Kind::Text),
    ("default_format", Kind::Text),
    ("access_ttl", Kind::Integer),
    ("refresh_ttl", Kind::Integer),
    ("refresh_grace", Kind::Integer),
    ("audience", Kind::Text),
    ("extra_scopes", Kind::List),
    ("max_body_bytes", Kind::Integer),
    ("cleanup_interval", Kind::Integer),
    ("cleanup_batch", Kind::Integer),
    ("token_retention", Kind::Integer),
    ("log_format", Kind::Text),
    ("signing_alg", Kind::Text),
    ("key_reload_interval", Kind::Integer),
    ("trust_forwarded_for", Kind::Bool),
    ("admin_listen", Kind::Text),
    ("admin_token", Kind::Text),
    ("audit_retention", Kind::Integer),
    ("rate_limit_per_client", Kind::Integer),
    ("rate_limit_per_ip", Kind::Integer),
    ("auth_failures_per_minute", Kind::Integer),
    ("shutdown_timeout", Kind::Integer),
    ("shutdown_drain", Kind::Integer),
    ("header_timeout", Kind::Integer),
    ("body_timeout", Kind::Integer),
    ("idle_timeout", Kind::Integer),
    ("max_connections", Kind::Integer),
    ("admin_max_connections", Kind::Integer),
];

/// A secret setting: `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    T::from_str(&s).map_err(serde::de::Error::custom)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// All settings, after layering. See `docs/configuration.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Public listen address.
    pub listen: String,
    /// `sqlite://path` (default `sqlite://tessera.db`), a plain file path, or a
    /// `postgres://` / `postgresql://` URL.
    pub database_url: String,
    /// PostgreSQL only: connections in this instance's pool.
    pub database_max_connections: u32,
    /// The issuer URL (`iss`); defaults to `http://<listen>`.
    pub issuer: Option<String>,
    /// The master key (base64 of 32 bytes).
    pub master_key: Option<Secret>,
    /// A file holding the master key.
    pub master_key_file: Option<PathBuf>,
    /// Wire profile for clients that do not choose one.
    #[serde(deserialize_with = "from_str")]
    pub default_profile: Profile,
    /// Token format for new clients that do not choose one.
    #[serde(deserialize_with = "from_str")]
    pub default_format: TokenFormat,
    /// Default access token lifetime, seconds.
    pub access_ttl: u32,
    /// Default refresh token lifetime, seconds.
    pub refresh_ttl: u32,
    /// Seconds during which a just-used refresh token may be retried.
    pub refresh_grace: u32,
    /// Default `aud` of access tokens; defaults to the issuer.
    pub audience: Option<String>,
    /// Scope templates added to Moov's catalogue.
    pub extra_scopes: Vec<String>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds between two runs of the expired-token cleanup.
    pub cleanup_interval: u32,
    /// Rows deleted per cleanup transaction.
    pub cleanup_batch: u32,
    /// Seconds an expired or revoked token is kept before the cleanup deletes it.
    pub token_retention: u32,
    /// `text` or `json`.
    #[serde(deserialize_with = "from_str")]
    pub log_format: LogFormat,
    /// Algorithm of newly created signing keys: `EdDSA`, `ES256` or `RS256`.
    #[serde(deserialize_with = "from_str")]
    pub signing_alg: Algorithm,
    /// Seconds between two reloads of the signing keys from the store (how soon a rotation
    /// made elsewhere takes effect on this instance).
    pub key_reload_interval: u32,
    /// Take the client address from the first `X-Forwarded-For` entry (only behind a proxy
    /// that sets that header itself).
    pub trust_forwarded_for: bool,
    /// Admin API and metrics listen address (keep it private).
    pub admin_listen: String,
    /// The admin credential; generated on first start when absent.
    pub admin_token: Option<Secret>,
    /// Seconds audit events are kept.
    pub audit_retention: u32,
    /// Requests per second per client on token/revoke/introspect (0: no limit).
    pub rate_limit_per_client: u32,
    /// Requests per second per source address on token/revoke/introspect (0: no limit).
    pub rate_limit_per_ip: u32,
    /// Failed authentications per minute per client id and source address before 429.
    pub auth_failures_per_minute: u32,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: u32,
    /// Seconds to keep serving with `/readyz` answering 503 after SIGTERM/SIGINT, so a load
    /// balancer stops sending traffic before the listener closes.
    pub shutdown_drain: u32,
    /// Seconds a connection has to deliver a request's headers, from its first byte (from the
    /// accept, for its first request); past it, the connection is closed.
    pub header_timeout: u32,
    /// Seconds a request's body has to arrive whole after its headers; past it, `408`.
    pub body_timeout: u32,
    /// Seconds a kept-alive connection may stay without a new request before it is closed.
    pub idle_timeout: u32,
    /// Open connections at most on the public listener; `0`: derived from the descriptor limit
    /// (see `docs/operating.md`).
    pub max_connections: u32,
    /// Open connections at most on the admin listener.
    pub admin_max_connections: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://tessera.db".into(),
            database_max_connections: crate::store::postgres::DEFAULT_MAX_CONNECTIONS,
            issuer: None,
            master_key: None,
            master_key_file: None,
            default_profile: Profile::Seed,
            default_format: TokenFormat::Opaque,
            access_ttl: 3600,
            refresh_ttl: 30 * 24 * 3600,
            refresh_grace: 0,
            audience: None,
            extra_scopes: Vec::new(),
            max_body_bytes: 16 * 1024,
            cleanup_interval: 60,
            cleanup_batch: 500,
            token_retention: 0,
            log_format: LogFormat::Text,
            signing_alg: Algorithm::EdDsa,
            key_reload_interval: 10,
            trust_forwarded_for: false,
            admin_listen: "127.0.0.1:8081".into(),
            admin_token: None,
            audit_retention: 90 * 24 * 3600,
            rate_limit_per_client: 40,
            rate_limit_per_ip: 200,
            auth_failures_per_minute: 10,
            shutdown_timeout: 20,
            shutdown_drain: 0,
            header_timeout: 10,
            body_timeout: 10,
            idle_timeout: 60,
            max_connections: 0,
            admin_max_connections: 64,
        }
    }
}

impl Settings {
    /// The database settings.
    #[must_use]
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
        }
    }

    /// Layers the TOML file (if any), the process environment and `flags` (setting name →
    /// text) over the defaults, and validates the result.
    ///
    /// # Errors
    /// An unreadable or malformed file, an unknown setting, or an invalid value.
    pub fn load(file: Option<&Path>, flags: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::load_from(file, |name| std::env::var(name).ok(), flags)
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading configuration file {}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("parsing configuration file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, kind) in SETTINGS {
            let var = format!("TESSERA_{}", name.to_ascii_uppercase());
            if let Some(text) = env(&var) {
                table.insert((*name).to_owned(), to_value(name, *kind, &text)?);
            }
        }
        for (name, text) in flags {
            let (_, kind) = SETTINGS
                .iter()
                .find(|(n, _)| n == name)
                .with_context(|| format!("unknown setting {name}"))?;
            table.insert((*name).to_owned(), to_value(name, *kind, text)?);
        }
        let settings: Self =
            Settings::deserialize(toml::Value::Table(table)).context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, ttl) in [
            ("access_ttl", self.access_ttl),
            ("refresh_ttl", self.refresh_ttl),
        ] {
            if ttl == 0 || ttl > MAX_TTL {
                bail!("{name} must be between 1 and {MAX_TTL} seconds");
            }
        }
        if self.max_body_bytes < 256 {
            bail!("max_body_bytes must be at least 256");
        }
        if self.key_reload_interval == 0 {
            bail!("key_reload_interval must be positive");
        }
        if self.cleanup_interval == 0 || self.cleanup_batch == 0 {
            bail!("cleanup_interval and cleanup_batch must be positive");
        }
        if self.database_max_connections == 0 || self.database_max_connections > 1000 {
            bail!("database_max_connections must be between 1 and 1000");
        }
        for (name, secs) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if secs == 0 || secs > MAX_CONNECTION_TIMEOUT {
                bail!("{name} must be between 1 and {MAX_CONNECTION_TIMEOUT} seconds");
            }
        }
        if self.admin_max_connections == 0 {
            bail!("admin_max_connections must be positive");
        }
        if self.token_retention > MAX_TTL {
            bail!("token_retention must be at most {MAX_TTL} seconds");
        }
        if let Some(token) = &self.admin_token {
            check_admin_token(token.expose())?;
        }
        Ok(())
    }

    /// The issuer URL, explicit or derived from the listen address.
    #[must_use]
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

fn to_value(name: &str, kind: Kind, text: &str) -> anyhow::Result<toml::Value> {
    Ok(match kind {
        Kind::Text => toml::Value::String(text.to_owned()),
        Kind::Integer => toml::Value::Integer(
            text.trim()
                .parse::<i64>()
                .with_context(|| format!("{name} must be an integer"))?,
        ),
        Kind::Bool => toml::Value::Boolean(
            text.trim()
                .parse::<bool>()
                .with_context(|| format!("{name} must be true or false"))?,
        ),
        Kind::List => toml::Value::Array(
            text.split_whitespace()
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

/// A configured admin token must be a credential worth the name: at least
/// [`MIN_ADMIN_TOKEN_CHARS`] characters, all visible ASCII (what a `Bearer` header can carry
/// unchanged: surrounding whitespace, e.g. a newline from a secret file, would be trimmed off
/// the presented token and never match). The message never shows the token.
fn check_admin_token(token: &str) -> anyhow::Result<()> {
    if token.is_empty() {
        bail!(
            "admin_token (TESSERA_ADMIN_TOKEN) is set but empty; unset it to have a token \
             generated, or set at least {MIN_ADMIN_TOKEN_CHARS} random characters \
             (e.g. `openssl rand -base64 32`)"
        );
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "admin_token (TESSERA_ADMIN_TOKEN) must be visible ASCII characters only, without \
             spaces, newlines or other control characters"
        );
    }
    let n = token.len();
    if n < MIN_ADMIN_TOKEN_CHARS {
        bail!(
            "admin_token (TESSERA_ADMIN_TOKEN) is {n} characters; it must be at least \
             {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -base64 32`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_short_or_unprintable_admin_token_is_refused() {
        let load = |token: &str| {
            let token = token.to_owned();
            Settings::load_from(
                None,
                move |k| (k == "TESSERA_ADMIN_TOKEN").then(|| token.clone()),
                &[],
            )
            .map(|s| s.admin_token.is_some())
            .map_err(|e| e.to_string())
        };
        let refused = |token: &str, says: &str| {
            let e = load(token).err().unwrap_or_default();
            assert!(e.contains("admin_token"), "{token:?}: {e}");
            assert!(e.contains(says), "{token:?}: {e}");
            assert!(token.is_empty() || !e.contains(token), "{e}");
        };
        refused("", "empty");
        refused("short-token", "at least 32");
        refused(&"x".repeat(MIN_ADMIN_TOKEN_CHARS - 1), "at least 32");
        refused(&format!("{}\n", "x".repeat(40)), "visible ASCII");
        refused(
            &format!("{} {}", "x".repeat(20), "y".repeat(20)),
            "visible ASCII",
        );
        assert_eq!(load(&"x".repeat(MIN_ADMIN_TOKEN_CHARS)), Ok(true));
    }

    #[test]
    fn flags_override_environment_which_overrides_the_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "access_ttl = 100\nrefresh_ttl = 200\nlisten = \"0.0.0.0:1\"\n",
        )?;
        let env = |k: &str| (k == "TESSERA_REFRESH_TTL").then(|| "300".to_owned());
        let s = Settings::load_from(Some(&file), env, &[("listen", "127.0.0.1:9".into())])?;
        assert_eq!(
            (s.access_ttl, s.refresh_ttl, s.listen.as_str()),
            (100, 300, "127.0.0.1:9")
        );
        assert_eq!(s.issuer(), "http://127.0.0.1:9");
        Ok(())
    }

    #[test]
    fn bad_values_and_unknown_settings_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "acess_ttl = 100\n")?;
        assert!(Settings::load_from(Some(&file), |_| None, &[]).is_err());
        let env = |k: &str| (k == "TESSERA_DEFAULT_PROFILE").then(|| "fancy".to_owned());
        assert!(Settings::load_from(None, env, &[]).is_err());
        assert!(Settings::load_from(None, |_| None, &[("access_ttl", "0".into())]).is_err());
        for (name, bad) in [
            ("header_timeout", "0"),
            ("body_timeout", "3601"),
            ("idle_timeout", "0"),
            ("admin_max_connections", "0"),
        ] {
            assert!(
                Settings::load_from(None, |_| None, &[(name, bad.into())]).is_err(),
                "{name} = {bad} was accepted"
            );
        }
        Ok(())
    }

    #[test]
    fn master_key_is_not_shown_by_debug() -> anyhow::Result<()> {
        let env = |k: &str| (k == "TESSERA_MASTER_KEY").then(|| "c2VjcmV0".to_owned());
        let s = Settings::load_from(None, env, &[])?;
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
        Ok(())
    }
}
