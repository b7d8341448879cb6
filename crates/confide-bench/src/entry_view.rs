//! A borrowed view of a message delivery, decoded without allocating.
//!
//! A simulated user needs only the room, the sequence number and the body of each
//! message it receives. The full decode allocates the body and the sender's name and
//! validates the name, which cost the load generator more than the server spends on
//! the delivery; since both share the machine, that would understate the server. Any
//! other frame (or one this view does not match) takes the full decode.

use confide_proto::{DeviceId, RoomId, Seq, Timestamp};
use serde::Deserialize;

/// Where a message entry lives and its body.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// The room.
    pub room: RoomId,
    /// The entry's sequence number in the room.
    pub seq: Seq,
    /// The message body (the bench's stamp and padding).
    pub body: &'a [u8],
}

/// The encoding's tags of `ServerFrame::Event` and then `Event::Entry`.
const EVENT_ENTRY: [u8; 2] = [1, 0];

/// The same fields, in the same order, as `LogEntry`, borrowing what it can.
#[derive(Deserialize)]
struct Wire<'a> {
    room: RoomId,
    seq: Seq,
    _timestamp: Timestamp,
    #[serde(borrow)]
    _sender: &'a str,
    _device: Option<DeviceId>,
    #[serde(borrow)]
    kind: Kind<'a>,
}

/// `EntryKind` up to its first variant; any other kind fails and falls back.
#[derive(Deserialize)]
enum Kind<'a> {
    Message {
        #[serde(borrow)]
        body: &'a [u8],
    },
}

/// The message entry in a server frame's `payload`, if that is what it holds.
#[must_use]
pub fn message_entry(payload: &[u8]) -> Option<EntryView<'_>> {
    let rest = payload.strip_prefix(&EVENT_ENTRY)?;
    let wire: Wire<'_> = postcard::from_bytes(rest).ok()?;
    let Kind::Message { body } = wire.kind;
    Some(EntryView {
        room: wire.room,
        seq: wire.seq,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use confide_proto::frame::FrameDecoder;
    use confide_proto::{EntryKind, Event, LogEntry, MemberChange, ServerFrame, UserName};

    fn payload(frame: &ServerFrame) -> Vec<u8> {
        let mut buf = BytesMut::new();
        confide_proto::encode_frame(frame, 1 << 20, &mut buf).unwrap();
        FrameDecoder::new(1 << 20)
            .next_payload(&mut buf)
            .unwrap()
            .unwrap()
            .to_vec()
    }

    fn entry(kind: EntryKind, device: Option<DeviceId>) -> LogEntry {
        LogEntry {
            room: RoomId(70_000),
            seq: Seq(1_234_567),
            timestamp: Timestamp(1_790_000_000_000),
            sender: UserName::parse("Zoë_sender").unwrap(),
            device,
            kind,
        }
    }

    #[test]
    fn a_message_entry_reads_the_same_as_the_full_decode() {
        for device in [None, Some(DeviceId(u64::MAX))] {
            let body = (0..=255u8).cycle().take(700).collect::<Vec<u8>>();
            let frame = ServerFrame::Event(Event::Entry(entry(
                EntryKind::Message { body: body.clone() },
                device,
            )));
            let bytes = payload(&frame);
            assert_eq!(ServerFrame::from_payload(&bytes).unwrap(), frame);
            assert_eq!(
                message_entry(&bytes),
                Some(EntryView {
                    room: RoomId(70_000),
                    seq: Seq(1_234_567),
                    body: &body,
                })
            );
        }
    }

    #[test]
    fn other_frames_take_the_full_decode() {
        let member = ServerFrame::Event(Event::Entry(entry(
            EntryKind::Member {
                user: UserName::parse("someone").unwrap(),
                change: MemberChange::Joined,
            },
            None,
        )));
        assert_eq!(message_entry(&payload(&member)), None);
        let presence = ServerFrame::Event(Event::Presence {
            room: RoomId(1),
            user: UserName::parse("someone").unwrap(),
            online: true,
        });
        assert_eq!(message_entry(&payload(&presence)), None);
        assert_eq!(message_entry(&[]), None);
        assert_eq!(message_entry(&EVENT_ENTRY), None);
    }
}
