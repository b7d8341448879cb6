//! Turning client events and replies into lines for people or for programs.
//!
//! Pure functions only: they take the data and a time zone and return strings, so the
//! exact output (the contract scripts rely on, see the README's "JSON output") is unit-tested. Nothing
//! here prints, connects or reads the clock.

pub mod human;
pub mod json;

pub use human::Human;

use chrono::{DateTime, TimeZone, Utc};
use confide_proto::{RoomId, RoomInfo, RoomKind, Timestamp};
use std::collections::HashMap;

/// A line of output and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Standard output: the data.
    Out(String),
    /// Standard error: notices and warnings.
    Err(String),
}

/// What the front end knows about rooms, to name them in output.
#[derive(Debug, Clone, Default)]
pub struct RoomDirectory {
    rooms: HashMap<RoomId, RoomInfo>,
}

/// How to name one room in output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// `lobby` for a room, `@bob` for a direct conversation, `room 7` if unknown.
    pub label: String,
    /// The other user of a direct conversation.
    pub peer: Option<String>,
}

impl Place {
    /// The prefix for human output: `#lobby` or `@bob`.
    #[must_use]
    pub fn tag(&self) -> String {
        if self.peer.is_some() || self.label.starts_with("room ") {
            self.label.clone()
        } else {
            format!("#{}", self.label)
        }
    }

    /// `"direct"` or `"room"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.peer.is_some() {
            "direct"
        } else {
            "room"
        }
    }
}

impl RoomDirectory {
    /// An empty directory.
    #[must_use]
    pub fn new() -> RoomDirectory {
        RoomDirectory::default()
    }

    /// Adds or updates a room.
    pub fn insert(&mut self, info: RoomInfo) {
        self.rooms.insert(info.id, info);
    }

    /// Whether the room is known.
    #[must_use]
    pub fn contains(&self, room: RoomId) -> bool {
        self.rooms.contains_key(&room)
    }

    /// How to name `room`.
    #[must_use]
    pub fn place(&self, room: RoomId) -> Place {
        match self.rooms.get(&room) {
            Some(info) => place_of(info),
            None => Place {
                label: format!("room {room}"),
                peer: None,
            },
        }
    }
}

/// How to name a room from its info.
#[must_use]
pub fn place_of(info: &RoomInfo) -> Place {
    let peer = match &info.kind {
        RoomKind::Direct { peer } => Some(peer.to_string()),
        _ => None,
    };
    Place {
        label: info.label(),
        peer,
    }
}

/// A server timestamp as a UTC date and time (the epoch if out of range).
#[must_use]
pub fn utc(timestamp: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(timestamp.0).unwrap_or_default()
}

