//! Managing clients (API keys): what the CLI (and later the admin API) calls.

use serde::Serialize;

use crate::config::MAX_TTL;
use serde_json::json;

use crate::domain::audit::{Actor, AuditEvent, AuditKind};
use crate::domain::client::auth::{parse_jwks, parse_jwks_uri, parse_methods};
use crate::domain::client::{
    AuthMethod, Client, ClientAuth, Profile, SecretHash, TokenFormat, check_keep_old,
    parse_audience, parse_name, parse_origins, parse_resource_server, parse_resources,
};
use crate::domain::clock::UnixTime;
use crate::domain::jose::JwkSet;
use crate::domain::scope::{Registry, ScopePattern, parse_patterns};
use crate::domain::token;

use super::{ServiceError, Tessera};
use crate::store::ClientUpdate;

/// A new client's settings.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    /// Human name.
    pub name: String,
    /// Space-delimited allowed scope patterns.
    pub scopes: String,
    /// Token format (server default if `None`).
    pub format: Option<TokenFormat>,
    /// Wire profile (follows the server default if `None`).
    pub profile: Option<Profile>,
    /// Access token lifetime override.
    pub access_ttl: Option<u32>,
    /// Refresh token lifetime override.
    pub refresh_ttl: Option<u32>,
    /// Allowed origins for web tokens.
    pub origins: Vec<String>,
    /// Audience override.
    pub audience: Option<String>,
    /// RFC 8707 resources the client may request as audience.
    pub resources: Vec<String>,
    /// Introspection rights: `*` or an audience value.
    pub resource_server: Option<String>,
    /// Allowed token-endpoint auth methods (default: the two secret methods).
    pub auth_methods: Option<Vec<String>>,
    /// Registered public keys (a JWK Set).
    pub jwks: Option<serde_json::Value>,
    /// Where the public keys are published instead.
    pub jwks_uri: Option<String>,
    /// Require DPoP-bound access tokens.
    pub require_dpop: bool,
    /// FAPI 2.0 rules.
    pub fapi2: bool,
}

/// Changes to a client; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientChanges {
    /// New name.
    pub name: Option<String>,
    /// New allowed scope patterns (replacing the old ones).
    pub scopes: Option<String>,
    /// New format.
    pub format: Option<TokenFormat>,
    /// New profile (`Some(None)` = follow the server default).
    pub profile: Option<Option<Profile>>,
    /// New access TTL (`Some(None)` = server default).
    pub access_ttl: Option<Option<u32>>,
    /// New refresh TTL (`Some(None)` = server default).
    pub refresh_ttl: Option<Option<u32>>,
    /// New origins (replacing the old ones).
    pub origins: Option<Vec<String>>,
    /// New audience (`Some(None)` = server default).
    pub audience: Option<Option<String>>,
    /// New RFC 8707 resources (replacing the old ones).
    pub resources: Option<Vec<String>>,
    /// New introspection rights (`Some(None)` = own tokens only).
    pub resource_server: Option<Option<String>>,
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// New allowed auth methods (replacing the current ones).
    pub auth_methods: Option<Vec<String>>,
    /// New registered keys (`Some(None)` = none).
    pub jwks: Option<Option<serde_json::Value>>,
    /// New `jwks_uri` (`Some(None)` = none).
    pub jwks_uri: Option<Option<String>>,
    /// Require DPoP or not.
    pub require_dpop: Option<bool>,
    /// FAPI 2.0 rules or not.
    pub fapi2: Option<bool>,
}

/// A client as shown to operators: everything but secret hashes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    /// Public id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Allowed scope patterns.
    pub scopes: Vec<String>,
    /// Token format.
    pub token_format: String,
    /// Wire profile (`null`: server default).
    pub profile: Option<String>,
    /// Effective wire profile.
    pub effective_profile: String,
    /// Access TTL override.
    pub access_ttl: Option<u32>,
    /// Refresh TTL override.
    pub refresh_ttl: Option<u32>,
    /// Allowed origins.
    pub origins: Vec<String>,
    /// Audience override.
    pub audience: Option<String>,
    /// RFC 8707 resources the client may request.
    pub resources: Vec<String>,
    /// Introspection rights beyond its own tokens (`*` or an audience).
    pub resource_server: Option<String>,
    /// Disabled flag.
    pub disabled: bool,
    /// Allowed token-endpoint auth methods.
    pub auth_methods: Vec<String>,
    /// Registered public keys (a JWK Set), if any.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// Where its public keys are published, if there.
    pub jwks_uri: Option<String>,
    /// Its access tokens must be DPoP-bound.
    pub require_dpop: bool,
    /// FAPI 2.0 rules apply (implies DPoP and private_key_jwt only).
    pub fapi2: bool,
    /// When the previous secret stops working, during a rotation.
    pub previous_secret_expires_at: Option<UnixTime>,
    /// Creation time (Unix seconds).
    pub created_at: UnixTime,
    /// Last change (Unix seconds).
    pub updated_at: UnixTime,
}

