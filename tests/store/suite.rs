//! The conformance suite: what every [`Store`] must do, written once against `Arc<dyn Store>`.
//!
//! `main.rs` runs each function here against SQLite and against PostgreSQL; a backend that
//! drifts from the other fails here first. Times are fixed Unix seconds, never the wall clock.

use std::collections::BTreeSet;
use std::sync::Arc;
use tessera::domain::audit::{Actor, AuditEvent, AuditKind, AuditQuery};

use tessera::domain::client::{
    AuthMethod, Client, ClientAuth, ClientType, Profile, SecretHash, TokenFormat,
};
use tessera::domain::clock::UnixTime;
use tessera::domain::jwt::KeyState;
use tessera::domain::scope::ScopePattern;
use tessera::domain::token::{TokenHash, TokenRef};
use tessera::store::{
    AccessKey, ClientUpdate, NewAccessToken, NewFamily, NewRefreshToken, RotateOutcome, Store,
    StoreError, StoredKey,
};

pub(crate) const T0: UnixTime = 1_800_000_000;
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 24 * HOUR;

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::now_v7().simple())
}

fn client(id: &str, created_at: UnixTime) -> Client {
    Client {
        id: id.to_owned(),
        name: format!("client {id}"),
        secret: SecretHash([7; 32]),
        previous_secret: None,
        scopes: vec![
            ScopePattern::from_stored("/ping.read"),
            ScopePattern::from_stored("/accounts/*/transfers.write"),
        ],
        format: TokenFormat::Opaque,
        profile: None,
        access_ttl: None,
        refresh_ttl: None,
        origins: Vec::new(),
        audience: None,
        resource_server: None,
        resources: Vec::new(),
        disabled: false,
        created_at,
        updated_at: created_at,
        revision: 0,
        auth: ClientAuth::default(),
    }
}

/// One grant's rows, as the service would write them.
#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) family: NewFamily,
    pub(crate) access: NewAccessToken,
    pub(crate) refresh: NewRefreshToken,
}

pub(crate) fn access_token(
    family_id: &str,
    client_id: &str,
    now: UnixTime,
    ttl: i64,
) -> NewAccessToken {
    let id = unique("at");
    NewAccessToken {
        hash: TokenHash::of(&id),
        id,
        family_id: family_id.to_owned(),
        client_id: client_id.to_owned(),
        format: TokenFormat::Opaque,
        scope: "/ping.read".into(),
        audience: "https://api.example".into(),
        issued_at: now,
        expires_at: now + ttl,
        signing_kid: None,
        dpop_jkt: None,
    }
}

pub(crate) fn refresh_token(
    family_id: &str,
    client_id: &str,
    now: UnixTime,
    ttl: i64,
) -> NewRefreshToken {
    NewRefreshToken {
        id: unique("rt"),
        hash: TokenHash::of(&unique("rt")),
        family_id: family_id.to_owned(),
        client_id: client_id.to_owned(),
        scope: "/ping.read".into(),
        issued_at: now,
        expires_at: now + ttl,
    }
}

pub(crate) fn grant_at(client_id: &str, now: UnixTime, access_ttl: i64, refresh_ttl: i64) -> Grant {
    let family = NewFamily {
        id: unique("fam"),
        client_id: client_id.to_owned(),
        scope: "/ping.read".into(),
        client_type: ClientType::Service,
        created_at: now,
        dpop_bound: false,
    };
    Grant {
        access: access_token(&family.id, client_id, now, access_ttl),
        refresh: refresh_token(&family.id, client_id, now, refresh_ttl),
        family,
    }
}

pub(crate) async fn issue(store: &dyn Store, g: &Grant) {
    store
        .issue(&g.family, &g.access, &g.refresh, &ev())
        .await
        .expect("issue");
}

pub(crate) async fn new_client(store: &dyn Store) -> Client {
    let c = client(&unique("c"), T0);
    store.insert_client(&c).await.expect("insert client");
    c
}

async fn access_revoked(store: &dyn Store, token: &TokenRef) -> bool {
    store
        .find_access(AccessKey::Opaque(token))
        .await
        .expect("find_access")
        .expect("access token exists")
        .revoked
}

async fn refresh_revoked(store: &dyn Store, token: &TokenRef) -> bool {
    store
        .find_refresh(token)
        .await
        .expect("find_refresh")
        .expect("refresh token exists")
        .revoked
}

fn key(kid: &str, created_at: UnixTime) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        alg: "EdDSA".into(),
        state: KeyState::Active,
        sealed_private_key: kid.as_bytes().to_vec(),
        created_at,
        published_until: None,
    }
}

async fn key_states(store: &dyn Store) -> Vec<(String, String, Option<UnixTime>)> {
    store
        .list_keys()
        .await
        .expect("list_keys")
        .into_iter()
        .map(|k| (k.kid, k.state.as_str().to_owned(), k.published_until))
        .collect()
}

pub async fn migrations_can_run_again(store: Arc<dyn Store>) {
    store.migrate().await.expect("second migration run");
    store.ping().await.expect("ping");
}

pub async fn clients_round_trip_every_field(store: Arc<dyn Store>) {
    let mut full = client("full-client", T0);
    full.previous_secret = Some((SecretHash([9; 32]), T0 + DAY));
    full.format = TokenFormat::Jwt;
    full.profile = Some(Profile::Rfc6749);
    full.access_ttl = Some(600);
    full.refresh_ttl = Some(7200);
    full.origins = vec!["https://app.example".into(), "https://admin.example".into()];
    full.audience = Some("https://api.example".into());
    full.resource_server = Some("*".into());
    full.resources = vec!["https://a.example".into(), "https://b.example".into()];
    store.insert_client(&full).await.expect("insert");
    let plain = client("plain-client", T0 - 10);
    store.insert_client(&plain).await.expect("insert");

    assert_eq!(
        store.get_client("full-client").await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        store.get_client("plain-client").await.unwrap(),
        Some(plain.clone())
    );
    assert_eq!(store.get_client("nobody").await.unwrap(), None);
    // Ids come from requests: one no database can store is simply unknown.
    assert_eq!(store.get_client("no\0body").await.unwrap(), None);
    assert!(!store.delete_client("no\0body").await.unwrap());
    let listed: Vec<String> = store
        .list_clients(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ["full-client", "plain-client"], "ordered by id");

    let mut changed = full.clone();
    changed.name = "renamed".into();
    changed.previous_secret = None;
    changed.profile = None;
    changed.access_ttl = None;
    changed.origins = Vec::new();
    changed.audience = None;
    changed.resource_server = None;
    changed.resources = Vec::new();
    changed.disabled = true;
    changed.updated_at = T0 + 5;
    assert_eq!(
        store.update_client(&changed).await.unwrap(),
        ClientUpdate::Updated
    );
    changed.revision += 1;
    assert_eq!(
        store.get_client("full-client").await.unwrap(),
        Some(changed)
    );
    assert_eq!(
        store.update_client(&client("nobody", T0)).await.unwrap(),
        ClientUpdate::NotFound
    );

    assert!(store.delete_client("plain-client").await.unwrap());
    assert!(!store.delete_client("plain-client").await.unwrap());
    assert_eq!(store.get_client("plain-client").await.unwrap(), None);
}

