//! Identities and devices.
//!
//! Every account has one identity key (Ed25519). It signs the account's device list: the
//! devices, each with the signature key of its MLS credential. Clients pin a user's
//! identity key on first contact, check every device list against it, and refuse group
//! members whose device is not on their user's signed list.

use openmls::prelude::{BasicCredential, Credential, SignatureScheme};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto;
use serde::{Deserialize, Serialize};

/// The label signed together with a device list, so that the signature cannot be
/// confused with any other use of the identity key.
const DEVICE_LIST_LABEL: &[u8] = b"confide device list v1\0";

/// Largest device list accepted (devices per account).
pub const MAX_DEVICES: usize = 64;

/// Why an identity or device list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The device list could not be decoded.
    #[error("the device list is malformed")]
    Malformed,
    /// The identity key's signature over the device list does not verify.
    #[error("the device list's signature does not verify")]
    BadSignature,
    /// The list names another user than the one it was published for.
    #[error("the device list belongs to {found}, not {expected}")]
    WrongUser {
        /// Who it should belong to.
        expected: String,
        /// Who it names.
        found: String,
    },
    /// The list is older than one already seen (a rollback).
    #[error("the device list is version {found}, older than the version {seen} already seen")]
    Rollback {
        /// The version already seen.
        seen: u64,
        /// The version offered.
        found: u64,
    },
    /// An MLS credential that is not a Confide device credential.
    #[error("the credential does not name a Confide device")]
    BadCredential,
    /// Too many devices.
    #[error("a device list may hold at most {MAX_DEVICES} devices")]
    TooManyDevices,
}

/// One device of one user: the identity inside its MLS credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    /// The user's canonical name.
    pub user: String,
    /// The device.
    pub device: u64,
}

impl MemberId {
    /// The bytes of the MLS basic credential: the user's name, a zero byte, and the
    /// device id (8 bytes, big-endian).
    #[must_use]
    pub fn credential_identity(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.user.len() + 9);
        bytes.extend_from_slice(self.user.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&self.device.to_be_bytes());
        bytes
    }

    /// The MLS credential of this device.
    #[must_use]
    pub fn credential(&self) -> Credential {
        BasicCredential::new(self.credential_identity()).into()
    }

    /// Reads a device from an MLS credential.
    pub fn from_credential(credential: &Credential) -> Result<MemberId, IdentityError> {
        let basic = BasicCredential::try_from(credential.clone())
            .map_err(|_| IdentityError::BadCredential)?;
        MemberId::from_identity(basic.identity())
    }

    fn from_identity(bytes: &[u8]) -> Result<MemberId, IdentityError> {
        let split = bytes
            .len()
            .checked_sub(9)
            .ok_or(IdentityError::BadCredential)?;
        let (user, rest) = bytes.split_at(split);
        let (zero, device) = rest.split_at(1);
        if zero != [0] || user.is_empty() {
            return Err(IdentityError::BadCredential);
        }
        let user = std::str::from_utf8(user).map_err(|_| IdentityError::BadCredential)?;
        let device: [u8; 8] = device
            .try_into()
            .map_err(|_| IdentityError::BadCredential)?;
        Ok(MemberId {
            user: user.to_owned(),
            device: u64::from_be_bytes(device),
        })
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:016x}", self.user, self.device)
    }
}

/// One device on a user's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device.
    pub device: u64,
    /// The public key its MLS credential signs with.
    pub signature_key: Vec<u8>,
}

/// The devices of one account, as signed by its identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    /// The user's canonical name.
    pub user: String,
    /// Grows with every change, so that an old list cannot be replayed.
    pub version: u64,
    /// The devices.
    pub devices: Vec<DeviceRecord>,
}

impl DeviceList {
    /// Whether this device with this signature key is on the list.
    #[must_use]
    pub fn allows(&self, device: u64, signature_key: &[u8]) -> bool {
        self.devices
            .iter()
            .any(|d| d.device == device && d.signature_key == signature_key)
    }

    /// The encoding that is signed and published.
    pub fn encode(&self) -> Result<Vec<u8>, IdentityError> {
        if self.devices.len() > MAX_DEVICES {
            return Err(IdentityError::TooManyDevices);
        }
        postcard::to_allocvec(self).map_err(|_| IdentityError::Malformed)
    }

    fn decode(bytes: &[u8]) -> Result<DeviceList, IdentityError> {
        let list: DeviceList = postcard::from_bytes(bytes).map_err(|_| IdentityError::Malformed)?;
        if list.devices.len() > MAX_DEVICES {
            return Err(IdentityError::TooManyDevices);
        }
        Ok(list)
    }
}

/// The bytes an identity key signs for a device list.
pub(crate) fn device_list_signed_bytes(encoded_list: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(DEVICE_LIST_LABEL.len() + encoded_list.len());
    bytes.extend_from_slice(DEVICE_LIST_LABEL);
    bytes.extend_from_slice(encoded_list);
    bytes
}

/// A published identity: the identity key, the encoded device list and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDeviceList {
    /// The account's identity public key (Ed25519).
    pub identity_key: Vec<u8>,
    /// The encoded [`DeviceList`].
    pub device_list: Vec<u8>,
    /// The identity key's signature over the label and the device list.
    pub signature: Vec<u8>,
}

impl SignedDeviceList {
    /// Checks the signature and that the list belongs to `expected_user` (canonical
    /// name), and returns the list. Pinning the identity key and refusing rollbacks is
    /// the caller's part (see [`crate::trust`]).
    pub fn verify(&self, expected_user: &str) -> Result<DeviceList, IdentityError> {
        RustCrypto::default()
            .verify_signature(
                SignatureScheme::ED25519,
                &device_list_signed_bytes(&self.device_list),
                &self.identity_key,
                &self.signature,
            )
            .map_err(|_| IdentityError::BadSignature)?;
        let list = DeviceList::decode(&self.device_list)?;
        if list.user != expected_user {
            return Err(IdentityError::WrongUser {
                expected: expected_user.to_owned(),
                found: list.user,
            });
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_identity_round_trips() {
        let id = MemberId {
            user: "alice".into(),
            device: 0x0102_0304_0506_0708,
        };
        let credential = id.credential();
        assert_eq!(MemberId::from_credential(&credential).unwrap(), id);
        assert_eq!(id.to_string(), "alice/0102030405060708");
    }

    #[test]
    fn bad_credentials_are_refused() {
        for bytes in [
            &b""[..],
            b"\0\0\0\0\0\0\0\0\0",
            b"alice12345678",
            b"al\xffce\0aaaaaaaa",
        ] {
            let credential: Credential = BasicCredential::new(bytes.to_vec()).into();
            assert_eq!(
                MemberId::from_credential(&credential),
                Err(IdentityError::BadCredential),
                "{bytes:?}"
            );
        }
    }
}
