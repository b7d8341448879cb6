//! Output for people: `#lobby [21:19:56] alice: hello`.
//!
//! Times are shown in the time zone the caller passes (the local one in the binary,
//! UTC in tests). Message text has control characters other than newline and tab
//! replaced, so a message cannot move the cursor or recolour the terminal. Messages
//! that cannot be read show why, security problems loudly; shared-key messages and
//! rooms are labelled as weaker than MLS. Nothing here prints, and message text only
//! ever goes to standard output.

use super::{Line, RoomDirectory, local};
use chrono::TimeZone;
use confide_client::{ClientEvent, ConnectionState, Content, Entry, Protection, Unreadable};
use confide_proto::{MemberInfo, Membership, RoomEncryption, RoomInfo, RoomKind, UserName};
use std::fmt::Display;

/// Marks a message protected only by a shared key, before its sender's name.
pub const SHARED_KEY_MARK: &str = "[shared key, weaker]";

/// Marks a message rejected as an attack or a bug, before its reason.
pub const ALERT_MARK: &str = "\u{26a0}";

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
    /// One log entry: `[21:19:56] alice: hello`, `[21:19:57] bob: [sent before this
    /// device joined]` or `[21:20:01] * bob joined`, with the room prefix if enabled.
    #[must_use]
    pub fn entry(&self, directory: &RoomDirectory, entry: &Entry) -> String {
        let time = local(entry.timestamp, &self.tz).format("%H:%M:%S");
        let prefix = self.prefix(directory, entry);
        match &entry.content {
            Content::Message {
                protection,
                envelope,
            } => {
                let mark = match protection {
                    Protection::SharedKey => format!("{SHARED_KEY_MARK} "),
                    Protection::Mls => String::new(),
                };
                let fetch = match envelope.body {
                    confide_crypto::payload::Payload::File(_)
                    | confide_crypto::payload::Payload::Voice(_) => {
                        format!(" (confide get-file {})", envelope.id)
                    }
                    _ => String::new(),
                };
                format!(
                    "{prefix}[{time}] {mark}{}: {}{fetch}",
                    entry.sender,
                    sanitize(&confide_client::summary(&entry.content))
                )
            }
            Content::Unreadable(reason) => {
                format!("{prefix}[{time}] {}: {}", entry.sender, unreadable(reason))
            }
            Content::Member { user, change } => format!(
                "{prefix}[{time}] * {}",
                member_change(entry.sender.as_str(), user.as_str(), *change)
            ),
            Content::Commit { epoch } => format!(
                "{prefix}[{time}] * {} updated the room's encryption (epoch {epoch})",
                entry.sender
            ),
        }
    }

    /// One event as a line, or `None` if it is not shown to people.
    #[must_use]
    pub fn event(&self, directory: &RoomDirectory, event: &ClientEvent) -> Option<Line> {
        match event {
            // Receipts mark earlier messages; the command line shows no line for them.
            ClientEvent::Entry { entry, .. } if entry.is_receipt() => None,
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
            ClientEvent::IdentityChanged {
                user,
                key_changed,
                was_verified,
            } => {
                let level = if is_loud(*key_changed, *was_verified) {
                    "WARNING"
                } else {
                    "warning"
                };
                let text = identity_change(user, *key_changed, *was_verified);
                Some(Line::Err(format!("confide: {level}: {text}")))
            }
            _ => None,
        }
    }

    /// A page of history, oldest first, with a `--- 2026-11-23 ---` line wherever the
    /// day changes between two entries.
    #[must_use]
    pub fn history(&self, directory: &RoomDirectory, entries: &[Entry]) -> Vec<String> {
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

    fn prefix(&self, directory: &RoomDirectory, entry: &Entry) -> String {
        if self.show_room {
            format!("{} ", directory.place(entry.room).tag())
        } else {
            String::new()
        }
    }
}

/// Why a message cannot be shown, in brackets; attacks and bugs marked with a warning
/// sign so that they stand out: `⚠ [REJECTED: the ciphertext was tampered with]`.
#[must_use]
pub fn unreadable(reason: &Unreadable) -> String {
    let text = format!("[{}]", sanitize(&reason.to_string()));
    if reason.is_alert() {
        format!("{ALERT_MARK} {text}")
    } else {
        text
    }
}

/// Whether an identity change must be shown loudly: the identity key of a user who
/// had been verified changed (a reinstall, or someone impersonating them).
#[must_use]
pub fn is_loud(key_changed: bool, was_verified: bool) -> bool {
    key_changed && was_verified
}

