//! Output for programs: one JSON object per line, each with a `"type"` field.
//!
//! The field names are a public contract documented in the README's "JSON output" section; change them only by
//! adding fields. Nothing here prints.

use super::{Line, Place, RoomDirectory, place_of, utc};
use chrono::SecondsFormat;
use confide_client::{ClientEvent, ConnectionState, Content, Entry, Protection, SentAck};
use confide_proto::{
    MemberInfo, Membership, RoomEncryption, RoomId, RoomInfo, RoomKind, Timestamp,
};
use serde::Serialize;

/// What every log entry object starts with.
#[derive(Serialize)]
struct EntryHead<'a> {
    #[serde(rename = "type")]
    tag: &'static str,
    room: &'a str,
    room_id: u64,
    seq: u64,
    ts: String,
    ts_ms: i64,
    live: bool,
}

/// What message objects (readable or not) have besides the head.
#[derive(Serialize)]
struct MessageHead<'a> {
    #[serde(flatten)]
    head: EntryHead<'a>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a str>,
    sender: String,
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(flatten)]
    head: MessageHead<'a>,
    text: String,
    /// `"mls"` or `"shared_key"` (weaker).
    protection: &'static str,
    /// The id the sender gave the message, in hex (what replies and reactions name).
    message_id: String,
    /// What kind of message: `"text"`, `"reply"`, `"reaction"`...
    payload: &'static str,
    /// For a file or voice message, what it is (fetch it with `get-file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileInfo>,
}

/// A file or voice message's description.
#[derive(Serialize)]
struct FileInfo {
    /// The sender's name for it, made safe to save under.
    name: String,
    /// Bytes.
    size: u64,
    /// MIME type, as the sender stated it.
    mime: String,
    /// SHA-256 of the contents, hex.
    sha256: String,
    /// For a voice message, its length.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u32>,
}

fn file_info(body: &confide_crypto::payload::Payload) -> Option<FileInfo> {
    use confide_crypto::payload::Payload;
    let (file, duration_ms) = match body {
        Payload::File(file) => (file, None),
        Payload::Voice(voice) => (&voice.file, Some(voice.duration_ms)),
        _ => return None,
    };
    Some(FileInfo {
        name: confide_client::safe_file_name(&file.name),
        size: file.size,
        mime: file.mime.clone(),
        sha256: file.sha256.iter().map(|b| format!("{b:02x}")).collect(),
        duration_ms,
    })
}

/// A message this device cannot show.
#[derive(Serialize)]
struct Unreadable<'a> {
    #[serde(flatten)]
    head: MessageHead<'a>,
    reason: String,
    /// An attack or a bug (tampered, replayed, unknown device, not encrypted).
    alert: bool,
}

/// A user sharing a room published a new identity key or device list.
#[derive(Serialize)]
struct IdentityChanged {
    #[serde(rename = "type")]
    tag: &'static str,
    user: String,
    key_changed: bool,
    was_verified: bool,
}

#[derive(Serialize)]
struct Member<'a> {
    #[serde(flatten)]
    head: EntryHead<'a>,
    user: String,
    change: &'static str,
    by: String,
}

/// An MLS commit (the room's encryption group moved to the next epoch).
#[derive(Serialize)]
struct Commit<'a> {
    #[serde(flatten)]
    head: EntryHead<'a>,
    epoch: u64,
    by: String,
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
    /// `"mls"` or `"shared_key"` (weaker).
    encryption: &'static str,
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

/// A log entry as a `message`, `unreadable`, `member` or `commit` object.
#[must_use]
pub fn entry(directory: &RoomDirectory, entry: &Entry, live: bool) -> String {
    let place = directory.place(entry.room);
    let head = |tag| EntryHead {
        tag,
        room: &place.label,
        room_id: entry.room.0,
        seq: entry.seq.0,
        ts: rfc3339(entry.timestamp),
        ts_ms: entry.timestamp.0,
        live,
    };
    let message_head = |tag| MessageHead {
        head: head(tag),
        kind: place.kind(),
        peer: place.peer.as_deref(),
        sender: entry.sender.to_string(),
    };
    match &entry.content {
        Content::Message {
            envelope,
            protection,
        } => to_line(&Message {
            head: message_head("message"),
            text: confide_client::summary(&entry.content),
            protection: match protection {
                Protection::Mls => "mls",
                Protection::SharedKey => "shared_key",
            },
            message_id: envelope.id.to_string(),
            payload: envelope.body.kind(),
            file: file_info(&envelope.body),
        }),
        Content::Unreadable(reason) => to_line(&Unreadable {
            head: message_head("unreadable"),
            reason: reason.to_string(),
            alert: reason.is_alert(),
        }),
        Content::Member { user, change } => to_line(&Member {
            head: head("member"),
            user: user.to_string(),
            change: change.as_str(),
            by: entry.sender.to_string(),
        }),
        Content::Commit { epoch } => to_line(&Commit {
            head: head("commit"),
            epoch: epoch.0,
            by: entry.sender.to_string(),
        }),
    }
}

