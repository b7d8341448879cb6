//! One device's end-to-end state: its keys and every MLS group it is in.
//!
//! [`Device`] wraps openmls with the rules Confide needs: one group per room (its group
//! id derived from the room id), commits as signed public messages that the server can
//! order, application messages always encrypted, and every change of membership reported
//! with the devices it adds and removes. Its whole state can be sealed into bytes (see
//! [`Device::seal`]) for the caller to store.

use crate::at_rest::{self, StateKey};
use crate::ds::group_id_for_room;
use crate::identity::{
    DeviceList, DeviceRecord, IdentityError, MemberId, SignedDeviceList, device_list_signed_bytes,
};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::Signer;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use zeroize::Zeroizing;

/// The MLS cipher suite of every Confide group: X25519, AES-128-GCM, SHA-256, Ed25519.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How far apart (in messages) a sender's messages may arrive out of order, and how far
/// ahead they may be.
const OUT_OF_ORDER_TOLERANCE: u32 = 16;
const MAXIMUM_FORWARD_DISTANCE: u32 = 10_000;
/// Epochs whose secrets are kept after a commit, to decrypt messages that were sent in
/// an epoch just before a commit but are processed after it (the server orders the
/// log, and a commit can land between a message and its processing).
const MAX_PAST_EPOCHS: usize = 3;

/// The openmls provider of one device: RustCrypto for the primitives, an in-memory store
/// for keys and group state (sealed as a whole by [`Device::seal`]).
#[derive(Default)]
struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }
    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }
    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// Why an end-to-end operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// No group for this room on this device.
    #[error("this device is not in the room's encrypted group")]
    NoGroup,
    /// The device already has a group for this room.
    #[error("this device already has a group for the room")]
    GroupExists,
    /// Bytes that are not the expected MLS message.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A KeyPackage whose signature or contents do not check out.
    #[error("invalid key package: {0}")]
    InvalidKeyPackage(String),
    /// The message was made for another epoch than the group is in.
    #[error("the message belongs to epoch {message}, the group is at epoch {group}")]
    WrongEpoch {
        /// The message's epoch.
        message: u64,
        /// The group's epoch.
        group: u64,
    },
    /// Decryption or authentication failed: the ciphertext was altered, or was not
    /// made for this group.
    #[error("the message was tampered with or is not for this group")]
    Tampered,
    /// The message was already processed (a replay), or its key is outside the window
    /// of message keys kept (deleted for forward secrecy, or too far ahead).
    #[error("the message was already received (replay) or is outside the key window")]
    Replayed,
    /// A commit that this device may not apply.
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    /// This device was removed from the group.
    #[error("this device is no longer a member of the group")]
    Removed,
    /// A commit is waiting for the server's answer.
    #[error("a commit is already pending for this group")]
    CommitPending,
    /// Identity or device list problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The sealed state could not be opened.
    #[error(transparent)]
    AtRest(#[from] at_rest::AtRestError),
    /// An internal openmls error.
    #[error("MLS error: {0}")]
    Mls(String),
}

fn mls<E: fmt::Display>(e: E) -> CryptoError {
    CryptoError::Mls(e.to_string())
}

/// A commit ready to send to the server. Apply it with [`Device::commit_accepted`] once
/// the server accepts it, or drop it with [`Device::commit_rejected`].
#[derive(Debug, Clone)]
pub struct PreparedCommit {
    /// The room.
    pub room: u64,
    /// The epoch it was made in.
    pub epoch: u64,
    /// The TLS-encoded commit.
    pub commit: Vec<u8>,
    /// The TLS-encoded GroupInfo of the next epoch, with the ratchet tree.
    pub group_info: Vec<u8>,
    /// The TLS-encoded Welcome for the added devices.
    pub welcome: Option<Vec<u8>>,
    /// The devices it adds.
    pub added: Vec<MemberId>,
    /// The devices it removes.
    pub removed: Vec<MemberId>,
}

/// A device in a group, with the key its credential signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Which device.
    pub id: MemberId,
    /// Its signature public key (compare with its user's signed device list).
    pub signature_key: Vec<u8>,
}

