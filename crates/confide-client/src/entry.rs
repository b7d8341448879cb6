//! [`Entry`]: one line of a room's log as front ends see it, after end-to-end
//! decryption.
//!
//! The server's [`LogEntry`] carries ciphertext; the client core turns each one into
//! an `Entry` whose message content is the decrypted, typed payload, or the reason it
//! cannot be read (never a silent drop). Front ends draw only `Entry` values.

use confide_crypto::payload::{Envelope, Payload};
use confide_proto::{DeviceId, Epoch, LogEntry, MemberChange, RoomId, Seq, Timestamp, UserName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One entry of a room's log, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The room.
    pub room: RoomId,
    /// Its place in the room's log.
    pub seq: Seq,
    /// When the server stored it.
    pub timestamp: Timestamp,
    /// Who sent it, as the server saw the connection.
    pub sender: UserName,
    /// The sender's device, if it said which.
    pub device: Option<DeviceId>,
    /// What it says.
    pub content: Content,
}

/// What an [`Entry`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A message that decrypted and authenticated.
    Message {
        /// The sender's envelope: message id, the sender's clock and the payload.
        envelope: Envelope,
        /// How it was protected.
        protection: Protection,
    },
    /// A message this device cannot show, and why.
    Unreadable(Unreadable),
    /// A membership change, made by the entry's sender.
    Member {
        /// Whose membership changed.
        user: UserName,
        /// How.
        change: MemberChange,
    },
    /// An MLS commit: the room's group moved from `epoch` to the next one (members
    /// added or removed, or keys refreshed).
    Commit {
        /// The epoch it was made in.
        epoch: Epoch,
    },
}

/// How a message was protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protection {
    /// MLS: forward secrecy, post-compromise security, authenticated sender device.
    Mls,
    /// A key shared out of band (Fernet, compatible with the original programs):
    /// anyone with the key can read and forge, and nothing is ever rotated. Weaker.
    SharedKey,
}

impl Protection {
    /// A short label for front ends.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Protection::Mls => "end-to-end encrypted (MLS)",
            Protection::SharedKey => "shared key (weaker than MLS)",
        }
    }
}

/// Why a message cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unreadable {
    /// Sent before this device joined the room's group (or while it was not in it):
    /// by design, a new member cannot read earlier messages.
    BeforeJoin,
    /// The ciphertext was altered: it failed authentication.
    Tampered,
    /// A copy of a message already received (a replay).
    Replayed,
    /// Sent by a device that is not on its user's signed device list.
    UnknownDevice {
        /// The device the message claimed.
        device: u64,
    },
    /// Not encrypted, in a room where everything must be: not shown.
    NotEncrypted,
    /// A shared-key room whose key this profile does not have.
    NoKey,
    /// A shared-key room's token that does not open with the key this profile has:
    /// the key is wrong, or the token was altered (Fernet cannot tell which).
    WrongKey,
    /// Made by a newer client (a payload kind or version this one does not know).
    Unsupported,
    /// Anything else that failed, with the reason.
    Failed(String),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::BeforeJoin => f.write_str("sent before this device joined"),
            Unreadable::Tampered => f.write_str("REJECTED: the ciphertext was tampered with"),
            Unreadable::Replayed => f.write_str("REJECTED: a replayed copy of an earlier message"),
            Unreadable::UnknownDevice { device } => write!(
                f,
                "REJECTED: sent from device {device:016x}, which is not on the sender's signed device list"
            ),
            Unreadable::NotEncrypted => f.write_str("REJECTED: not encrypted"),
            Unreadable::NoKey => f.write_str("no key for this shared-key room"),
            Unreadable::WrongKey => {
                f.write_str("does not open with this room's shared key (a wrong key, or altered)")
            }
            Unreadable::Unsupported => f.write_str("made by a newer version of Confide"),
            Unreadable::Failed(reason) => write!(f, "cannot decrypt: {reason}"),
        }
    }
}

impl Unreadable {
    /// Whether this is a security problem to show loudly (an attack or a bug), rather
    /// than an expected gap.
    #[must_use]
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            Unreadable::Tampered
                | Unreadable::Replayed
                | Unreadable::UnknownDevice { .. }
                | Unreadable::NotEncrypted
        )
    }
}