/// What to tell people when `user` published a new identity key or device list.
#[must_use]
pub fn identity_change(user: &UserName, key_changed: bool, was_verified: bool) -> String {
    if is_loud(key_changed, was_verified) {
        format!(
            "{user}'s identity key changed; they were verified; compare safety numbers \
             again with `confide verify {user}`"
        )
    } else if key_changed {
        format!(
            "{user}'s identity key changed (a reinstall, or someone impersonating them); \
             compare safety numbers with `confide verify {user}`"
        )
    } else {
        format!("{user}'s list of devices changed")
    }
}

pub use confide_client::member_change;

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
    let mut line = format!(
        "{:<24} {kind:<8} {membership:<8} {members:<12} {owner}",
        super::place_of(info).tag()
    );
    // Only the weaker kind is called out: MLS is what every room has by default.
    if matches!(info.encryption, RoomEncryption::SharedKey { .. }) {
        line.push_str("  ");
        line.push_str(info.encryption.label());
    }
    line.trim_end().to_owned()
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
    use confide_proto::{MemberChange, RoomId, Seq};
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
    fn unreadable_messages_say_why_and_alerts_stand_out() {
        let formatter = human(true);
        let tampered = unreadable_entry(1, 6, TS, "mallory", Unreadable::Tampered);
        assert_eq!(
            formatter.entry(&directory(), &tampered),
            "#lobby [21:19:56] mallory: \u{26a0} [REJECTED: the ciphertext was tampered with]"
        );
        let early = unreadable_entry(1, 2, TS, "bob", Unreadable::BeforeJoin);
        assert_eq!(
            formatter.entry(&directory(), &early),
            "#lobby [21:19:56] bob: [sent before this device joined]"
        );
        assert_eq!(
            super::unreadable(&Unreadable::UnknownDevice { device: 0x2a }),
            "\u{26a0} [REJECTED: sent from device 000000000000002a, which is not on the \
             sender's signed device list]"
        );
        // A failure reason cannot reach the terminal as escape sequences either.
        assert_eq!(
            super::unreadable(&Unreadable::Failed("bad\u{1b}[0m".to_owned())),
            "[cannot decrypt: bad\u{fffd}[0m]"
        );
    }

    #[test]
    fn shared_key_messages_are_marked_as_weaker() {
        let entry = shared_message(3, 5, TS, "alice", "over fernet");
        let mut directory = directory();
        directory.insert(shared_room());
        assert_eq!(
            human(true).entry(&directory, &entry),
            "#ops [21:19:56] [shared key, weaker] alice: over fernet"
        );
        // Other payloads show as their summary.
        let reaction = payload_message(
            1,
            7,
            TS,
            "bob",
            confide_crypto::payload::Payload::Reaction {
                target: confide_crypto::payload::MessageId::from_bytes([1; 16]),
                emoji: "\u{1f44d}".to_owned(),
                add: true,
            },
            Protection::Mls,
        );
        assert_eq!(
            human(false).entry(&directory, &reaction),
            "[21:19:56] bob: (reacted \u{1f44d} to 01010101010101010101010101010101)"
        );
    }

    #[test]
    fn commits() {
        assert_eq!(
            human(true).entry(&directory(), &commit_entry(1, 8, "bob", 4)),
            "#lobby [21:20:01] * bob updated the room's encryption (epoch 4)"
        );
    }

    #[test]
    fn identity_changes_are_warnings_on_standard_error() {
        let formatter = human(true);
        let event = |key_changed, was_verified| {
            formatter.event(
                &directory(),
                &ClientEvent::IdentityChanged {
                    user: user("alice"),
                    key_changed,
                    was_verified,
                },
            )
        };
        assert_eq!(
            event(true, true),
            Some(Line::Err(
                "confide: WARNING: alice's identity key changed; they were verified; compare \
                 safety numbers again with `confide verify alice`"
                    .to_owned()
            ))
        );
        assert_eq!(
            event(true, false),
            Some(Line::Err(
                "confide: warning: alice's identity key changed (a reinstall, or someone \
                 impersonating them); compare safety numbers with `confide verify alice`"
                    .to_owned()
            ))
        );
        assert_eq!(
            event(false, true),
            Some(Line::Err(
                "confide: warning: alice's list of devices changed".to_owned()
            ))
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
        assert_eq!(
            room(&shared_room()),
            "#ops                     private  joined   2 members    owner alice  shared key \
             (weaker than MLS)"
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