/// The result of processing one message of a room's log.
#[derive(Debug)]
pub enum Incoming {
    /// A decrypted application message.
    Application {
        /// Who sent it (the device authenticated by MLS).
        sender: GroupMember,
        /// The plaintext (an encoded [`crate::payload::Envelope`]).
        plaintext: Zeroizing<Vec<u8>>,
    },
    /// A commit was applied: the group is now at `epoch`.
    Commit {
        /// Who committed (for an external commit, the device that joined).
        committer: GroupMember,
        /// The group's new epoch.
        epoch: u64,
        /// Devices added.
        added: Vec<GroupMember>,
        /// Devices removed.
        removed: Vec<MemberId>,
        /// Whether this device was removed (the group is gone from this device).
        self_removed: bool,
    },
    /// A commit this device made itself and has already applied.
    AlreadyApplied,
    /// A proposal, stored until a commit covers it.
    Proposal,
    /// An application message this device sent (MLS cannot decrypt one's own
    /// messages: the sender keeps its plaintext).
    OwnMessage,
}

/// Keys and groups of one device of one user.
pub struct Device {
    id: MemberId,
    provider: Provider,
    identity: SignatureKeyPair,
    signer: SignatureKeyPair,
    list_version: u64,
    groups: HashMap<u64, MlsGroup>,
    /// Rooms joined by an external commit that the server has not accepted yet.
    external_pending: HashSet<u64>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.id)
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

/// What [`Device::seal`] stores.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    user: &'a str,
    device: u64,
    identity: &'a SignatureKeyPair,
    signer: &'a SignatureKeyPair,
    list_version: u64,
    rooms: Vec<u64>,
    storage: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What [`Device::open`] reads back.
#[derive(Deserialize)]
struct Snapshot {
    user: String,
    device: u64,
    identity: SignatureKeyPair,
    signer: SignatureKeyPair,
    list_version: u64,
    rooms: Vec<u64>,
    storage: Vec<(Vec<u8>, Vec<u8>)>,
}

fn decode_message(bytes: &[u8], what: &'static str) -> Result<MlsMessageBodyIn, CryptoError> {
    Ok(MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|_| CryptoError::Malformed(what))?
        .extract())
}

fn encode(message: &MlsMessageOut) -> Result<Vec<u8>, CryptoError> {
    message.tls_serialize_detached().map_err(mls)
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAXIMUM_FORWARD_DISTANCE,
        ))
        .build()
}

fn member_of(credential: &Credential, signature_key: &[u8]) -> Result<GroupMember, CryptoError> {
    Ok(GroupMember {
        id: MemberId::from_credential(credential)?,
        signature_key: signature_key.to_vec(),
    })
}

impl Device {
    /// A new device of `user` (canonical name) with a fresh identity key and device key.
    pub fn create(user: &str, device: u64) -> Result<Device, CryptoError> {
        let identity = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(mls)?;
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(mls)?;
        let provider = Provider::default();
        signer.store(provider.storage()).map_err(mls)?;
        Ok(Device {
            id: MemberId {
                user: user.to_owned(),
                device,
            },
            provider,
            identity,
            signer,
            list_version: 1,
            groups: HashMap::new(),
            external_pending: HashSet::new(),
        })
    }

    /// Which device this is.
    #[must_use]
    pub fn id(&self) -> &MemberId {
        &self.id
    }

    /// The account's identity public key.
    #[must_use]
    pub fn identity_key(&self) -> &[u8] {
        self.identity.public()
    }

