//! The master key, the root key, and the keys derived from it.
//!
//! Two levels, so that the master key can be rotated without touching anything else:
//!
//! - the **master key** (operator-supplied, 256 bits) only wraps the root key, with
//!   AES-256-GCM under a key derived from it;
//! - the **root key** (random, generated once per deployment) is stored in the database only
//!   in that wrapped form. Everything else is derived from it with HMAC-SHA-256 under fixed
//!   labels (a one-step KDF, sound because the root key is uniformly random):
//!   - the **secret pepper**, keying the HMAC under which client secrets are stored;
//!   - the **token MAC key**, keying the checksum inside every opaque token, so that forged or
//!     mangled tokens are rejected before any database read;
//!   - the **key-encryption key**, an AES-256-GCM key that seals signing keys at rest;
//!   - the **DPoP nonce key**, keying the HMAC that makes DPoP nonces (RFC 9449 §8), so that
//!     every instance issues and accepts the same nonces without sharing state.
//!
//! Starting with the wrong master key fails loudly: the wrapped root key does not open.
//! Rotating the master key re-wraps the root key; secrets, tokens and signing keys stay valid.
//!
//! Master key format: 32 random bytes, written as base64 (standard or URL-safe alphabet,
//! padding optional). `openssl rand -base64 32` or `tessera gen-master-key` make one.

use aws_lc_rs::{aead, digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Length of the master and root keys in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const ROOT_KEY_AAD: &[u8] = b"tessera/v1/root-key";

/// Why a master key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The text is not base64 of exactly 32 bytes.
    #[error(
        "the master key must be base64 of exactly 32 random bytes (e.g. `openssl rand -base64 32`)"
    )]
    Malformed,
}

/// Sealing or opening a value failed.
#[derive(Debug, thiserror::Error)]
#[error("sealed value could not be opened (wrong key or corrupted data)")]
pub struct SealError;

fn random_key() -> anyhow::Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    random_fill(&mut key)?;
    Ok(key)
}

fn sub_key(key: &[u8], label: &str) -> [u8; 32] {
    mac32(&hmac::Key::new(hmac::HMAC_SHA256, key), label.as_bytes())
}

fn aead_key(bytes: &[u8; 32]) -> Result<aead::LessSafeKey, SealError> {
    aead::UnboundKey::new(&aead::AES_256_GCM, bytes)
        .map(aead::LessSafeKey::new)
        .map_err(|_| SealError)
}

/// AES-256-GCM with a random nonce; returns `nonce || ciphertext || tag`.
fn seal_with(key: &aead::LessSafeKey, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    random_fill(&mut nonce).map_err(|_| SealError)?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| SealError)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

fn open_with(key: &aead::LessSafeKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN).ok_or(SealError)?;
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError)?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
        .map_err(|_| SealError)?;
    Ok(plain.to_vec())
}

/// The operator's 256-bit master key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    ///
    /// # Errors
    /// Fails only if the system's random source fails.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self(random_key()?))
    }

    /// Parses the documented text form (base64 of 32 bytes; whitespace around it is ignored).
    ///
    /// # Errors
    /// [`MasterKeyError::Malformed`] for anything else.
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let trimmed = text.trim().trim_end_matches('=');
        let bytes = STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
            .map_err(|_| MasterKeyError::Malformed)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| MasterKeyError::Malformed)?;
        Ok(Self(key))
    }

    /// The text form accepted by [`MasterKey::parse`] (standard base64 with padding).
    #[must_use]
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn wrapping_key(&self) -> Result<aead::LessSafeKey, SealError> {
        aead_key(&sub_key(&self.0, "tessera/v1/wrap-root-key"))
    }

    /// Wraps the root key for storage.
    ///
    /// # Errors
    /// Fails only if the random source or the cipher fails.
    pub fn wrap(&self, root: &RootKey) -> Result<Vec<u8>, SealError> {
        seal_with(&self.wrapping_key()?, &root.0, ROOT_KEY_AAD)
    }

    /// Unwraps a stored root key.
    ///
    /// # Errors
    /// [`SealError`] if it was wrapped under another master key, or altered.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<RootKey, SealError> {
        let bytes = open_with(&self.wrapping_key()?, wrapped, ROOT_KEY_AAD)?;
        Ok(RootKey(bytes.try_into().map_err(|_| SealError)?))
    }
}

