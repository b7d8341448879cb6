//! A public copy of one room's MLS group, kept by the delivery service to check commits.
//!
//! [`GroupWatch`] wraps openmls's `PublicGroup`: the ratchet tree with every member's
//! credential and public keys, the group context and the transcript hashes, which is all
//! of a group that is not secret. Against it the server checks each commit sent for the
//! current epoch:
//!
//! - openmls's public processing: the signature, by the committer's leaf (or, for an
//!   external commit, by the leaf the new member brings), the proposals (KeyPackages
//!   verified, no duplicate keys, removals of real members) and the path's leaf node and
//!   parent hashes;
//! - that the committer, and the leaf it puts in the tree, is the device of the connection
//!   that sent the commit, and that every credential the commit brings names a device;
//! - that the GroupInfo uploaded for the next epoch is the one the commit produces: the
//!   same group context (epoch, tree hash, transcript hash, extensions), the commit's
//!   confirmation tag, the committer's signature, and a ratchet tree that hashes to the
//!   context's tree hash (so that the next joiner, and this watch after a restart, can
//!   start from it).
//!
//! What only members can check: the membership tag of a member's commit and the
//! confirmation tag are MACs under the epoch's secrets, and the path secrets are
//! encrypted to the members; the server holds none of those keys, so a commit that is
//! well signed but carries a wrong MAC passes here and is refused by the clients.
//!
//! A failed check leaves the watch as it was: [`GroupWatch::check_commit`] borrows it
//! immutably and returns a [`CheckedCommit`], which [`GroupWatch::apply`] merges.
//!
//! Cost (`benches/mls.rs`, 2 cores): checking a commit that adds a device is a few
//! signature checks plus hashing the whole tree once, linear in the group's size but
//! cheap per member: 0.4 ms for 10 members, 0.9 ms for 100, 5.6 ms for 1000. Building a
//! watch from a GroupInfo ([`GroupWatch::from_group_info`]) verifies every leaf's
//! signature (0.5, 5 and 52 ms), so it is done once per group: at creation, or lazily
//! after a restart.

use super::{DsError, group_id_for_room};
use crate::device::CIPHERSUITE;
use crate::identity::MemberId;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    ConfirmationTag, ContentType, CreationFromExternalError, GroupContext, HashType, LeafNodeIndex,
    MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore, ProtocolMessage,
    PublicGroup, PublicProcessMessageError, RatchetTreeIn, Sender, SignaturePublicKey,
    StagedCommit, ValidationError, Verifiable as _,
};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto as _;
use std::fmt;

mod storage;

use storage::NoStorage;

/// The public state of one room's MLS group, as far as the server has accepted commits.
pub struct GroupWatch {
    room: u64,
    group: PublicGroup,
    crypto: RustCrypto,
}

impl fmt::Debug for GroupWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupWatch")
            .field("room", &self.room)
            .field("epoch", &self.epoch())
            .field("members", &self.member_count())
            .finish_non_exhaustive()
    }
}

/// A commit that passed [`GroupWatch::check_commit`], ready for [`GroupWatch::apply`].
pub struct CheckedCommit {
    room: u64,
    /// The epoch it was made in.
    epoch: u64,
    committer: MemberId,
    external: bool,
    staged: Box<StagedCommit>,
}

impl CheckedCommit {
    /// The epoch the commit was made in (the group moves to the next one).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The device that made it.
    #[must_use]
    pub fn committer(&self) -> &MemberId {
        &self.committer
    }

    /// Whether it is an external commit (a new member joining by itself).
    #[must_use]
    pub fn external(&self) -> bool {
        self.external
    }
}

impl fmt::Debug for CheckedCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedCommit")
            .field("room", &self.room)
            .field("epoch", &self.epoch)
            .field("committer", &self.committer)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

