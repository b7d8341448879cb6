//! Output for programs: one JSON object per line, each with a `"type"` field.
//!
//! The field names are a public contract documented in the README's "JSON output" section; change them only by
//! adding fields. Nothing here prints.

use super::{Line, Place, RoomDirectory, place_of, utc};
use chrono::SecondsFormat;
use confide_client::body::decode_text;
use confide_client::{ClientEvent, ConnectionState, SentAck};
use confide_proto::{
    EntryKind, LogEntry, MemberInfo, Membership, RoomId, RoomInfo, RoomKind, Timestamp,
};
use serde::Serialize;

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a str>,
    seq: u64,
    ts: String,
    ts_ms: i64,
    sender: String,
    text: String,
    live: bool,
}

#[derive(Serialize)]
struct Member<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    seq: u64,
    ts: String,
    ts_ms: i64,
    user: String,
    change: &'static str,
    by: String,
    live: bool,
}

/// An MLS commit (the room's encryption group moved to the next epoch).
#[derive(Serialize)]
struct Commit<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    seq: u64,
    ts: String,
    ts_ms: i64,
    epoch: u64,
    by: String,
    live: bool,
}

#[derive(Serialize)]
struct Presence<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    user: String,
    online: bool,
}

#[derive(Serialize)]
struct Room {
    #[serde(rename = "type")]
    tag: &'static str,
    room_id: u64,
    name: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    membership: &'static str,
    owner: Option<String>,
    members: u32,
    last_seq: u64,
}

#[derive(Serialize)]
struct Connection {
    #[serde(rename = "type")]
    tag: &'static str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_in_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct Tag {
    #[serde(rename = "type")]
    tag: &'static str,
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    user: String,
    online: bool,
    owner: bool,
}

#[derive(Serialize)]
struct Sent<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    seq: u64,
    ts: String,
    ts_ms: i64,
}

fn to_line<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail; an empty object keeps the output a
    // valid JSON line if it somehow did.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn rfc3339(timestamp: Timestamp) -> String {
    utc(timestamp).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A log entry as a `message` or `member` object.
#[must_use]
pub fn entry(directory: &RoomDirectory, entry: &LogEntry, live: bool) -> String {
    let place = directory.place(entry.room);
    match &entry.kind {
        EntryKind::Message { body } => to_line(&Message {
            tag: "message",
            room: &place.label,
            room_id: entry.room.0,
            kind: place.kind(),
            peer: place.peer.as_deref(),
            seq: entry.seq.0,
            ts: rfc3339(entry.timestamp),
            ts_ms: entry.timestamp.0,
            sender: entry.sender.to_string(),
            text: decode_text(body),
            live,
        }),
        EntryKind::Member { user, change } => to_line(&Member {
            tag: "member",
            room: &place.label,
            room_id: entry.room.0,
            seq: entry.seq.0,
            ts: rfc3339(entry.timestamp),
            ts_ms: entry.timestamp.0,
            user: user.to_string(),
            change: change.as_str(),
            by: entry.sender.to_string(),
            live,
        }),
        EntryKind::Commit { epoch, .. } => to_line(&Commit {
            tag: "commit",
            room: &place.label,
            room_id: entry.room.0,
            seq: entry.seq.0,
            ts: rfc3339(entry.timestamp),
            ts_ms: entry.timestamp.0,
            epoch: epoch.0,
            by: entry.sender.to_string(),
            live,
        }),
    }
}

/// One event as a JSON line, or `None` for events that have no JSON form (warnings go
/// to standard error as text).
#[must_use]
pub fn event(directory: &RoomDirectory, event: &ClientEvent) -> Option<Line> {
    let line = match event {
        ClientEvent::Entry {
            entry: log_entry,
            live,
        } => entry(directory, log_entry, *live),
        ClientEvent::Presence { room, user, online } => {
            let place = directory.place(*room);
            to_line(&Presence {
                tag: "presence",
                room: &place.label,
                room_id: room.0,
                user: user.to_string(),
                online: *online,
            })
        }
        ClientEvent::Room(info) => self::room(info),
        ClientEvent::Connection(state) => connection(state),
        ClientEvent::SyncComplete => to_line(&Tag {
            tag: "sync_complete",
        }),
        ClientEvent::Warning(message) => {
            return Some(Line::Err(format!("confide: warning: {message}")));
        }
        _ => return None,
    };
    Some(Line::Out(line))
}

fn connection(state: &ConnectionState) -> String {
    let (state, attempt, retry_in_ms, reason) = match state {
        ConnectionState::Connected => ("connected", None, None, None),
        ConnectionState::Reconnecting { attempt, retry_in } => (
            "reconnecting",
            Some(*attempt),
            Some(u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX)),
            None,
        ),
        ConnectionState::Disconnected { reason } => {
            ("disconnected", None, None, Some(reason.clone()))
        }
        _ => ("unknown", None, None, None),
    };
    to_line(&Connection {
        tag: "connection",
        state,
        attempt,
        retry_in_ms,
        reason,
    })
}

