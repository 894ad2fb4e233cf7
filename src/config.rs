//! Configuration: defaults, overridden by a TOML file, overridden by `TESSERA_*` environment
//! variables, overridden by command-line flags.
//!
//! Every setting has one name used in all three places: `access_ttl` in the TOML file is
//! `TESSERA_ACCESS_TTL` in the environment and `--access-ttl` on `tessera serve`. In code the
//! settings are grouped ([`Settings::server`], [`Settings::tokens`], …); outside they stay flat.
//! The `settings!` table below defines each setting once: its group, field, external name,
//! type, default, flag and one-line meaning. The structs, their defaults, [`SETTINGS`] (which
//! the environment, the flags and the documentation test read) are all generated from it; the
//! table in `docs/configuration.md` documents each one, and a test checks the two agree.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, bail};

use crate::domain::client::{Profile, TokenFormat};
use crate::domain::jwt::Algorithm;
use crate::store::postgres::SslMode;

/// Longest token lifetime accepted (one year), so `exp` always fits an int32 until 2037.
pub const MAX_TTL: u32 = 365 * 24 * 3600;

/// Longest header, body or idle timeout accepted (one hour).
pub const MAX_CONNECTION_TIMEOUT: u32 = 3600;

/// The shortest configured `admin_token`, in characters. 32 random base64 characters carry
/// 192 bits; `openssl rand -base64 32` gives 44.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// How a setting's text (from the environment or a flag) becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Which command-line flag, if any, sets a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `--<name>` on `tessera serve`.
    Serve,
    /// `--<name>` on every command.
    Global,
    /// None: only the file and the environment set it.
    No,
}

/// One setting, as `settings!` defines it.
#[derive(Debug)]
pub struct Setting {
    /// The name in the TOML file; upper-cased after `TESSERA_` in the environment, with `-`
    /// for `_` in the flag.
    pub name: &'static str,
    /// The group it is in ([`Settings`]' field name).
    pub group: &'static str,
    /// How its environment or flag text is read.
    pub kind: Kind,
    /// Its flag.
    pub flag: Flag,
    /// What it means, one line.
    pub meaning: &'static str,
    /// What the default is when no value is set, as the documentation says it (`none`, or
    /// what the server derives instead).
    pub unset: &'static str,
    /// The default value as the documentation shows it; `None` when there is none.
    pub default: fn() -> Option<String>,
    /// Stores a value into the settings.
    pub set: fn(&mut Settings, toml::Value) -> Result<(), String>,
}

impl Setting {
    /// `TESSERA_<NAME>`.
    #[must_use]
    pub fn env_var(&self) -> String {
        format!("TESSERA_{}", self.name.to_ascii_uppercase())
    }

    /// The flag's long name, `--` excluded.
    #[must_use]
    pub fn flag_name(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The default as `tessera serve --help` shows it.
    #[must_use]
    pub fn default_text(&self) -> String {
        (self.default)().unwrap_or_else(|| self.unset.replace('`', ""))
    }
}

/// The setting named `name` in the file, the environment or the flags.
#[must_use]
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// A type a setting can have: how it is read from a TOML value and how its default is shown.
pub trait SettingValue: Sized {
    /// How its text from the environment or a flag becomes a TOML value.
    const KIND: Kind;
    /// The setting's value from a TOML value.
    ///
    /// # Errors
    /// What is wrong with it, without showing it (it may be a secret).
    fn from_toml(value: toml::Value) -> Result<Self, String>;
    /// The value as the documentation shows it; `None` for nothing (or a secret).
    fn shown(&self) -> Option<String>;
}

fn expected(what: &str, value: &toml::Value) -> String {
    format!("expected {what}, found {}", value.type_str())
}

fn text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        other => Err(expected("a string", &other)),
    }
}

impl SettingValue for String {
    const KIND: Kind = Kind::Text;
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        text(value)
    }
    fn shown(&self) -> Option<String> {
        Some(self.clone())
    }
}