pub async fn client_auth_settings_round_trip(store: Arc<dyn Store>) {
    let jwks = tessera::domain::jose::JwkSet::parse(&serde_json::json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }]}))
    .expect("jwks");
    let mut keyed = client("keyed-client", T0);
    keyed.auth = ClientAuth {
        methods: vec![AuthMethod::PrivateKeyJwt],
        jwks: Some(jwks),
        jwks_uri: None,
        require_dpop: true,
        fapi2: true,
    };
    store.insert_client(&keyed).await.expect("insert");
    assert_eq!(
        store.get_client("keyed-client").await.unwrap(),
        Some(keyed.clone())
    );
    let listed = store.list_clients(None, 10).await.unwrap();
    assert_eq!(listed, [keyed.clone()], "listing decodes the settings too");

    let mut changed = keyed.clone();
    changed.auth = ClientAuth {
        methods: vec![AuthMethod::ClientSecretPost, AuthMethod::PrivateKeyJwt],
        jwks: None,
        jwks_uri: Some("https://keys.example/jwks.json".into()),
        require_dpop: false,
        fapi2: false,
    };
    changed.updated_at = T0 + 1;
    assert_eq!(
        store.update_client(&changed).await.unwrap(),
        ClientUpdate::Updated
    );
    changed.revision += 1;
    assert_eq!(
        store.get_client("keyed-client").await.unwrap(),
        Some(changed)
    );
}

pub async fn a_duplicate_client_id_is_a_conflict(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let again = store.insert_client(&c).await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "expected Conflict, got {again:?}"
    );
}