/// One event as a JSON line, or `None` for events that have no JSON form (warnings go
/// to standard error as text).
#[must_use]
pub fn event(directory: &RoomDirectory, event: &ClientEvent) -> Option<Line> {
    let line = match event {
        ClientEvent::Entry { entry, .. } if entry.is_receipt() => return None,
        ClientEvent::Entry {
            entry: room_entry,
            live,
        } => entry(directory, room_entry, *live),
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
        ClientEvent::IdentityChanged {
            user,
            key_changed,
            was_verified,
        } => to_line(&IdentityChanged {
            tag: "identity_changed",
            user: user.to_string(),
            key_changed: *key_changed,
            was_verified: *was_verified,
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
        encryption: match info.encryption {
            RoomEncryption::Mls => "mls",
            RoomEncryption::SharedKey { .. } => "shared_key",
        },
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
    use confide_client::Unreadable;
    use confide_proto::{MemberChange, Seq};
    use std::time::Duration;

    /// The same JSON object, whatever the order of its fields.
    fn same_json(got: &str, want: &str) {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(parse(got), parse(want), "{got}");
    }

    #[test]
    fn message_objects() {
        same_json(
            &entry(
                &directory(),
                &message(1, 3, TS, "alice", "hi \"you\""),
                true,
            ),
            r#"{"type":"message","room":"lobby","room_id":1,"kind":"room","seq":3,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"alice","text":"hi \"you\"","live":true,"protection":"mls","message_id":"abababababababababababababababab","payload":"text"}"#,
        );
        same_json(
            &entry(&directory(), &message(9, 1, TS, "bob", "psst"), false),
            r#"{"type":"message","room":"@bob","room_id":9,"kind":"direct","peer":"bob","seq":1,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"bob","text":"psst","live":false,"protection":"mls","message_id":"abababababababababababababababab","payload":"text"}"#,
        );
    }

    #[test]
    fn unreadable_and_shared_key_objects() {
        same_json(
            &entry(
                &directory(),
                &unreadable_entry(1, 6, TS, "mallory", Unreadable::Tampered),
                true,
            ),
            r#"{"type":"unreadable","room":"lobby","room_id":1,"kind":"room","seq":6,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"mallory","reason":"REJECTED: the ciphertext was tampered with","alert":true,"live":true}"#,
        );
        same_json(
            &entry(
                &directory(),
                &unreadable_entry(9, 1, TS, "bob", Unreadable::BeforeJoin),
                false,
            ),
            r#"{"type":"unreadable","room":"@bob","room_id":9,"kind":"direct","peer":"bob","seq":1,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"bob","reason":"sent before this device joined","alert":false,"live":false}"#,
        );
        let mut directory = directory();
        directory.insert(shared_room());
        same_json(
            &entry(
                &directory,
                &shared_message(3, 5, TS, "alice", "over fernet"),
                true,
            ),
            r#"{"type":"message","room":"ops","room_id":3,"kind":"room","seq":5,"ts":"2026-11-23T21:19:56.123Z","ts_ms":1795468796123,"sender":"alice","text":"over fernet","live":true,"protection":"shared_key","message_id":"abababababababababababababababab","payload":"text"}"#,
        );
        assert_eq!(
            room(&shared_room()),
            r#"{"type":"room","room_id":3,"name":"ops","kind":"private","membership":"joined","owner":"alice","members":2,"last_seq":4,"encryption":"shared_key"}"#
        );
    }

    #[test]
    fn commit_objects() {
        same_json(
            &entry(&directory(), &commit_entry(1, 8, "bob", 4), false),
            r#"{"type":"commit","room":"lobby","room_id":1,"seq":8,"ts":"2026-11-23T21:20:01.123Z","ts_ms":1795468801123,"epoch":4,"by":"bob","live":false}"#,
        );
    }

    #[test]
    fn member_objects() {
        same_json(
            &entry(
                &directory(),
                &member_entry(1, 5, "alice", "carol", MemberChange::Kicked),
                true,
            ),
            r#"{"type":"member","room":"lobby","room_id":1,"seq":5,"ts":"2026-11-23T21:20:01.123Z","ts_ms":1795468801123,"user":"carol","change":"kicked","by":"alice","live":true}"#,
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
        assert_eq!(
            line(ClientEvent::IdentityChanged {
                user: user("alice"),
                key_changed: true,
                was_verified: true
            }),
            r#"{"type":"identity_changed","user":"alice","key_changed":true,"was_verified":true}"#
        );
        assert!(matches!(
            super::event(&directory(), &ClientEvent::Warning("w".to_owned())),
            Some(Line::Err(_))
        ));
    }

    #[test]
    fn room_user_and_sent_objects() {
        assert_eq!(
            room(&lobby()),
            r#"{"type":"room","room_id":1,"name":"lobby","kind":"public","membership":"joined","owner":null,"members":3,"last_seq":12,"encryption":"mls"}"#
        );
        assert_eq!(
            room(&direct()),
            r#"{"type":"room","room_id":9,"name":"@bob","kind":"direct","peer":"bob","membership":"joined","owner":null,"members":2,"last_seq":2,"encryption":"mls"}"#
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
            entry(
                &directory(),
                &unreadable_entry(1, 4, TS, "bob", Unreadable::Replayed),
                true,
            ),
            entry(
                &directory(),
                &member_entry(1, 5, "bob", "bob", MemberChange::Left),
                true,
            ),
            room(&direct()),
        ] {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value["type"].is_string());
        }
    }
}
