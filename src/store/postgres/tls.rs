//! TLS to PostgreSQL: the `database_sslmode`, `database_ssl_root_cert`, `database_ssl_cert` and
//! `database_ssl_key` settings, laid over what the `postgres://` URL says.
//!
//! Precedence, highest first: a `database_ssl*` setting, the URL's query parameter (`sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`), libpq's environment variables (`PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), then the default mode `prefer` — libpq's and
//! sqlx's default: TLS when the server offers it, plain otherwise, and no certificate check.
//!
//! Modes follow libpq: `require` encrypts without checking the certificate, except that, as in
//! libpq, a configured root certificate makes it check the chain like `verify-ca`; `verify-ca`
//! checks the chain against the root certificate (or, without one, the Mozilla roots);
//! `verify-full` also checks that the certificate names the host of the URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// A PostgreSQL TLS mode, as libpq names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless a root certificate is
    /// configured: then as `verify-ca`).
    Require,
    /// TLS with a certificate chain to a trusted root.
    VerifyCa,
    /// `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in increasing strength.
    pub const ALL: [Self; 5] = [
        Self::Disable,
        Self::Prefer,
        Self::Require,
        Self::VerifyCa,
        Self::VerifyFull,
    ];

    /// libpq's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn to_sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown PostgreSQL TLS mode {s:?} (expected disable, prefer, require, \
                     verify-ca or verify-full)"
                )
            })
    }
}

/// The TLS settings of the connection to PostgreSQL (each `None` leaves the URL's choice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `database_sslmode`.
    pub mode: Option<SslMode>,
    /// `database_ssl_root_cert`: PEM file of the CA certificates to trust.
    pub root_cert: Option<PathBuf>,
    /// `database_ssl_cert`: PEM file of the client certificate chain.
    pub cert: Option<PathBuf>,
    /// `database_ssl_key`: PEM file of the client certificate's private key.
    pub key: Option<PathBuf>,
}

/// The query parameter names sqlx reads as a root certificate.
const ROOT_CERT_PARAMS: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];

fn readable(setting: &str, path: &Path) -> Result<(), String> {
    std::fs::read(path)
        .map(drop)
        .map_err(|e| format!("{setting} {}: {e}", path.display()))
}

impl Tls {
    /// Lays these settings over `options` (parsed from `url`), and returns the mode in effect,
    /// by libpq's name.
    ///
    /// # Errors
    /// A certificate or key file that cannot be read, or only one of the client certificate
    /// and its key.
    pub fn apply(
        &self,
        url: &str,
        mut options: PgConnectOptions,
    ) -> Result<(PgConnectOptions, &'static str), String> {
        if let Some(mode) = self.mode {
            options = options.ssl_mode(mode.to_sqlx());
        }
        if let Some(path) = &self.root_cert {
            readable("database_ssl_root_cert", path)?;
            options = options.ssl_root_cert(path);
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                readable("database_ssl_cert", cert)?;
                readable("database_ssl_key", key)?;
                options = options.ssl_client_cert(cert).ssl_client_key(key);
            }
            (None, None) => {}
            _ => {
                return Err(
                    "database_ssl_cert and database_ssl_key must be set together".to_owned(),
                );
            }
        }
        // libpq: `require` with a root certificate checks the chain, as `verify-ca` does.
        if matches!(options.get_ssl_mode(), PgSslMode::Require)
            && (self.root_cert.is_some() || url_has_root_cert(url))
        {
            options = options.ssl_mode(PgSslMode::VerifyCa);
        }
        let mode = mode_name(options.get_ssl_mode());
        Ok((options, mode))
    }
}

/// Whether the URL (or libpq's `PGSSLROOTCERT`, which sqlx reads too) names a root certificate.
fn url_has_root_cert(url: &str) -> bool {
    let in_url = url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs()
            .any(|(k, _)| ROOT_CERT_PARAMS.contains(&k.as_ref()))
    });
    in_url || std::env::var_os("PGSSLROOTCERT").is_some()
}

/// libpq's name of a sqlx mode, for logs.
fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effective(url: &str, tls: &Tls) -> Result<&'static str, String> {
        let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        tls.apply(url, options).map(|(_, mode)| mode)
    }

    #[test]
    fn modes_read_as_libpq_names_them() {
        for m in SslMode::ALL {
            assert_eq!(m.as_str().parse::<SslMode>(), Ok(m));
            assert_eq!(mode_name(m.to_sqlx()), m.as_str());
        }
        assert!("VERIFY_FULL".parse::<SslMode>().is_err());
        assert!("allow".parse::<SslMode>().is_err());
    }

    #[test]
    fn the_setting_wins_over_the_url_and_the_url_over_the_default() {
        let url = "postgres://db.example/t?sslmode=require";
        assert_eq!(effective(url, &Tls::default()), Ok("require"));
        let strict = Tls {
            mode: Some(SslMode::VerifyFull),
            ..Tls::default()
        };
        assert_eq!(effective(url, &strict), Ok("verify-full"));
        let loose = Tls {
            mode: Some(SslMode::Disable),
            ..Tls::default()
        };
        assert_eq!(effective(url, &loose), Ok("disable"));
        if std::env::var_os("PGSSLMODE").is_none() {
            assert_eq!(
                effective("postgres://db.example/t", &Tls::default()),
                Ok("prefer")
            );
        }
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_chain() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n")?;
        let tls = Tls {
            mode: Some(SslMode::Require),
            root_cert: Some(ca.clone()),
            ..Tls::default()
        };
        assert_eq!(effective("postgres://db.example/t", &tls), Ok("verify-ca"));
        let url = format!(
            "postgres://db.example/t?sslmode=require&sslrootcert={}",
            ca.display()
        );
        assert_eq!(effective(&url, &Tls::default()), Ok("verify-ca"));
        Ok(())
    }

    #[test]
    fn unreadable_files_and_a_lone_client_key_are_refused() {
        let missing = Tls {
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..Tls::default()
        };
        let err = effective("postgres://db.example/t", &missing)
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("database_ssl_root_cert /nonexistent/ca.pem"),
            "{err}"
        );
        let lone = Tls {
            key: Some(PathBuf::from("/nonexistent/key.pem")),
            ..Tls::default()
        };
        let err = effective("postgres://db.example/t", &lone)
            .err()
            .unwrap_or_default();
        assert!(err.contains("must be set together"), "{err}");
    }
}