pub async fn issued_tokens_are_found_by_hash_and_by_id(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;

    let r = store.find_refresh(&g.refresh.key()).await.unwrap().unwrap();
    assert_eq!(r.family_id, g.family.id);
    assert_eq!(r.client_id, c.id);
    assert_eq!(r.scope, "/ping.read");
    assert_eq!(r.client_type, ClientType::Service);
    assert_eq!((r.issued_at, r.expires_at), (T0, T0 + DAY));
    assert_eq!(r.consumed_at, None);
    assert!(!r.revoked);

    let by_hash = store
        .find_access(AccessKey::Opaque(&g.access.key()))
        .await
        .unwrap()
        .unwrap();
    let by_id = store
        .find_access(AccessKey::Id(&g.access.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash, by_id);
    assert_eq!(by_hash.id, g.access.id);
    assert_eq!(by_hash.client_id, c.id);
    assert_eq!(by_hash.family_id, g.family.id);
    assert_eq!(by_hash.format, TokenFormat::Opaque);
    assert_eq!(by_hash.audience, "https://api.example");
    assert_eq!((by_hash.issued_at, by_hash.expires_at), (T0, T0 + HOUR));
    assert!(!by_hash.revoked);

    // Unknown: an unknown id, and a known id with another hash.
    let other = TokenHash::of("unknown");
    let unknown =
        |known: &str| [unique("unknown"), known.to_owned()].map(|id| TokenRef { id, hash: other });
    for key in &unknown(&g.refresh.id) {
        assert!(store.find_refresh(key).await.unwrap().is_none());
    }
    for key in &unknown(&g.access.id) {
        let found = store.find_access(AccessKey::Opaque(key)).await.unwrap();
        assert!(found.is_none());
    }
    assert!(
        store
            .find_access(AccessKey::Id("unknown"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn a_refresh_token_rotates_once(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    let now = T0 + 60;
    let next_access = access_token(&g.family.id, &c.id, now, HOUR);
    let next_refresh = refresh_token(&g.family.id, &c.id, now, DAY);
    let outcome = store
        .rotate_refresh(
            &g.refresh.key(),
            UnixTime::MAX,
            &next_access,
            &next_refresh,
            &ev(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Rotated);
    let old = store.find_refresh(&g.refresh.key()).await.unwrap().unwrap();
    assert_eq!(old.consumed_at, Some(now));
    let new = store
        .find_refresh(&next_refresh.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((new.consumed_at, new.revoked), (None, false));
    assert!(!access_revoked(store.as_ref(), &next_access.key()).await);

    // No grace window: the consumed token cannot rotate again, and nothing is written.
    let third_access = access_token(&g.family.id, &c.id, now + 1, HOUR);
    let third_refresh = refresh_token(&g.family.id, &c.id, now + 1, DAY);
    let again = store
        .rotate_refresh(
            &g.refresh.key(),
            UnixTime::MAX,
            &third_access,
            &third_refresh,
            &ev(),
        )
        .await
        .unwrap();
    assert_eq!(again, RotateOutcome::Lost);
    assert!(
        store
            .find_refresh(&third_refresh.key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_access(AccessKey::Opaque(&third_access.key()))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn the_grace_window_counts_from_the_first_use(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    let first_use = T0 + 100;
    let rotate = |at: UnixTime, cutoff: UnixTime| {
        let store = store.clone();
        let a = access_token(&g.family.id, &c.id, at, HOUR);
        let r = refresh_token(&g.family.id, &c.id, at, DAY);
        let old = g.refresh.key();
        async move {
            store
                .rotate_refresh(&old, cutoff, &a, &r, &ev())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        rotate(first_use, UnixTime::MAX).await,
        RotateOutcome::Rotated
    );
    // A retry whose window (cutoff) still covers the first use rotates again...
    assert_eq!(
        rotate(first_use + 5, first_use).await,
        RotateOutcome::Rotated
    );
    // ...without moving the first-use time.
    let old = store.find_refresh(&g.refresh.key()).await.unwrap().unwrap();
    assert_eq!(old.consumed_at, Some(first_use));
    // Once the window has moved past the first use, reuse loses.
    assert_eq!(
        rotate(first_use + 20, first_use + 1).await,
        RotateOutcome::Lost
    );
}

pub async fn a_revoked_family_cannot_rotate(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    store
        .revoke_family(&g.family.id, T0 + 1, &ev())
        .await
        .unwrap();
    store
        .revoke_family(&g.family.id, T0 + 2, &ev())
        .await
        .unwrap();
    assert!(refresh_revoked(store.as_ref(), &g.refresh.key()).await);
    assert!(access_revoked(store.as_ref(), &g.access.key()).await);

    let a = access_token(&g.family.id, &c.id, T0 + 3, HOUR);
    let r = refresh_token(&g.family.id, &c.id, T0 + 3, DAY);
    let outcome = store
        .rotate_refresh(&g.refresh.key(), UnixTime::MAX, &a, &r, &ev())
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Lost);
    assert!(store.find_refresh(&r.key()).await.unwrap().is_none());
    let old = store.find_refresh(&g.refresh.key()).await.unwrap().unwrap();
    assert_eq!(old.consumed_at, None, "a lost rotation writes nothing");
}

pub async fn revoking_a_family_revokes_its_successors(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    let a = access_token(&g.family.id, &c.id, T0 + 1, HOUR);
    let r = refresh_token(&g.family.id, &c.id, T0 + 1, DAY);
    let outcome = store
        .rotate_refresh(&g.refresh.key(), UnixTime::MAX, &a, &r, &ev())
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Rotated);
    let other = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &other).await;

    store
        .revoke_family(&g.family.id, T0 + 2, &ev())
        .await
        .unwrap();
    for key in [g.access.key(), a.key()] {
        assert!(access_revoked(store.as_ref(), &key).await);
    }
    for key in [g.refresh.key(), r.key()] {
        assert!(refresh_revoked(store.as_ref(), &key).await);
    }
    assert!(!access_revoked(store.as_ref(), &other.access.key()).await);
    assert!(!refresh_revoked(store.as_ref(), &other.refresh.key()).await);
}

pub async fn revoking_an_access_token_revokes_only_it(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    let a = access_token(&g.family.id, &c.id, T0 + 1, HOUR);
    let r = refresh_token(&g.family.id, &c.id, T0 + 1, DAY);
    store
        .rotate_refresh(&g.refresh.key(), UnixTime::MAX, &a, &r, &ev())
        .await
        .unwrap();
    store
        .revoke_access(&g.access.id, T0 + 2, &ev())
        .await
        .unwrap();
    store
        .revoke_access(&g.access.id, T0 + 3, &ev())
        .await
        .unwrap();
    store.revoke_access("unknown", T0 + 3, &ev()).await.unwrap();
    assert!(access_revoked(store.as_ref(), &g.access.key()).await);
    assert!(!access_revoked(store.as_ref(), &a.key()).await);
    assert!(!refresh_revoked(store.as_ref(), &r.key()).await);
}

pub async fn a_disabled_client_s_tokens_read_as_revoked(store: Arc<dyn Store>) {
    let mut c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    c.disabled = true;
    assert_eq!(
        store.update_client(&c).await.unwrap(),
        ClientUpdate::Updated
    );
    assert!(access_revoked(store.as_ref(), &g.access.key()).await);
    c.disabled = false;
    c.revision += 1;
    assert_eq!(
        store.update_client(&c).await.unwrap(),
        ClientUpdate::Updated
    );
    assert!(!access_revoked(store.as_ref(), &g.access.key()).await);
}

/// An update made from a copy read before another change is refused and writes nothing, so it
/// cannot write back the fields that change replaced (a lost update).
pub async fn a_client_update_from_a_stale_copy_writes_nothing(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let read_by_a = store.get_client(&c.id).await.unwrap().unwrap();
    let read_by_b = read_by_a.clone();
    assert_eq!(read_by_a.revision, 0);

    let mut a = read_by_a;
    a.secret = SecretHash([9; 32]);
    a.updated_at = T0 + 1;
    assert_eq!(
        store.update_client(&a).await.unwrap(),
        ClientUpdate::Updated
    );

    let mut b = read_by_b;
    b.name = "renamed".into();
    b.updated_at = T0 + 2;
    assert_eq!(store.update_client(&b).await.unwrap(), ClientUpdate::Stale);
    let stored = store.get_client(&c.id).await.unwrap().unwrap();
    assert_eq!(
        stored.secret,
        SecretHash([9; 32]),
        "the first change survives"
    );
    assert_eq!(stored.name, c.name, "the stale change wrote nothing");
    assert_eq!((stored.revision, stored.updated_at), (1, T0 + 1));

    // Made again from a fresh copy, it goes through.
    let mut b = stored;
    b.name = "renamed".into();
    assert_eq!(
        store.update_client(&b).await.unwrap(),
        ClientUpdate::Updated
    );
    let stored = store.get_client(&c.id).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.revision), ("renamed", 2));
    assert_eq!(stored.secret, SecretHash([9; 32]));

    assert!(store.delete_client(&c.id).await.unwrap());
    assert_eq!(
        store.update_client(&b).await.unwrap(),
        ClientUpdate::NotFound
    );
}

pub async fn deleting_a_client_deletes_its_tokens(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let g = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &g).await;
    assert!(store.delete_client(&c.id).await.unwrap());
    assert!(
        store
            .find_refresh(&g.refresh.key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_access(AccessKey::Opaque(&g.access.key()))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn signing_keys_follow_their_lifecycle(store: Arc<dyn Store>) {
    assert!(store.list_keys().await.unwrap().is_empty());
    store.insert_first_active_key(&key("k1", T0)).await.unwrap();
    store
        .insert_first_active_key(&key("k1b", T0))
        .await
        .unwrap();
    assert_eq!(
        key_states(store.as_ref()).await,
        [("k1".into(), "active".into(), None)],
        "a second first key is ignored"
    );
    store.insert_next_key(&key("k2", T0 + 1)).await.unwrap();
    store.insert_next_key(&key("k2b", T0 + 1)).await.unwrap();
    assert_eq!(
        key_states(store.as_ref()).await,
        [
            ("k1".into(), "active".into(), None),
            ("k2".into(), "next".into(), None)
        ]
    );
    let stored = store.list_keys().await.unwrap();
    assert_eq!(stored[1].sealed_private_key, b"k2");
    assert_eq!(
        (stored[1].alg.as_str(), stored[1].created_at),
        ("EdDSA", T0 + 1)
    );

    assert!(
        !store
            .activate_next_key("k1", T0 + 2, T0 + DAY)
            .await
            .unwrap()
    );
    assert!(
        !store
            .activate_next_key("nope", T0 + 2, T0 + DAY)
            .await
            .unwrap()
    );
    assert!(
        store
            .activate_next_key("k2", T0 + 2, T0 + DAY)
            .await
            .unwrap()
    );
    assert!(
        !store
            .activate_next_key("k2", T0 + 3, T0 + DAY)
            .await
            .unwrap()
    );
    assert_eq!(
        key_states(store.as_ref()).await,
        [
            ("k1".into(), "retired".into(), Some(T0 + DAY)),
            ("k2".into(), "active".into(), None)
        ]
    );

    // The active key cannot be retired or revoked directly; a revoked key stays revoked.
    assert!(
        !store
            .set_key_state("k2", KeyState::Revoked, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_key_state("nope", KeyState::Revoked, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_key_state("k1", KeyState::Revoked, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_key_state("k1", KeyState::Retired, Some(T0))
            .await
            .unwrap()
    );
    assert_eq!(
        key_states(store.as_ref()).await,
        [
            ("k1".into(), "revoked".into(), None),
            ("k2".into(), "active".into(), None)
        ]
    );
}

pub async fn revoking_a_key_revokes_the_jwts_it_signed(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    store
        .insert_first_active_key(&key("old", T0))
        .await
        .unwrap();
    store.insert_next_key(&key("new", T0)).await.unwrap();
    let mut signed_by_old = grant_at(&c.id, T0, HOUR, DAY);
    signed_by_old.access.format = TokenFormat::Jwt;
    signed_by_old.access.signing_kid = Some("old".into());
    issue(store.as_ref(), &signed_by_old).await;
    assert!(
        store
            .activate_next_key("new", T0 + 1, T0 + HOUR)
            .await
            .unwrap()
    );
    let mut signed_by_new = grant_at(&c.id, T0 + 1, HOUR, DAY);
    signed_by_new.access.format = TokenFormat::Jwt;
    signed_by_new.access.signing_kid = Some("new".into());
    issue(store.as_ref(), &signed_by_new).await;

    let jti = signed_by_old.access.id.clone();
    let before = store
        .find_access(AccessKey::Id(&jti))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((before.format, before.revoked), (TokenFormat::Jwt, false));
    assert!(
        store
            .set_key_state("old", KeyState::Revoked, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .find_access(AccessKey::Id(&jti))
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(!access_revoked(store.as_ref(), &signed_by_new.access.key()).await);
}

pub async fn meta_keeps_the_first_value_and_replaces_only_what_it_expects(store: Arc<dyn Store>) {
    assert_eq!(
        store.meta_insert_or_get("k", "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.meta_insert_or_get("k", "second").await.unwrap(),
        "first"
    );
    assert!(!store.meta_replace("k", "second", "third").await.unwrap());
    assert!(
        !store
            .meta_replace("missing", "first", "third")
            .await
            .unwrap()
    );
    assert!(store.meta_replace("k", "first", "third").await.unwrap());
    assert_eq!(
        store.meta_insert_or_get("k", "fourth").await.unwrap(),
        "third"
    );
}

pub async fn the_cleanup_deletes_only_expired_and_revoked_rows(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let now = T0 + 10 * DAY;
    // Everything in this family expired before `now`.
    let expired = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &expired).await;
    // Live, with one access token revoked and one expired.
    let live = grant_at(&c.id, now - 100, HOUR, DAY);
    issue(store.as_ref(), &live).await;
    let next_a = access_token(&live.family.id, &c.id, now - 50, HOUR);
    let next_r = refresh_token(&live.family.id, &c.id, now - 50, DAY);
    store
        .rotate_refresh(&live.refresh.key(), UnixTime::MAX, &next_a, &next_r, &ev())
        .await
        .unwrap();
    store
        .revoke_access(&live.access.id, now - 10, &ev())
        .await
        .unwrap();
    let short = access_token(&live.family.id, &c.id, now - 100, 10);
    let short_r = refresh_token(&live.family.id, &c.id, now - 40, DAY);
    store
        .rotate_refresh(&next_r.key(), UnixTime::MAX, &short, &short_r, &ev())
        .await
        .unwrap();
    // Unexpired, but its family was revoked.
    let revoked = grant_at(&c.id, now - 100, HOUR, DAY);
    issue(store.as_ref(), &revoked).await;
    store
        .revoke_family(&revoked.family.id, now - 10, &ev())
        .await
        .unwrap();
    // Keys: one retired and no longer published, one retired but still published.
    store
        .insert_first_active_key(&key("gone", T0))
        .await
        .unwrap();
    store.insert_next_key(&key("kept", T0)).await.unwrap();
    store.activate_next_key("kept", T0, T0 + 1).await.unwrap();
    store.insert_next_key(&key("active", T0)).await.unwrap();
    store
        .activate_next_key("active", T0, now + DAY)
        .await
        .unwrap();

    // With a retention reaching back before the revocations, revoked rows stay.
    let mut total = 0;
    loop {
        let n = store.purge_expired(now - 20, 1000).await.unwrap().rows;
        total += n;
        if n == 0 {
            break;
        }
    }
    assert!(total >= 3, "the expired family and its tokens went");
    assert!(
        store
            .find_refresh(&expired.refresh.key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_access(AccessKey::Opaque(&expired.access.key()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(refresh_revoked(store.as_ref(), &revoked.refresh.key()).await);
    assert!(access_revoked(store.as_ref(), &live.access.key()).await);

    // Without retention, revoked rows and expired tokens of live families go too.
    while store.purge_expired(now, 1000).await.unwrap().rows > 0 {}
    assert!(
        store
            .find_refresh(&revoked.refresh.key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_access(AccessKey::Opaque(&revoked.access.key()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_access(AccessKey::Opaque(&live.access.key()))
            .await
            .unwrap()
            .is_none(),
        "an individually revoked access token goes"
    );
    assert!(
        store
            .find_access(AccessKey::Opaque(&short.key()))
            .await
            .unwrap()
            .is_none(),
        "an expired access token of a live family goes"
    );
    // What is live stays, including the consumed refresh tokens reuse detection needs.
    assert!(!access_revoked(store.as_ref(), &next_a.key()).await);
    assert!(!refresh_revoked(store.as_ref(), &short_r.key()).await);
    let consumed = store
        .find_refresh(&live.refresh.key())
        .await
        .unwrap()
        .unwrap();
    assert!(consumed.consumed_at.is_some());
    let kids: BTreeSet<String> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["active", "kept"].map(String::from).into());
}

pub async fn the_cleanup_works_in_batches(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let mut expired = Vec::new();
    for i in 0..7 {
        let g = grant_at(&c.id, T0 + i, HOUR, DAY);
        issue(store.as_ref(), &g).await;
        expired.push(g);
    }
    let live = grant_at(&c.id, T0 + 10 * DAY, HOUR, DAY);
    issue(store.as_ref(), &live).await;
    let mut rounds = 0;
    loop {
        let n = store.purge_expired(T0 + 5 * DAY, 2).await.unwrap().rows;
        assert!(n <= 3 * 2, "at most one batch per table: {n}");
        rounds += 1;
        if n < 2 {
            break;
        }
        assert!(rounds < 50, "the cleanup terminates");
    }
    assert!(rounds >= 2, "seven families do not fit one batch of two");
    for g in &expired {
        assert!(
            store
                .find_refresh(&g.refresh.key())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(!refresh_revoked(store.as_ref(), &live.refresh.key()).await);
    assert_eq!(store.purge_expired(T0 + 5 * DAY, 2).await.unwrap().rows, 0);
}

pub async fn racing_rotations_of_one_token_rotate_it_once(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    for round in 0..5 {
        let g = grant_at(&c.id, T0 + round, HOUR, DAY);
        issue(store.as_ref(), &g).await;
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let store = store.clone();
                let old = g.refresh.key();
                let a = access_token(&g.family.id, &c.id, T0 + round + 1, HOUR);
                let r = refresh_token(&g.family.id, &c.id, T0 + round + 1, DAY);
                tokio::spawn(async move {
                    let outcome = store
                        .rotate_refresh(&old, UnixTime::MAX, &a, &r, &ev())
                        .await;
                    (outcome, r.key())
                })
            })
            .collect();
        let mut rotated = Vec::new();
        for task in tasks {
            let (outcome, hash) = task.await.unwrap();
            match outcome.expect("a lost race is an outcome, not an error") {
                RotateOutcome::Rotated => rotated.push(hash),
                RotateOutcome::Lost => {
                    assert!(store.find_refresh(&hash).await.unwrap().is_none());
                }
            }
        }
        assert_eq!(rotated.len(), 1, "exactly one of 12 racing rotations wins");
        assert!(!refresh_revoked(store.as_ref(), &rotated[0]).await);
    }
}

pub async fn a_rotation_racing_a_revocation_leaves_no_live_successor(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    for round in 0..10 {
        let g = grant_at(&c.id, T0 + round, HOUR, DAY);
        issue(store.as_ref(), &g).await;
        let a = access_token(&g.family.id, &c.id, T0 + round + 1, HOUR);
        let r = refresh_token(&g.family.id, &c.id, T0 + round + 1, DAY);
        let rotating = {
            let store = store.clone();
            let old = g.refresh.key();
            let (a, r) = (a.clone(), r.clone());
            tokio::spawn(async move {
                store
                    .rotate_refresh(&old, UnixTime::MAX, &a, &r, &ev())
                    .await
            })
        };
        let revoking = {
            let store = store.clone();
            let family = g.family.id.clone();
            tokio::spawn(async move { store.revoke_family(&family, T0 + round + 1, &ev()).await })
        };
        revoking.await.unwrap().expect("revocation commits");
        let outcome = rotating.await.unwrap().expect("rotation answers");
        if outcome == RotateOutcome::Rotated {
            assert!(refresh_revoked(store.as_ref(), &r.key()).await);
            assert!(access_revoked(store.as_ref(), &a.key()).await);
        } else {
            assert!(store.find_refresh(&r.key()).await.unwrap().is_none());
        }
    }
}

pub async fn instances_creating_the_first_key_at_once_agree_on_one(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_first_active_key(&key(&format!("k{i}"), T0))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("no error, whoever wins");
    }
    let active: Vec<_> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.state == KeyState::Active)
        .collect();
    assert_eq!(active.len(), 1);

    let values: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .meta_insert_or_get("root", &format!("value {i}"))
                    .await
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for v in values {
        seen.insert(v.await.unwrap().unwrap());
    }
    assert_eq!(
        seen.len(),
        1,
        "every caller got the first value written: {seen:?}"
    );
}

/// An audit event to pass where the store records one in the same transaction.
pub(crate) fn ev() -> AuditEvent {
    AuditEvent::new(
        AuditKind::TokenIssued,
        T0,
        &Actor::cli(),
        None,
        serde_json::json!({}),
    )
}

pub async fn clients_are_listed_a_page_at_a_time(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_client(store.as_ref()).await.id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_clients(after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let done = page.len() < 2;
        seen.extend(page.iter().map(|c| c.id.clone()));
        after = page.last().map(|c| c.id.clone());
        if done {
            break;
        }
    }
    assert_eq!(seen, ids);
}

pub async fn a_client_s_tokens_are_revoked_together(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let other = new_client(store.as_ref()).await;
    let (a, b, o) = (
        grant_at(&c.id, T0, HOUR, DAY),
        grant_at(&c.id, T0, HOUR, DAY),
        grant_at(&other.id, T0, HOUR, DAY),
    );
    for g in [&a, &b, &o] {
        issue(store.as_ref(), g).await;
    }
    assert_eq!(
        store
            .revoke_client_tokens(&c.id, T0 + 1, &ev())
            .await
            .unwrap(),
        2
    );
    assert!(access_revoked(store.as_ref(), &a.access.key()).await);
    assert!(refresh_revoked(store.as_ref(), &b.refresh.key()).await);
    assert!(!access_revoked(store.as_ref(), &o.access.key()).await);
    assert_eq!(
        store
            .revoke_client_tokens(&c.id, T0 + 2, &ev())
            .await
            .unwrap(),
        0,
        "idempotent"
    );
}

pub async fn tokens_issued_before_a_time_are_revoked(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let old = grant_at(&c.id, T0, HOUR, DAY);
    let new = grant_at(&c.id, T0 + 100, HOUR, DAY);
    issue(store.as_ref(), &old).await;
    issue(store.as_ref(), &new).await;
    assert_eq!(
        store
            .revoke_issued_before(T0 + 50, T0 + 200, &ev())
            .await
            .unwrap(),
        2
    );
    assert!(access_revoked(store.as_ref(), &old.access.key()).await);
    assert!(refresh_revoked(store.as_ref(), &old.refresh.key()).await);
    assert!(!access_revoked(store.as_ref(), &new.access.key()).await);
    assert!(!refresh_revoked(store.as_ref(), &new.refresh.key()).await);
}

pub async fn audit_events_are_recorded_queried_and_purged(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let actor = Actor {
        request_id: Some("req-1".into()),
        source: Some("10.0.0.1".into()),
    };
    let mut ids = Vec::new();
    for (i, kind) in [
        AuditKind::ClientCreated,
        AuditKind::AuthFailed,
        AuditKind::AuthFailed,
    ]
    .into_iter()
    .enumerate()
    {
        let e = AuditEvent::new(
            kind,
            T0 + i as i64,
            &actor,
            Some(&c.id),
            serde_json::json!({ "n": i }),
        );
        store.record_audit(&e).await.unwrap();
        ids.push(e.id);
    }
    // Token events come in the same transaction as the change.
    let g = grant_at(&c.id, T0 + 10, HOUR, DAY);
    let issued = AuditEvent::new(
        AuditKind::TokenIssued,
        T0 + 10,
        &actor,
        Some(&c.id),
        serde_json::json!({}),
    );
    store
        .issue(&g.family, &g.access, &g.refresh, &issued)
        .await
        .unwrap();
    let q = |event: Option<&str>, before: Option<String>, limit: u32| AuditQuery {
        client_id: Some(c.id.clone()),
        event: event.map(str::to_owned),
        since: None,
        before_id: before,
        limit,
    };
    let all = store.list_audit(&q(None, None, 100)).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].event, "token.issued", "newest first");
    assert_eq!(all[3].detail, serde_json::json!({ "n": 0 }));
    assert_eq!(all[3].request_id.as_deref(), Some("req-1"));
    assert_eq!(all[3].source.as_deref(), Some("10.0.0.1"));
    let failures = store
        .list_audit(&q(Some("auth.failed"), None, 100))
        .await
        .unwrap();
    assert_eq!(failures.len(), 2);
    let page = store
        .list_audit(&q(None, Some(all[1].id.clone()), 100))
        .await
        .unwrap();
    assert_eq!(page.len(), 2, "events older than the given id");
    assert_eq!(store.purge_audit(T0 + 2, 100).await.unwrap().rows, 2);
    assert_eq!(
        store.list_audit(&q(None, None, 100)).await.unwrap().len(),
        2
    );
}

pub async fn pool_figures_are_reported(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    assert!(store.pool_stats().size >= 1);
}

/// Many grants at once (the stores write them in batches), a few of them for a client that
/// does not exist (they fail at their first insert) and a few reusing an existing access-token
/// id (they fail after their family was written, which makes SQLite's writer rerun the batch
/// with a savepoint per job): every valid grant commits and is found, each invalid one fails
/// alone and leaves nothing behind, not even its family.
pub async fn concurrent_grants_commit_together_and_fail_alone(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let taken = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &taken).await;
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let store = store.clone();
            let owner = if i % 40 == 7 {
                unique("missing-client")
            } else {
                c.id.clone()
            };
            let mut g = grant_at(&owner, T0, HOUR, DAY);
            let duplicate = i % 40 == 21;
            if duplicate {
                g.access.id = taken.access.id.clone();
            }
            tokio::spawn(async move {
                let outcome = store.issue(&g.family, &g.access, &g.refresh, &ev()).await;
                (owner, duplicate, g, outcome)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (owner, duplicate, g, outcome) = task.await.unwrap();
        let found = store.find_refresh(&g.refresh.key()).await.unwrap();
        if owner == c.id && !duplicate {
            outcome.expect("a valid grant commits");
            let access = store
                .find_access(AccessKey::Opaque(&g.access.key()))
                .await
                .unwrap();
            assert!(found.is_some() && access.is_some());
            ok += 1;
        } else {
            assert!(outcome.is_err(), "an invalid grant fails");
            assert!(found.is_none(), "and leaves nothing");
            failed += 1;
        }
    }
    assert_eq!((ok, failed), (114, 6));
    // No family of a failed grant was left behind: the client has the valid ones and `taken`.
    let families = store
        .revoke_client_tokens(&c.id, T0 + 1, &ev())
        .await
        .unwrap();
    assert_eq!(families, 115);
}

/// Many lookups at once (PostgreSQL reads them in batches): each gets the answer for its own
/// id and hash, including lookups of one id with the right and with a wrong hash side by side,
/// for access tokens (by hash and by id) and refresh tokens.
pub async fn token_lookups_made_together_each_get_their_own_answer(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let mut grants = Vec::new();
    for _ in 0..20 {
        let g = grant_at(&c.id, T0, HOUR, DAY);
        issue(store.as_ref(), &g).await;
        grants.push(g);
    }
    let revoked = grants[7].access.id.clone();
    store.revoke_access(&revoked, T0 + 1, &ev()).await.unwrap();
    let revoked_family = grants[11].family.id.clone();
    store
        .revoke_family(&revoked_family, T0 + 1, &ev())
        .await
        .unwrap();

    /// A lookup, and what it must find: the access token's id, or the refresh token's family,
    /// with whether it reads as revoked.
    enum Lookup {
        Access(TokenRef),
        AccessId(String),
        Refresh(TokenRef),
    }
    let mut lookups = Vec::new();
    for round in 0..5 {
        for g in &grants {
            let forged = |key: TokenRef| TokenRef {
                id: key.id,
                hash: TokenHash::of(&format!("forged {round}")),
            };
            let family_revoked = g.family.id == revoked_family;
            let access = Some((
                g.access.id.clone(),
                g.access.id == revoked || family_revoked,
            ));
            let refresh = Some((g.family.id.clone(), family_revoked));
            lookups.extend([
                (Lookup::Access(g.access.key()), access.clone()),
                (Lookup::Access(forged(g.access.key())), None),
                (Lookup::AccessId(g.access.id.clone()), access),
                (Lookup::AccessId(unique("at")), None),
                (Lookup::Refresh(g.refresh.key()), refresh),
                (Lookup::Refresh(forged(g.refresh.key())), None),
            ]);
        }
    }
    let tasks: Vec<_> = lookups
        .into_iter()
        .map(|(lookup, expected)| {
            let store = store.clone();
            tokio::spawn(async move {
                let found = match &lookup {
                    Lookup::Access(key) => store
                        .find_access(AccessKey::Opaque(key))
                        .await
                        .map(|a| a.map(|a| (a.id, a.revoked))),
                    Lookup::AccessId(id) => store
                        .find_access(AccessKey::Id(id))
                        .await
                        .map(|a| a.map(|a| (a.id, a.revoked))),
                    Lookup::Refresh(key) => store
                        .find_refresh(key)
                        .await
                        .map(|r| r.map(|r| (r.family_id, r.revoked))),
                };
                (found.expect("lookup"), expected)
            })
        })
        .collect();
    assert_eq!(tasks.len(), 600);
    for task in tasks {
        let (found, expected) = task.await.unwrap();
        assert_eq!(found, expected);
    }
}

/// Rotations waiting at the same moment (PostgreSQL writes them in batches): each gets the
/// outcome it would get alone, and only the rotations that won write anything.
pub async fn rotations_made_together_each_get_their_own_outcome(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let mut grants = Vec::new();
    for _ in 0..40 {
        let g = grant_at(&c.id, T0, HOUR, DAY);
        issue(store.as_ref(), &g).await;
        grants.push(g);
    }
    let revoked = [grants[5].family.id.clone(), grants[17].family.id.clone()];
    for family in &revoked {
        store.revoke_family(family, T0 + 1, &ev()).await.unwrap();
    }

    let now = T0 + 60;
    let mut tasks = Vec::new();
    for (i, g) in grants.iter().enumerate() {
        // Every family: its token, and a forged token with the same id. Some: the same token
        // twice (no grace window: one of the two wins; within one: both), and an id that does
        // not exist.
        let (copies, cutoff) = match i % 4 {
            0 => (2, UnixTime::MAX),
            1 => (2, now),
            _ => (1, UnixTime::MAX),
        };
        let forged = TokenRef {
            id: g.refresh.key().id,
            hash: TokenHash::of(&unique("forged")),
        };
        let unknown = TokenRef {
            id: uuid::Uuid::now_v7().to_string(),
            hash: g.refresh.key().hash,
        };
        let mut presented = vec![(g.refresh.key(), cutoff, true); copies];
        presented.push((forged, cutoff, false));
        if i % 3 == 0 {
            presented.push((unknown, cutoff, false));
        }
        for (old, cutoff, real) in presented {
            let store = store.clone();
            let a = access_token(&g.family.id, &c.id, now, HOUR);
            let r = refresh_token(&g.family.id, &c.id, now, DAY);
            let audit = AuditEvent::new(
                AuditKind::TokenRefreshed,
                now,
                &Actor::cli(),
                Some(&c.id),
                serde_json::json!({}),
            );
            tasks.push(tokio::spawn(async move {
                let outcome = store
                    .rotate_refresh(&old, cutoff, &a, &r, &audit)
                    .await
                    .expect("a rotation that cannot win is an outcome, not an error");
                (i, real, outcome, a, r, audit.id)
            }));
        }
    }
    assert!(tasks.len() > 100);
    let mut won = vec![0; grants.len()];
    let mut written_events = BTreeSet::new();
    for task in tasks {
        let (i, real, outcome, a, r, event) = task.await.unwrap();
        let successor = store.find_refresh(&r.key()).await.unwrap();
        let access = store
            .find_access(AccessKey::Opaque(&a.key()))
            .await
            .unwrap();
        match outcome {
            RotateOutcome::Rotated => {
                assert!(real, "family {i}: a forged or unknown token rotated");
                won[i] += 1;
                written_events.insert(event);
                let successor = successor.expect("a rotation's refresh token is written");
                assert!(!successor.revoked && successor.consumed_at.is_none());
                assert!(!access.expect("its access token is written").revoked);
            }
            RotateOutcome::Lost => {
                assert!(
                    successor.is_none() && access.is_none(),
                    "family {i}: a lost rotation wrote its successors"
                );
            }
        }
    }
    for (i, g) in grants.iter().enumerate() {
        let family_revoked = revoked.contains(&g.family.id);
        let expected = match (family_revoked, i % 4) {
            (true, _) => 0,
            (false, 1) => 2,
            (false, _) => 1,
        };
        assert_eq!(won[i], expected, "family {i}");
        let old = store.find_refresh(&g.refresh.key()).await.unwrap().unwrap();
        let consumed = if family_revoked { None } else { Some(now) };
        assert_eq!(old.consumed_at, consumed, "family {i}");
    }
    let q = AuditQuery {
        client_id: Some(c.id.clone()),
        event: None,
        since: None,
        before_id: None,
        limit: 1000,
    };
    let events: BTreeSet<String> = store
        .list_audit(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        events, written_events,
        "an audit event for each rotation written, no other"
    );
}

/// Family revocations made at the same moment (PostgreSQL writes them in batches): every
/// family named is revoked, whether named once or twice, an unknown family changes nothing, and
/// every call's audit event is recorded.
pub async fn family_revocations_made_together_are_each_written(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let mut grants = Vec::new();
    for _ in 0..30 {
        let g = grant_at(&c.id, T0, HOUR, DAY);
        issue(store.as_ref(), &g).await;
        grants.push(g);
    }
    let bystander = grant_at(&c.id, T0, HOUR, DAY);
    issue(store.as_ref(), &bystander).await;
    let mut families: Vec<String> = grants.iter().map(|g| g.family.id.clone()).collect();
    families.extend(grants.iter().step_by(3).map(|g| g.family.id.clone()));
    families.extend((0..10).map(|_| unique("fam")));
    let tasks: Vec<_> = families
        .iter()
        .map(|family| {
            let (store, family) = (store.clone(), family.clone());
            let audit = AuditEvent::new(
                AuditKind::FamilyRevoked,
                T0 + 1,
                &Actor::cli(),
                Some(&c.id),
                serde_json::json!({}),
            );
            let id = audit.id.clone();
            tokio::spawn(async move {
                store.revoke_family(&family, T0 + 1, &audit).await?;
                Ok::<_, StoreError>(id)
            })
        })
        .collect();
    let mut recorded = BTreeSet::new();
    for task in tasks {
        recorded.insert(task.await.unwrap().expect("a revocation commits"));
    }
    for g in &grants {
        assert!(refresh_revoked(store.as_ref(), &g.refresh.key()).await);
        assert!(access_revoked(store.as_ref(), &g.access.key()).await);
    }
    assert!(!refresh_revoked(store.as_ref(), &bystander.refresh.key()).await);
    assert!(!access_revoked(store.as_ref(), &bystander.access.key()).await);
    let q = AuditQuery {
        client_id: Some(c.id.clone()),
        event: None,
        since: None,
        before_id: None,
        limit: 1000,
    };
    let events: BTreeSet<String> = store
        .list_audit(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(events.len(), families.len());
    assert_eq!(events, recorded, "each call's audit event, once");
}

/// Far in the future and long past by any database clock, so that no test depends on the
/// time it runs at.
const NEVER_EXPIRES: UnixTime = 4_000_000_000;
const LONG_EXPIRED: UnixTime = 1_000_000;

pub async fn a_jwt_id_is_used_once(store: Arc<dyn Store>) {
    let id = tessera::service::replay::jwt_id("private_key_jwt", &unique("client"), "jti-1");
    assert!(
        store.use_once(&id, NEVER_EXPIRES).await.unwrap(),
        "first use"
    );
    assert!(
        !store.use_once(&id, NEVER_EXPIRES).await.unwrap(),
        "a replay"
    );
    assert!(
        !store.use_once(&id, NEVER_EXPIRES).await.unwrap(),
        "still a replay"
    );
    let other = tessera::service::replay::jwt_id("dpop", "thumbprint", "jti-1");
    assert!(
        store.use_once(&other, NEVER_EXPIRES).await.unwrap(),
        "the same jti of another kind and issuer is another id"
    );
}

pub async fn an_expired_jwt_id_may_be_used_again(store: Arc<dyn Store>) {
    let id = tessera::service::replay::jwt_id("private_key_jwt", &unique("client"), "old");
    assert!(store.use_once(&id, LONG_EXPIRED).await.unwrap());
    assert!(
        store.use_once(&id, NEVER_EXPIRES).await.unwrap(),
        "an expired use is taken over"
    );
    assert!(
        !store.use_once(&id, NEVER_EXPIRES).await.unwrap(),
        "and is then in use again"
    );
}

pub async fn a_forgotten_jwt_id_may_be_used_again(store: Arc<dyn Store>) {
    let id = tessera::service::replay::jwt_id("private_key_jwt", &unique("client"), "failed");
    assert!(store.use_once(&id, NEVER_EXPIRES).await.unwrap());
    store.forget_use(&id).await.unwrap();
    assert!(store.use_once(&id, NEVER_EXPIRES).await.unwrap());
    // Forgetting an id never used is no error.
    let unknown = tessera::service::replay::jwt_id("dpop", "x", "never");
    store.forget_use(&unknown).await.unwrap();
}

pub async fn concurrent_first_uses_of_one_jwt_id_let_one_through(store: Arc<dyn Store>) {
    let id = tessera::service::replay::jwt_id("dpop", &unique("key"), "raced");
    let tries: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.use_once(&id, NEVER_EXPIRES).await })
        })
        .collect();
    let mut firsts = 0;
    for t in tries {
        if t.await.unwrap().unwrap() {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
}

pub async fn the_cleanup_deletes_expired_jwt_ids(store: Arc<dyn Store>) {
    let old = tessera::service::replay::jwt_id("private_key_jwt", &unique("c"), "old");
    let live = tessera::service::replay::jwt_id("private_key_jwt", &unique("c"), "live");
    assert!(store.use_once(&old, T0 - DAY).await.unwrap());
    assert!(store.use_once(&live, NEVER_EXPIRES).await.unwrap());
    let purged = store.purge_expired(T0, 100).await.unwrap();
    assert_eq!(purged.rows, 1, "only the expired id");
    assert!(!store.use_once(&live, NEVER_EXPIRES).await.unwrap(), "kept");
}

/// A DPoP binding is stored with the grant (the family is bound, the access token carries its
/// key's thumbprint) and with each rotation's access token, whether the writes are made one by
/// one or together (PostgreSQL batches them); unbound grants read as unbound.
pub async fn dpop_bindings_are_stored_with_grants_and_rotations(store: Arc<dyn Store>) {
    let c = new_client(store.as_ref()).await;
    let grants: Vec<Grant> = (0..16)
        .map(|i| {
            let mut g = grant_at(&c.id, T0, HOUR, DAY);
            if i % 2 == 0 {
                g.family.dpop_bound = true;
                g.access.dpop_jkt = Some(format!("jkt-{i}"));
            }
            g
        })
        .collect();
    let writes: Vec<_> = grants
        .iter()
        .map(|g| {
            let (store, g) = (store.clone(), g.clone());
            tokio::spawn(async move { store.issue(&g.family, &g.access, &g.refresh, &ev()).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let rotations: Vec<_> = grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let store = store.clone();
            let old = g.refresh.key();
            let mut a = access_token(&g.family.id, &c.id, T0 + 1, HOUR);
            a.dpop_jkt = (i % 4 != 3).then(|| format!("next-{i}"));
            let r = refresh_token(&g.family.id, &c.id, T0 + 1, DAY);
            tokio::spawn(async move {
                let outcome = store
                    .rotate_refresh(&old, UnixTime::MAX, &a, &r, &ev())
                    .await;
                (a, outcome)
            })
        })
        .collect();
    for (i, (g, task)) in grants.iter().zip(rotations).enumerate() {
        let family = store.find_refresh(&g.refresh.key()).await.unwrap().unwrap();
        assert_eq!(family.dpop_bound, i % 2 == 0, "grant {i}");
        let first = store
            .find_access(AccessKey::Opaque(&g.access.key()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.dpop_jkt, g.access.dpop_jkt, "grant {i}");
        let (a, outcome) = task.await.unwrap();
        assert_eq!(outcome.unwrap(), RotateOutcome::Rotated);
        let next = store
            .find_access(AccessKey::Id(&a.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.dpop_jkt, a.dpop_jkt, "rotation {i}");
    }
}