fn no_scopes() -> ServiceError {
    ServiceError::invalid("scopes", "a client needs at least one allowed scope")
}

fn check_ttl(name: &'static str, ttl: Option<u32>) -> Result<(), ServiceError> {
    match ttl {
        Some(t) if t == 0 || t > MAX_TTL => Err(ServiceError::invalid(
            name,
            format!("{name} must be between 1 and {MAX_TTL} seconds"),
        )),
        _ => Ok(()),
    }
}

/// [`ClientChanges`] after their checks: what an update writes over the stored client,
/// reapplied as it stands if the client changed meanwhile.
struct CheckedChanges {
    name: Option<String>,
    scopes: Option<Vec<ScopePattern>>,
    format: Option<TokenFormat>,
    profile: Option<Option<Profile>>,
    access_ttl: Option<Option<u32>>,
    refresh_ttl: Option<Option<u32>>,
    origins: Option<Vec<String>>,
    audience: Option<Option<String>>,
    resources: Option<Vec<String>>,
    resource_server: Option<Option<String>>,
    disabled: Option<bool>,
    auth_methods: Option<Vec<AuthMethod>>,
    jwks: Option<Option<JwkSet>>,
    jwks_uri: Option<Option<String>>,
    require_dpop: Option<bool>,
    fapi2: Option<bool>,
}

impl CheckedChanges {
    fn check(
        changes: ClientChanges,
        registry: &Registry,
        allow_http: bool,
    ) -> Result<Self, ServiceError> {
        let name = changes
            .name
            .as_deref()
            .map(parse_name)
            .transpose()
            .map_err(ServiceError::refused_setting)?;
        let scopes = match changes.scopes {
            Some(scopes) => {
                let parsed = parse_patterns(&scopes, registry)?;
                if parsed.is_empty() {
                    return Err(no_scopes());
                }
                Some(parsed)
            }
            None => None,
        };
        if let Some(t) = changes.access_ttl {
            check_ttl("access_ttl", t)?;
        }
        if let Some(t) = changes.refresh_ttl {
            check_ttl("refresh_ttl", t)?;
        }
        Ok(Self {
            name,
            scopes,
            format: changes.format,
            profile: changes.profile,
            access_ttl: changes.access_ttl,
            refresh_ttl: changes.refresh_ttl,
            origins: changes
                .origins
                .as_deref()
                .map(parse_origins)
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            audience: changes
                .audience
                .map(|a| parse_audience(a.as_deref()))
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            resources: changes
                .resources
                .as_deref()
                .map(parse_resources)
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            resource_server: changes
                .resource_server
                .map(|r| parse_resource_server(r.as_deref()))
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            disabled: changes.disabled,
            auth_methods: changes
                .auth_methods
                .as_deref()
                .map(parse_methods)
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            jwks: changes
                .jwks
                .map(|j| j.as_ref().map(parse_jwks).transpose())
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            jwks_uri: changes
                .jwks_uri
                .map(|u| {
                    u.as_deref()
                        .map(|u| parse_jwks_uri(u, allow_http))
                        .transpose()
                })
                .transpose()
                .map_err(ServiceError::refused_setting)?,
            require_dpop: changes.require_dpop,
            fapi2: changes.fapi2,
        })
    }

