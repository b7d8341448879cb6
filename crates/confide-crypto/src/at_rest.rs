//! Sealing a device's state for storage: ChaCha20-Poly1305 under a 32-byte key that
//! comes either from a key file kept beside the state (protected by file permissions)
//! or from a passphrase stretched with Argon2id.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The first bytes of sealed state, also bound into the authentication tag.
const MAGIC: &[u8; 6] = b"CFDS\x00\x01";

/// Argon2id cost for passphrase-derived state keys: 64 MiB, 3 passes, 1 lane.
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_PASSES: u32 = 3;

/// Why sealed state could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtRestError {
    /// Not sealed state, or a version this build does not know.
    #[error("not a sealed Confide state file")]
    NotSealed,
    /// The key is wrong or the file was altered.
    #[error("wrong key or passphrase, or the state file was altered")]
    WrongKeyOrTampered,
    /// A passphrase that cannot be used.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
}

/// The key that seals a device's state.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StateKey([u8; 32]);

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl StateKey {
    /// A key from 32 random bytes (kept in a key file).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> StateKey {
        StateKey(bytes)
    }

    /// The key's bytes, to write to a key file.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key stretched from a passphrase with Argon2id and a per-profile salt.
    pub fn from_passphrase(passphrase: &str, salt: &[u8; 16]) -> Result<StateKey, AtRestError> {
        if passphrase.is_empty() {
            return Err(AtRestError::EmptyPassphrase);
        }
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32))
            .map_err(|_| AtRestError::EmptyPassphrase)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), salt, &mut key)
            .map_err(|_| AtRestError::EmptyPassphrase)?;
        Ok(StateKey(key))
    }
}

/// Seals `plaintext` under `key` with a fresh random `nonce`.
#[must_use]
pub fn seal(key: &StateKey, plaintext: &[u8], nonce: [u8; 12]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + plaintext.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    // Encryption with a valid key and nonce cannot fail for inputs below 256 GiB.
    if let Ok(ciphertext) = cipher.encrypt(
        Nonce::from_slice(&nonce),
        Payload {
            msg: plaintext,
            aad: MAGIC,
        },
    ) {
        out.extend_from_slice(&ciphertext);
    }
    out
}

/// Opens what [`seal`] made.
pub fn open(key: &StateKey, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AtRestError> {
    let rest = sealed.strip_prefix(MAGIC).ok_or(AtRestError::NotSealed)?;
    if rest.len() < 12 + 16 {
        return Err(AtRestError::NotSealed);
    }
    let (nonce, ciphertext) = rest.split_at(12);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: MAGIC,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| AtRestError::WrongKeyOrTampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let key = StateKey::from_bytes([7; 32]);
        let sealed = seal(&key, b"group state", [1; 12]);
        assert_eq!(open(&key, &sealed).unwrap().as_slice(), b"group state");
        assert!(!sealed.windows(11).any(|w| w == b"group state"));
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let key = StateKey::from_bytes([7; 32]);
        let sealed = seal(&key, b"group state", [1; 12]);
        let other = StateKey::from_bytes([8; 32]);
        assert_eq!(
            open(&other, &sealed).unwrap_err(),
            AtRestError::WrongKeyOrTampered
        );
        for i in MAGIC.len()..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                open(&key, &bad).unwrap_err(),
                AtRestError::WrongKeyOrTampered
            );
        }
        assert_eq!(open(&key, b"nonsense").unwrap_err(), AtRestError::NotSealed);
    }

    #[test]
    fn passphrase_keys_depend_on_salt() {
        let a = StateKey::from_passphrase("correct horse", &[1; 16]).unwrap();
        let b = StateKey::from_passphrase("correct horse", &[2; 16]).unwrap();
        let c = StateKey::from_passphrase("correct horse", &[1; 16]).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.as_bytes(), c.as_bytes());
        assert!(StateKey::from_passphrase("", &[1; 16]).is_err());
        assert_eq!(format!("{a:?}"), "StateKey(..)");
    }
}