/// Decodes a GroupInfo of `room`'s group.
fn group_info_of(room: u64, bytes: &[u8]) -> Result<VerifiableGroupInfo, DsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| DsError::Malformed)?;
    let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
        return Err(DsError::WrongKind {
            expected: "a GroupInfo",
        });
    };
    if info.group_id().as_slice() != group_id_for_room(room).as_slice() {
        return Err(DsError::WrongGroup);
    }
    Ok(info)
}

fn ratchet_tree(info: &VerifiableGroupInfo) -> Result<&RatchetTreeIn, DsError> {
    info.extensions()
        .ratchet_tree()
        .map(|extension| extension.ratchet_tree())
        .ok_or(DsError::NoRatchetTree)
}

fn creation_error(error: CreationFromExternalError<std::convert::Infallible>) -> DsError {
    match error {
        CreationFromExternalError::InvalidGroupInfoSignature => DsError::BadSignature,
        other => DsError::NotVerified(other.to_string()),
    }
}

fn processing_error(error: PublicProcessMessageError) -> DsError {
    match error {
        PublicProcessMessageError::ValidationError(ValidationError::InvalidSignature) => {
            DsError::BadSignature
        }
        other => DsError::NotVerified(other.to_string()),
    }
}

fn device_of(credential: &openmls::prelude::Credential) -> Result<MemberId, DsError> {
    MemberId::from_credential(credential).map_err(|_| DsError::BadCredential)
}

impl GroupWatch {
    /// Starts watching `room`'s group from a GroupInfo with the ratchet tree extension.
    /// openmls verifies the GroupInfo's signature, every leaf's signature, the parent
    /// hashes and that the tree hashes to the GroupInfo's tree hash.
    pub fn from_group_info(room: u64, group_info: &[u8]) -> Result<GroupWatch, DsError> {
        GroupWatch::build(room, group_info_of(room, group_info)?)
    }

    fn build(room: u64, info: VerifiableGroupInfo) -> Result<GroupWatch, DsError> {
        if info.ciphersuite() != CIPHERSUITE {
            return Err(DsError::NotVerified(format!(
                "cipher suite {:?} is not Confide's",
                info.ciphersuite()
            )));
        }
        let tree = ratchet_tree(&info)?.clone();
        let crypto = RustCrypto::default();
        let (group, _) =
            PublicGroup::from_external(&crypto, &NoStorage, tree, info, ProposalStore::new())
                .map_err(creation_error)?;
        Ok(GroupWatch {
            room,
            group,
            crypto,
        })
    }

    /// Starts watching a new group (`InitGroup`): its GroupInfo must be of epoch 0 and
    /// its only member `creator`, the device that sends it.
    pub fn init(room: u64, group_info: &[u8], creator: &MemberId) -> Result<GroupWatch, DsError> {
        let info = group_info_of(room, group_info)?;
        let epoch = info.epoch().as_u64();
        if epoch != 0 {
            return Err(DsError::WrongEpoch {
                expected: 0,
                found: epoch,
            });
        }
        // Refuse a crowded tree before verifying each of its leaves.
        if ratchet_tree(&info)?.leaves().count() != 1 {
            return Err(DsError::WrongCreator);
        }
        let watch = GroupWatch::build(room, info)?;
        let mut members = watch.group.members();
        match (members.next(), members.next()) {
            (Some(member), None) if device_of(&member.credential)? == *creator => {}
            _ => return Err(DsError::WrongCreator),
        }
        drop(members);
        Ok(watch)
    }

    /// The room whose group this is.
    #[must_use]
    pub fn room(&self) -> u64 {
        self.room
    }

    /// The group's current epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// How many devices are in the group.
    #[must_use]
    pub fn member_count(&self) -> usize {
        self.group.members().count()
    }

    /// The devices in the group (members whose credential is not a Confide device are
    /// left out; commits never bring one in).
    #[must_use]
    pub fn members(&self) -> Vec<MemberId> {
        self.group
            .members()
            .filter_map(|member| MemberId::from_credential(&member.credential).ok())
            .collect()
    }