impl Entry {
    /// An entry with the envelope-free parts of `entry` and `content`.
    #[must_use]
    pub fn from_log(entry: &LogEntry, content: Content) -> Entry {
        Entry {
            room: entry.room,
            seq: entry.seq,
            timestamp: entry.timestamp,
            sender: entry.sender.clone(),
            device: entry.device,
            content,
        }
    }

    /// Whether this is a message (readable or not), as opposed to a membership change
    /// or a commit.
    #[must_use]
    pub fn is_message(&self) -> bool {
        matches!(
            self.content,
            Content::Message { .. } | Content::Unreadable(_)
        )
    }

    /// Whether the entry is a message of its own (text, reply, file, voice, or one that
    /// cannot be read) rather than a change to another message (edit, deletion,
    /// reaction) or a receipt: what counts as unread.
    #[must_use]
    pub fn is_new_message(&self) -> bool {
        match &self.content {
            Content::Message { envelope, .. } => !matches!(
                envelope.body,
                Payload::Edit { .. }
                    | Payload::Delete { .. }
                    | Payload::Reaction { .. }
                    | Payload::Receipt { .. }
                    | Payload::Typing { .. }
            ),
            Content::Unreadable(_) => true,
            Content::Member { .. } | Content::Commit { .. } => false,
        }
    }

    /// Whether the entry is a receipt (delivered or read), which front ends show as a
    /// mark on earlier messages, never as a line.
    #[must_use]
    pub fn is_receipt(&self) -> bool {
        matches!(
            &self.content,
            Content::Message { envelope, .. } if matches!(envelope.body, Payload::Receipt { .. })
        )
    }

    /// The text of a readable text or reply message.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Message { envelope, .. } => match &envelope.body {
                Payload::Text { text } | Payload::Reply { text, .. } => Some(text),
                _ => None,
            },
            _ => None,
        }
    }
}

/// How front ends word a membership change: `bob joined`, `carol was kicked by alice`.
#[must_use]
pub fn member_change(by: &str, user: &str, change: confide_proto::MemberChange) -> String {
    use confide_proto::MemberChange;
    match change {
        MemberChange::Created => format!("{user} created the room"),
        MemberChange::Joined => format!("{user} joined"),
        MemberChange::Left => format!("{user} left"),
        MemberChange::Invited => format!("{user} was invited by {by}"),
        MemberChange::Kicked => format!("{user} was kicked by {by}"),
        MemberChange::Banned => format!("{user} was banned by {by}"),
        MemberChange::Unbanned => format!("{user} was unbanned by {by}"),
    }
}

/// The one-line summary front ends show for a message's content (its text, or what
/// kind of message it is). Control characters are left to the front end.
#[must_use]
pub fn summary(content: &Content) -> String {
    match content {
        Content::Message { envelope, .. } => match &envelope.body {
            Payload::Text { text } => text.clone(),
            Payload::Reply { to, text } => format!("(reply to {to}) {text}"),
            Payload::Edit { target, text } => format!("(edit of {target}) {text}"),
            Payload::Delete { target } => format!("(deleted {target})"),
            Payload::Reaction { target, emoji, add } => {
                if *add {
                    format!("(reacted {emoji} to {target})")
                } else {
                    format!("(took back {emoji} on {target})")
                }
            }
            Payload::Typing { .. } => "(typing)".to_owned(),
            Payload::Receipt { .. } => "(receipt)".to_owned(),
            Payload::File(file) => format!(
                "[file] {} ({}, {})",
                crate::transfer::safe_file_name(&file.name),
                crate::transfer::human_size(file.size),
                file.mime
            ),
            Payload::Voice(voice) => {
                let seconds = voice.duration_ms.div_ceil(1000);
                format!("[voice message {}:{:02}]", seconds / 60, seconds % 60)
            }
        },
        Content::Unreadable(reason) => format!("[{reason}]"),
        Content::Member { user, change } => format!("{user} {change:?}"),
        Content::Commit { epoch } => format!("(group keys changed at epoch {epoch})"),
    }
}