impl SettingValue for PathBuf {
    const KIND: Kind = Kind::Text;
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        text(value).map(Self::from)
    }
    fn shown(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl SettingValue for bool {
    const KIND: Kind = Kind::Bool;
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Boolean(b) => Ok(b),
            other => Err(expected("true or false", &other)),
        }
    }
    fn shown(&self) -> Option<String> {
        Some(self.to_string())
    }
}

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            const KIND: Kind = Kind::Integer;
            fn from_toml(value: toml::Value) -> Result<Self, String> {
                match value {
                    toml::Value::Integer(i) => Self::try_from(i)
                        .map_err(|_| format!("{i} is not between 0 and {}", Self::MAX)),
                    other => Err(expected("an integer", &other)),
                }
            }
            fn shown(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
integer_setting!(u32, usize);

/// Settings named by a word ([`FromStr`] to read, [`Display`](std::fmt::Display) to show).
macro_rules! word_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            const KIND: Kind = Kind::Text;
            fn from_toml(value: toml::Value) -> Result<Self, String> {
                Self::from_str(&text(value)?)
            }
            fn shown(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
word_setting!(Profile, TokenFormat, Algorithm, LogFormat, SslMode);

impl SettingValue for Vec<String> {
    const KIND: Kind = Kind::List;
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Array(items) => items.into_iter().map(text).collect(),
            other => Err(expected("an array of strings", &other)),
        }
    }
    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| format!("{self:?}"))
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    const KIND: Kind = T::KIND;
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        T::from_toml(value).map(Some)
    }
    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(T::shown)
    }
}

/// A secret setting: `Debug` never shows it.
#[derive(Clone)]
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

impl SettingValue for Secret {
    const KIND: Kind = Kind::Text;
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        text(value).map(Self)
    }
    fn shown(&self) -> Option<String> {
        None
    }
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

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
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

/// The first of its arguments: an optional given value, then the default.
macro_rules! given_or {
    ($given:expr, $default:expr) => {
        $given
    };
    ($default:expr) => {
        $default
    };
}

