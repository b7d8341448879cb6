//! Pure view models shared by every front end: [`RoomList`], [`Timeline`],
//! [`Presence`] and [`Typing`].
//!
//! Each model is plain data that a front end updates with `apply(&ClientEvent)` for
//! everything the [`crate::EventStream`] delivers, and with the answers to requests it
//! made itself (a page of history, a member list). They hold what a screen shows, so
//! the terminal UI and the desktop app draw the same state, and that state is tested
//! without a terminal or a window.
//!
//! This module must not do I/O, read the clock (time-dependent models take `now`), talk to the connection actor or depend
//! on any UI library. Showing times in a time zone and text for people is the front
//! end's job: the models keep server timestamps and decoded text.
//!
//! ```
//! use confide_client::model::{RoomList, Timeline};
//! use confide_client::ClientEvent;
//! use confide_proto::UserName;
//!
//! # fn demo(events: Vec<ClientEvent>) -> Result<(), confide_proto::NameError> {
//! let mut rooms = RoomList::new(UserName::parse("alice")?);
//! let mut timeline = Timeline::new();
//! for event in &events {
//!     rooms.apply(event);
//!     timeline.apply(event);
//! }
//! for room in rooms.rooms() {
//!     println!("{} ({} unread)", room.label(), room.unread);
//! }
//! # Ok(()) }
//! ```

mod presence;
mod room_list;
mod timeline;
mod typing;

pub use presence::{MemberState, Presence};
pub use room_list::{RoomList, RoomSummary};
pub use timeline::{
    DEFAULT_CAPACITY, LineKind, Media, Reaction, Receipt, Row, Timeline, TimelineLine,
};
pub use typing::{TYPING_SHOWN_FOR, Typing};

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::entry::{Content, Entry, Protection};
    use crate::event::ClientEvent;
    use confide_crypto::payload::{Envelope, MessageId, Payload};
    use confide_proto::{
        MemberChange, Membership, RoomId, RoomInfo, RoomKind, RoomName, Seq, Timestamp, UserName,
    };

    /// 2026-11-23T21:19:56.123Z
    pub const TS: i64 = 1_795_468_796_123;
    pub const DAY: i64 = 86_400_000;

    pub fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    pub fn room(id: u64, name: &str, kind: RoomKind, membership: Membership) -> RoomInfo {
        RoomInfo {
            id: RoomId(id),
            name: match kind {
                RoomKind::Direct { .. } => None,
                _ => Some(RoomName::parse(name).unwrap()),
            },
            kind,
            owner: None,
            membership,
            last_seq: Seq(0),
            member_count: 1,
            encryption: confide_proto::RoomEncryption::Mls,
            epoch: None,
        }
    }

    pub fn lobby() -> RoomInfo {
        room(1, "lobby", RoomKind::Public, Membership::Joined)
    }

    pub fn direct(id: u64, peer: &str) -> RoomInfo {
        room(
            id,
            "",
            RoomKind::Direct { peer: user(peer) },
            Membership::Joined,
        )
    }

    pub fn message(room: u64, seq: u64, ts: i64, sender: &str, text: &str) -> Entry {
        Entry {
            room: RoomId(room),
            seq: Seq(seq),
            timestamp: Timestamp(ts),
            sender: user(sender),
            device: None,
            content: Content::Message {
                envelope: Envelope {
                    id: MessageId::from_bytes([0; 16]),
                    sent_at_ms: 0,
                    body: Payload::Text {
                        text: text.to_owned(),
                    },
                },
                protection: Protection::Mls,
            },
        }
    }

    pub fn member(room: u64, seq: u64, by: &str, who: &str, change: MemberChange) -> Entry {
        Entry {
            room: RoomId(room),
            seq: Seq(seq),
            timestamp: Timestamp(TS),
            sender: user(by),
            device: None,
            content: Content::Member {
                user: user(who),
                change,
            },
        }
    }

    pub fn live(entry: Entry) -> ClientEvent {
        ClientEvent::Entry { entry, live: true }
    }
}
