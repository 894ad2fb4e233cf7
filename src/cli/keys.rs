//! `tessera keys …` (signing keys) and `tessera master-key rotate`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::Settings;
use crate::domain::audit::Actor;
use crate::domain::crypto::MasterKey;
use crate::service::keys::{resolve_master_key, rotate_master_key};
use crate::service::{ServiceError, Tessera};

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// List signing keys and their states.
    List(JsonFlag),
    /// Activate the next key, retire the active one, publish a new next key.
    Rotate(JsonFlag),
    /// Stop a key from signing; it stays published until its tokens expire.
    Retire(KidArgs),
    /// Withdraw a key at once: unpublished, and its tokens stop being active.
    Revoke(KidArgs),
}

#[derive(Debug, Args)]
pub(super) struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct KidArgs {
    /// The key id. A kid is a base64url RFC 7638 thumbprint, so it may begin with `-`
    /// (one key in 64): such a value is taken as the id, not as an option.
    #[arg(allow_hyphen_values = true)]
    kid: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum MasterKeyCommand {
    /// Re-wrap the database's root key under a new master key. The current key comes from the
    /// usual settings (TESSERA_MASTER_KEY, master_key_file, or the key file next to the
    /// database); the new one from --new-key-file or TESSERA_NEW_MASTER_KEY.
    Rotate(RotateMasterArgs),
}

#[derive(Debug, Args)]
pub(super) struct RotateMasterArgs {
    /// A file holding the new master key.
    #[arg(long)]
    new_key_file: Option<PathBuf>,
}

fn fail(e: ServiceError) -> anyhow::Error {
    super::fail(e)
}

async fn print_keys(tessera: &Tessera, json: bool) -> anyhow::Result<()> {
    let keys = tessera.list_keys().await.map_err(fail)?;
    if json {
        println!("{}", super::to_terminal_json(&keys)?);
    } else {
        println!(
            "{:<44}  {:<6}  {:<8}  {:<11}  PUBLISHED_UNTIL",
            "KID", "ALG", "STATE", "CREATED_AT"
        );
        for k in keys {
            let until = k
                .published_until
                .map_or_else(String::new, |t| t.to_string());
            println!(
                "{:<44}  {:<6}  {:<8}  {:<11}  {until}",
                super::shown(&k.kid),
                super::shown(&k.alg),
                super::shown(&k.state),
                k.created_at
            );
        }
    }
    Ok(())
}

pub(super) async fn run(cmd: KeysCommand, settings: &Settings) -> anyhow::Result<()> {
    let tessera = Tessera::open(settings).await?;
    match cmd {
        KeysCommand::List(f) => print_keys(&tessera, f.json).await,
        KeysCommand::Rotate(f) => {
            let r = tessera.rotate_keys(&Actor::cli()).await.map_err(fail)?;
            if f.json {
                println!("{}", super::to_terminal_json(&r)?);
            } else {
                println!("active:  {}", r.active);
                println!("retired: {}", r.retired.as_deref().unwrap_or("-"));
                println!("next:    {}", r.next.as_deref().unwrap_or("-"));
                println!(
                    "Running servers switch within key_reload_interval ({}s).",
                    tessera.policy().key_reload_interval
                );
            }
            Ok(())
        }
        KeysCommand::Retire(a) => {
            tessera
                .retire_key(&a.kid, &Actor::cli())
                .await
                .map_err(fail)?;
            if a.json {
                println!("{}", json!({ "kid": a.kid, "retired": true }));
                Ok(())
            } else {
                print_keys(&tessera, false).await
            }
        }
        KeysCommand::Revoke(a) => {
            tessera
                .revoke_key(&a.kid, &Actor::cli())
                .await
                .map_err(fail)?;
            if a.json {
                println!("{}", json!({ "kid": a.kid, "revoked": true }));
                Ok(())
            } else {
                print_keys(&tessera, false).await
            }
        }
    }
}

pub(super) async fn run_master(cmd: MasterKeyCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        MasterKeyCommand::Rotate(a) => {
            let text = match (
                &a.new_key_file,
                std::env::var("TESSERA_NEW_MASTER_KEY").ok(),
            ) {
                (Some(path), _) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, Some(text)) => text,
                (None, None) => {
                    anyhow::bail!("give the new key with --new-key-file or TESSERA_NEW_MASTER_KEY")
                }
            };
            let new = MasterKey::parse(&text).context("the new master key")?;
            let store = crate::store::open(&settings.database).await?;
            store.migrate().await?;
            let current = resolve_master_key(settings, store.as_ref()).await?;
            let now = crate::domain::clock::Clock::now(&crate::domain::clock::SystemClock);
            rotate_master_key(store.as_ref(), &current, &new, now).await?;
            println!(
                "The root key is now wrapped under the new master key. Restart every instance with \
                 the new key (running instances keep working until then)."
            );
            Ok(())
        }
    }
}
