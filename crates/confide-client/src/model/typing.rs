//! [`Typing`]: who is typing in each room right now.
//!
//! Typing notices are ephemeral end-to-end encrypted messages: a sender repeats "typing"
//! every few seconds while it types ([`crate::ClientHandle::typing`] throttles that) and
//! may say "stopped". Notices can be lost (they are never stored), so a notice only
//! counts for [`TYPING_SHOWN_FOR`]; a message from the same user, the user going offline
//! or leaving, or a reconnection ends it at once. The caller passes the current time in,
//! so that this model never reads the clock.

use crate::entry::Content;
use crate::event::{ClientEvent, ConnectionState};
use confide_proto::{MemberChange, RoomId, UserName};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How long one "typing" notice is shown without another one. Senders repeat theirs
/// more often than this (see `TYPING_REPEAT` in the client core).
pub const TYPING_SHOWN_FOR: Duration = Duration::from_secs(6);

/// Who is typing, per room, until when.
#[derive(Debug, Clone, Default)]
pub struct Typing {
    // Per room: canonical name -> (display name, shown until).
    rooms: HashMap<RoomId, BTreeMap<String, (UserName, Instant)>>,
}

impl Typing {
    /// Nobody is typing.
    #[must_use]
    pub fn new() -> Typing {
        Typing::default()
    }

    /// Takes one client event that arrived at `now`. Returns whether what
    /// [`Typing::typing`] shows may have changed.
    pub fn apply(&mut self, event: &ClientEvent, now: Instant) -> bool {
        match event {
            ClientEvent::Typing { room, user, active } => {
                if *active {
                    self.rooms
                        .entry(*room)
                        .or_default()
                        .insert(user.canonical(), (user.clone(), now + TYPING_SHOWN_FOR));
                    true
                } else {
                    self.stop(*room, user)
                }
            }
            ClientEvent::Entry { entry, .. } => match &entry.content {
                Content::Message { .. } | Content::Unreadable(_) => {
                    self.stop(entry.room, &entry.sender)
                }
                Content::Member { user, change } => match change {
                    MemberChange::Left | MemberChange::Kicked | MemberChange::Banned => {
                        self.stop(entry.room, user)
                    }
                    _ => false,
                },
                Content::Commit { .. } => false,
            },
            ClientEvent::Presence {
                room,
                user,
                online: false,
            } => self.stop(*room, user),
            ClientEvent::Connection(ConnectionState::Reconnecting { .. }) => {
                let had = !self.rooms.is_empty();
                self.rooms.clear();
                had
            }
            _ => false,
        }
    }

    /// Forgets notices that ran out by `now`. Returns whether any did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        self.rooms.retain(|_, users| {
            let before = users.len();
            users.retain(|_, (_, until)| *until > now);
            changed |= users.len() != before;
            !users.is_empty()
        });
        changed
    }

    /// Whether nobody is shown typing anywhere.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Who is typing in `room` at `now`, in name order.
    #[must_use]
    pub fn typing(&self, room: RoomId, now: Instant) -> Vec<&UserName> {
        self.rooms
            .get(&room)
            .map(|users| {
                users
                    .values()
                    .filter(|(_, until)| *until > now)
                    .map(|(user, _)| user)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A line for the bottom of a conversation ("bob is typing…"), if anyone is.
    #[must_use]
    pub fn describe(&self, room: RoomId, now: Instant) -> Option<String> {
        let names = self.typing(room, now);
        match names.as_slice() {
            [] => None,
            [one] => Some(format!("{one} is typing…")),
            [one, two] => Some(format!("{one} and {two} are typing…")),
            [one, two, three] => Some(format!("{one}, {two} and {three} are typing…")),
            [one, two, rest @ ..] => Some(format!(
                "{one}, {two} and {} others are typing…",
                rest.len()
            )),
        }
    }

    fn stop(&mut self, room: RoomId, user: &UserName) -> bool {
        let Some(users) = self.rooms.get_mut(&room) else {
            return false;
        };
        let removed = users.remove(&user.canonical()).is_some();
        if users.is_empty() {
            self.rooms.remove(&room);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{live, member, message, user};

    fn typing(room: u64, name: &str, active: bool) -> ClientEvent {
        ClientEvent::Typing {
            room: RoomId(room),
            user: user(name),
            active,
        }
    }

    fn names(model: &Typing, room: u64, now: Instant) -> Vec<String> {
        model
            .typing(RoomId(room), now)
            .into_iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_notice_shows_until_it_runs_out_or_is_repeated() {
        let start = Instant::now();
        let mut model = Typing::new();
        assert!(model.apply(&typing(1, "bob", true), start));
        assert_eq!(names(&model, 1, start), ["bob"]);
        assert!(names(&model, 2, start).is_empty(), "only in its room");
        let later = start + TYPING_SHOWN_FOR - Duration::from_secs(1);
        model.apply(&typing(1, "bob", true), later);
        assert_eq!(names(&model, 1, start + TYPING_SHOWN_FOR), ["bob"]);
        let end = later + TYPING_SHOWN_FOR;
        assert!(names(&model, 1, end).is_empty());
        assert!(model.expire(end));
        assert!(!model.expire(end), "nothing left to expire");
    }

    #[test]
    fn stopping_a_message_leaving_or_going_offline_ends_it() {
        let now = Instant::now();
        let mut model = Typing::new();
        for name in ["bob", "carol", "dave", "erin"] {
            model.apply(&typing(1, name, true), now);
        }
        assert_eq!(
            model.describe(RoomId(1), now).unwrap(),
            "bob, carol and 2 others are typing…"
        );
        assert!(
            model.apply(&typing(1, "BOB", false), now),
            "case-insensitive"
        );
        assert!(model.apply(&live(message(1, 5, 0, "carol", "hi")), now));
        assert!(model.apply(&live(member(1, 6, "dave", "dave", MemberChange::Left)), now));
        assert_eq!(model.describe(RoomId(1), now).unwrap(), "erin is typing…");
        let offline = ClientEvent::Presence {
            room: RoomId(1),
            user: user("erin"),
            online: false,
        };
        assert!(model.apply(&offline, now));
        assert_eq!(model.describe(RoomId(1), now), None);
        assert!(
            !model.apply(&typing(1, "zed", false), now),
            "nothing to stop"
        );
    }

    #[test]
    fn a_reconnection_forgets_everyone() {
        let now = Instant::now();
        let mut model = Typing::new();
        model.apply(&typing(1, "bob", true), now);
        model.apply(&typing(2, "carol", true), now);
        assert_eq!(model.describe(RoomId(2), now).unwrap(), "carol is typing…");
        let drop = ClientEvent::Connection(ConnectionState::Reconnecting {
            attempt: 1,
            retry_in: Duration::from_secs(1),
        });
        assert!(model.apply(&drop, now));
        assert!(names(&model, 1, now).is_empty());
        assert!(names(&model, 2, now).is_empty());
    }
}