    /// Checks a commit for the current epoch, sent by `committer` (the connection's user,
    /// by canonical name, and device), with the GroupInfo of the next epoch. The watch
    /// does not change; apply the result with [`GroupWatch::apply`].
    pub fn check_commit(
        &self,
        commit: &[u8],
        next_group_info: &[u8],
        committer: &MemberId,
    ) -> Result<CheckedCommit, DsError> {
        let message =
            MlsMessageIn::tls_deserialize_exact(commit).map_err(|_| DsError::Malformed)?;
        let MlsMessageBodyIn::PublicMessage(public) = message.extract() else {
            return Err(DsError::WrongKind {
                expected: "a commit as a public message",
            });
        };
        if public.group_id() != self.group.group_id() {
            return Err(DsError::WrongGroup);
        }
        if public.content_type() != ContentType::Commit {
            return Err(DsError::WrongKind {
                expected: "a commit",
            });
        }
        let epoch = self.epoch();
        let found = public.epoch().as_u64();
        if found != epoch {
            return Err(DsError::WrongEpoch {
                expected: epoch,
                found,
            });
        }
        let tag = public
            .confirmation_tag()
            .cloned()
            .ok_or_else(|| DsError::NotVerified("the commit has no confirmation tag".into()))?;
        // openmls checks the signature and everything else it can without the epoch's
        // secrets. It also requires a member's commit to carry a membership tag but
        // cannot verify it: that takes the membership key, which only members hold.
        let processed = self
            .group
            .process_message(&self.crypto, ProtocolMessage::from(public))
            .map_err(processing_error)?;
        let sender = processed.sender().clone();
        let signer = device_of(processed.credential())?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(DsError::WrongKind {
                expected: "a commit",
            });
        };
        if signer != *committer {
            return Err(DsError::WrongCommitter {
                claimed: signer.to_string(),
            });
        }
        // The path may replace the committer's leaf: it must stay the same device.
        let new_leaf = staged.update_path_leaf_node();
        if let Some(leaf) = new_leaf {
            let claimed = device_of(leaf.credential())?;
            if claimed != *committer {
                return Err(DsError::WrongCommitter {
                    claimed: claimed.to_string(),
                });
            }
        }
        for credential in staged.credentials_to_verify() {
            device_of(credential)?;
        }
        let (index, external) = match sender {
            Sender::Member(index) => (index, false),
            Sender::NewMemberCommit => (
                self.group
                    .ext_commit_sender_index(&staged)
                    .map_err(|e| DsError::NotVerified(e.to_string()))?,
                true,
            ),
            Sender::External(_) | Sender::NewMemberProposal => {
                return Err(DsError::WrongKind {
                    expected: "a commit by a member or a new member",
                });
            }
        };
        let signature_key = match new_leaf {
            Some(leaf) => leaf.signature_key().clone(),
            None => self
                .group
                .leaf(index)
                .ok_or_else(|| DsError::NotVerified("the committer has no leaf".into()))?
                .signature_key()
                .clone(),
        };
        let grown = staged.add_proposals().count() + usize::from(external);
        self.check_next_group_info(
            next_group_info,
            staged.group_context(),
            &tag,
            index,
            signature_key,
            grown,
        )?;
        Ok(CheckedCommit {
            room: self.room,
            epoch,
            committer: signer,
            external,
            staged,
        })
    }

    /// Checks that `bytes` is the GroupInfo the commit produces: `context` is the new
    /// group context, `tag` the commit's confirmation tag, `signer` and `key` the
    /// committer's leaf in the new tree, `grown` how many leaves the commit adds.
    fn check_next_group_info(
        &self,
        bytes: &[u8],
        context: &GroupContext,
        tag: &ConfirmationTag,
        signer: LeafNodeIndex,
        key: SignaturePublicKey,
        grown: usize,
    ) -> Result<(), DsError> {
        let info = group_info_of(self.room, bytes)?;
        if info.epoch() != context.epoch() {
            return Err(DsError::GroupInfoMismatch("epoch"));
        }
        if info.group_context() != context {
            return Err(DsError::GroupInfoMismatch("group context"));
        }
        // The signed part is the context, the extensions, the confirmation tag and the
        // signer's leaf index, in this order (RFC 9420, 12.4.3).
        let signed = info.unsigned_payload().map_err(|_| DsError::Malformed)?;
        let mut expected = context
            .tls_serialize_detached()
            .map_err(|_| DsError::Malformed)?;
        expected.extend(
            info.extensions()
                .tls_serialize_detached()
                .map_err(|_| DsError::Malformed)?,
        );
        let tag_bytes = tag
            .tls_serialize_detached()
            .map_err(|_| DsError::Malformed)?;
        expected.extend(&tag_bytes);
        let prefix = expected.len();
        expected.extend(signer.u32().to_be_bytes());
        if signed.get(..prefix) != expected.get(..prefix) {
            return Err(DsError::GroupInfoMismatch("confirmation tag"));
        }
        if signed != expected {
            return Err(DsError::GroupInfoMismatch("not signed by the committer"));
        }
        let key =
            key.into_signature_public_key_enriched(context.ciphersuite().signature_algorithm());
        info.verify_no_out(&self.crypto, &key)
            .map_err(|_| DsError::BadSignature)?;
        // Bound the work: the new tree has at most twice the leaf slots of the old one
        // plus those added, and a tree of n leaf slots has 2n - 1 nodes.
        let tree = ratchet_tree(&info)?;
        let slots = self.group.treesync().leaves().len();
        let most = slots.saturating_add(grown).saturating_mul(4);
        let nodes = tree_nodes(tree)?;
        if nodes.len() > most {
            return Err(DsError::GroupInfoMismatch("ratchet tree"));
        }
        let hash = tree_hash(&self.crypto, context.ciphersuite().hash_algorithm(), &nodes)?;
        if hash != context.tree_hash() {
            return Err(DsError::GroupInfoMismatch("ratchet tree"));
        }
        Ok(())
    }

    /// Moves the watch to the next epoch with a commit checked against it.
    pub fn apply(&mut self, checked: CheckedCommit) -> Result<u64, DsError> {
        let epoch = self.epoch();
        if checked.room != self.room || checked.epoch != epoch {
            return Err(DsError::WrongEpoch {
                expected: epoch,
                found: checked.epoch,
            });
        }
        // `NoStorage` cannot fail, and openmls merges in memory before it writes to the
        // storage, so this either fails untouched or succeeds.
        self.group
            .merge_commit(&NoStorage, *checked.staged)
            .map_err(|e| DsError::NotVerified(e.to_string()))?;
        Ok(self.epoch())
    }
}

