//! What a device believes about other users' identities: the identity key pinned on
//! first contact, the newest device list seen, and whether the user was verified.

use crate::identity::{DeviceList, IdentityError, MemberId, SignedDeviceList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What is known about one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The pinned identity key.
    pub identity_key: Vec<u8>,
    /// Their newest verified device list.
    pub devices: DeviceList,
    /// Whether the user compared safety numbers with them (for this identity key).
    pub verified: bool,
    /// Set when the identity key changed after first contact, until verified again.
    pub key_changed: bool,
}

/// How a newly fetched identity compares with what was known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChange {
    /// First contact: the identity key is now pinned.
    New,
    /// Nothing changed.
    Unchanged,
    /// Same identity key, new device list.
    DevicesChanged {
        /// Devices that appeared.
        added: Vec<u64>,
        /// Devices that disappeared.
        removed: Vec<u64>,
    },
    /// A different identity key: the user reinstalled, or someone is impersonating
    /// them. Verification is reset.
    IdentityChanged {
        /// Whether the old key had been verified (warn loudly).
        was_verified: bool,
    },
}

/// Pinned identities of every user this device has met.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustStore {
    contacts: BTreeMap<String, Contact>,
}

impl TrustStore {
    /// Checks a published identity of `user` (canonical name) and records it.
    pub fn observe(
        &mut self,
        user: &str,
        bundle: &SignedDeviceList,
    ) -> Result<TrustChange, IdentityError> {
        let list = bundle.verify(user)?;
        let Some(contact) = self.contacts.get_mut(user) else {
            self.contacts.insert(
                user.to_owned(),
                Contact {
                    identity_key: bundle.identity_key.clone(),
                    devices: list,
                    verified: false,
                    key_changed: false,
                },
            );
            return Ok(TrustChange::New);
        };
        if contact.identity_key != bundle.identity_key {
            let was_verified = contact.verified;
            *contact = Contact {
                identity_key: bundle.identity_key.clone(),
                devices: list,
                verified: false,
                key_changed: true,
            };
            return Ok(TrustChange::IdentityChanged { was_verified });
        }
        if list.version < contact.devices.version {
            return Err(IdentityError::Rollback {
                seen: contact.devices.version,
                found: list.version,
            });
        }
        if list == contact.devices {
            return Ok(TrustChange::Unchanged);
        }
        let had = |l: &DeviceList, d: u64| l.devices.iter().any(|r| r.device == d);
        let added = list
            .devices
            .iter()
            .filter(|r| !had(&contact.devices, r.device))
            .map(|r| r.device)
            .collect();
        let removed = contact
            .devices
            .devices
            .iter()
            .filter(|r| !had(&list, r.device))
            .map(|r| r.device)
            .collect();
        contact.devices = list;
        Ok(TrustChange::DevicesChanged { added, removed })
    }

    /// What is known about `user`.
    #[must_use]
    pub fn contact(&self, user: &str) -> Option<&Contact> {
        self.contacts.get(user)
    }

    /// Records that the user compared safety numbers with `user` for the identity key
    /// pinned now.
    pub fn mark_verified(&mut self, user: &str) -> bool {
        match self.contacts.get_mut(user) {
            Some(contact) => {
                contact.verified = true;
                contact.key_changed = false;
                true
            }
            None => false,
        }
    }

    /// Whether `member` with this signature key is on its user's signed device list.
    #[must_use]
    pub fn allows(&self, member: &MemberId, signature_key: &[u8]) -> bool {
        self.contacts
            .get(&member.user)
            .is_some_and(|c| c.devices.allows(member.device, signature_key))
    }
}