    /// Sets the changed fields of `c`; leaves the others as stored. Checks the authentication
    /// settings as a whole afterwards, since a change of one may break a rule that ties it to
    /// another (e.g. `fapi2` and `auth_methods`).
    fn apply(&self, c: &mut Client) -> Result<(), ServiceError> {
        fn set<T: Clone>(field: &mut T, value: Option<&T>) {
            if let Some(v) = value {
                field.clone_from(v);
            }
        }
        set(&mut c.name, self.name.as_ref());
        set(&mut c.scopes, self.scopes.as_ref());
        set(&mut c.format, self.format.as_ref());
        set(&mut c.profile, self.profile.as_ref());
        set(&mut c.access_ttl, self.access_ttl.as_ref());
        set(&mut c.refresh_ttl, self.refresh_ttl.as_ref());
        set(&mut c.origins, self.origins.as_ref());
        set(&mut c.audience, self.audience.as_ref());
        set(&mut c.resources, self.resources.as_ref());
        set(&mut c.resource_server, self.resource_server.as_ref());
        set(&mut c.disabled, self.disabled.as_ref());
        set(&mut c.auth.methods, self.auth_methods.as_ref());
        set(&mut c.auth.jwks, self.jwks.as_ref());
        set(&mut c.auth.jwks_uri, self.jwks_uri.as_ref());
        set(&mut c.auth.require_dpop, self.require_dpop.as_ref());
        set(&mut c.auth.fapi2, self.fapi2.as_ref());
        c.auth.check().map_err(ServiceError::refused_setting)
    }
}

/// Runs the checks an update applies to `changes` (the same checks a new client's settings
/// get), without a store: the entry point of the admin-body fuzz target (docs/fuzzing.md).
///
/// # Errors
/// The 400 the update would answer.
#[doc(hidden)]
pub fn check_changes(changes: ClientChanges, registry: &Registry) -> Result<(), ServiceError> {
    CheckedChanges::check(changes, registry, false).map(|_| ())
}

/// How many times a client change is tried when the client keeps changing under it. Each lost
/// try means another change of the client went through first, so with N changes racing each
/// other none loses more than N - 1 times; 16 is far more than operators make at once (the
/// API test races six, and five tries were not always enough for the last of them).
const CLIENT_WRITE_ATTEMPTS: u32 = 16;

