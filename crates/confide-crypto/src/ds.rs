//! What the delivery service (the server) may learn from MLS messages without any key.
//!
//! The `inspect_*` functions read the public framing of one message (group, epoch, kind);
//! the server uses them to order commits per epoch and to refuse bytes that are not an
//! MLS message for the room they are sent to. [`GroupWatch`] keeps a public copy of a
//! room's group (tree, credentials, group context) and verifies each commit against it:
//! signatures, the committer's device, and the GroupInfo of the next epoch. Nothing here
//! holds a private key or decrypts anything.

use openmls::prelude::{ContentType, MlsMessageBodyIn, MlsMessageIn, ProtocolMessage, Sender};
use tls_codec::Deserialize as _;

mod watch;

pub use watch::{CheckedCommit, GroupWatch};

/// The MLS group id of a room: a fixed label followed by the room id, so that a message
/// for one room can never be accepted in another.
#[must_use]
pub fn group_id_for_room(room: u64) -> Vec<u8> {
    let mut id = b"confide/room/".to_vec();
    id.extend_from_slice(&room.to_be_bytes());
    id
}

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsError {
    /// Not a TLS-encoded MLS message.
    #[error("not an MLS message")]
    Malformed,
    /// An MLS message of another kind than expected here.
    #[error("expected {expected}, got another kind of MLS message")]
    WrongKind {
        /// What was expected.
        expected: &'static str,
    },
    /// The message belongs to another group.
    #[error("the message belongs to another group")]
    WrongGroup,
    /// A signature (of the commit, or of a GroupInfo) does not verify.
    #[error("a signature does not verify")]
    BadSignature,
    /// openmls refused the message or the GroupInfo; its reason names no key or content.
    #[error("does not verify: {0}")]
    NotVerified(String),
    /// The commit was made in another epoch than the group is in.
    #[error("made in epoch {found}, the group is at epoch {expected}")]
    WrongEpoch {
        /// The group's epoch.
        expected: u64,
        /// The message's epoch.
        found: u64,
    },
    /// The commit is signed by another device than the one that sends it.
    #[error("the commit comes from {claimed}, not from this connection's device")]
    WrongCommitter {
        /// The device its credential names.
        claimed: String,
    },
    /// A new group must start with its creator's device as its only member.
    #[error("a new group must hold only its creator's device")]
    WrongCreator,
    /// A credential that does not name a Confide device (user and device id).
    #[error("a credential does not name a Confide device")]
    BadCredential,
    /// A GroupInfo without the ratchet tree extension.
    #[error("the GroupInfo carries no ratchet tree")]
    NoRatchetTree,
    /// The GroupInfo for the next epoch is not the one the commit produces.
    #[error("the GroupInfo does not match the commit ({0})")]
    GroupInfoMismatch(&'static str),
}

/// The public facts of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The epoch it was made in.
    pub epoch: u64,
    /// Whether it is an external commit (a new member joining by itself).
    pub external: bool,
}

/// The public facts of an application message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplicationInfo {
    /// The epoch it was encrypted in.
    pub epoch: u64,
}

fn protocol_message(bytes: &[u8]) -> Result<ProtocolMessage, DsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| DsError::Malformed)?;
    match message.extract() {
        MlsMessageBodyIn::PublicMessage(m) => Ok(ProtocolMessage::from(m)),
        MlsMessageBodyIn::PrivateMessage(m) => Ok(ProtocolMessage::from(m)),
        _ => Err(DsError::WrongKind {
            expected: "a public or private message",
        }),
    }
}

/// Reads a commit sent to `room`. Commits travel as MLS public messages (signed, not
/// encrypted), so the server can see that they are commits and for which epoch.
pub fn inspect_commit(room: u64, bytes: &[u8]) -> Result<CommitInfo, DsError> {
    let message = protocol_message(bytes)?;
    if message.group_id().as_slice() != group_id_for_room(room).as_slice() {
        return Err(DsError::WrongGroup);
    }
    let ProtocolMessage::PublicMessage(public) = &message else {
        return Err(DsError::WrongKind {
            expected: "a commit as a public message",
        });
    };
    if message.content_type() != ContentType::Commit {
        return Err(DsError::WrongKind {
            expected: "a commit",
        });
    }
    Ok(CommitInfo {
        epoch: message.epoch().as_u64(),
        external: matches!(public.sender(), Sender::NewMemberCommit),
    })
}

/// Reads an application message sent to `room`: it must be an MLS private message of
/// the room's group (its content type and sender are encrypted).
pub fn inspect_application(room: u64, bytes: &[u8]) -> Result<ApplicationInfo, DsError> {
    let message = protocol_message(bytes)?;
    if message.group_id().as_slice() != group_id_for_room(room).as_slice() {
        return Err(DsError::WrongGroup);
    }
    if !matches!(message, ProtocolMessage::PrivateMessage(_)) {
        return Err(DsError::WrongKind {
            expected: "an encrypted application message",
        });
    }
    Ok(ApplicationInfo {
        epoch: message.epoch().as_u64(),
    })
}

/// Reads a GroupInfo for `room` and returns its epoch.
pub fn inspect_group_info(room: u64, bytes: &[u8]) -> Result<u64, DsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| DsError::Malformed)?;
    let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
        return Err(DsError::WrongKind {
            expected: "a GroupInfo",
        });
    };
    if info.group_id().as_slice() != group_id_for_room(room).as_slice() {
        return Err(DsError::WrongGroup);
    }
    Ok(info.epoch().as_u64())
}

/// Checks that bytes are a KeyPackage (the server does not verify its signature; the
/// clients that use it do).
pub fn inspect_key_package(bytes: &[u8]) -> Result<(), DsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| DsError::Malformed)?;
    match message.extract() {
        MlsMessageBodyIn::KeyPackage(_) => Ok(()),
        _ => Err(DsError::WrongKind {
            expected: "a KeyPackage",
        }),
    }
}

/// Checks that bytes are a Welcome.
pub fn inspect_welcome(bytes: &[u8]) -> Result<(), DsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| DsError::Malformed)?;
    match message.extract() {
        MlsMessageBodyIn::Welcome(_) => Ok(()),
        _ => Err(DsError::WrongKind {
            expected: "a Welcome",
        }),
    }
}
