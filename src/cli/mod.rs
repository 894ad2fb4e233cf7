//! The `tessera` command line: `serve`, `migrate`, `client …`, `keys …`, `master-key rotate`,
//! `audit`, `admin-token rotate`, `gen-master-key`.
//!
//! Thin by design: each command parses its flags, loads [`Settings`], and calls the same
//! [`Tessera`] methods the HTTP handlers use. Every command that prints something a script
//! would read takes `--json`.

mod client;
mod keys;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use std::borrow::Cow;

use crate::config::{Flag, Kind, LogFormat, SETTINGS, Setting, Settings};
use crate::domain::client::is_forbidden_char;
use crate::domain::crypto::MasterKey;
use crate::http::Application;

/// Tessera, an OAuth 2.0 token server for machine clients.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about)]
pub struct Cli {
    /// A TOML configuration file (see docs/configuration.md).
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    global: SettingFlags<true>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(SettingFlags<false>),
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate,
    /// Print a new random master key (base64 of 32 bytes).
    GenMasterKey,
    /// Manage clients (API keys).
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// Manage JWT signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage the master key.
    #[command(subcommand)]
    MasterKey(keys::MasterKeyCommand),
    /// Read the audit trail (newest first).
    Audit(AuditArgs),
    /// Manage the admin API credential.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Only events about this client.
    #[arg(long)]
    client: Option<String>,
    /// Only this kind of event (e.g. token.reuse_detected, auth.failed, client.created).
    #[arg(long)]
    event: Option<String>,
    /// Only events at or after this Unix time.
    #[arg(long)]
    since: Option<i64>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AdminTokenCommand {
    /// Replace the stored admin token and print the new one (shown once).
    Rotate,
}

/// The flags that set settings: those of `tessera serve` (`GLOBAL` false) or those every
/// command takes (`GLOBAL` true), each `--<name>` for the setting `<name>`, generated from
/// [`SETTINGS`] so that they always match it. Holds the given ones, as setting name → text.
#[derive(Debug, Default)]
struct SettingFlags<const GLOBAL: bool>(Vec<(&'static str, String)>);

impl<const GLOBAL: bool> SettingFlags<GLOBAL> {
    fn flagged() -> impl Iterator<Item = &'static Setting> {
        let flag = if GLOBAL { Flag::Global } else { Flag::Serve };
        SETTINGS.iter().filter(move |s| s.flag == flag)
    }
}

impl<const GLOBAL: bool> clap::FromArgMatches for SettingFlags<GLOBAL> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        let refused = |e: clap::parser::MatchesError| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, e.to_string())
        };
        for s in Self::flagged() {
            let text = match s.kind {
                Kind::Integer => matches
                    .try_get_one::<u32>(s.name)
                    .map_err(refused)?
                    .map(u32::to_string),
                _ => matches
                    .try_get_one::<String>(s.name)
                    .map_err(refused)?
                    .cloned(),
            };
            if let Some(text) = text {
                self.0.retain(|(name, _)| *name != s.name);
                self.0.push((s.name, text));
            }
        }
        Ok(())
    }
}

