//! [`Presence`]: per room, its members and who of them is online.
//!
//! A room's members are seeded from [`crate::ClientHandle::members`] and then kept up
//! to date by presence events and by membership entries in the room's log. Presence
//! is not replayed after a reconnection, so the model forgets everything when the
//! connection comes back and the front end seeds again the rooms it shows
//! ([`Presence::is_known`] says which). This module must not request anything itself.

use crate::entry::{Content, Entry};
use crate::event::{ClientEvent, ConnectionState};
use confide_proto::{MemberChange, MemberInfo, Membership, RoomId, UserName};
use std::collections::{BTreeMap, HashMap};

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberState {
    /// Who.
    pub user: UserName,
    /// Whether they own the room.
    pub owner: bool,
    /// Whether they have a connection open.
    pub online: bool,
}

/// The members of the rooms the front end has seeded, with their online state.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    // Per room, members by canonical name (so the order ignores case).
    rooms: HashMap<RoomId, BTreeMap<String, MemberState>>,
}

impl Presence {
    /// Knows no room yet.
    #[must_use]
    pub fn new() -> Presence {
        Presence::default()
    }

    /// Sets a room's members from the server's list, replacing what was known.
    pub fn seed(&mut self, room: RoomId, members: &[MemberInfo]) {
        let members = members
            .iter()
            .map(|member| {
                (
                    member.user.canonical(),
                    MemberState {
                        user: member.user.clone(),
                        owner: member.owner,
                        online: member.online,
                    },
                )
            })
            .collect();
        self.rooms.insert(room, members);
    }

    /// Whether the room's members are known (it was seeded since the last
    /// reconnection).
    #[must_use]
    pub fn is_known(&self, room: RoomId) -> bool {
        self.rooms.contains_key(&room)
    }

    /// Updates from a client event, for rooms that were seeded:
    /// - [`ClientEvent::Presence`] sets a member online or offline;
    /// - a membership entry adds a member who joined or created the room (online if the
    ///   entry arrived live) and removes one who left, was kicked or banned;
    /// - [`ClientEvent::Room`] saying the user is no longer a member forgets the room;
    /// - [`ConnectionState::Connected`] (after a reconnection) forgets every room,
    ///   since presence changes while away were not delivered.
    pub fn apply(&mut self, event: &ClientEvent) {
        match event {
            ClientEvent::Presence { room, user, online } => {
                if let Some(members) = self.rooms.get_mut(room) {
                    members
                        .entry(user.canonical())
                        .and_modify(|member| member.online = *online)
                        .or_insert_with(|| MemberState {
                            user: user.clone(),
                            owner: false,
                            online: *online,
                        });
                }
            }
            ClientEvent::Entry { entry, live } => self.note_entry(entry, *live),
            ClientEvent::Room(info) if info.membership != Membership::Joined => {
                self.forget(info.id);
            }
            ClientEvent::Connection(ConnectionState::Connected) => self.rooms.clear(),
            _ => {}
        }
    }

    /// Forgets a room's members.
    pub fn forget(&mut self, room: RoomId) {
        self.rooms.remove(&room);
    }

