//! A conversation as a text log, in the `[HH:MM:SS] name: text` form of the original
//! programs: one line per message as it reads now (edits applied, deleted messages left
//! out), with a line for each new day.

use chrono::{DateTime, NaiveDate, TimeZone};
use confide_client::Entry;
use confide_client::model::{LineKind, Timeline};
use confide_proto::{RoomId, Timestamp};

/// The text of the log for `entries` of `room` (oldest first), with times in `tz`.
#[must_use]
pub fn text_log<Tz: TimeZone>(room: RoomId, title: &str, entries: &[Entry], tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut timeline = Timeline::with_capacity(entries.len().max(1));
    timeline.load_history(entries);
    let local = |timestamp: Timestamp| -> DateTime<Tz> {
        let utc = DateTime::<chrono::Utc>::from_timestamp_millis(timestamp.0).unwrap_or_default();
        tz.from_utc_datetime(&utc.naive_utc())
    };
    let mut out = format!("Conversation: {title}\n");
    let mut day: Option<NaiveDate> = None;
    for line in timeline.lines(room) {
        let LineKind::Message {
            text,
            deleted: false,
            ..
        } = &line.kind
        else {
            continue;
        };
        let at = local(line.timestamp);
        if day != Some(at.date_naive()) {
            day = Some(at.date_naive());
            out.push_str(&format!("--- {} ---\n", at.format("%Y-%m-%d")));
        }
        // One line per message, as the originals wrote them.
        let text = text.replace(['\r', '\n'], " ");
        out.push_str(&format!(
            "[{}] {}: {text}\n",
            at.format("%H:%M:%S"),
            line.sender
        ));
    }
    out
}

/// A file name for a conversation's log: its label with anything unusual replaced.
#[must_use]
pub fn file_name(label: &str) -> String {
    let safe: String = label
        .chars()
        .map(|ch| {
            if ch.is_alphanumeric() || ch == '-' || ch == '_' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    format!("confide-{safe}.txt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use confide_client::{Content, Protection};
    use confide_crypto::payload::{Envelope, MessageId, Payload};
    use confide_proto::{Seq, UserName};

    fn entry(seq: u64, ms: i64, sender: &str, body: Payload) -> Entry {
        Entry {
            room: RoomId(1),
            seq: Seq(seq),
            timestamp: Timestamp(ms),
            sender: UserName::parse(sender).unwrap(),
            device: None,
            content: Content::Message {
                envelope: Envelope {
                    id: MessageId::from_bytes([u8::try_from(seq).unwrap(); 16]),
                    sent_at_ms: 0,
                    body,
                },
                protection: Protection::Mls,
            },
        }
    }

    #[test]
    fn messages_as_they_read_now_with_day_lines() {
        // 2026-11-23T21:19:56Z and the next day.
        let first = 1_795_468_796_000;
        let next_day = first + 24 * 3600 * 1000;
        let entries = [
            entry(
                1,
                first,
                "alice",
                Payload::Text {
                    text: "hi\nthere".to_owned(),
                },
            ),
            entry(
                2,
                first + 1000,
                "bob",
                Payload::Text {
                    text: "tpyo".to_owned(),
                },
            ),
            entry(
                3,
                first + 2000,
                "bob",
                Payload::Edit {
                    target: MessageId::from_bytes([2; 16]),
                    text: "typo".to_owned(),
                },
            ),
            entry(
                4,
                next_day,
                "carol",
                Payload::Text {
                    text: "oops".to_owned(),
                },
            ),
            entry(
                5,
                next_day + 1,
                "carol",
                Payload::Delete {
                    target: MessageId::from_bytes([4; 16]),
                },
            ),
            entry(
                6,
                next_day + 2,
                "alice",
                Payload::Text {
                    text: "bye".to_owned(),
                },
            ),
        ];
        let log = text_log(RoomId(1), "lobby", &entries, &chrono::Utc);
        assert_eq!(
            log,
            "Conversation: lobby\n\
             --- 2026-11-23 ---\n\
             [21:19:56] alice: hi there\n\
             [21:19:57] bob: typo\n\
             --- 2026-11-24 ---\n\
             [21:19:56] alice: bye\n"
        );
        assert_eq!(file_name("@bob/../x"), "confide-_bob____x.txt");
    }
}