    /// This device's signature public key (in its MLS credential).
    #[must_use]
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: self.id.credential(),
            signature_key: self.signer.public().into(),
        }
    }

    /// The account's device list, signed by its identity key, to publish.
    pub fn signed_device_list(&self) -> Result<SignedDeviceList, CryptoError> {
        let list = DeviceList {
            user: self.id.user.clone(),
            version: self.list_version,
            devices: vec![DeviceRecord {
                device: self.id.device,
                signature_key: self.signer.public().to_vec(),
            }],
        };
        let device_list = list.encode()?;
        let signature = self
            .identity
            .sign(&device_list_signed_bytes(&device_list))
            .map_err(|e| CryptoError::Mls(format!("signing the device list: {e:?}")))?;
        Ok(SignedDeviceList {
            identity_key: self.identity.public().to_vec(),
            device_list,
            signature,
        })
    }

    /// `count` one-time KeyPackages, TLS-encoded, for the server's stock.
    pub fn key_packages(&self, count: usize) -> Result<Vec<Vec<u8>>, CryptoError> {
        (0..count).map(|_| self.key_package(false)).collect()
    }

    /// A last-resort KeyPackage (handed out when the one-time stock is empty).
    pub fn last_resort_key_package(&self) -> Result<Vec<u8>, CryptoError> {
        self.key_package(true)
    }

    fn key_package(&self, last_resort: bool) -> Result<Vec<u8>, CryptoError> {
        let mut builder = KeyPackage::builder();
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential_with_key(),
            )
            .map_err(mls)?;
        encode(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    fn group(&self, room: u64) -> Result<&MlsGroup, CryptoError> {
        self.groups.get(&room).ok_or(CryptoError::NoGroup)
    }

    /// Whether this device is in the room's group.
    #[must_use]
    pub fn has_group(&self, room: u64) -> bool {
        self.groups.contains_key(&room)
    }

    /// The rooms whose groups this device is in.
    #[must_use]
    pub fn rooms(&self) -> Vec<u64> {
        let mut rooms: Vec<u64> = self.groups.keys().copied().collect();
        rooms.sort_unstable();
        rooms
    }

    /// The group's current epoch.
    pub fn epoch(&self, room: u64) -> Result<u64, CryptoError> {
        Ok(self.group(room)?.epoch().as_u64())
    }

    /// The devices in the room's group.
    pub fn members(&self, room: u64) -> Result<Vec<GroupMember>, CryptoError> {
        self.group(room)?
            .members()
            .map(|m| member_of(&m.credential, &m.signature_key))
            .collect()
    }

    /// Creates the room's group with this device as its only member, at epoch 0, and
    /// returns its GroupInfo for the server.
    pub fn create_group(&mut self, room: u64) -> Result<Vec<u8>, CryptoError> {
        if self.groups.contains_key(&room) {
            return Err(CryptoError::GroupExists);
        }
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                OUT_OF_ORDER_TOLERANCE,
                MAXIMUM_FORWARD_DISTANCE,
            ))
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            GroupId::from_slice(&group_id_for_room(room)),
            self.credential_with_key(),
        )
        .map_err(mls)?;
        let info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .map_err(mls)?;
        self.groups.insert(room, group);
        encode(&info)
    }

    /// Forgets the room's group (after leaving, or to rejoin from scratch).
    pub fn drop_group(&mut self, room: u64) -> Result<(), CryptoError> {
        if let Some(mut group) = self.groups.remove(&room) {
            group.delete(self.provider.storage()).map_err(mls)?;
        }
        Ok(())
    }

    /// Prepares a commit that adds the devices of `key_packages` and removes
    /// `removals` from the room's group. Each KeyPackage is verified; `allow` decides
    /// whether its device may join (check it against its user's signed device list).
    pub fn prepare_commit(
        &mut self,
        room: u64,
        key_packages: &[Vec<u8>],
        removals: &[MemberId],
        allow: impl Fn(&GroupMember) -> bool,
    ) -> Result<PreparedCommit, CryptoError> {
        let mut packages = Vec::with_capacity(key_packages.len());
        let mut added = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            let MlsMessageBodyIn::KeyPackage(package) = decode_message(bytes, "key package")?
            else {
                return Err(CryptoError::Malformed("key package"));
            };
            let package = package
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|e| CryptoError::InvalidKeyPackage(e.to_string()))?;
            let leaf = package.leaf_node();
            let member = member_of(leaf.credential(), leaf.signature_key().as_slice())?;
            if !allow(&member) {
                return Err(CryptoError::InvalidKeyPackage(format!(
                    "device {} is not on its user's signed device list",
                    member.id
                )));
            }
            added.push(member.id);
            packages.push(package);
        }
        let signer = &self.signer;
        let provider = &self.provider;
        let group = self.groups.get_mut(&room).ok_or(CryptoError::NoGroup)?;
        if group.pending_commit().is_some() {
            return Err(CryptoError::CommitPending);
        }
        let mut removed = Vec::new();
        let mut indexes = Vec::new();
        for member in group.members() {
            let id = MemberId::from_credential(&member.credential)?;
            if removals.contains(&id) {
                indexes.push(member.index);
                removed.push(id);
            }
        }
        let epoch = group.epoch().as_u64();
        let bundle = group
            .commit_builder()
            .propose_adds(packages)
            .propose_removals(indexes)
            .force_self_update(true)
            .load_psks(provider.storage())
            .map_err(mls)?
            .create_group_info(true)
            .use_ratchet_tree_extension(true)
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .map_err(mls)?
            .stage_commit(provider)
            .map_err(mls)?;
        let (commit, welcome, group_info) = bundle.into_messages();
        let group_info = group_info.ok_or_else(|| mls("the commit made no GroupInfo"))?;
        Ok(PreparedCommit {
            room,
            epoch,
            commit: encode(&commit)?,
            group_info: encode(&group_info)?,
            welcome: welcome.as_ref().map(encode).transpose()?,
            added,
            removed,
        })
    }

    /// Joins the room's group by an external commit against its GroupInfo (public rooms
    /// and the lobby). The group is kept with the commit pending; apply it with
    /// [`Device::commit_accepted`] or throw it away with [`Device::commit_rejected`].
    pub fn prepare_external_join(
        &mut self,
        room: u64,
        group_info: &[u8],
    ) -> Result<PreparedCommit, CryptoError> {
        if self.groups.contains_key(&room) {
            return Err(CryptoError::GroupExists);
        }
        let MlsMessageBodyIn::GroupInfo(info) = decode_message(group_info, "group info")? else {
            return Err(CryptoError::Malformed("group info"));
        };
        if info.group_id().as_slice() != group_id_for_room(room).as_slice() {
            return Err(CryptoError::Malformed("group info of another room"));
        }
        let epoch = info.epoch().as_u64();
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(&self.provider, info, self.credential_with_key())
            .map_err(mls)?
            .load_psks(self.provider.storage())
            .map_err(mls)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(mls)?
            .finalize(&self.provider)
            .map_err(mls)?;
        let (commit, _welcome, group_info) = bundle.into_messages();
        let group_info = match group_info {
            Some(info) => info,
            None => group
                .export_group_info(self.provider.crypto(), &self.signer, true)
                .map_err(mls)?,
        };
        let prepared = PreparedCommit {
            room,
            epoch,
            commit: encode(&commit)?,
            group_info: encode(&group_info)?,
            welcome: None,
            added: vec![self.id.clone()],
            removed: Vec::new(),
        };
        self.groups.insert(room, group);
        self.external_pending.insert(room);
        Ok(prepared)
    }

    /// The server accepted this device's commit: move the group to the next epoch.
    pub fn commit_accepted(&mut self, room: u64) -> Result<u64, CryptoError> {
        let provider = &self.provider;
        let group = self.groups.get_mut(&room).ok_or(CryptoError::NoGroup)?;
        // Already merged if the commit came back through the log first.
        if group.pending_commit().is_some() {
            group.merge_pending_commit(provider).map_err(mls)?;
        }
        self.external_pending.remove(&room);
        Ok(group.epoch().as_u64())
    }

    /// The server refused this device's commit (another commit won the epoch): forget
    /// it. An external join is forgotten entirely.
    pub fn commit_rejected(&mut self, room: u64) -> Result<(), CryptoError> {
        if self.external_pending.remove(&room) {
            return self.drop_group(room);
        }
        let storage = self.provider.storage();
        if let Some(group) = self.groups.get_mut(&room) {
            group.clear_pending_commit(storage).map_err(mls)?;
        }
        Ok(())
    }

    /// Joins a group from a Welcome and returns the room it belongs to.
    pub fn join_from_welcome(&mut self, welcome: &[u8]) -> Result<u64, CryptoError> {
        let MlsMessageBodyIn::Welcome(welcome) = decode_message(welcome, "welcome")? else {
            return Err(CryptoError::Malformed("welcome"));
        };
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
            .map_err(mls)?;
        let group = staged.into_group(&self.provider).map_err(mls)?;
        let room = room_of_group(group.group_id()).ok_or(CryptoError::Malformed(
            "welcome to a group that is not a room",
        ))?;
        if let Some(mut old) = self.groups.insert(room, group) {
            // A stale copy of the group (removed earlier, or a failed join).
            let _ = old.delete(self.provider.storage());
        }
        Ok(room)
    }

    /// Encrypts an application message for the room's group, in its current epoch.
    pub fn encrypt(&mut self, room: u64, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self.groups.get_mut(&room).ok_or(CryptoError::NoGroup)?;
        if group.pending_commit().is_some() {
            return Err(CryptoError::CommitPending);
        }
        let message = group
            .create_message(provider, signer, plaintext)
            .map_err(mls)?;
        encode(&message)
    }

    /// Processes one MLS message from the room's log (a commit, a proposal or an
    /// application message), in log order.
    pub fn process(&mut self, room: u64, bytes: &[u8]) -> Result<Incoming, CryptoError> {
        let message = match decode_message(bytes, "MLS message")? {
            MlsMessageBodyIn::PublicMessage(m) => ProtocolMessage::from(m),
            MlsMessageBodyIn::PrivateMessage(m) => ProtocolMessage::from(m),
            _ => return Err(CryptoError::Malformed("MLS message")),
        };
        let provider = &self.provider;
        let group = self.groups.get_mut(&room).ok_or(CryptoError::NoGroup)?;
        if message.group_id() != group.group_id() {
            return Err(CryptoError::Tampered);
        }
        let group_epoch = group.epoch().as_u64();
        let message_epoch = message.epoch().as_u64();
        if message.content_type() == ContentType::Commit && message_epoch < group_epoch {
            // Our own commit (applied when the server accepted it), or one applied
            // before a Welcome: nothing to do.
            return Ok(Incoming::AlreadyApplied);
        }
        if message_epoch != group_epoch {
            return Err(CryptoError::WrongEpoch {
                message: message_epoch,
                group: group_epoch,
            });
        }
        let processed = group.process_message(provider, message).map_err(classify)?;
        let sender = member_of(
            processed.credential(),
            processed_signature_key(group, &processed).as_slice(),
        )?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Ok(Incoming::Application {
                sender,
                plaintext: Zeroizing::new(app.into_bytes()),
            }),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let mut removed = Vec::new();
                for remove in staged.remove_proposals() {
                    if let Some(member) = group.member_at(remove.remove_proposal().removed()) {
                        removed.push(MemberId::from_credential(&member.credential)?);
                    }
                }
                let mut added = Vec::new();
                for add in staged.add_proposals() {
                    let leaf = add.add_proposal().key_package().leaf_node();
                    added.push(member_of(
                        leaf.credential(),
                        leaf.signature_key().as_slice(),
                    )?);
                }
                let self_removed = staged.self_removed();
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| CryptoError::InvalidCommit(e.to_string()))?;
                let epoch = group.epoch().as_u64();
                if self_removed {
                    self.drop_group(room)?;
                }
                Ok(Incoming::Commit {
                    committer: sender,
                    epoch,
                    added,
                    removed,
                    self_removed,
                })
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .map_err(mls)?;
                Ok(Incoming::Proposal)
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => Ok(Incoming::Proposal),
            ProcessedMessageContent::OwnPendingCommit => {
                // Our commit came back from the server before its acknowledgement.
                group.merge_pending_commit(provider).map_err(mls)?;
                self.external_pending.remove(&room);
                Ok(Incoming::AlreadyApplied)
            }
            ProcessedMessageContent::OwnPrivateMessage => Ok(Incoming::OwnMessage),
        }
    }

    /// A secret derived from the room's current epoch (for live voice keys).
    pub fn export_secret(
        &self,
        room: u64,
        label: &str,
        context: &[u8],
        length: usize,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let group = self.group(room)?;
        group
            .export_secret(self.provider.crypto(), label, context, length)
            .map(Zeroizing::new)
            .map_err(mls)
    }

    /// Seals the device's whole state (keys and groups) under `key`.
    pub fn seal(&self, key: &StateKey) -> Result<Vec<u8>, CryptoError> {
        let storage: Vec<(Vec<u8>, Vec<u8>)> = {
            let values = self
                .provider
                .storage
                .values
                .read()
                .map_err(|_| mls("the key store lock is poisoned"))?;
            values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let snapshot = SnapshotRef {
            user: &self.id.user,
            device: self.id.device,
            identity: &self.identity,
            signer: &self.signer,
            list_version: self.list_version,
            rooms: self.rooms(),
            storage,
        };
        let plain = Zeroizing::new(postcard::to_allocvec(&snapshot).map_err(mls)?);
        // The copies of the key store inside `snapshot` hold private keys too.
        let SnapshotRef { storage, .. } = snapshot;
        for (mut k, mut v) in storage {
            zeroize::Zeroize::zeroize(&mut k);
            zeroize::Zeroize::zeroize(&mut v);
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(
            &openmls_traits::random::OpenMlsRand::random_vec(self.provider.rand(), 12)
                .map_err(mls)?,
        );
        Ok(at_rest::seal(key, &plain, nonce))
    }

    /// Opens a state sealed by [`Device::seal`].
    pub fn open(key: &StateKey, sealed: &[u8]) -> Result<Device, CryptoError> {
        let plain = at_rest::open(key, sealed)?;
        let snapshot: Snapshot =
            postcard::from_bytes(&plain).map_err(|_| CryptoError::Malformed("device state"))?;
        let storage = MemoryStorage {
            values: std::sync::RwLock::new(snapshot.storage.into_iter().collect()),
        };
        let provider = Provider {
            crypto: RustCrypto::default(),
            storage,
        };
        let mut groups = HashMap::new();
        for room in snapshot.rooms {
            let id = GroupId::from_slice(&group_id_for_room(room));
            if let Some(group) = MlsGroup::load(provider.storage(), &id).map_err(mls)? {
                groups.insert(room, group);
            }
        }
        Ok(Device {
            id: MemberId {
                user: snapshot.user,
                device: snapshot.device,
            },
            provider,
            identity: snapshot.identity,
            signer: snapshot.signer,
            list_version: snapshot.list_version,
            groups,
            external_pending: HashSet::new(),
        })
    }
}

/// The room a group id belongs to.
fn room_of_group(id: &GroupId) -> Option<u64> {
    let bytes = id.as_slice();
    let prefix = group_id_for_room(0);
    let prefix = prefix.get(..prefix.len() - 8)?;
    let rest = bytes.strip_prefix(prefix)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// The signature key of a processed message's sender.
fn processed_signature_key(group: &MlsGroup, processed: &ProcessedMessage) -> Vec<u8> {
    match processed.sender() {
        Sender::Member(index) => group
            .member_at(*index)
            .map(|m| m.signature_key)
            .unwrap_or_default(),
        _ => match processed.content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => staged
                .update_path_leaf_node()
                .map(|leaf| leaf.signature_key().as_slice().to_vec())
                .unwrap_or_default(),
            _ => Vec::new(),
        },
    }
}

fn classify(error: ProcessMessageError<openmls_rust_crypto::MemoryStorageError>) -> CryptoError {
    use openmls::framing::errors::MessageDecryptionError;
    use openmls::prelude::ValidationError as V;
    match error {
        // The secret for this sender and generation is gone: it was used already (a
        // replay) or deleted for forward secrecy.
        ProcessMessageError::ValidationError(V::UnableToDecrypt(
            MessageDecryptionError::SecretTreeError(_)
            | MessageDecryptionError::GenerationOutOfBound,
        )) => CryptoError::Replayed,
        ProcessMessageError::ValidationError(V::UnableToDecrypt(_)) => CryptoError::Tampered,
        ProcessMessageError::ValidationError(
            V::InvalidSignature | V::InvalidMembershipTag | V::WrongGroupId,
        ) => CryptoError::Tampered,
        ProcessMessageError::ValidationError(V::WrongEpoch | V::NoPastEpochData) => {
            CryptoError::WrongEpoch {
                message: 0,
                group: 0,
            }
        }
        ProcessMessageError::InvalidCommit(e) => CryptoError::InvalidCommit(e.to_string()),
        other => CryptoError::Mls(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