    /// A room's members, ordered by name ignoring case.
    pub fn members(&self, room: RoomId) -> impl Iterator<Item = &MemberState> + '_ {
        self.rooms.get(&room).into_iter().flat_map(BTreeMap::values)
    }

    /// A room's online members, ordered by name ignoring case.
    pub fn online(&self, room: RoomId) -> impl Iterator<Item = &MemberState> + '_ {
        self.members(room).filter(|member| member.online)
    }

    /// Whether `user` is an online member of the room.
    #[must_use]
    pub fn is_online(&self, room: RoomId, user: &UserName) -> bool {
        self.rooms
            .get(&room)
            .and_then(|members| members.get(&user.canonical()))
            .is_some_and(|member| member.online)
    }

    fn note_entry(&mut self, entry: &Entry, live: bool) {
        let Content::Member { user, change } = &entry.content else {
            return;
        };
        let Some(members) = self.rooms.get_mut(&entry.room) else {
            return;
        };
        match change {
            MemberChange::Joined | MemberChange::Created => {
                // Joining takes a connection, so a live join means online; a join
                // replayed from a sync says nothing about now.
                members
                    .entry(user.canonical())
                    .or_insert_with(|| MemberState {
                        user: user.clone(),
                        owner: *change == MemberChange::Created,
                        online: live,
                    });
            }
            MemberChange::Left | MemberChange::Kicked | MemberChange::Banned => {
                members.remove(&user.canonical());
            }
            MemberChange::Invited | MemberChange::Unbanned => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use confide_proto::RoomKind;
    use std::time::Duration;

    fn names<'a>(members: impl Iterator<Item = &'a MemberState>) -> Vec<String> {
        members.map(|member| member.user.to_string()).collect()
    }

    fn seeded() -> Presence {
        let mut presence = Presence::new();
        presence.seed(
            RoomId(1),
            &[
                MemberInfo {
                    user: user("carol"),
                    owner: false,
                    online: false,
                },
                MemberInfo {
                    user: user("Bob"),
                    owner: true,
                    online: true,
                },
                MemberInfo {
                    user: user("alice"),
                    owner: false,
                    online: true,
                },
            ],
        );
        presence
    }

    #[test]
    fn seeded_members_are_ordered_ignoring_case() {
        let presence = seeded();
        assert!(presence.is_known(RoomId(1)));
        assert!(!presence.is_known(RoomId(2)));
        assert_eq!(
            names(presence.members(RoomId(1))),
            ["alice", "Bob", "carol"]
        );
        assert_eq!(names(presence.online(RoomId(1))), ["alice", "Bob"]);
        assert!(presence.members(RoomId(1)).nth(1).unwrap().owner);
        assert!(presence.is_online(RoomId(1), &user("BOB")));
        assert!(!presence.is_online(RoomId(1), &user("carol")));
        assert_eq!(presence.online(RoomId(2)).count(), 0);
    }

    #[test]
    fn presence_events_update_seeded_rooms_only() {
        let mut presence = seeded();
        presence.apply(&ClientEvent::Presence {
            room: RoomId(1),
            user: user("carol"),
            online: true,
        });
        presence.apply(&ClientEvent::Presence {
            room: RoomId(1),
            user: user("bob"),
            online: false,
        });
        presence.apply(&ClientEvent::Presence {
            room: RoomId(2),
            user: user("dave"),
            online: true,
        });
        assert_eq!(names(presence.online(RoomId(1))), ["alice", "carol"]);
        assert!(!presence.is_known(RoomId(2)));
    }

    #[test]
    fn membership_entries_add_and_remove_members() {
        let mut presence = seeded();
        presence.apply(&live(member(1, 5, "dave", "dave", MemberChange::Joined)));
        presence.apply(&ClientEvent::Entry {
            entry: member(1, 6, "erin", "erin", MemberChange::Joined),
            live: false,
        });
        presence.apply(&live(member(1, 7, "Bob", "carol", MemberChange::Kicked)));
        presence.apply(&live(member(1, 8, "Bob", "frank", MemberChange::Invited)));
        presence.apply(&live(member(1, 9, "alice", "alice", MemberChange::Left)));
        // A join replayed for someone already known keeps their state.
        presence.apply(&ClientEvent::Entry {
            entry: member(1, 2, "Bob", "Bob", MemberChange::Joined),
            live: false,
        });
        presence.apply(&live(member(3, 1, "gus", "gus", MemberChange::Joined)));
        assert_eq!(names(presence.members(RoomId(1))), ["Bob", "dave", "erin"]);
        assert_eq!(names(presence.online(RoomId(1))), ["Bob", "dave"]);
        assert!(!presence.is_known(RoomId(3)));
    }

    #[test]
    fn losing_membership_or_reconnecting_forgets() {
        let mut presence = seeded();
        presence.seed(RoomId(2), &[]);
        let mut info = room(2, "dev", RoomKind::Public, Membership::Joined);
        presence.apply(&ClientEvent::Room(info.clone()));
        assert!(presence.is_known(RoomId(2)));
        info.membership = Membership::None;
        presence.apply(&ClientEvent::Room(info));
        assert!(!presence.is_known(RoomId(2)));
        presence.apply(&ClientEvent::Connection(ConnectionState::Reconnecting {
            attempt: 1,
            retry_in: Duration::from_millis(200),
        }));
        assert!(presence.is_known(RoomId(1)));
        presence.apply(&ClientEvent::Connection(ConnectionState::Connected));
        assert!(!presence.is_known(RoomId(1)));
    }
}
