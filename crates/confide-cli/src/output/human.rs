//! Output for people: `#lobby [21:19:56] alice: hello`.
//!
//! Times are shown in the time zone the caller passes (the local one in the binary,
//! UTC in tests). Message text has control characters other than newline and tab
//! replaced, so a message cannot move the cursor or recolour the terminal. Nothing here
//! prints.

use super::{Line, RoomDirectory, local};
use chrono::TimeZone;
use confide_client::body::decode_text;
use confide_client::{ClientEvent, ConnectionState};
use confide_proto::{
    EntryKind, LogEntry, MemberChange, MemberInfo, Membership, RoomInfo, RoomKind,
};
use std::fmt::Display;

/// Formats for people in time zone `Tz`.
#[derive(Debug, Clone)]
pub struct Human<Tz> {
    /// Where times are shown.
    pub tz: Tz,
    /// Prefix lines with the room (`#lobby `) or conversation (`@bob `); off when the
    /// output is about one room only.
    pub show_room: bool,
}

impl<Tz: TimeZone> Human<Tz>
where
    Tz::Offset: Display,
{
    /// One log entry: `[21:19:56] alice: hello` or `[21:20:01] * bob joined`, with the
    /// room prefix if enabled.
    #[must_use]
    pub fn entry(&self, directory: &RoomDirectory, entry: &LogEntry) -> String {
        let time = local(entry.timestamp, &self.tz).format("%H:%M:%S");
        let prefix = self.prefix(directory, entry);
        match &entry.kind {
            EntryKind::Message { body } => format!(
                "{prefix}[{time}] {}: {}",
                entry.sender,
                sanitize(&decode_text(body))
            ),
            EntryKind::Member { user, change } => format!(
                "{prefix}[{time}] * {}",
                member_change(&entry.sender.to_string(), &user.to_string(), *change)
            ),
            EntryKind::Commit { epoch, .. } => format!(
                "{prefix}[{time}] * {} updated the room's encryption (epoch {epoch})",
                entry.sender
            ),
        }
    }

    /// One event as a line, or `None` if it is not shown to people.
    #[must_use]
    pub fn event(&self, directory: &RoomDirectory, event: &ClientEvent) -> Option<Line> {
        match event {
            ClientEvent::Entry { entry, .. } => Some(Line::Out(self.entry(directory, entry))),
            ClientEvent::Presence { room, user, online } => {
                let prefix = if self.show_room {
                    format!("{} ", directory.place(*room).tag())
                } else {
                    String::new()
                };
                let state = if *online { "online" } else { "offline" };
                Some(Line::Out(format!("{prefix}* {user} is {state}")))
            }
            ClientEvent::Room(info) if info.membership == Membership::Invited => Some(Line::Out(
                format!("* you are invited to {}", super::place_of(info).tag()),
            )),
            ClientEvent::Connection(state) => Some(Line::Out(connection(state))),
            ClientEvent::Warning(message) => {
                Some(Line::Err(format!("confide: warning: {message}")))
            }
            _ => None,
        }
    }

    /// A page of history, oldest first, with a `--- 2026-11-23 ---` line wherever the
    /// day changes between two entries.
    #[must_use]
    pub fn history(&self, directory: &RoomDirectory, entries: &[LogEntry]) -> Vec<String> {
        let mut lines = Vec::with_capacity(entries.len());
        let mut previous_day = None;
        for entry in entries {
            let day = local(entry.timestamp, &self.tz).date_naive();
            if previous_day.is_some_and(|previous| previous != day) {
                lines.push(format!("--- {} ---", day.format("%Y-%m-%d")));
            }
            previous_day = Some(day);
            lines.push(self.entry(directory, entry));
        }
        lines
    }

    fn prefix(&self, directory: &RoomDirectory, entry: &LogEntry) -> String {
        if self.show_room {
            format!("{} ", directory.place(entry.room).tag())
        } else {
            String::new()
        }
    }
}

