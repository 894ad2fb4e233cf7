//! Opaque tokens: Tessera's own bearer format, and client secrets.
//!
//! An opaque token is `<prefix><body>` where the body is unpadded base64url of 64 bytes: the
//! token's id (a UUID v7, 16 bytes), 32 random bytes (256 bits of entropy), and the first 16
//! bytes of HMAC-SHA-256(token MAC key, prefix ‖ id ‖ random). Because of that checksum a
//! forged, truncated or mangled token is recognised as such from the string alone, without
//! touching the database. The prefixes (`tes_at_` for access tokens, `tes_rt_` for refresh
//! tokens, `tes_sk_` for client secrets) let secret scanners and people reading logs tell them
//! apart.
//!
//! Only a [`TokenHash`] (SHA-256 of the whole token string) is ever stored, next to the id.
//! SHA-256 without a key is sufficient here because the token itself carries 256 bits of
//! entropy: nothing can be guessed from the hash. The id is not secret (it is the `jti` that
//! introspection reports); it is there so that the store finds a token by a time-ordered key.
//! Keyed by the hash, every new token would land on a random page of two B-trees, and the
//! write-ahead log would grow by about four times as much per grant
//! (docs/benchmarks-history.md).
//! The store looks a token up by its id and then requires the stored hash to match, so knowing
//! an id (or even the MAC key) is not enough to use a token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::crypto::{DerivedKeys, constant_time_eq, hex, random_fill, sha256};

const ID_LEN: usize = 16;
const RANDOM_LEN: usize = 32;
const MAC_LEN: usize = 16;
const BODY_LEN: usize = 86; // base64url of 64 bytes: id ‖ random ‖ MAC

/// The two kinds of opaque token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueKind {
    /// An access token (`tes_at_…`).
    Access,
    /// A refresh token (`tes_rt_…`).
    Refresh,
}

impl OpaqueKind {
    /// The token's recognisable prefix.
    #[must_use]
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Access => "tes_at_",
            Self::Refresh => "tes_rt_",
        }
    }

    /// The kind a token claims by its prefix, if any.
    #[must_use]
    pub fn of(token: &str) -> Option<Self> {
        [Self::Access, Self::Refresh]
            .into_iter()
            .find(|k| token.starts_with(k.prefix()))
    }
}

/// SHA-256 of a token string: the only form in which tokens are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a token string.
    #[must_use]
    pub fn of(token: &str) -> Self {
        Self(sha256(token.as_bytes()))
    }

    /// A short, non-secret prefix of the hash for logs.
    #[must_use]
    pub fn log_id(&self) -> String {
        hex(self.0.get(..6).unwrap_or_default())
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({}…)", self.log_id())
    }
}

/// How the store finds an opaque token: by the id inside it, checking the stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    /// The token's id (hyphenated UUID).
    pub id: String,
    /// SHA-256 of the whole token string.
    pub hash: TokenHash,
}

/// A freshly minted opaque token: the string to hand out once, and what to store.
pub struct MintedToken {
    /// The bearer string. Never logged, never stored.
    pub token: String,
    /// What the store keeps.
    pub hash: TokenHash,
}

/// Mints an opaque token of the given kind with the given id (a UUID v7, so that the store's
/// keys are time-ordered).
///
/// # Errors
/// Fails only if the system random source fails.
pub fn mint(kind: OpaqueKind, id: uuid::Uuid, keys: &DerivedKeys) -> anyhow::Result<MintedToken> {
    let mut signed = [0u8; ID_LEN + RANDOM_LEN];
    let (id_out, random) = signed.split_at_mut(ID_LEN);
    id_out.copy_from_slice(id.as_bytes());
    random_fill(random)?;
    Ok(seal(kind, &signed, keys))
}

/// `<prefix>` and base64url of `signed ‖ MAC(prefix ‖ signed)`, with its hash.
fn seal(kind: OpaqueKind, signed: &[u8], keys: &DerivedKeys) -> MintedToken {
    let mac = mac_for(kind, signed, keys);
    let mut raw = Vec::with_capacity(signed.len() + MAC_LEN);
    raw.extend_from_slice(signed);
    raw.extend_from_slice(mac.get(..MAC_LEN).unwrap_or_default());
    let token = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(raw));
    let hash = TokenHash::of(&token);
    MintedToken { token, hash }
}