/// Defines the settings: for each group, a struct with its fields and their defaults; the
/// [`Settings`] struct of the groups; and [`SETTINGS`], one [`Setting`] per field.
///
/// A field is `name [as "external_name"]: Type = default, Flag [, unset "text"];` after its
/// one-line doc comment (its meaning). The external name (file, environment, flag) is the
/// field's name unless given. `unset` says what an optional setting's absence means, as the
/// documentation says it (`none` unless given).
macro_rules! settings {
    ($(
        $(#[doc = $gdoc:literal])*
        $group:ident: $Group:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident $(as $ext:literal)?: $ty:ty = $default:expr, $flag:ident
                    $(, unset $unset:literal)?;
            )*
        }
    )*) => {
        $(
            $(#[doc = $gdoc])*
            #[derive(Debug, Clone)]
            pub struct $Group {
                $(
                    $(#[doc = $doc])+
                    pub $field: $ty,
                )*
            }

            impl Default for $Group {
                fn default() -> Self {
                    Self { $($field: $default,)* }
                }
            }
        )*

        /// All settings, after layering, by group. See `docs/configuration.md`.
        #[derive(Debug, Clone, Default)]
        pub struct Settings {
            $(
                $(#[doc = $gdoc])*
                pub $group: $Group,
            )*
        }

        /// Every setting, group by group.
        pub const SETTINGS: &[Setting] = &[$($(
            Setting {
                name: given_or!($($ext,)? stringify!($field)),
                group: stringify!($group),
                kind: <$ty as SettingValue>::KIND,
                flag: Flag::$flag,
                meaning: concat!($($doc),+).trim_ascii(),
                unset: given_or!($($unset,)? "none"),
                default: || SettingValue::shown(&<$Group as Default>::default().$field),
                set: |settings, value| {
                    settings.$group.$field = SettingValue::from_toml(value)?;
                    Ok(())
                },
            },
        )*)*];
    };
}

settings! {
    /// The public listener: its address, the issuer, request and connection limits,
    /// shutdown, and the log.
    server: ServerSettings {
        /// Public listen address.
        listen: String = "127.0.0.1:8080".to_owned(), Serve;
        /// Issuer URL (`iss`).
        issuer: Option<String> = None, Serve,
            unset "`http://<bound listen address>` (`https://` with `tls_cert`)";
        /// Log format: text or json.
        log_format: LogFormat = LogFormat::Text, Serve;
        /// Largest accepted request body, bytes.
        max_body_bytes: usize = 16 * 1024, No;
        /// Take the client address from the first `X-Forwarded-For` entry (only behind a
        /// proxy that sets that header itself).
        trust_forwarded_for: bool = false, No;
        /// Seconds to keep serving with /readyz at 503 after SIGTERM/SIGINT, so a load
        /// balancer stops sending traffic before the listener closes.
        shutdown_drain: u32 = 0, Serve;
        /// Seconds in-flight requests get to finish after the listeners close.
        shutdown_timeout: u32 = 20, No;
        /// Seconds a connection has to send a request's headers, from its first byte (from
        /// the accept, for its first request).
        header_timeout: u32 = 10, Serve;
        /// Seconds a request's body has to arrive whole after its headers; past it, 408.
        body_timeout: u32 = 10, Serve;
        /// Seconds a kept-alive connection may wait for its next request.
        idle_timeout: u32 = 60, Serve;
        /// Open connections at most on the public listener; 0 derives it from the descriptor
        /// limit (see docs/operating.md).
        max_connections: u32 = 0, Serve;
    }

    /// The database.
    database: DatabaseSettings {
        /// The database: `sqlite://FILE`, a file path, or a `postgres://` / `postgresql://` URL.
        url as "database_url": String = "sqlite://tessera.db".to_owned(), Global;
        /// PostgreSQL only: connections in this instance's pool.
        max_connections as "database_max_connections": u32 =
            crate::store::postgres::DEFAULT_MAX_CONNECTIONS, No;
        /// PostgreSQL only: TLS mode, disable, prefer, require, verify-ca or verify-full
        /// (as libpq's `sslmode`, which it overrides).
        ssl_mode as "database_sslmode": Option<SslMode> = None, No,
            unset "the URL's `sslmode`, else `prefer`";
        /// PostgreSQL only: PEM file of the CA certificates the server's certificate must chain
        /// to (overrides the URL's `sslrootcert`).
        ssl_root_cert as "database_ssl_root_cert": Option<PathBuf> = None, No,
            unset "the URL's `sslrootcert`, else the Mozilla roots";
        /// PostgreSQL only: PEM file of a client certificate chain to present (with
        /// `database_ssl_key`; overrides the URL's `sslcert`).
        ssl_cert as "database_ssl_cert": Option<PathBuf> = None, No;
        /// PostgreSQL only: PEM file of the client certificate's private key (overrides the
        /// URL's `sslkey`).
        ssl_key as "database_ssl_key": Option<PathBuf> = None, No;
    }

    /// Tokens and the keys behind them: lifetimes, formats, profiles, audience, scopes,
    /// signing keys and the master key.
    tokens: TokenSettings {
        /// The master key (base64 of 32 bytes).
        master_key: Option<Secret> = None, No;
        /// A file holding the master key.
        master_key_file: Option<PathBuf> = None, No;
        /// Wire profile for clients without one: seed, moov or rfc6749.
        default_profile: Profile = Profile::Seed, Serve;
        /// Token format for new clients without one: opaque or jwt.
        default_format: TokenFormat = TokenFormat::Opaque, Serve;
        /// Access token lifetime, seconds.
        access_ttl: u32 = 3600, Serve;
        /// Refresh token lifetime, seconds.
        refresh_ttl: u32 = 30 * 24 * 3600, Serve;
        /// Seconds a used refresh token may be retried before reuse revokes its family.
        refresh_grace: u32 = 0, Serve;
        /// Default `aud` of access tokens.
        audience: Option<String> = None, Serve, unset "the issuer";
        /// Scope templates added to Moov's catalogue.
        extra_scopes: Vec<String> = Vec::new(), No;
        /// Algorithm of newly created signing keys: EdDSA, ES256, RS256 or PS256.
        signing_alg: Algorithm = Algorithm::EdDsa, No;
        /// Seconds between two reloads of the signing keys from the store (how soon a
        /// rotation made elsewhere takes effect here).
        key_reload_interval: u32 = 10, No;
        /// Require a server nonce in DPoP proofs (RFC 9449 §8); the nonce is stateless, the
        /// same on every instance.
        dpop_nonce: bool = false, Serve;
        /// Let clients register a plain-http `jwks_uri` and let it point at loopback or
        /// private addresses (tests and development only; see docs/security.md).
        jwks_uri_allow_http: bool = false, No;
    }

    /// The background cleanup, and how long the rows it deletes are kept.
    cleanup: CleanupSettings {
        /// Seconds between two runs of the cleanup of expired tokens.
        interval as "cleanup_interval": u32 = 60, No;
        /// Rows deleted per table per cleanup transaction, at most.
        batch as "cleanup_batch": u32 = 500, No;
        /// Seconds an expired or revoked token is kept before the cleanup deletes it.
        token_retention: u32 = 0, No;
        /// Seconds an audit event is kept before the cleanup deletes it.
        audit_retention: u32 = 90 * 24 * 3600, No;
    }

    /// Rate limits on the token, revocation and introspection endpoints (and `/ping` with
    /// Basic credentials), per instance.
    limits: LimitSettings {
        /// Requests per second per source address (0: no limit).
        rate_limit_per_ip: u32 = 200, No;
        /// Requests per second per client (0: no limit).
        rate_limit_per_client: u32 = 40, No;
        /// Failed authentications per minute per client id and source address before 429
        /// (0: no limit).
        auth_failures_per_minute: u32 = 10, No;
    }

    /// The admin listener (admin API, metrics, health) and its credential.
    admin: AdminSettings {
        /// Admin API and metrics listen address (keep it private).
        listen as "admin_listen": String = "127.0.0.1:8081".to_owned(), Serve;
        /// The admin credential; generated on first start when absent.
        token as "admin_token": Option<Secret> = None, No, unset "none: generated";
        /// Open connections at most on the admin listener.
        max_connections as "admin_max_connections": u32 = 64, Serve;
        /// A read-only credential that alone opens `/metrics` (the admin token does not);
        /// when unset, `/metrics` needs none.
        metrics_token: Option<Secret> = None, No, unset "none: `/metrics` is open";
    }

    /// Native TLS on the listeners, and where client certificates come from (docs/tls.md).
    tls: TlsSettings {
        /// PEM file of the public listener's certificate chain, leaf first; with `tls_key`,
        /// the public listener serves https.
        cert as "tls_cert": Option<PathBuf> = None, Serve;
        /// PEM file of the private key of `tls_cert` (PKCS#8, RSA or SEC1, unencrypted).
        key as "tls_key": Option<PathBuf> = None, Serve;
        /// PEM file of the admin listener's certificate chain.
        admin_cert as "admin_tls_cert": Option<PathBuf> = None, No, unset "`tls_cert`";
        /// PEM file of the private key of `admin_tls_cert`.
        admin_key as "admin_tls_key": Option<PathBuf> = None, No, unset "`tls_key`";
        /// Request header in which a TLS-terminating proxy passes the client certificate
        /// (URL-encoded PEM), honoured only from `tls_client_cert_proxies`.
        client_cert_header as "tls_client_cert_header": Option<String> = None, No;
        /// Addresses or networks of the proxies whose `tls_client_cert_header` is trusted.
        client_cert_proxies as "tls_client_cert_proxies": Vec<String> = Vec::new(), No;
    }
}

impl Settings {
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
        for s in SETTINGS {
            if let Some(text) = env(&s.env_var()) {
                table.insert(s.name.to_owned(), to_value(s.name, s.kind, &text)?);
            }
        }
        for (name, text) in flags {
            let s = setting(name).with_context(|| format!("unknown setting {name}"))?;
            table.insert(s.name.to_owned(), to_value(s.name, s.kind, text)?);
        }
        let mut settings = Self::default();
        for (name, value) in table {
            let s = setting(&name)
                .with_context(|| {
                    let known: Vec<String> =
                        SETTINGS.iter().map(|s| format!("`{}`", s.name)).collect();
                    format!(
                        "unknown setting `{name}`, expected one of {}",
                        known.join(", ")
                    )
                })
                .context("invalid configuration")?;
            (s.set)(&mut settings, value)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))
                .context("invalid configuration")?;
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let (server, tokens, cleanup) = (&self.server, &self.tokens, &self.cleanup);
        for (name, ttl) in [
            ("access_ttl", tokens.access_ttl),
            ("refresh_ttl", tokens.refresh_ttl),
        ] {
            if ttl == 0 || ttl > MAX_TTL {
                bail!("{name} must be between 1 and {MAX_TTL} seconds");
            }
        }
        if server.max_body_bytes < 256 {
            bail!("max_body_bytes must be at least 256");
        }
        if tokens.key_reload_interval == 0 {
            bail!("key_reload_interval must be positive");
        }
        if cleanup.interval == 0 || cleanup.batch == 0 {
            bail!("cleanup_interval and cleanup_batch must be positive");
        }
        if self.database.max_connections == 0 || self.database.max_connections > 1000 {
            bail!("database_max_connections must be between 1 and 1000");
        }
        for (name, secs) in [
            ("header_timeout", server.header_timeout),
            ("body_timeout", server.body_timeout),
            ("idle_timeout", server.idle_timeout),
        ] {
            if secs == 0 || secs > MAX_CONNECTION_TIMEOUT {
                bail!("{name} must be between 1 and {MAX_CONNECTION_TIMEOUT} seconds");
            }
        }
        if self.admin.max_connections == 0 {
            bail!("admin_max_connections must be positive");
        }
        if cleanup.token_retention > MAX_TTL {
            bail!("token_retention must be at most {MAX_TTL} seconds");
        }
        if let Some(token) = &self.admin.token {
            check_token("admin_token", token.expose())?;
        }
        if let Some(token) = &self.admin.metrics_token {
            check_token("metrics_token", token.expose())?;
            if self
                .admin
                .token
                .as_ref()
                .is_some_and(|admin| admin.expose() == token.expose())
            {
                bail!(
                    "metrics_token (TESSERA_METRICS_TOKEN) must differ from admin_token: it is \
                     given to the scraper, and must not open the admin API"
                );
            }
        }
        self.tls.validate()?;
        Ok(())
    }

    /// The issuer URL, explicit or derived from the listen address (`https://` when the
    /// public listener serves TLS).
    #[must_use]
    pub fn issuer(&self) -> String {
        self.server
            .issuer
            .clone()
            .unwrap_or_else(|| format!("{}://{}", self.tls.scheme(), self.server.listen))
    }
}

