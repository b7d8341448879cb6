//! Shared-key rooms: Fernet tokens under one symmetric key that every member holds,
//! compatible with the original Python programs, which used
//! `cryptography.fernet.Fernet`.
//!
//! # Weaker than MLS
//!
//! Use this only to talk with the original programs; MLS rooms are better in every way.
//! With one long-lived key shared by everyone:
//!
//! - there is no forward secrecy: whoever obtains the key, now or later, reads every
//!   message ever sent under it;
//! - there is no post-compromise security and no removal: a member (or a leaked key file)
//!   stays able to read until everyone switches to a new key;
//! - senders are not authenticated: any key holder can write a token that claims to be
//!   from anyone;
//! - the token shows its creation time in clear and the message length to 16 bytes.
//!
//! # Format
//!
//! A key is 32 bytes; its text form (the key file) is their url-safe base64 with padding,
//! exactly what Python's `Fernet.generate_key()` returns. A token, per the Fernet spec, is
//! the url-safe base64 (with padding) of
//!
//! ```text
//! 0x80 | timestamp (u64 BE, Unix seconds) | IV (16) | AES-128-CBC(PKCS#7) | HMAC-SHA256 (32)
//! ```
//!
//! where AES uses the key's second half, and the HMAC, keyed by its first half, covers
//! everything before it.
//!
//! This is written from the spec rather than with the `fernet` crate, which neither takes
//! the IV from the caller nor decrypts without reading the clock; this module, like the
//! whole crate, does no I/O and reads neither clock nor OS randomness. Because of that,
//! [`SharedKey::decrypt`] cannot apply the check that Python makes on every token,
//! rejecting one stamped more than 60 seconds in its future: tokens for Python must carry
//! the real current time, and callers wanting a policy on timestamps use
//! [`SharedKey::decrypt_with_timestamp`].
//!
//! # Example
//!
//! ```
//! use confide_crypto::shared_key::SharedKey;
//!
//! # fn main() -> Result<(), confide_crypto::shared_key::SharedKeyError> {
//! // The caller supplies randomness and time; these are placeholders.
//! let key = SharedKey::generate([7; 32]);
//! let key_file = key.to_key_file(); // what Python's `Fernet(key)` accepts
//! let token = key.encrypt(b"hello", 1_767_225_600, [9; 16]);
//!
//! let same_key = SharedKey::from_key_file(&key_file)?;
//! assert_eq!(same_key.fingerprint(), key.fingerprint());
//! assert_eq!(same_key.decrypt(&token)?, b"hello");
//! # Ok(())
//! # }
//! ```

use std::fmt;

use aes::Aes128;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::generic_array::GenericArray;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Argon2id memory cost for [`SharedKey::from_passphrase`], in KiB (64 MiB).
pub const PASSPHRASE_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes over memory for [`SharedKey::from_passphrase`].
pub const PASSPHRASE_ITERATIONS: u32 = 3;
/// Argon2id lanes for [`SharedKey::from_passphrase`].
pub const PASSPHRASE_PARALLELISM: u32 = 1;

/// Domain separation for [`SharedKey::fingerprint`].
const FINGERPRINT_LABEL: &[u8] = b"confide shared-key fingerprint v1";
/// How many bytes of the fingerprint hash are shown (as twice as many hex digits).
const FINGERPRINT_BYTES: usize = 8;

/// The first byte of every Fernet token.
const TOKEN_VERSION: u8 = 0x80;
/// Version, timestamp and IV.
const HEADER_LEN: usize = 1 + 8 + 16;
/// The HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// The AES block size.
const BLOCK_LEN: usize = 16;
/// SHA-256's block size; HMAC pads shorter keys with zeros to this length.
const HMAC_BLOCK_LEN: usize = 64;

/// Url-safe base64 that accepts input with or without its `=` padding, as Python does.
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key of a shared-key room (a Fernet key). Zeroized on drop; `Debug` shows nothing
/// of it, and [`SharedKey::fingerprint`] is what people compare.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharedKey {
    /// The HMAC key (first 16 bytes) and the AES key (last 16).
    bytes: [u8; 32],
}

