//! What the server handles for end-to-end encryption: identities, KeyPackages, MLS
//! group state and Welcome messages.
//!
//! Everything here is opaque bytes to the server except the few fields it needs to
//! route and order them (room, device, epoch). The meaning of the bytes is defined by
//! `confide-crypto`; the server never holds a key that decrypts a message.

use crate::ids::{RoomId, Timestamp};
use crate::names::UserName;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One device of a user, chosen at random by the device when it is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub u64);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An MLS epoch number: 0 when a group is created, one more after each commit.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A server-assigned identifier of a pending Welcome message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WelcomeId(pub u64);

/// An account's public identity: its identity key and the list of its devices signed by
/// that key. Clients check the signature and pin the identity key; the server only
/// stores and hands out the latest bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityBundle {
    /// The account's identity public key (Ed25519).
    #[serde(with = "serde_bytes")]
    pub identity_key: Vec<u8>,
    /// The encoded device list (see `confide-crypto`).
    #[serde(with = "serde_bytes")]
    pub device_list: Vec<u8>,
    /// The identity key's signature over the device list.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// A KeyPackage handed out by [`crate::Request::ClaimKeyPackages`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// The device it belongs to.
    pub device: DeviceId,
    /// The TLS-encoded MLS KeyPackage.
    #[serde(with = "serde_bytes")]
    pub package: Vec<u8>,
}

/// A device a Welcome is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WelcomeRecipient {
    /// The user (a plain string that the server validates).
    pub user: String,
    /// Their device.
    pub device: DeviceId,
}

/// A Welcome sent along with the commit that adds its recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeOut {
    /// Who it is for: each of them receives the same bytes.
    pub recipients: Vec<WelcomeRecipient>,
    /// The TLS-encoded MLS Welcome message.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A Welcome waiting for one device until it acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWelcome {
    /// Acknowledge with this id.
    pub id: WelcomeId,
    /// The room whose group it welcomes the device to.
    pub room: RoomId,
    /// Who sent it.
    pub sender: UserName,
    /// When the server stored it.
    pub timestamp: Timestamp,
    /// The log position of the commit that added the device: the receiver applies
    /// entries after it.
    pub seq: crate::ids::Seq,
    /// The TLS-encoded MLS Welcome message.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// How a room's messages are protected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomEncryption {
    /// An MLS group: forward secrecy, post-compromise security, membership enforced by
    /// keys.
    Mls,
    /// One static key shared out of band (a Fernet key file or a passphrase), for
    /// compatibility with the original programs. Weaker: no forward secrecy, and whoever
    /// ever had the key reads everything.
    SharedKey {
        /// For a passphrase room, the Argon2id salt everyone derives the key with;
        /// `None` for a room whose key comes from a key file.
        salt: Option<[u8; 16]>,
    },
}

impl RoomEncryption {
    /// A short label for people.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            RoomEncryption::Mls => "end-to-end encrypted (MLS)",
            RoomEncryption::SharedKey { .. } => "shared key (weaker than MLS)",
        }
    }
}