/// A room as a `room` object.
#[must_use]
pub fn room(info: &RoomInfo) -> String {
    let place = place_of(info);
    let kind = match info.kind {
        RoomKind::Public => "public",
        RoomKind::Private => "private",
        RoomKind::Direct { .. } => "direct",
    };
    let membership = match info.membership {
        Membership::Joined => "joined",
        Membership::Invited => "invited",
        Membership::None => "none",
    };
    to_line(&Room {
        tag: "room",
        room_id: info.id.0,
        name: place.label,
        kind,
        peer: place.peer,
        membership,
        owner: info.owner.as_ref().map(ToString::to_string),
        members: info.member_count,
        last_seq: info.last_seq.0,
    })
}

/// A member of `room` as a `user` object.
#[must_use]
pub fn member(place: &Place, room: RoomId, info: &MemberInfo) -> String {
    to_line(&User {
        tag: "user",
        room: &place.label,
        room_id: room.0,
        user: info.user.to_string(),
        online: info.online,
        owner: info.owner,
    })
}

/// The acknowledgement of a sent message as a `sent` object.
#[must_use]
pub fn sent(place: &Place, ack: &SentAck) -> String {
    to_line(&Sent {
        tag: "sent",
        room: &place.label,
        room_id: ack.room.0,
        seq: ack.seq.0,
        ts: rfc3339(ack.timestamp),
        ts_ms: ack.timestamp.0,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use confide_proto::{MemberChange, Seq};
    use std::time::Duration;

    #[test]
    fn message_objects() {
        assert_eq!(
            entry(
                &directory(),
                &message(1, 3, TS, "alice", "hi \"you\""),
                true
            ),
            r#"{"type":"message","room":"lobby","room_id":1,"kind":"room","seq":3,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"alice","text":"hi \"you\"","live":true}"#
        );
        assert_eq!(
            entry(&directory(), &message(9, 1, TS, "bob", "psst"), false),
            r#"{"type":"message","room":"@bob","room_id":9,"kind":"direct","peer":"bob","seq":1,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"bob","text":"psst","live":false}"#
        );
    }

    #[test]
    fn member_objects() {
        assert_eq!(
            entry(
                &directory(),
                &member_entry(1, 5, "alice", "carol", MemberChange::Kicked),
                true
            ),
            r#"{"type":"member","room":"lobby","room_id":1,"seq":5,"ts":"2026-11-23T21:20:01.123Z","ts_ms":1795468801123,"user":"carol","change":"kicked","by":"alice","live":true}"#
        );
    }

    #[test]
    fn event_objects() {
        let line = |event: ClientEvent| match super::event(&directory(), &event) {
            Some(Line::Out(text)) => text,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            line(ClientEvent::Presence {
                room: RoomId(1),
                user: user("dave"),
                online: false
            }),
            r#"{"type":"presence","room":"lobby","room_id":1,"user":"dave","online":false}"#
        );
        assert_eq!(
            line(ClientEvent::Connection(ConnectionState::Reconnecting {
                attempt: 2,
                retry_in: Duration::from_millis(812)
            })),
            r#"{"type":"connection","state":"reconnecting","attempt":2,"retry_in_ms":812}"#
        );
        assert_eq!(
            line(ClientEvent::Connection(ConnectionState::Connected)),
            r#"{"type":"connection","state":"connected"}"#
        );
        assert_eq!(
            line(ClientEvent::Connection(ConnectionState::Disconnected {
                reason: "closed".to_owned()
            })),
            r#"{"type":"connection","state":"disconnected","reason":"closed"}"#
        );
        assert_eq!(
            line(ClientEvent::SyncComplete),
            r#"{"type":"sync_complete"}"#
        );
        assert_eq!(line(ClientEvent::Room(lobby())), room(&lobby()));
        assert!(matches!(
            super::event(&directory(), &ClientEvent::Warning("w".to_owned())),
            Some(Line::Err(_))
        ));
    }

    #[test]
    fn room_user_and_sent_objects() {
        assert_eq!(
            room(&lobby()),
            r#"{"type":"room","room_id":1,"name":"lobby","kind":"public","membership":"joined","owner":null,"members":3,"last_seq":12}"#
        );
        assert_eq!(
            room(&direct()),
            r#"{"type":"room","room_id":9,"name":"@bob","kind":"direct","peer":"bob","membership":"joined","owner":null,"members":2,"last_seq":2}"#
        );
        let place = directory().place(RoomId(1));
        assert_eq!(
            member(
                &place,
                RoomId(1),
                &MemberInfo {
                    user: user("alice"),
                    owner: true,
                    online: true
                }
            ),
            r#"{"type":"user","room":"lobby","room_id":1,"user":"alice","online":true,"owner":true}"#
        );
        assert_eq!(
            sent(
                &place,
                &SentAck {
                    room: RoomId(1),
                    seq: Seq(13),
                    timestamp: Timestamp(TS)
                }
            ),
            r#"{"type":"sent","room":"lobby","room_id":1,"seq":13,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123}"#
        );
    }

    #[test]
    fn every_object_parses_and_has_a_type() {
        for text in [
            entry(&directory(), &message(1, 3, TS, "alice", "x"), true),
            room(&direct()),
        ] {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value["type"].is_string());
        }
    }
}