fn mac_for(kind: OpaqueKind, signed: &[u8], keys: &DerivedKeys) -> [u8; 32] {
    let mut data = Vec::with_capacity(kind.prefix().len() + signed.len());
    data.extend_from_slice(kind.prefix().as_bytes());
    data.extend_from_slice(signed);
    keys.token_mac(&data)
}

/// Checks a presented opaque token's prefix and checksum. Returns how to find it if it is well
/// formed and was minted under this master key; `None` otherwise. No database access.
#[must_use]
pub fn verify(kind: OpaqueKind, token: &str, keys: &DerivedKeys) -> Option<TokenRef> {
    let body = token.strip_prefix(kind.prefix())?;
    if body.len() != BODY_LEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
    let (signed, mac) = raw.split_at_checked(raw.len().checked_sub(MAC_LEN)?)?;
    let expected = mac_for(kind, signed, keys);
    if !constant_time_eq(mac, expected.get(..MAC_LEN)?) {
        return None;
    }
    let bytes: [u8; ID_LEN] = signed.get(..ID_LEN)?.try_into().ok()?;
    Some(TokenRef {
        id: uuid::Uuid::from_bytes(bytes).to_string(),
        hash: TokenHash::of(token),
    })
}

/// The prefix of client secrets.
pub const SECRET_PREFIX: &str = "tes_sk_";

/// A new client secret (256 bits, prefixed). Shown once; only its keyed hash is stored.
///
/// # Errors
/// Fails only if the system random source fails.
pub fn new_secret() -> anyhow::Result<String> {
    let mut random = [0u8; 32];
    random_fill(&mut random)?;
    Ok(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
}

/// A new public client id: 16 characters of lower-case RFC 4648 base32 (80 random bits).
///
/// # Errors
/// Fails only if the system random source fails.
pub fn new_client_id() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut random = [0u8; 16];
    random_fill(&mut random)?;
    Ok(random
        .iter()
        .filter_map(|b| ALPHABET.get(usize::from(b & 31)).copied().map(char::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::RootKey;

    #[test]
    fn minted_tokens_verify_and_have_their_prefix() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        for kind in [OpaqueKind::Access, OpaqueKind::Refresh] {
            let id = uuid::Uuid::now_v7();
            let t = mint(kind, id, &keys)?;
            assert!(t.token.starts_with(kind.prefix()));
            assert_eq!(t.token.len(), kind.prefix().len() + BODY_LEN);
            assert_eq!(OpaqueKind::of(&t.token), Some(kind));
            let found = verify(kind, &t.token, &keys);
            assert_eq!(
                found,
                Some(TokenRef {
                    id: id.to_string(),
                    hash: t.hash
                })
            );
        }
        Ok(())
    }

    #[test]
    fn mangled_or_foreign_tokens_fail_without_a_lookup() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        let other = RootKey::generate()?.derive()?;
        let t = mint(OpaqueKind::Access, uuid::Uuid::now_v7(), &keys)?;
        assert_eq!(verify(OpaqueKind::Refresh, &t.token, &keys), None);
        assert_eq!(verify(OpaqueKind::Access, &t.token, &other), None);
        let mut chars: Vec<char> = t.token.chars().collect();
        if let Some(c) = chars.get_mut(10) {
            *c = if *c == 'A' { 'B' } else { 'A' };
        }
        let mangled: String = chars.into_iter().collect();
        assert_eq!(verify(OpaqueKind::Access, &mangled, &keys), None);
        assert_eq!(
            verify(OpaqueKind::Access, &t.token[..t.token.len() - 1], &keys),
            None
        );
        assert_eq!(verify(OpaqueKind::Access, "tes_at_", &keys), None);
        // An id swapped into a valid token breaks its MAC.
        let other_id = mint(OpaqueKind::Access, uuid::Uuid::now_v7(), &keys)?;
        let spliced = format!("{}{}", &other_id.token[..29], &t.token[29..]);
        assert_eq!(verify(OpaqueKind::Access, &spliced, &keys), None);
        Ok(())
    }

    #[test]
    fn client_ids_and_secrets_have_the_documented_shape() -> anyhow::Result<()> {
        let id = new_client_id()?;
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        let secret = new_secret()?;
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 43);
        Ok(())
    }
}