impl<const GLOBAL: bool> Args for SettingFlags<GLOBAL> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Self::flagged().fold(cmd, |cmd, s| {
            let meaning = s.meaning.trim_end_matches('.');
            let arg = clap::Arg::new(s.name)
                .long(s.flag_name())
                .value_name(s.name.to_ascii_uppercase())
                .help(format!("{meaning} [default: {}].", s.default_text()))
                .global(GLOBAL);
            cmd.arg(match s.kind {
                Kind::Integer => arg.value_parser(clap::value_parser!(u32)),
                _ => arg.value_parser(clap::value_parser!(String)),
            })
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling `run` twice) is harmless: keep the first.
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `text` for the terminal: each character that Tessera refuses in operator-given values
/// ([`is_forbidden_char`]: control characters, bidirectional overrides, invisible format
/// characters) is shown as its `\u{…}` escape, so that a value stored before those rules (or
/// an audit entry quoting what a client sent) cannot move the cursor, recolour the terminal or
/// reorder the line.
#[must_use]
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_forbidden_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_forbidden_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `value` as pretty JSON for the terminal. `serde_json` escapes the C0 controls inside
/// strings already (a raw one in its output is a line break of the layout); this escapes the
/// other characters [`shown`] escapes too (`\uXXXX`, as surrogate pairs beyond the BMP), which
/// can only be inside strings, where the escape is the same JSON.
///
/// # Errors
/// When the value cannot be serialised.
pub fn to_terminal_json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let escaped = |c: char| c >= ' ' && is_forbidden_char(c);
    let text = serde_json::to_string_pretty(value)?;
    if !text.chars().any(escaped) {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len() + 12);
    for c in text.chars() {
        if escaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A service failure as the CLI reports it (`error: …`, exit status 1): a refused value by its
/// reason (which names the field, as the admin API's does), a lost race as a conflict to retry.
fn fail(e: crate::service::ServiceError) -> anyhow::Error {
    use crate::service::ServiceError;
    match e {
        ServiceError::OAuth(e) => anyhow::anyhow!("{}", e.description),
        ServiceError::Invalid { reason, .. } => anyhow::anyhow!("{reason}"),
        ServiceError::Conflict(what)
        | ServiceError::Store(crate::store::StoreError::Conflict(what)) => {
            anyhow::anyhow!("conflict: {what}")
        }
        other => anyhow::Error::new(other),
    }
}

/// Runs the command line.
///
/// # Errors
/// Whatever the command failed with; `main` prints it and exits non-zero.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut flags = cli.global.0;
    match cli.command {
        Command::Serve(serve) => {
            flags.extend(serve.0);
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "info");
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Migrate => {
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "warn");
            let store = crate::store::open(&settings.database).await?;
            store.migrate().await.context("applying migrations")?;
            println!(
                "migrations applied to {}",
                crate::store::postgres::redact_url(&settings.database.url)
            );
            Ok(())
        }
        Command::GenMasterKey => {
            println!("{}", MasterKey::generate()?.encode());
            Ok(())
        }
        Command::Client(cmd) => {
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "warn");
            client::run(cmd, &settings).await
        }
        Command::Keys(cmd) => {
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "warn");
            keys::run(cmd, &settings).await
        }
        Command::Audit(a) => {
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "warn");
            let tessera = crate::service::Tessera::open(&settings).await?;
            let query = crate::domain::audit::AuditQuery {
                client_id: a.client,
                event: a.event,
                since: a.since,
                before_id: None,
                limit: a.limit,
            };
            let events = tessera.audit_events(&query).await?;
            if a.json {
                println!("{}", to_terminal_json(&events)?);
            } else {
                for e in events {
                    println!(
                        "{}  {:<22}  client={}  source={}  request={}  {}",
                        e.at,
                        shown(&e.event),
                        shown(e.client_id.as_deref().unwrap_or("-")),
                        shown(e.source.as_deref().unwrap_or("-")),
                        shown(e.request_id.as_deref().unwrap_or("-")),
                        shown(&e.detail.to_string())
                    );
                }
            }
            Ok(())
        }
        Command::AdminToken(AdminTokenCommand::Rotate) => {
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "warn");
            if settings.admin.token.is_some() {
                anyhow::bail!("admin_token is set by configuration; change it there");
            }
            let tessera = crate::service::Tessera::open(&settings).await?;
            let token = tessera
                .rotate_admin_token(&crate::domain::audit::Actor::cli())
                .await
                .map_err(fail)?;
            // Keep the generated token file (if the operator uses it) in step.
            if let Some(path) = crate::service::admin::admin_token_file(&settings.database.url)
                && path.exists()
            {
                std::fs::write(&path, format!("{token}\n"))?;
                eprintln!("Updated {}.", path.display());
            }
            println!("{token}");
            eprintln!(
                "The admin token is replaced (stored hashed); this is the only time it is shown."
            );
            Ok(())
        }
        Command::MasterKey(cmd) => {
            let settings = Settings::load(cli.config.as_deref(), &flags)?;
            init_logging(settings.server.log_format, "warn");
            keys::run_master(cmd, &settings).await
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command, shown, to_terminal_json};

    #[test]
    fn terminal_output_escapes_control_and_bidi_characters() -> anyhow::Result<()> {
        assert_eq!(shown("plain Ünïcødé"), "plain Ünïcødé");
        assert_eq!(
            shown("a\u{1b}[31mb\nc\u{202e}d\u{9b}\u{0}"),
            "a\\u{1b}[31mb\\u{a}c\\u{202e}d\\u{9b}\\u{0}"
        );
        let value = serde_json::json!({ "name": "x\u{1b}\u{9b}\u{202e}\u{e0041}y" });
        let text = to_terminal_json(&value)?;
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::domain::client::is_forbidden_char(c)),
            "{text}"
        );
        assert!(text.contains(r"x\u001b\u009b\u202e\udb40\udc41y"), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text)?, value);
        Ok(())
    }

    /// A kid is a base64url thumbprint and so begins with `-` one time in 64; a command that
    /// names it must take it as the id, before or after `--json`.
    #[test]
    fn ids_that_begin_with_a_hyphen_are_values_not_options() {
        for argv in [
            ["tessera", "keys", "revoke", "-lQx2v_b", "--json"],
            ["tessera", "keys", "revoke", "--json", "-lQx2v_b"],
            ["tessera", "client", "show", "-lQx2v_b", "--json"],
        ] {
            let cli = Cli::try_parse_from(argv);
            assert!(cli.is_ok(), "{argv:?}: {cli:?}");
            let debug = format!("{:?}", cli.map(|c| c.command).ok());
            assert!(debug.contains("\"-lQx2v_b\""), "{argv:?}: {debug}");
            assert!(debug.contains("json: true"), "{argv:?}: {debug}");
        }
        assert!(matches!(
            Cli::try_parse_from(["tessera", "keys", "revoke", "-lQx2v_b"]).map(|c| c.command),
            Ok(Command::Keys(_))
        ));
    }
}