/// A server timestamp in the given time zone.
#[must_use]
pub fn local<Tz: TimeZone>(timestamp: Timestamp, tz: &Tz) -> DateTime<Tz> {
    utc(timestamp).with_timezone(tz)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use confide_client::{Content, Entry, Protection, Unreadable};
    use confide_crypto::payload::{Envelope, MessageId, Payload};
    use confide_proto::{
        MemberChange, Membership, RoomId, RoomInfo, RoomKind, RoomName, Seq, Timestamp, UserName,
    };

    /// 2026-11-23T21:19:56.123Z
    pub const TS: i64 = 1_795_468_796_123;

    /// A directory knowing the lobby and the direct conversation with bob.
    pub fn directory() -> super::RoomDirectory {
        let mut directory = super::RoomDirectory::new();
        directory.insert(lobby());
        directory.insert(direct());
        directory
    }

    pub fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    pub fn lobby() -> RoomInfo {
        RoomInfo {
            id: RoomId(1),
            name: Some(RoomName::lobby()),
            kind: RoomKind::Public,
            owner: None,
            membership: Membership::Joined,
            last_seq: Seq(12),
            member_count: 3,
            encryption: confide_proto::RoomEncryption::Mls,
            epoch: None,
        }
    }

    pub fn direct() -> RoomInfo {
        RoomInfo {
            id: RoomId(9),
            name: None,
            kind: RoomKind::Direct { peer: user("bob") },
            owner: None,
            membership: Membership::Joined,
            last_seq: Seq(2),
            member_count: 2,
            encryption: confide_proto::RoomEncryption::Mls,
            epoch: None,
        }
    }

    /// `#ops` (3), private, owned by alice, with a passphrase key: weaker than MLS.
    pub fn shared_room() -> RoomInfo {
        RoomInfo {
            id: RoomId(3),
            name: Some(RoomName::parse("ops").unwrap()),
            kind: RoomKind::Private,
            owner: Some(user("alice")),
            membership: Membership::Joined,
            last_seq: Seq(4),
            member_count: 2,
            encryption: confide_proto::RoomEncryption::SharedKey {
                salt: Some([7; 16]),
            },
            epoch: None,
        }
    }

    fn entry(room: u64, seq: u64, ts: i64, sender: &str, content: Content) -> Entry {
        Entry {
            room: RoomId(room),
            seq: Seq(seq),
            timestamp: Timestamp(ts),
            sender: user(sender),
            device: None,
            content,
        }
    }

    /// A message with any payload and protection.
    pub fn payload_message(
        room: u64,
        seq: u64,
        ts: i64,
        sender: &str,
        body: Payload,
        protection: Protection,
    ) -> Entry {
        let envelope = Envelope {
            id: MessageId::from_bytes([0xab; 16]),
            sent_at_ms: 0,
            body,
        };
        entry(
            room,
            seq,
            ts,
            sender,
            Content::Message {
                envelope,
                protection,
            },
        )
    }

    /// A text message, end-to-end encrypted with MLS.
    pub fn message(room: u64, seq: u64, ts: i64, sender: &str, text: &str) -> Entry {
        let body = Payload::Text {
            text: text.to_owned(),
        };
        payload_message(room, seq, ts, sender, body, Protection::Mls)
    }

    /// A text message of a shared-key room.
    pub fn shared_message(room: u64, seq: u64, ts: i64, sender: &str, text: &str) -> Entry {
        let body = Payload::Text {
            text: text.to_owned(),
        };
        payload_message(room, seq, ts, sender, body, Protection::SharedKey)
    }

    /// A message this device cannot show.
    pub fn unreadable_entry(
        room: u64,
        seq: u64,
        ts: i64,
        sender: &str,
        reason: Unreadable,
    ) -> Entry {
        entry(room, seq, ts, sender, Content::Unreadable(reason))
    }

    pub fn member_entry(room: u64, seq: u64, by: &str, who: &str, change: MemberChange) -> Entry {
        let content = Content::Member {
            user: user(who),
            change,
        };
        entry(room, seq, TS + 5000, by, content)
    }

    pub fn commit_entry(room: u64, seq: u64, by: &str, epoch: u64) -> Entry {
        let content = Content::Commit {
            epoch: confide_proto::Epoch(epoch),
        };
        entry(room, seq, TS + 5000, by, content)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn places_name_rooms_and_conversations() {
        let mut directory = RoomDirectory::new();
        directory.insert(lobby());
        directory.insert(direct());
        let lobby_place = directory.place(RoomId(1));
        assert_eq!(lobby_place.label, "lobby");
        assert_eq!(lobby_place.tag(), "#lobby");
        assert_eq!(lobby_place.kind(), "room");
        let direct_place = directory.place(RoomId(9));
        assert_eq!(direct_place.label, "@bob");
        assert_eq!(direct_place.tag(), "@bob");
        assert_eq!(direct_place.peer.as_deref(), Some("bob"));
        assert_eq!(direct_place.kind(), "direct");
        assert_eq!(directory.place(RoomId(4)).tag(), "room 4");
        assert!(!directory.contains(RoomId(4)));
    }

    #[test]
    fn timestamps_convert() {
        assert_eq!(
            utc(Timestamp(TS)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "2026-11-23T21:19:56.123Z"
        );
        assert_eq!(utc(Timestamp(i64::MAX)).timestamp(), 0);
    }
}
