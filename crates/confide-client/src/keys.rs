//! The device's end-to-end keys in the profile: its MLS state and the identities it has
//! pinned, sealed at rest.
//!
//! Each (server, user) pair has its own folder under `<profile>/keys/`. The state is
//! sealed with ChaCha20-Poly1305 under a key that comes from `CONFIDE_PROFILE_PASSPHRASE`
//! (stretched with Argon2id and a per-folder salt) when that is set, and otherwise from
//! a random key file beside it, readable only by the owner.

use crate::profile::{Profile, ProfileError, create_private_dir, write_atomic};
use crate::secure::store::{LocalStore, StoreError};
use confide_crypto::at_rest::{self, StateKey};
use confide_crypto::{CryptoError, Device, TrustStore};
use rand::RngCore;
use std::path::{Path, PathBuf};

/// The environment variable that holds the passphrase protecting the keys, if any.
pub const PASSPHRASE_ENV: &str = "CONFIDE_PROFILE_PASSPHRASE";

const DEVICE_FILE: &str = "device.sealed";
const TRUST_FILE: &str = "trust.sealed";
const KEY_FILE: &str = "state.key";
const SALT_FILE: &str = "state.salt";
const HISTORY_FILE: &str = "history.db";

/// Why the keys could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// A file could not be read or written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The sealed state could not be opened (wrong passphrase, or altered).
    #[error("cannot open the end-to-end keys in {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CryptoError,
    },
    /// Sealing failed.
    #[error("cannot seal the end-to-end keys: {0}")]
    Seal(CryptoError),
}

/// The device's MLS state and pinned identities.
#[derive(Debug)]
pub struct E2eState {
    /// Keys and groups.
    pub device: Device,
    /// Identities of other users.
    pub trust: TrustStore,
}

/// Where one (server, user) pair keeps its keys.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    key: StateKey,
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ProfileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProfileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A folder name for a (server, user) pair: only characters safe in file names.
fn scope_name(server: &str, user: &str) -> String {
    format!("{user}@{server}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl KeyStore {
    /// Opens (creating if needed) the key folder of `user` on `server`.
    pub fn open(profile: &Profile, server: &str, user: &str) -> Result<KeyStore, KeyStoreError> {
        let dir = profile.dir().join("keys").join(scope_name(server, user));
        create_private_dir(&dir)?;
        let key = match std::env::var(PASSPHRASE_ENV) {
            Ok(passphrase) if !passphrase.is_empty() => {
                let salt_path = dir.join(SALT_FILE);
                let salt = match read_optional(&salt_path)? {
                    Some(bytes) if bytes.len() == 16 => {
                        let mut salt = [0u8; 16];
                        salt.copy_from_slice(&bytes);
                        salt
                    }
                    _ => {
                        let mut salt = [0u8; 16];
                        rand::rng().fill_bytes(&mut salt);
                        write_atomic(&salt_path, &salt, 0o600)?;
                        salt
                    }
                };
                StateKey::from_passphrase(&passphrase, &salt).map_err(|e| KeyStoreError::Open {
                    path: salt_path,
                    source: CryptoError::AtRest(e),
                })?
            }
            _ => {
                let key_path = dir.join(KEY_FILE);
                match read_optional(&key_path)? {
                    Some(bytes) if bytes.len() == 32 => {
                        let mut key = [0u8; 32];
                        key.copy_from_slice(&bytes);
                        let state_key = StateKey::from_bytes(key);
                        zeroize::Zeroize::zeroize(&mut key);
                        state_key
                    }
                    _ => {
                        let mut key = [0u8; 32];
                        rand::rng().fill_bytes(&mut key);
                        write_atomic(&key_path, &key, 0o600)?;
                        let state_key = StateKey::from_bytes(key);
                        zeroize::Zeroize::zeroize(&mut key);
                        state_key
                    }
                }
            }
        };
        Ok(KeyStore { dir, key })
    }

    /// Opens the device's decrypted history, sealed under the same key.
    ///
    /// # Errors
    /// If SQLite cannot open it.
    pub fn open_history(&self) -> Result<LocalStore, StoreError> {
        LocalStore::open(&self.dir.join(HISTORY_FILE), self.key.clone())
    }

    /// Loads the device's state, or creates a new device (identity key, device key and
    /// a random device id) if there is none yet.
    pub fn load_or_create(&self, user: &str) -> Result<(E2eState, bool), KeyStoreError> {
        let device_path = self.dir.join(DEVICE_FILE);
        let trust_path = self.dir.join(TRUST_FILE);
        let Some(sealed) = read_optional(&device_path)? else {
            let device =
                Device::create(user, rand::rng().next_u64()).map_err(KeyStoreError::Seal)?;
            let state = E2eState {
                device,
                trust: TrustStore::default(),
            };
            self.save(&state)?;
            return Ok((state, true));
        };
        let device = Device::open(&self.key, &sealed).map_err(|source| KeyStoreError::Open {
            path: device_path,
            source,
        })?;
        let trust = match read_optional(&trust_path)? {
            None => TrustStore::default(),
            Some(sealed) => {
                let open = |e| KeyStoreError::Open {
                    path: trust_path.clone(),
                    source: e,
                };
                let plain =
                    at_rest::open(&self.key, &sealed).map_err(|e| open(CryptoError::AtRest(e)))?;
                serde_json::from_slice(&plain)
                    .map_err(|_| open(CryptoError::Malformed("trust store")))?
            }
        };
        Ok((E2eState { device, trust }, false))
    }

    /// Seals and writes the state (each file replaced atomically).
    pub fn save(&self, state: &E2eState) -> Result<(), KeyStoreError> {
        let sealed = state.device.seal(&self.key).map_err(KeyStoreError::Seal)?;
        write_atomic(&self.dir.join(DEVICE_FILE), &sealed, 0o600)?;
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&state.trust)
                .map_err(|_| KeyStoreError::Seal(CryptoError::Malformed("trust store")))?,
        );
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        write_atomic(
            &self.dir.join(TRUST_FILE),
            &at_rest::seal(&self.key, &plain, nonce),
            0o600,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_reload_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::open(dir.path()).unwrap();
        let store = KeyStore::open(&profile, "127.0.0.1:5555", "alice").unwrap();
        let (state, created) = store.load_or_create("alice").unwrap();
        assert!(created);
        let identity = state.device.identity_key().to_vec();
        let store = KeyStore::open(&profile, "127.0.0.1:5555", "alice").unwrap();
        let (again, created) = store.load_or_create("alice").unwrap();
        assert!(!created);
        assert_eq!(again.device.identity_key(), identity.as_slice());
        assert_eq!(again.device.id(), state.device.id());
        // Nothing readable in the sealed file.
        let folder = dir.path().join("keys").join("alice@127.0.0.1_5555");
        let sealed = std::fs::read(folder.join(DEVICE_FILE)).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"alice"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(folder.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
