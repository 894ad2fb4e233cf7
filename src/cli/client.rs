//! `tessera client …`: create, list, show, update, rotate-secret, disable, enable, delete.
//!
//! Works directly on the database named by `--database-url` / `TESSERA_DATABASE_URL`, also
//! while a server runs on it: the server reads clients from the store on every request, so it
//! sees changes at once.

use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::Settings;
use crate::domain::audit::Actor;
use crate::domain::client::{Profile, TokenFormat};
use crate::service::clients::{ClientChanges, ClientSpec, ClientView};
use crate::service::{ServiceError, Tessera};

use super::{shown, to_terminal_json};

#[derive(Debug, Subcommand)]
pub(super) enum ClientCommand {
    /// Create a client; prints its id and its secret (shown only this once).
    Create(CreateArgs),
    /// List clients.
    List(JsonFlag),
    /// Show one client.
    Show(IdArgs),
    /// Change a client's settings.
    Update(UpdateArgs),
    /// Give a client a new secret; the old one keeps working for --keep-old seconds.
    RotateSecret(RotateArgs),
    /// Disable a client: it cannot authenticate and its tokens stop working.
    Disable(IdArgs),
    /// Enable a disabled client.
    Enable(IdArgs),
    /// Delete a client and every token it holds.
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub(super) struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct IdArgs {
    /// The client id (it may begin with `-`; see `KidArgs`).
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct CreateArgs {
    /// A human name.
    #[arg(long)]
    name: String,
    /// Allowed scope patterns, space-separated (e.g. "/ping.read /accounts/*/profile.read").
    #[arg(long)]
    scope: String,
    /// Access token format: opaque or jwt [default: the server's default_format].
    #[arg(long)]
    format: Option<TokenFormat>,
    /// Wire profile: seed, moov or rfc6749 [default: follow the server's default_profile].
    #[arg(long)]
    profile: Option<Profile>,
    /// Access token lifetime in seconds [default: the server's access_ttl].
    #[arg(long)]
    access_ttl: Option<u32>,
    /// Refresh token lifetime in seconds [default: the server's refresh_ttl].
    #[arg(long)]
    refresh_ttl: Option<u32>,
    /// An allowed browser origin for web tokens (repeatable).
    #[arg(long = "origin")]
    origins: Vec<String>,
    /// The `aud` of this client's tokens [default: the server's audience].
    #[arg(long)]
    audience: Option<String>,
    /// An RFC 8707 resource the client may request as audience (repeatable).
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// Let this client introspect others' tokens: `*` (all) or an audience value.
    #[arg(long)]
    resource_server: Option<String>,
    #[command(flatten)]
    auth: AuthArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How a client authenticates, on `client create` and `client update`.
#[derive(Debug, Args)]
pub(super) struct AuthArgs {
    /// An allowed token-endpoint auth method: client_secret_basic, client_secret_post or
    /// private_key_jwt (repeatable; replaces the current ones) [default on create: the two
    /// secret methods].
    #[arg(long = "auth-method")]
    auth_methods: Vec<String>,
    /// A file holding the client's public keys, a JWK Set (`{"keys": [...]}`), for
    /// private_key_jwt.
    #[arg(long, value_name = "FILE")]
    jwks: Option<std::path::PathBuf>,
    /// Where the client publishes its JWK Set (https) instead of --jwks.
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// Require DPoP-bound access tokens (`--require-dpop=false` to stop requiring them).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    require_dpop: Option<bool>,
    /// FAPI 2.0 rules: only private_key_jwt, DPoP required, no RS256 (`--fapi2=false` to
    /// leave them).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    fapi2: Option<bool>,
}

impl AuthArgs {
    /// The JWK Set in the `--jwks` file, if one was given.
    fn jwks(&self) -> anyhow::Result<Option<serde_json::Value>> {
        let Some(path) = &self.jwks else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--jwks {}: {e}", path.display()))?;
        let value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--jwks {}: not JSON: {e}", path.display()))?;
        Ok(Some(value))
    }
}

/// A value that may also be `default` (follow the server setting).
#[derive(Debug, Clone)]
pub(super) struct OrDefault<T>(Option<T>);

impl<T: std::str::FromStr> std::str::FromStr for OrDefault<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "default" {
            Ok(Self(None))
        } else {
            s.parse().map(|v| Self(Some(v)))
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct UpdateArgs {
    /// The client id (it may begin with `-`; see `KidArgs`).
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New allowed scope patterns (replacing the current ones).
    #[arg(long)]
    scope: Option<String>,
    /// New token format.
    #[arg(long)]
    format: Option<TokenFormat>,
    /// New profile, or `default`.
    #[arg(long)]
    profile: Option<OrDefault<Profile>>,
    /// New access TTL in seconds, or `default`.
    #[arg(long)]
    access_ttl: Option<OrDefault<u32>>,
    /// New refresh TTL in seconds, or `default`.
    #[arg(long)]
    refresh_ttl: Option<OrDefault<u32>>,
    /// Allowed origins (replacing the current ones; repeatable).
    #[arg(long = "origin")]
    origins: Vec<String>,
    /// Remove every allowed origin.
    #[arg(long, conflicts_with = "origins")]
    clear_origins: bool,
    /// New audience, or `default`.
    #[arg(long)]
    audience: Option<OrDefault<String>>,
    /// Allowed RFC 8707 resources (replacing the current ones; repeatable).
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// Remove every allowed resource.
    #[arg(long, conflicts_with = "resources")]
    clear_resources: bool,
    /// Introspection rights: `*`, an audience value, or `none`.
    #[arg(long)]
    resource_server: Option<String>,
    #[command(flatten)]
    auth: AuthArgs,
    /// Remove the registered keys (--jwks).
    #[arg(long, conflicts_with = "jwks")]
    clear_jwks: bool,
    /// Remove the jwks_uri.
    #[arg(long, conflicts_with = "jwks_uri")]
    clear_jwks_uri: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct RotateArgs {
    /// The client id (it may begin with `-`; see `KidArgs`).
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// Seconds the old secret keeps working (0: stops at once).
    #[arg(long, default_value_t = 86_400)]
    keep_old: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn print_client(v: &ClientView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", to_terminal_json(v)?);
    } else {
        println!("client_id:   {}", shown(&v.client_id));
        println!("name:        {}", shown(&v.name));
        println!("scopes:      {}", shown(&v.scopes.join(" ")));
        println!("format:      {}", v.token_format);
        println!(
            "profile:     {}{}",
            v.effective_profile,
            if v.profile.is_none() {
                " (server default)"
            } else {
                ""
            }
        );
        let ttl =
            |t: Option<u32>| t.map_or_else(|| "server default".to_owned(), |t| format!("{t}s"));
        println!("access_ttl:  {}", ttl(v.access_ttl));
        println!("refresh_ttl: {}", ttl(v.refresh_ttl));
        println!(
            "origins:     {}",
            if v.origins.is_empty() {
                "(any)".to_owned()
            } else {
                shown(&v.origins.join(" ")).into_owned()
            }
        );
        println!(
            "audience:    {}",
            shown(v.audience.as_deref().unwrap_or("server default"))
        );
        if !v.resources.is_empty() {
            println!("resources:   {}", shown(&v.resources.join(" ")));
        }
        if let Some(rs) = &v.resource_server {
            println!("introspects: {}", shown(rs));
        }
        println!("auth:        {}", v.auth_methods.join(" "));
        if let Some(jwks) = &v.jwks {
            let n = jwks
                .get("keys")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
            let kids: Vec<&str> = jwks
                .get("keys")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|k| k.get("kid").and_then(serde_json::Value::as_str))
                .collect();
            println!(
                "jwks:        {n} key(s){}",
                if kids.is_empty() {
                    String::new()
                } else {
                    format!(" (kid {})", shown(&kids.join(", ")))
                }
            );
        }
        if let Some(uri) = &v.jwks_uri {
            println!("jwks_uri:    {}", shown(uri));
        }
        if v.require_dpop || v.fapi2 {
            println!("dpop:        required");
        }
        if v.fapi2 {
            println!("fapi2:       true");
        }
        println!("disabled:    {}", v.disabled);
        if let Some(t) = v.previous_secret_expires_at {
            println!("old secret valid until: {t} (Unix time)");
        }
    }
    Ok(())
}

fn fail(e: ServiceError) -> anyhow::Error {
    super::fail(e)
}

pub(super) async fn run(cmd: ClientCommand, settings: &Settings) -> anyhow::Result<()> {
    let tessera = Tessera::open(settings).await?;
    match cmd {
        ClientCommand::Create(a) => {
            let spec = ClientSpec {
                name: a.name,
                scopes: a.scope,
                format: a.format,
                profile: a.profile,
                access_ttl: a.access_ttl,
                refresh_ttl: a.refresh_ttl,
                origins: a.origins,
                audience: a.audience,
                resources: a.resources,
                resource_server: a.resource_server,
                auth_methods: (!a.auth.auth_methods.is_empty())
                    .then(|| a.auth.auth_methods.clone()),
                jwks: a.auth.jwks()?,
                jwks_uri: a.auth.jwks_uri.clone(),
                require_dpop: a.auth.require_dpop.unwrap_or(false),
                fapi2: a.auth.fapi2.unwrap_or(false),
            };
            let (client, secret) = tessera
                .create_client(spec, &Actor::cli())
                .await
                .map_err(fail)?;
            let view = tessera.view(&client);
            if a.json {
                let mut v = serde_json::to_value(&view)?;
                if let (Some(o), Some(secret)) = (v.as_object_mut(), &secret) {
                    o.insert("client_secret".into(), json!(secret));
                }
                println!("{}", to_terminal_json(&v)?);
            } else {
                print_client(&view, false)?;
                if let Some(secret) = secret {
                    println!("client_secret: {secret}");
                    println!(
                        "\nStore the secret now: it is not stored in clear and cannot be shown again."
                    );
                } else {
                    println!("\nNo secret: this client authenticates with its keys only.");
                }
            }
        }
        ClientCommand::List(f) => {
            let clients = tessera.all_clients().await.map_err(fail)?;
            let views: Vec<ClientView> = clients.iter().map(|c| tessera.view(c)).collect();
            if f.json {
                println!("{}", to_terminal_json(&views)?);
            } else if views.is_empty() {
                println!("no clients");
            } else {
                println!("CLIENT_ID         PROFILE   FORMAT   DISABLED  NAME");
                for v in views {
                    println!(
                        "{:<16}  {:<8}  {:<7}  {:<8}  {}",
                        shown(&v.client_id),
                        v.effective_profile,
                        v.token_format,
                        v.disabled,
                        shown(&v.name)
                    );
                }
            }
        }
        ClientCommand::Show(a) => {
            let c = tessera.get_client(&a.id).await.map_err(fail)?;
            print_client(&tessera.view(&c), a.json)?;
        }
        ClientCommand::Update(a) => {
            let changes = ClientChanges {
                name: a.name,
                scopes: a.scope,
                format: a.format,
                profile: a.profile.map(|v| v.0),
                access_ttl: a.access_ttl.map(|v| v.0),
                refresh_ttl: a.refresh_ttl.map(|v| v.0),
                origins: if a.clear_origins {
                    Some(Vec::new())
                } else {
                    (!a.origins.is_empty()).then_some(a.origins)
                },
                audience: a.audience.map(|v| v.0),
                resources: if a.clear_resources {
                    Some(Vec::new())
                } else {
                    (!a.resources.is_empty()).then_some(a.resources)
                },
                resource_server: a.resource_server.map(|v| (v != "none").then_some(v)),
                disabled: None,
                auth_methods: (!a.auth.auth_methods.is_empty())
                    .then(|| a.auth.auth_methods.clone()),
                jwks: if a.clear_jwks {
                    Some(None)
                } else {
                    a.auth.jwks()?.map(Some)
                },
                jwks_uri: if a.clear_jwks_uri {
                    Some(None)
                } else {
                    a.auth.jwks_uri.clone().map(Some)
                },
                require_dpop: a.auth.require_dpop,
                fapi2: a.auth.fapi2,
            };
            let c = tessera
                .update_client(&a.id, changes, &Actor::cli())
                .await
                .map_err(fail)?;
            print_client(&tessera.view(&c), a.json)?;
        }
        ClientCommand::RotateSecret(a) => {
            let (c, secret) = tessera
                .rotate_secret(&a.id, a.keep_old, &Actor::cli())
                .await
                .map_err(fail)?;
            let until = c.previous_secret.as_ref().map(|(_, t)| *t);
            if a.json {
                println!(
                    "{}",
                    to_terminal_json(&json!({
                        "client_id": c.id,
                        "client_secret": secret,
                        "previous_secret_expires_at": until,
                    }))?
                );
            } else {
                println!("client_id:     {}", shown(&c.id));
                println!("client_secret: {secret}");
                match until {
                    Some(t) => println!("The old secret keeps working until {t} (Unix time)."),
                    None => println!("The old secret no longer works."),
                }
            }
        }
        ClientCommand::Disable(a) => set_disabled(&tessera, a, true).await?,
        ClientCommand::Enable(a) => set_disabled(&tessera, a, false).await?,
        ClientCommand::Delete(a) => {
            tessera
                .delete_client(&a.id, &Actor::cli())
                .await
                .map_err(fail)?;
            if a.json {
                println!(
                    "{}",
                    to_terminal_json(&json!({ "client_id": a.id, "deleted": true }))?
                );
            } else {
                println!("deleted client {} and all its tokens", shown(&a.id));
            }
        }
    }
    Ok(())
}

async fn set_disabled(tessera: &Tessera, a: IdArgs, disabled: bool) -> anyhow::Result<()> {
    let changes = ClientChanges {
        disabled: Some(disabled),
        ..ClientChanges::default()
    };
    let c = tessera
        .update_client(&a.id, changes, &Actor::cli())
        .await
        .map_err(fail)?;
    print_client(&tessera.view(&c), a.json)
}