impl TlsSettings {
    /// The public listener's certificate and key files; `None` for plain http.
    #[must_use]
    pub fn public_files(&self) -> Option<crate::http::tls::TlsFiles> {
        Some(crate::http::tls::TlsFiles {
            cert: self.cert.clone()?,
            key: self.key.clone()?,
        })
    }

    /// The admin listener's: its own when set, else the public listener's.
    #[must_use]
    pub fn admin_files(&self) -> Option<crate::http::tls::TlsFiles> {
        match (&self.admin_cert, &self.admin_key) {
            (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => self.public_files(),
        }
    }

    /// `https` when the public listener serves TLS, else `http`.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.public_files().is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The trusted proxy header, when configured.
    ///
    /// # Errors
    /// The header name or a proxy address is not valid.
    pub fn proxy_cert_header(&self) -> anyhow::Result<Option<crate::http::tls::ProxyCertHeader>> {
        let Some(name) = &self.client_cert_header else {
            return Ok(None);
        };
        let name = axum::http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            anyhow::anyhow!("tls_client_cert_header: {name:?} is not a header name")
        })?;
        let proxies = self
            .client_cert_proxies
            .iter()
            .map(|p| {
                crate::http::tls::proxy_network(p)
                    .map_err(|e| anyhow::anyhow!("tls_client_cert_proxies: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(crate::http::tls::ProxyCertHeader { name, proxies }))
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (cert, key, cert_name, key_name) in [
            (&self.cert, &self.key, "tls_cert", "tls_key"),
            (
                &self.admin_cert,
                &self.admin_key,
                "admin_tls_cert",
                "admin_tls_key",
            ),
        ] {
            match (cert, key) {
                (Some(_), None) => {
                    bail!("{cert_name} is set without {key_name}: set both or neither")
                }
                (None, Some(_)) => {
                    bail!("{key_name} is set without {cert_name}: set both or neither")
                }
                _ => {}
            }
        }
        let header = self.proxy_cert_header()?;
        if header.as_ref().is_some_and(|h| h.proxies.is_empty()) {
            bail!(
                "tls_client_cert_header is set but tls_client_cert_proxies is empty: list the \
                 addresses of the proxies that set the header (anyone else could send it)"
            );
        }
        if header.is_none() && !self.client_cert_proxies.is_empty() {
            bail!("tls_client_cert_proxies is set without tls_client_cert_header");
        }
        Ok(())
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

/// A configured admin or metrics token (`name`) must be a credential worth the name: at least
/// [`MIN_ADMIN_TOKEN_CHARS`] characters, all visible ASCII (what a `Bearer` header can carry
/// unchanged: surrounding whitespace, e.g. a newline from a secret file, would be trimmed off
/// the presented token and never match). The message never shows the token.
fn check_token(name: &str, token: &str) -> anyhow::Result<()> {
    let var = format!("TESSERA_{}", name.to_ascii_uppercase());
    if token.is_empty() {
        let fix = if name == "admin_token" {
            "unset it to have a token generated, or set"
        } else {
            "unset it to leave /metrics open, or set"
        };
        bail!(
            "{name} ({var}) is set but empty; {fix} at least {MIN_ADMIN_TOKEN_CHARS} random \
             characters (e.g. `openssl rand -base64 32`)"
        );
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "{name} ({var}) must be visible ASCII characters only, without spaces, newlines or \
             other control characters"
        );
    }
    let n = token.len();
    if n < MIN_ADMIN_TOKEN_CHARS {
        bail!(
            "{name} ({var}) is {n} characters; it must be at least {MIN_ADMIN_TOKEN_CHARS} \
             (e.g. `openssl rand -base64 32`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