/// The salt of a passphrase-derived key. Not secret, but every member must use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Salt([u8; 16]);

/// Why a key could not be read or made, or a token could not be decrypted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedKeyError {
    /// The key text is not url-safe base64.
    #[error("the key is not url-safe base64")]
    KeyEncoding,
    /// The key text decodes to the wrong number of bytes.
    #[error("the key is {0} bytes long, not 32")]
    KeyLength(usize),
    /// An empty passphrase was given.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// Argon2 refused its inputs.
    #[error("key derivation failed")]
    KeyDerivation,
    /// The token is malformed, was altered, or is under another key. Deliberately one
    /// opaque error, as the spec asks.
    #[error("invalid token")]
    InvalidToken,
}

impl SharedKey {
    /// Makes a key from 32 bytes, which must come from a cryptographic RNG.
    pub fn generate(random: [u8; 32]) -> SharedKey {
        SharedKey { bytes: random }
    }

    /// The key file's text: the key in url-safe base64 with padding (44 characters, as
    /// Python's `Fernet.generate_key()` gives) and a newline, which Python ignores.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(45));
        URL_SAFE.encode_string(self.bytes, &mut text);
        text.push('\n');
        text
    }

    /// Reads a key file's text (surrounding whitespace is ignored; the `=` padding is
    /// optional).
    ///
    /// # Errors
    ///
    /// [`SharedKeyError::KeyEncoding`] if it is not url-safe base64 and
    /// [`SharedKeyError::KeyLength`] if it is not 32 bytes.
    pub fn from_key_file(text: &str) -> Result<SharedKey, SharedKeyError> {
        let decoded = Zeroizing::new(
            LENIENT_URL_SAFE
                .decode(text.trim())
                .map_err(|_| SharedKeyError::KeyEncoding)?,
        );
        let mut key = SharedKey { bytes: [0; 32] };
        if decoded.len() != key.bytes.len() {
            return Err(SharedKeyError::KeyLength(decoded.len()));
        }
        key.bytes.copy_from_slice(&decoded);
        Ok(key)
    }

    /// Derives a key from a passphrase with Argon2id ([`PASSPHRASE_MEMORY_KIB`],
    /// [`PASSPHRASE_ITERATIONS`], [`PASSPHRASE_PARALLELISM`], 32 bytes out, version 0x13).
    ///
    /// The passphrase's UTF-8 bytes are used exactly as given: not trimmed, normalised or
    /// padded. Every member needs the same passphrase and `salt`. Note that a token or the
    /// key's fingerprint lets an attacker test guesses offline, each guess costing one
    /// such derivation, so the passphrase must be long.
    ///
    /// # Errors
    ///
    /// [`SharedKeyError::EmptyPassphrase`] for an empty passphrase, and
    /// [`SharedKeyError::KeyDerivation`] should Argon2 refuse its inputs.
    pub fn from_passphrase(passphrase: &str, salt: &Salt) -> Result<SharedKey, SharedKeyError> {
        if passphrase.is_empty() {
            return Err(SharedKeyError::EmptyPassphrase);
        }
        let mut key = SharedKey { bytes: [0; 32] };
        let params = Params::new(
            PASSPHRASE_MEMORY_KIB,
            PASSPHRASE_ITERATIONS,
            PASSPHRASE_PARALLELISM,
            Some(key.bytes.len()),
        )
        .map_err(|_| SharedKeyError::KeyDerivation)?;
        // Our own working memory, so that it is wiped afterwards: its last blocks are
        // as good as the key.
        let mut memory = Zeroizing::new(vec![Block::default(); params.block_count()]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into_with_memory(
                passphrase.as_bytes(),
                &salt.0,
                &mut key.bytes,
                &mut memory[..],
            )
            .map_err(|_| SharedKeyError::KeyDerivation)?;
        Ok(key)
    }

    /// Encrypts `plaintext` into a Fernet token stamped `now_unix_secs`.
    ///
    /// `iv` must be 16 fresh bytes from a cryptographic RNG for every token. Python
    /// rejects tokens stamped more than 60 seconds ahead of its clock, so pass the real
    /// current time.
    pub fn encrypt(&self, plaintext: &[u8], now_unix_secs: u64, iv: [u8; 16]) -> String {
        let ciphertext = cbc::Encryptor::<Aes128>::new(self.encryption_key(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut token = Vec::with_capacity(HEADER_LEN + ciphertext.len() + TAG_LEN);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(&now_unix_secs.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&ciphertext);
        let tag = self.mac().chain_update(&token).finalize().into_bytes();
        token.extend_from_slice(&tag);
        URL_SAFE.encode(token)
    }

    /// Decrypts and authenticates a Fernet token (surrounding whitespace is ignored). No
    /// time-to-live is applied.
    ///
    /// # Errors
    ///
    /// [`SharedKeyError::InvalidToken`] if the token is malformed, altered or made under
    /// another key.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, SharedKeyError> {
        self.decrypt_with_timestamp(token)
            .map(|(_, plaintext)| plaintext)
    }

    /// Like [`SharedKey::decrypt`], also returning the token's timestamp (Unix seconds),
    /// which the HMAC authenticates but which any key holder can choose.
    ///
    /// # Errors
    ///
    /// As [`SharedKey::decrypt`].
    pub fn decrypt_with_timestamp(&self, token: &str) -> Result<(u64, Vec<u8>), SharedKeyError> {
        let data = LENIENT_URL_SAFE
            .decode(token.trim())
            .map_err(|_| SharedKeyError::InvalidToken)?;
        let (signed, tag) = data
            .split_last_chunk::<TAG_LEN>()
            .ok_or(SharedKeyError::InvalidToken)?;
        let (&version, rest) = signed.split_first().ok_or(SharedKeyError::InvalidToken)?;
        let (timestamp, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(SharedKeyError::InvalidToken)?;
        let (iv, ciphertext) = rest
            .split_first_chunk::<16>()
            .ok_or(SharedKeyError::InvalidToken)?;
        if version != TOKEN_VERSION
            || ciphertext.is_empty()
            || !ciphertext.len().is_multiple_of(BLOCK_LEN)
        {
            return Err(SharedKeyError::InvalidToken);
        }
        // Authenticate before decrypting; `verify_slice` compares in constant time.
        self.mac()
            .chain_update(signed)
            .verify_slice(tag)
            .map_err(|_| SharedKeyError::InvalidToken)?;
        let plaintext = cbc::Decryptor::<Aes128>::new(self.encryption_key(), &(*iv).into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| SharedKeyError::InvalidToken)?;
        Ok((u64::from_be_bytes(*timestamp), plaintext))
    }

    /// A short fingerprint (16 hex digits: 64 bits of SHA-256 over a label and the key)
    /// that members compare to check that they hold the same key, without revealing it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(FINGERPRINT_LABEL)
            .chain_update(self.bytes)
            .finalize();
        digest
            .iter()
            .take(FINGERPRINT_BYTES)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The AES-128 key: the second half.
    fn encryption_key(&self) -> &GenericArray<u8, aes::cipher::consts::U16> {
        GenericArray::from_slice(&self.bytes[16..])
    }

    /// HMAC-SHA256 keyed with the first half.
    fn mac(&self) -> Hmac<Sha256> {
        // HMAC pads a key shorter than the hash's block with zeros (RFC 2104, section 2),
        // so keying with the 16 bytes padded to 64 is the same MAC, and this constructor,
        // unlike `new_from_slice`, cannot fail.
        let mut padded = Zeroizing::new([0_u8; HMAC_BLOCK_LEN]);
        padded[..16].copy_from_slice(&self.bytes[..16]);
        <Hmac<Sha256> as Mac>::new(GenericArray::from_slice(&padded[..]))
    }
}

impl PartialEq for SharedKey {
    /// Compares in constant time.
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for SharedKey {}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKey").finish_non_exhaustive()
    }
}

impl Salt {
    /// Makes a salt from 16 bytes, which should come from a cryptographic RNG.
    pub const fn generate(random: [u8; 16]) -> Salt {
        Salt(random)
    }

    /// Wraps a salt received from elsewhere (for example, the room's settings).
    pub const fn from_bytes(bytes: [u8; 16]) -> Salt {
        Salt(bytes)
    }

    /// The salt's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};

    /// The Fernet spec's generation vector (`generate.json`).
    const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const SPEC_TIME: u64 = 499_162_800; // 1985-10-26T01:20:00-07:00
    const SPEC_IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const SPEC_TOKEN: &str = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

    fn random_key() -> SharedKey {
        SharedKey::generate(rand::rng().random())
    }

    #[test]
    fn reproduces_the_spec_vector() {
        let key = SharedKey::from_key_file(SPEC_KEY).unwrap();
        assert_eq!(key.encrypt(b"hello", SPEC_TIME, SPEC_IV), SPEC_TOKEN);
        assert_eq!(key.decrypt(SPEC_TOKEN).unwrap(), b"hello");
        assert_eq!(
            key.decrypt_with_timestamp(SPEC_TOKEN).unwrap(),
            (SPEC_TIME, b"hello".to_vec())
        );
    }

    #[test]
    fn agrees_with_the_fernet_crate() {
        let mut rng = rand::rng();
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 1000] {
            let key = random_key();
            let theirs = fernet::Fernet::new(key.to_key_file().trim()).unwrap();
            let mut plaintext = vec![0; len];
            rng.fill_bytes(&mut plaintext);

            let ours = key.encrypt(&plaintext, 1_700_000_000, rng.random());
            assert_eq!(theirs.decrypt(&ours).unwrap(), plaintext, "{len} bytes");

            let token = theirs.encrypt(&plaintext);
            assert_eq!(key.decrypt(&token).unwrap(), plaintext, "{len} bytes");
        }
    }

    #[test]
    fn key_file_round_trips() {
        let key = random_key();
        let text = key.to_key_file();
        assert_eq!(text.len(), 45);
        assert!(text.ends_with("=\n"));
        assert_eq!(SharedKey::from_key_file(&text).unwrap(), key);
        let padded_oddly = format!("  \r\n{}\r\n\t", text.trim());
        assert_eq!(SharedKey::from_key_file(&padded_oddly).unwrap(), key);
        let unpadded = text.trim().trim_end_matches('=');
        assert_eq!(SharedKey::from_key_file(unpadded).unwrap(), key);
    }

    #[test]
    fn bad_key_files_are_rejected_clearly() {
        assert_eq!(
            SharedKey::from_key_file("not base64 at all!").unwrap_err(),
            SharedKeyError::KeyEncoding
        );
        // Standard base64 (with '+' and '/') is not the url-safe alphabet Fernet uses.
        assert_eq!(
            SharedKey::from_key_file("cw/0x689RpI+jtRR7oE8h/eQsKImvJapLeSbXpwF4e4=").unwrap_err(),
            SharedKeyError::KeyEncoding
        );
        assert_eq!(
            SharedKey::from_key_file(&URL_SAFE.encode([7; 16])).unwrap_err(),
            SharedKeyError::KeyLength(16)
        );
        assert_eq!(
            SharedKey::from_key_file(&URL_SAFE.encode([7; 33])).unwrap_err(),
            SharedKeyError::KeyLength(33)
        );
        assert_eq!(
            SharedKey::from_key_file("  \n").unwrap_err(),
            SharedKeyError::KeyLength(0)
        );
    }

    #[test]
    fn passphrase_keys_are_deterministic_and_salted() {
        let salt = Salt::generate([1; 16]);
        let first = SharedKey::from_passphrase("correct horse battery staple", &salt).unwrap();
        let again = SharedKey::from_passphrase("correct horse battery staple", &salt).unwrap();
        assert_eq!(first, again);
        // Pinned, so that the parameters cannot change unnoticed; the same value comes
        // from Python's `cryptography` Argon2id (tests/fernet_python.rs checks this too).
        assert_eq!(first.fingerprint(), "b53ae566bfd5a5b0");

        let other_salt =
            SharedKey::from_passphrase("correct horse battery staple", &Salt::from_bytes([2; 16]));
        assert_ne!(other_salt.unwrap(), first);
        let other_phrase = SharedKey::from_passphrase("correct horse battery stapler", &salt);
        assert_ne!(other_phrase.unwrap(), first);
        // No trimming or padding: a trailing space is another passphrase.
        let with_space = SharedKey::from_passphrase("correct horse battery staple ", &salt);
        assert_ne!(with_space.unwrap(), first);

        assert_eq!(
            SharedKey::from_passphrase("", &salt).unwrap_err(),
            SharedKeyError::EmptyPassphrase
        );
    }

    /// Decodes a token, lets `change` alter its bytes and encodes it again.
    fn altered(token: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut bytes = URL_SAFE.decode(token).unwrap();
        change(&mut bytes);
        URL_SAFE.encode(bytes)
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let key = random_key();
        let token = key.encrypt(b"attack at dawn, bring snacks", 1_700_000_000, [9; 16]);
        let len = URL_SAFE.decode(&token).unwrap().len();
        let regions = [
            ("version", 0..1),
            ("timestamp", 1..9),
            ("iv", 9..25),
            ("ciphertext", 25..len - TAG_LEN),
            ("hmac", len - TAG_LEN..len),
        ];
        for (region, range) in regions {
            assert!(!range.is_empty(), "{region}");
            for idx in range {
                for bit in [0x01, 0x80] {
                    let bad = altered(&token, |bytes| bytes[idx] ^= bit);
                    assert_eq!(
                        key.decrypt(&bad).unwrap_err(),
                        SharedKeyError::InvalidToken,
                        "{region} byte {idx}"
                    );
                }
            }
        }
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        let key = random_key();
        let token = key.encrypt(b"hi", 1_700_000_000, [3; 16]);
        let cases = [
            String::new(),
            "gAAAAA".to_owned(),
            "not a token!".to_owned(),
            altered(&token, |bytes| bytes.truncate(bytes.len() - 1)),
            altered(&token, |bytes| bytes.push(0)),
            // One ciphertext block removed (the tag is then wrong anyway).
            altered(&token, |bytes| drop(bytes.drain(25..41))),
            // No ciphertext at all, with a tag that is right for it.
            {
                let mut bytes = URL_SAFE.decode(&token).unwrap();
                bytes.truncate(HEADER_LEN);
                let tag = key.mac().chain_update(&bytes).finalize().into_bytes();
                bytes.extend_from_slice(&tag);
                URL_SAFE.encode(bytes)
            },
        ];
        for bad in cases {
            assert_eq!(
                key.decrypt(&bad).unwrap_err(),
                SharedKeyError::InvalidToken,
                "{bad:?}"
            );
        }
        // Whitespace around a token and a missing padding are tolerated, as in Python.
        assert_eq!(key.decrypt(&format!(" {token}\n")).unwrap(), b"hi");
        assert_eq!(key.decrypt(token.trim_end_matches('=')).unwrap(), b"hi");
    }

    #[test]
    fn wrong_key_is_an_invalid_token() {
        let token = random_key().encrypt(b"secret", 1_700_000_000, [5; 16]);
        assert_eq!(
            random_key().decrypt(&token).unwrap_err(),
            SharedKeyError::InvalidToken
        );
    }

    #[test]
    fn debug_redacts_and_fingerprints_differ() {
        let key = SharedKey::from_key_file(SPEC_KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SharedKey { .. }");
        let fingerprint = key.fingerprint();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(fingerprint, "991e0d71b439a2d1");
        assert_ne!(random_key().fingerprint(), fingerprint);
    }
}