/// `bob joined`, `carol was kicked by alice`.
#[must_use]
pub fn member_change(by: &str, user: &str, change: MemberChange) -> String {
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

/// `* connected`, `* reconnecting (attempt 2, in 0.8s)`.
#[must_use]
pub fn connection(state: &ConnectionState) -> String {
    match state {
        ConnectionState::Connected => "* connected".to_owned(),
        ConnectionState::Reconnecting { attempt, retry_in } => format!(
            "* reconnecting (attempt {attempt}, in {:.1}s)",
            retry_in.as_secs_f64()
        ),
        ConnectionState::Disconnected { reason } => format!("* disconnected: {reason}"),
        _ => "* connection state changed".to_owned(),
    }
}

/// One line of `confide rooms`: label, kind, membership, members, owner.
#[must_use]
pub fn room(info: &RoomInfo) -> String {
    let kind = match info.kind {
        RoomKind::Public => "public",
        RoomKind::Private => "private",
        RoomKind::Direct { .. } => "direct",
    };
    let membership = match info.membership {
        Membership::Joined => "joined",
        Membership::Invited => "invited",
        Membership::None => "-",
    };
    let owner = info
        .owner
        .as_ref()
        .map_or_else(|| "-".to_owned(), |owner| format!("owner {owner}"));
    let members = if info.member_count == 1 {
        "1 member".to_owned()
    } else {
        format!("{} members", info.member_count)
    };
    format!(
        "{:<24} {kind:<8} {membership:<8} {members:<12} {owner}",
        super::place_of(info).tag()
    )
    .trim_end()
    .to_owned()
}

/// One line of `confide users`: `* alice (owner)` when online, `  bob` when not.
#[must_use]
pub fn member(info: &MemberInfo) -> String {
    let marker = if info.online { '*' } else { ' ' };
    let owner = if info.owner { " (owner)" } else { "" };
    format!("{marker} {}{owner}", info.user)
}

/// Replaces control characters other than newline and tab, so that text from others
/// cannot send escape sequences to the terminal.
#[must_use]
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|ch| {
            if ch.is_control() && ch != '\n' && ch != '\t' {
                '\u{fffd}'
            } else {
                ch
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use chrono::{FixedOffset, Utc};
    use confide_proto::{RoomId, Seq};
    use std::time::Duration;

    fn human(show_room: bool) -> Human<Utc> {
        Human { tz: Utc, show_room }
    }

    #[test]
    fn messages_with_and_without_room_prefix() {
        let entry = message(1, 3, TS, "alice", "hello");
        assert_eq!(
            human(true).entry(&directory(), &entry),
            "#lobby [21:19:56] alice: hello"
        );
        assert_eq!(
            human(false).entry(&directory(), &entry),
            "[21:19:56] alice: hello"
        );
        let dm = message(9, 1, TS, "bob", "psst");
        assert_eq!(
            human(true).entry(&directory(), &dm),
            "@bob [21:19:56] bob: psst"
        );
    }

    #[test]
    fn times_use_the_given_zone() {
        let tz = FixedOffset::east_opt(2 * 3600).unwrap();
        let formatter = Human {
            tz,
            show_room: false,
        };
        assert_eq!(
            formatter.entry(&directory(), &message(1, 3, TS, "alice", "hi")),
            "[23:19:56] alice: hi"
        );
    }

    #[test]
    fn membership_changes() {
        let formatter = human(true);
        assert_eq!(
            formatter.entry(
                &directory(),
                &member_entry(1, 4, "bob", "bob", MemberChange::Joined)
            ),
            "#lobby [21:20:01] * bob joined"
        );
        assert_eq!(
            formatter.entry(
                &directory(),
                &member_entry(1, 5, "alice", "carol", MemberChange::Kicked)
            ),
            "#lobby [21:20:01] * carol was kicked by alice"
        );
        assert_eq!(
            member_change("alice", "alice", MemberChange::Created),
            "alice created the room"
        );
        assert_eq!(
            member_change("alice", "dave", MemberChange::Unbanned),
            "dave was unbanned by alice"
        );
    }

    #[test]
    fn control_characters_are_neutralised() {
        let entry = message(1, 3, TS, "mallory", "\u{1b}[2Jgotcha\r\nline two\tok");
        assert_eq!(
            human(false).entry(&directory(), &entry),
            "[21:19:56] mallory: \u{fffd}[2Jgotcha\u{fffd}\nline two\tok"
        );
    }

    #[test]
    fn events() {
        let formatter = human(true);
        let presence = ClientEvent::Presence {
            room: RoomId(1),
            user: user("dave"),
            online: true,
        };
        assert_eq!(
            formatter.event(&directory(), &presence),
            Some(Line::Out("#lobby * dave is online".to_owned()))
        );
        assert_eq!(
            human(false).event(&directory(), &presence),
            Some(Line::Out("* dave is online".to_owned()))
        );
        let reconnecting = ClientEvent::Connection(ConnectionState::Reconnecting {
            attempt: 2,
            retry_in: Duration::from_millis(812),
        });
        assert_eq!(
            formatter.event(&directory(), &reconnecting),
            Some(Line::Out("* reconnecting (attempt 2, in 0.8s)".to_owned()))
        );
        assert_eq!(
            formatter.event(
                &directory(),
                &ClientEvent::Connection(ConnectionState::Connected)
            ),
            Some(Line::Out("* connected".to_owned()))
        );
        assert_eq!(
            formatter.event(&directory(), &ClientEvent::Warning("x".to_owned())),
            Some(Line::Err("confide: warning: x".to_owned()))
        );
        assert_eq!(
            formatter.event(&directory(), &ClientEvent::SyncComplete),
            None
        );
        let mut invited = lobby();
        invited.membership = Membership::Invited;
        invited.name = Some(confide_proto::RoomName::parse("secret").unwrap());
        assert_eq!(
            formatter.event(&directory(), &ClientEvent::Room(invited)),
            Some(Line::Out("* you are invited to #secret".to_owned()))
        );
        assert_eq!(
            formatter.event(&directory(), &ClientEvent::Room(lobby())),
            None
        );
    }

    #[test]
    fn history_marks_day_changes() {
        let day = 86_400_000;
        let entries = [
            message(1, 1, TS, "alice", "one"),
            message(1, 2, TS + 1000, "bob", "two"),
            message(1, 3, TS + day, "alice", "three"),
        ];
        assert_eq!(
            human(false).history(&directory(), &entries),
            vec![
                "[21:19:56] alice: one".to_owned(),
                "[21:19:57] bob: two".to_owned(),
                "--- 2026-11-24 ---".to_owned(),
                "[21:19:56] alice: three".to_owned(),
            ]
        );
        assert!(human(false).history(&directory(), &[]).is_empty());
    }

    #[test]
    fn rooms_and_members() {
        assert_eq!(
            room(&lobby()),
            "#lobby                   public   joined   3 members    -"
        );
        let mut private = lobby();
        private.kind = RoomKind::Private;
        private.name = Some(confide_proto::RoomName::parse("ops").unwrap());
        private.owner = Some(user("alice"));
        private.membership = Membership::None;
        private.member_count = 1;
        private.last_seq = Seq(1);
        assert_eq!(
            room(&private),
            "#ops                     private  -        1 member     owner alice"
        );
        assert_eq!(
            room(&direct()),
            "@bob                     direct   joined   2 members    -"
        );
        let online = MemberInfo {
            user: user("alice"),
            owner: true,
            online: true,
        };
        assert_eq!(member(&online), "* alice (owner)");
        let offline = MemberInfo {
            user: user("bob"),
            owner: false,
            online: false,
        };
        assert_eq!(member(&offline), "  bob");
    }
}