/// The nodes of a ratchet tree in tree order (leaves at even indices), each as its
/// encoding (node type, then the node), blank nodes as `None`.
///
/// `RatchetTreeIn` lists its nodes without their positions; its encoding, a vector of
/// optional nodes, has them: walk it, taking each present node's length from the node.
fn tree_nodes(tree: &RatchetTreeIn) -> Result<Vec<Option<Vec<u8>>>, DsError> {
    let encoded = tree
        .tls_serialize_detached()
        .map_err(|_| DsError::Malformed)?;
    // The vector's length is an MLS variable-length integer of 1, 2 or 4 bytes.
    let first = *encoded.first().ok_or(DsError::Malformed)?;
    let header = 1usize << (first >> 6);
    if header > 4 {
        return Err(DsError::Malformed);
    }
    let mut rest = encoded.get(header..).ok_or(DsError::Malformed)?;
    let mut present = tree.nodes();
    let mut nodes = Vec::new();
    while let Some((&flag, after)) = rest.split_first() {
        match flag {
            0 => {
                nodes.push(None);
                rest = after;
            }
            1 => {
                let node = present.next().ok_or(DsError::Malformed)?;
                let encoding = node
                    .tls_serialize_detached()
                    .map_err(|_| DsError::Malformed)?;
                rest = after
                    .strip_prefix(encoding.as_slice())
                    .ok_or(DsError::Malformed)?;
                nodes.push(Some(encoding));
            }
            _ => return Err(DsError::Malformed),
        }
    }
    if present.next().is_some() || !matches!(nodes.last(), Some(Some(_))) {
        return Err(DsError::Malformed);
    }
    Ok(nodes)
}