impl Tessera {
    /// The operator's view of a client.
    #[must_use]
    pub fn view(&self, c: &Client) -> ClientView {
        ClientView {
            client_id: c.id.clone(),
            name: c.name.clone(),
            scopes: c.scopes.iter().map(|p| p.as_str().to_owned()).collect(),
            token_format: c.format.as_str().to_owned(),
            profile: c.profile.map(|p| p.as_str().to_owned()),
            effective_profile: self.profile_of(c).as_str().to_owned(),
            access_ttl: c.access_ttl,
            refresh_ttl: c.refresh_ttl,
            origins: c.origins.clone(),
            audience: c.audience.clone(),
            resources: c.resources.clone(),
            resource_server: c.resource_server.clone(),
            disabled: c.disabled,
            auth_methods: c
                .auth
                .methods
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            jwks: c.auth.jwks.as_ref().map(JwkSet::to_json),
            jwks_uri: c.auth.jwks_uri.clone(),
            require_dpop: c.auth.require_dpop,
            fapi2: c.auth.fapi2,
            previous_secret_expires_at: c.previous_secret.as_ref().map(|(_, t)| *t),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }

    /// Creates a client; returns it with its secret, which is never available again. A client
    /// whose auth methods include no secret method gets no secret to show (`None`): it still
    /// has a random secret hash, which nobody knows and the token endpoint would not accept
    /// from it anyway (see [`crate::domain::client::auth`]).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a refused setting, `invalid_scope` for a refused scope
    /// pattern; store failures.
    pub async fn create_client(
        &self,
        spec: ClientSpec,
        actor: &Actor,
    ) -> Result<(Client, Option<String>), ServiceError> {
        let name = parse_name(&spec.name).map_err(ServiceError::refused_setting)?;
        let scopes = parse_patterns(&spec.scopes, &self.registry)?;
        if scopes.is_empty() {
            return Err(no_scopes());
        }
        check_ttl("access_ttl", spec.access_ttl)?;
        check_ttl("refresh_ttl", spec.refresh_ttl)?;
        let origins = parse_origins(&spec.origins).map_err(ServiceError::refused_setting)?;
        let audience =
            parse_audience(spec.audience.as_deref()).map_err(ServiceError::refused_setting)?;
        let resources = parse_resources(&spec.resources).map_err(ServiceError::refused_setting)?;
        let resource_server = parse_resource_server(spec.resource_server.as_deref())
            .map_err(ServiceError::refused_setting)?;
        let auth = self.new_auth(&spec)?;
        let secret = token::new_secret()?;
        let now = self.clock.now();
        let client = Client {
            id: token::new_client_id()?,
            name,
            secret: SecretHash(self.keys.hash_secret(&secret)),
            previous_secret: None,
            scopes,
            format: spec.format.unwrap_or(self.policy.default_format),
            profile: spec.profile,
            access_ttl: spec.access_ttl,
            refresh_ttl: spec.refresh_ttl,
            origins,
            audience,
            resource_server,
            resources,
            disabled: false,
            created_at: now,
            updated_at: now,
            revision: 0,
            auth,
        };
        self.store.insert_client(&client).await?;
        tracing::info!(client_id = %client.id, "client created");
        self.audit(AuditEvent::new(
            AuditKind::ClientCreated,
            now,
            actor,
            Some(&client.id),
            json!({ "name": client.name, "scopes": self.view(&client).scopes }),
        ))
        .await;
        let shown = client.auth.uses_secret().then_some(secret);
        Ok((client, shown))
    }

    /// A new client's authentication settings, checked.
    fn new_auth(&self, spec: &ClientSpec) -> Result<ClientAuth, ServiceError> {
        let mut auth = ClientAuth::default();
        if let Some(methods) = &spec.auth_methods {
            auth.methods = parse_methods(methods).map_err(ServiceError::refused_setting)?;
        }
        auth.jwks = spec
            .jwks
            .as_ref()
            .map(parse_jwks)
            .transpose()
            .map_err(ServiceError::refused_setting)?;
        auth.jwks_uri = spec
            .jwks_uri
            .as_deref()
            .map(|u| parse_jwks_uri(u, self.policy.jwks_uri_allow_http))
            .transpose()
            .map_err(ServiceError::refused_setting)?;
        auth.require_dpop = spec.require_dpop;
        auth.fapi2 = spec.fapi2;
        auth.check().map_err(ServiceError::refused_setting)?;
        Ok(auth)
    }

    /// Up to `limit` clients with ids after `after` (keyset pagination by id).
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_clients(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Client>, ServiceError> {
        Ok(self.store.list_clients(after, limit).await?)
    }

    /// Every client, page by page.
    ///
    /// # Errors
    /// Store failures.
    pub async fn all_clients(&self) -> Result<Vec<Client>, ServiceError> {
        let mut all: Vec<Client> = Vec::new();
        loop {
            let page = self
                .store
                .list_clients(all.last().map(|c| c.id.as_str()), 500)
                .await?;
            let done = page.len() < 500;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// One client.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] if there is no such client.
    pub async fn get_client(&self, id: &str) -> Result<Client, ServiceError> {
        self.store
            .get_client(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no client {id:?}")))
    }

    /// Applies `changes` to a client: the fields they name, over the client as it stands when
    /// it is written (a change made meanwhile by another call is kept, see `change_client`).
    ///
    /// # Errors
    /// Bad settings, an unknown client, a client that kept changing (conflict), store failures.
    pub async fn update_client(
        &self,
        id: &str,
        changes: ClientChanges,
        actor: &Actor,
    ) -> Result<Client, ServiceError> {
        let fields: Vec<&str> = [
            ("name", changes.name.is_some()),
            ("scopes", changes.scopes.is_some()),
            ("format", changes.format.is_some()),
            ("profile", changes.profile.is_some()),
            ("access_ttl", changes.access_ttl.is_some()),
            ("refresh_ttl", changes.refresh_ttl.is_some()),
            ("origins", changes.origins.is_some()),
            ("audience", changes.audience.is_some()),
            ("resources", changes.resources.is_some()),
            ("resource_server", changes.resource_server.is_some()),
            ("auth_methods", changes.auth_methods.is_some()),
            ("jwks", changes.jwks.is_some()),
            ("jwks_uri", changes.jwks_uri.is_some()),
            ("require_dpop", changes.require_dpop.is_some()),
            ("fapi2", changes.fapi2.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let kind = match (fields.is_empty(), changes.disabled) {
            (true, Some(true)) => AuditKind::ClientDisabled,
            (true, Some(false)) => AuditKind::ClientEnabled,
            _ => AuditKind::ClientUpdated,
        };
        // Checked once, before the first read: the checks do not depend on the stored client.
        let changes =
            CheckedChanges::check(changes, &self.registry, self.policy.jwks_uri_allow_http)?;
        let c = self.change_client(id, |c, _| changes.apply(c)).await?;
        tracing::info!(client_id = %c.id, disabled = c.disabled, "client updated");
        self.audit(AuditEvent::new(
            kind,
            c.updated_at,
            actor,
            Some(&c.id),
            json!({ "fields": fields, "disabled": c.disabled }),
        ))
        .await;
        Ok(c)
    }

    /// Gives a client a new secret. The old one keeps working for `keep_old` seconds (0: stops
    /// at once; at most [`crate::domain::client::MAX_KEEP_OLD`]). Returns the new secret,
    /// which is never available again.
    ///
    /// # Errors
    /// `keep_old` too long, an unknown client, a client that kept changing (conflict), store
    /// failures.
    pub async fn rotate_secret(
        &self,
        id: &str,
        keep_old: u32,
        actor: &Actor,
    ) -> Result<(Client, String), ServiceError> {
        let keep_old = check_keep_old(keep_old).map_err(ServiceError::refused_setting)?;
        let secret = token::new_secret()?;
        let hash = SecretHash(self.keys.hash_secret(&secret));
        let c = self
            .change_client(id, |c, now| {
                let old = std::mem::replace(&mut c.secret, hash.clone());
                c.previous_secret = (keep_old > 0).then(|| (old, now + i64::from(keep_old)));
                Ok(())
            })
            .await?;
        tracing::info!(client_id = %c.id, keep_old, "client secret rotated");
        self.audit(AuditEvent::new(
            AuditKind::SecretRotated,
            c.updated_at,
            actor,
            Some(&c.id),
            json!({ "previous_secret_valid_for": keep_old }),
        ))
        .await;
        Ok((c, secret))
    }

    /// Reads client `id`, applies `change` (given the time of the change, which becomes
    /// `updated_at`) and writes it over the revision it was read at; returns the client as
    /// written. If it changed meanwhile (another admin call, the CLI, another instance), reads
    /// it again and reapplies `change`, so that neither change undoes the other. After
    /// [`CLIENT_WRITE_ATTEMPTS`] such losses in a row, gives up with a conflict (409).
    async fn change_client(
        &self,
        id: &str,
        change: impl Fn(&mut Client, UnixTime) -> Result<(), ServiceError>,
    ) -> Result<Client, ServiceError> {
        for attempt in 1..=CLIENT_WRITE_ATTEMPTS {
            let mut c = self.get_client(id).await?;
            let now = self.clock.now();
            change(&mut c, now)?;
            c.updated_at = now;
            match self.store.update_client(&c).await? {
                ClientUpdate::Updated => {
                    c.revision += 1;
                    return Ok(c);
                }
                ClientUpdate::NotFound => {
                    return Err(ServiceError::NotFound(format!("no client {id:?}")));
                }
                ClientUpdate::Stale => {
                    tracing::debug!(client_id = %id, attempt, "client changed meanwhile; reapplying");
                }
            }
        }
        Err(ServiceError::Conflict(format!(
            "client {id:?} kept changing while this change was applied; try again"
        )))
    }

    /// Deletes a client and all its tokens.
    ///
    /// # Errors
    /// An unknown client, store failures.
    pub async fn delete_client(&self, id: &str, actor: &Actor) -> Result<(), ServiceError> {
        if self.store.delete_client(id).await? {
            tracing::info!(client_id = %id, "client deleted");
            let event = AuditEvent::new(
                AuditKind::ClientDeleted,
                self.clock.now(),
                actor,
                Some(id),
                json!({}),
            );
            self.audit(event).await;
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("no client {id:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::ErrorCode;

    #[test]
    fn a_refused_client_setting_is_invalid_naming_its_field() {
        let e = parse_name("").map_err(ServiceError::refused_setting).err();
        assert!(
            matches!(&e, Some(ServiceError::Invalid { field: "name", reason })
                if reason.starts_with("name ")),
            "{e:?}"
        );
        let e = check_ttl("access_ttl", Some(0)).err();
        assert!(
            matches!(
                &e,
                Some(ServiceError::Invalid {
                    field: "access_ttl",
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(matches!(
            no_scopes(),
            ServiceError::Invalid {
                field: "scopes",
                ..
            }
        ));
    }

    #[test]
    fn a_refused_scope_pattern_stays_an_oauth_invalid_scope() {
        let registry = Registry::with_extra::<&str>(&[]).ok();
        let e = registry
            .as_ref()
            .and_then(|r| parse_patterns("/widgets.read", r).err())
            .map(ServiceError::refused_setting);
        assert!(
            matches!(&e, Some(ServiceError::OAuth(o)) if o.code == ErrorCode::InvalidScope),
            "{e:?}"
        );
    }
}