/// The deployment's root key; see the module docs. Its `Debug` never shows the key.
pub struct RootKey([u8; KEY_LEN]);

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    /// A fresh random root key.
    ///
    /// # Errors
    /// Fails only if the system's random source fails.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self(random_key()?))
    }

    /// Derives the working keys.
    ///
    /// # Errors
    /// Only if the cipher rejects a 32-byte key, which AES-256 never does.
    pub fn derive(&self) -> Result<DerivedKeys, SealError> {
        Ok(DerivedKeys {
            secret_pepper: hmac::Key::new(
                hmac::HMAC_SHA256,
                &sub_key(&self.0, "tessera/v1/client-secret"),
            ),
            token_mac: hmac::Key::new(hmac::HMAC_SHA256, &sub_key(&self.0, "tessera/v1/token-mac")),
            kek: aead_key(&sub_key(&self.0, "tessera/v1/key-encryption"))?,
            dpop_nonce: hmac::Key::new(
                hmac::HMAC_SHA256,
                &sub_key(&self.0, "tessera/v1/dpop-nonce"),
            ),
        })
    }
}

/// Keys derived from the root key; see the module docs.
pub struct DerivedKeys {
    secret_pepper: hmac::Key,
    token_mac: hmac::Key,
    kek: aead::LessSafeKey,
    dpop_nonce: hmac::Key,
}

impl std::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKeys(<redacted>)")
    }
}

impl DerivedKeys {
    /// HMAC-SHA-256 of a client secret under the pepper: what the store keeps.
    #[must_use]
    pub fn hash_secret(&self, secret: &str) -> [u8; 32] {
        mac32(&self.secret_pepper, secret.as_bytes())
    }

    /// HMAC-SHA-256 under the token MAC key (the checksum inside opaque tokens).
    #[must_use]
    pub fn token_mac(&self, data: &[u8]) -> [u8; 32] {
        mac32(&self.token_mac, data)
    }

    /// HMAC-SHA-256 under the DPoP nonce key (see [`crate::domain::dpop`]).
    #[must_use]
    pub fn dpop_nonce_mac(&self, data: &[u8]) -> [u8; 32] {
        mac32(&self.dpop_nonce, data)
    }

    /// Encrypts `plaintext` with the key-encryption key; `aad` binds it to its context (e.g.
    /// a key id). The result is `nonce || ciphertext || tag`.
    ///
    /// # Errors
    /// Fails only if the random source or the cipher fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_with(&self.kek, plaintext, aad)
    }

    /// Reverses [`DerivedKeys::seal`].
    ///
    /// # Errors
    /// [`SealError`] if the data was sealed under another key or context, or was altered.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        open_with(&self.kek, sealed, aad)
    }
}

fn mac32(key: &hmac::Key, data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Fills `dest` from the operating system's CSPRNG.
///
/// # Errors
/// Fails only if the random source fails.
pub fn random_fill(dest: &mut [u8]) -> anyhow::Result<()> {
    rand::fill(dest).map_err(|_| anyhow::anyhow!("the system random source failed"))
}

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two byte strings.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_round_trips_through_its_text_form() -> anyhow::Result<()> {
        let key = MasterKey::generate()?;
        let again = MasterKey::parse(&key.encode())?;
        let root = RootKey::generate()?;
        assert!(again.unwrap(&key.wrap(&root)?).is_ok());
        Ok(())
    }

    #[test]
    fn master_key_rejects_wrong_lengths_and_garbage() {
        assert!(MasterKey::parse("").is_err());
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(MasterKey::parse("not base64 at all!").is_err());
    }

    #[test]
    fn keys_do_not_show_in_debug_output() -> anyhow::Result<()> {
        let key = MasterKey::generate()?;
        assert!(!format!("{key:?}").contains(&key.encode()));
        assert_eq!(format!("{:?}", RootKey::generate()?), "RootKey(<redacted>)");
        Ok(())
    }

    #[test]
    fn a_root_key_unwraps_only_under_its_master_key_and_survives_rewrapping() -> anyhow::Result<()>
    {
        let (old, new) = (MasterKey::generate()?, MasterKey::generate()?);
        let root = RootKey::generate()?;
        let wrapped = old.wrap(&root)?;
        assert!(new.unwrap(&wrapped).is_err());
        let rewrapped = new.wrap(&old.unwrap(&wrapped)?)?;
        let a = root.derive()?;
        let b = new.unwrap(&rewrapped)?.derive()?;
        assert_eq!(a.hash_secret("s"), b.hash_secret("s"));
        Ok(())
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        let other = RootKey::generate()?.derive()?;
        let sealed = keys.seal(b"private key", b"kid-1")?;
        assert_eq!(keys.open(&sealed, b"kid-1")?, b"private key");
        assert!(keys.open(&sealed, b"kid-2").is_err());
        assert!(other.open(&sealed, b"kid-1").is_err());
        Ok(())
    }
}