/// The tree hash (RFC 9420, 7.8) of a tree given as [`tree_nodes`] lists it. The list
/// leaves out trailing blank nodes; the tree is the smallest complete one that holds it.
fn tree_hash(
    crypto: &RustCrypto,
    hash: HashType,
    nodes: &[Option<Vec<u8>>],
) -> Result<Vec<u8>, DsError> {
    let mut leaves = 1usize;
    let mut level = 0u32;
    while 2 * leaves - 1 < nodes.len() {
        leaves = leaves.checked_mul(2).ok_or(DsError::Malformed)?;
        level += 1;
    }
    subtree_hash(crypto, hash, nodes, leaves - 1, level)
}

const LEAF: u8 = 1;
const PARENT: u8 = 2;

/// Hash of the subtree rooted at node `index`, which sits `level` levels above the
/// leaves.
fn subtree_hash(
    crypto: &RustCrypto,
    hash: HashType,
    nodes: &[Option<Vec<u8>>],
    index: usize,
    level: u32,
) -> Result<Vec<u8>, DsError> {
    let node = nodes.get(index).and_then(Option::as_ref);
    let mut input = Vec::new();
    if level == 0 {
        // TreeHashInput { leaf, LeafNodeHashInput { uint32 leaf_index, optional<LeafNode> } }
        input.push(LEAF);
        let leaf_index = u32::try_from(index / 2).map_err(|_| DsError::Malformed)?;
        input.extend(leaf_index.to_be_bytes());
        optional_node(&mut input, node, LEAF)?;
    } else {
        // TreeHashInput { parent, ParentNodeHashInput { optional<ParentNode>,
        // opaque left_hash<V>, opaque right_hash<V> } }
        let half = 1usize << (level - 1);
        let left = subtree_hash(crypto, hash, nodes, index - half, level - 1)?;
        let right = subtree_hash(crypto, hash, nodes, index + half, level - 1)?;
        input.push(PARENT);
        optional_node(&mut input, node, PARENT)?;
        opaque(&mut input, &left)?;
        opaque(&mut input, &right)?;
    }
    crypto
        .hash(hash, &input)
        .map_err(|e| DsError::NotVerified(format!("hashing the tree: {e:?}")))
}

/// Appends `optional<T>`: absent, or present and then the node without its type byte
/// (which must be `kind`).
fn optional_node(input: &mut Vec<u8>, node: Option<&Vec<u8>>, kind: u8) -> Result<(), DsError> {
    match node {
        None => input.push(0),
        Some(encoding) => match encoding.split_first() {
            Some((&found, body)) if found == kind => {
                input.push(1);
                input.extend_from_slice(body);
            }
            _ => return Err(DsError::Malformed),
        },
    }
    Ok(())
}

/// Appends `opaque<V>`: an MLS variable-length length, then the bytes.
fn opaque(input: &mut Vec<u8>, bytes: &[u8]) -> Result<(), DsError> {
    let len = u32::try_from(bytes.len()).map_err(|_| DsError::Malformed)?;
    match len {
        0..0x40 => input.push(len as u8),
        0x40..0x4000 => input.extend((0x4000 | len as u16).to_be_bytes()),
        0x4000..0x4000_0000 => input.extend((0x8000_0000 | len).to_be_bytes()),
        _ => return Err(DsError::Malformed),
    }
    input.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests;
