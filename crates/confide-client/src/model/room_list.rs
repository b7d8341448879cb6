//! [`RoomList`]: the rooms and direct conversations a user is in or invited to, in
//! display order, with unread counts, last activity and the current selection.
//!
//! The order is fixed so that every front end shows the same list: the lobby first,
//! then rooms by name (ignoring case), then direct conversations by the peer's name.
//! Rooms the user has neither joined nor been invited to (public rooms one could join,
//! rooms one left or was removed from) are not in the list. This module must not
//! decide what a front end does when the selection changes; it only reports it.

use crate::entry::Entry;
use crate::event::ClientEvent;
use confide_proto::{Membership, RoomId, RoomInfo, RoomKind, RoomName, Timestamp, UserName};

/// One room of a [`RoomList`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomSummary {
    /// What the server says about the room (name, kind, owner, membership).
    pub info: RoomInfo,
    /// Messages from others that arrived while the room was not selected.
    pub unread: u32,
    /// The time of the newest entry seen in the room, if any was seen.
    pub last_activity: Option<Timestamp>,
}

impl RoomSummary {
    /// The room's id.
    #[must_use]
    pub fn id(&self) -> RoomId {
        self.info.id
    }

    /// `lobby` for a room, `@bob` for a direct conversation.
    #[must_use]
    pub fn label(&self) -> String {
        self.info.label()
    }

    /// The other user of a direct conversation.
    #[must_use]
    pub fn peer(&self) -> Option<&UserName> {
        match &self.info.kind {
            RoomKind::Direct { peer } => Some(peer),
            _ => None,
        }
    }

    /// Whether this is a direct conversation.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.peer().is_some()
    }

    /// Whether the user is invited but has not joined yet.
    #[must_use]
    pub fn is_invitation(&self) -> bool {
        self.info.membership == Membership::Invited
    }

    /// Whether the user is a member (can read and write).
    #[must_use]
    pub fn is_joined(&self) -> bool {
        self.info.membership == Membership::Joined
    }

    /// Whether this is the lobby, the room every account belongs to.
    #[must_use]
    pub fn is_lobby(&self) -> bool {
        !self.is_direct()
            && self
                .info
                .name
                .as_ref()
                .is_some_and(|name| name.same_as(&RoomName::lobby()))
    }

    /// Lobby, then rooms by name, then conversations by peer; the id breaks ties.
    fn sort_key(&self) -> (u8, String, RoomId) {
        let (group, name) = if self.is_lobby() {
            (0, String::new())
        } else if let Some(peer) = self.peer() {
            (2, peer.canonical())
        } else {
            let name = self.info.name.as_ref().map(RoomName::canonical);
            (1, name.unwrap_or_default())
        };
        (group, name, self.info.id)
    }
}

/// The user's rooms in display order, with unread counts and a selection.
#[derive(Debug, Clone)]
pub struct RoomList {
    me: UserName,
    // Always sorted by `RoomSummary::sort_key`.
    rooms: Vec<RoomSummary>,
    selected: Option<RoomId>,
}

impl RoomList {
    /// An empty list for the user `me` (whose own messages never count as unread).
    #[must_use]
    pub fn new(me: UserName) -> RoomList {
        RoomList {
            me,
            rooms: Vec::new(),
            selected: None,
        }
    }

    /// Updates the list from a client event: a [`ClientEvent::Room`] adds, updates or
    /// removes a room; a [`ClientEvent::Entry`] updates its room's last activity and,
    /// for a message from someone else in a room that is not selected, its unread count.
    /// Entries of rooms not in the list are ignored (the client announces a room before
    /// its entries).
    pub fn apply(&mut self, event: &ClientEvent) {
        match event {
            ClientEvent::Room(info) => self.insert(info.clone()),
            ClientEvent::Entry { entry, .. } => self.note_entry(entry),
            _ => {}
        }
    }

    /// Adds or updates a room, keeping its unread count. A room whose membership is
    /// [`Membership::None`] is removed; if it was selected, the first room is selected
    /// instead.
    pub fn insert(&mut self, info: RoomInfo) {
        if info.membership == Membership::None {
            self.remove(info.id);
            return;
        }
        match self.rooms.iter_mut().find(|room| room.info.id == info.id) {
            Some(room) => room.info = info,
            None => self.rooms.push(RoomSummary {
                info,
                unread: 0,
                last_activity: None,
            }),
        }
        self.rooms.sort_by_cached_key(RoomSummary::sort_key);
    }

    /// Replaces the list with a complete listing (the answer to
    /// [`crate::ClientHandle::rooms`]): rooms missing from it are removed, the others
    /// keep their unread counts.
    pub fn replace(&mut self, rooms: impl IntoIterator<Item = RoomInfo>) {
        let rooms: Vec<RoomInfo> = rooms.into_iter().collect();
        let gone: Vec<RoomId> = self
            .rooms
            .iter()
            .map(RoomSummary::id)
            .filter(|id| !rooms.iter().any(|info| info.id == *id))
            .collect();
        for id in gone {
            self.remove(id);
        }
        for info in rooms {
            self.insert(info);
        }
    }

    /// Removes a room; if it was selected, the first room is selected instead.
    pub fn remove(&mut self, room: RoomId) {
        self.rooms.retain(|summary| summary.info.id != room);
        if self.selected == Some(room) {
            self.selected = self.rooms.first().map(RoomSummary::id);
        }
    }

    /// The rooms in display order.
    #[must_use]
    pub fn rooms(&self) -> &[RoomSummary] {
        &self.rooms
    }

    /// One room.
    #[must_use]
    pub fn get(&self, room: RoomId) -> Option<&RoomSummary> {
        self.rooms.iter().find(|summary| summary.info.id == room)
    }

    /// Where a room is in display order.
    #[must_use]
    pub fn position(&self, room: RoomId) -> Option<usize> {
        self.rooms
            .iter()
            .position(|summary| summary.info.id == room)
    }

    /// How many rooms the list holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The room with this name (ignoring case and normalization).
    #[must_use]
    pub fn find_room(&self, name: &RoomName) -> Option<&RoomSummary> {
        self.rooms.iter().find(|summary| {
            !summary.is_direct() && summary.info.name.as_ref().is_some_and(|n| n.same_as(name))
        })
    }

    /// The direct conversation with `peer`.
    #[must_use]
    pub fn find_direct(&self, peer: &UserName) -> Option<&RoomSummary> {
        self.rooms
            .iter()
            .find(|summary| summary.peer().is_some_and(|p| p.same_as(peer)))
    }

    /// The lobby, if the list has it.
    #[must_use]
    pub fn lobby(&self) -> Option<&RoomSummary> {
        self.rooms.iter().find(|summary| summary.is_lobby())
    }

    /// Selects a room and marks it read. Returns `false` (and changes nothing) if the
    /// room is not in the list.
    pub fn select(&mut self, room: RoomId) -> bool {
        let Some(summary) = self.rooms.iter_mut().find(|s| s.info.id == room) else {
            return false;
        };
        summary.unread = 0;
        self.selected = Some(room);
        true
    }

    /// The selected room's id.
    #[must_use]
    pub fn selected_id(&self) -> Option<RoomId> {
        self.selected
    }

    /// The selected room.
    #[must_use]
    pub fn selected(&self) -> Option<&RoomSummary> {
        self.selected.and_then(|room| self.get(room))
    }

    /// Selects the next room in display order (wrapping around; the first if none was
    /// selected) and returns it.
    pub fn select_next(&mut self) -> Option<RoomId> {
        let next = match self.selected.and_then(|room| self.position(room)) {
            Some(index) => (index + 1) % self.rooms.len(),
            None => 0,
        };
        self.select_index(next)
    }

    /// Selects the previous room in display order (wrapping around; the last if none
    /// was selected) and returns it.
    pub fn select_previous(&mut self) -> Option<RoomId> {
        let count = self.rooms.len();
        let previous = match self.selected.and_then(|room| self.position(room)) {
            Some(index) => (index + count - 1) % count,
            None => count.checked_sub(1)?,
        };
        self.select_index(previous)
    }

    /// Unread messages over all rooms.
    #[must_use]
    pub fn total_unread(&self) -> u32 {
        self.rooms
            .iter()
            .fold(0u32, |sum, room| sum.saturating_add(room.unread))
    }

    fn select_index(&mut self, index: usize) -> Option<RoomId> {
        let room = self.rooms.get(index)?.info.id;
        self.select(room);
        Some(room)
    }

    fn note_entry(&mut self, entry: &Entry) {
        let selected = self.selected == Some(entry.room);
        let Some(summary) = self.rooms.iter_mut().find(|s| s.info.id == entry.room) else {
            return;
        };
        if entry.seq > summary.info.last_seq {
            summary.info.last_seq = entry.seq;
        }
        if summary
            .last_activity
            .is_none_or(|last| entry.timestamp > last)
        {
            summary.last_activity = Some(entry.timestamp);
        }
        if !selected && entry.is_new_message() && !entry.sender.same_as(&self.me) {
            summary.unread = summary.unread.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use confide_proto::{MemberChange, Seq};

    fn labels(list: &RoomList) -> Vec<String> {
        list.rooms().iter().map(RoomSummary::label).collect()
    }

    fn list() -> RoomList {
        let mut list = RoomList::new(user("alice"));
        list.insert(direct(9, "zed"));
        list.insert(room(4, "Zoo", RoomKind::Public, Membership::Joined));
        list.insert(direct(8, "Bob"));
        list.insert(room(3, "dev", RoomKind::Private, Membership::Invited));
        list.insert(lobby());
        list.insert(room(5, "apple", RoomKind::Public, Membership::Joined));
        list
    }

    #[test]
    fn lobby_first_then_rooms_by_name_then_conversations() {
        let list = list();
        assert_eq!(
            labels(&list),
            ["lobby", "apple", "dev", "Zoo", "@Bob", "@zed"]
        );
        assert!(list.rooms()[0].is_lobby());
        assert!(list.get(RoomId(3)).unwrap().is_invitation());
        assert!(!list.get(RoomId(3)).unwrap().is_joined());
        assert_eq!(
            list.get(RoomId(8)).unwrap().peer().map(UserName::as_str),
            Some("Bob")
        );
        assert_eq!(
            list.find_room(&RoomName::parse("ZOO").unwrap())
                .unwrap()
                .id(),
            RoomId(4)
        );
        assert_eq!(list.find_direct(&user("bob")).unwrap().id(), RoomId(8));
        assert!(list.find_direct(&user("carol")).is_none());
        assert_eq!(list.lobby().unwrap().id(), RoomId(1));
    }

    #[test]
    fn unread_counts_messages_from_others_in_unselected_rooms() {
        let mut list = list();
        assert!(list.select(RoomId(1)));
        list.apply(&live(message(1, 1, TS, "bob", "in the selected room")));
        list.apply(&live(message(4, 1, TS, "bob", "one")));
        list.apply(&live(message(4, 2, TS + 5, "alice", "my own")));
        list.apply(&live(message(4, 3, TS + 9, "Bob", "two")));
        list.apply(&live(member(4, 4, "carol", "carol", MemberChange::Joined)));
        list.apply(&ClientEvent::Entry {
            entry: message(8, 1, TS, "bob", "caught up"),
            live: false,
        });
        list.apply(&live(message(77, 1, TS, "bob", "unknown room")));
        assert_eq!(list.get(RoomId(1)).unwrap().unread, 0);
        let zoo = list.get(RoomId(4)).unwrap();
        assert_eq!(zoo.unread, 2);
        assert_eq!(zoo.info.last_seq, Seq(4));
        assert_eq!(zoo.last_activity, Some(Timestamp(TS + 9)));
        assert_eq!(list.get(RoomId(8)).unwrap().unread, 1);
        assert_eq!(list.total_unread(), 3);

        assert!(list.select(RoomId(4)));
        assert_eq!(list.get(RoomId(4)).unwrap().unread, 0);
        assert_eq!(list.selected_id(), Some(RoomId(4)));
        assert_eq!(list.total_unread(), 1);
        assert!(!list.select(RoomId(77)));
        assert_eq!(list.selected_id(), Some(RoomId(4)));
    }

    #[test]
    fn updates_keep_unread_and_removal_moves_the_selection() {
        let mut list = list();
        list.select(RoomId(5));
        list.apply(&live(message(3, 1, TS, "bob", "x")));
        list.apply(&live(message(4, 1, TS, "bob", "x")));
        let mut zoo = list.get(RoomId(4)).unwrap().info.clone();
        zoo.member_count = 7;
        list.apply(&ClientEvent::Room(zoo));
        assert_eq!(list.get(RoomId(4)).unwrap().unread, 1);
        assert_eq!(list.get(RoomId(4)).unwrap().info.member_count, 7);

        // Accepting an invitation updates the room in place.
        let mut dev = list.get(RoomId(3)).unwrap().info.clone();
        dev.membership = Membership::Joined;
        list.apply(&ClientEvent::Room(dev));
        assert!(list.get(RoomId(3)).unwrap().is_joined());

        // Leaving (or being kicked from) the selected room selects the lobby.
        let mut apple = list.get(RoomId(5)).unwrap().info.clone();
        apple.membership = Membership::None;
        list.apply(&ClientEvent::Room(apple));
        assert!(list.get(RoomId(5)).is_none());
        assert_eq!(list.selected_id(), Some(RoomId(1)));
        assert_eq!(list.len(), 5);

        // A complete listing drops rooms it does not mention.
        let keep: Vec<RoomInfo> = list
            .rooms()
            .iter()
            .filter(|room| room.id() != RoomId(9))
            .map(|room| room.info.clone())
            .collect();
        list.replace(keep);
        assert_eq!(labels(&list), ["lobby", "dev", "Zoo", "@Bob"]);
        assert_eq!(list.get(RoomId(4)).unwrap().unread, 1);
    }

    #[test]
    fn next_and_previous_wrap_around() {
        let mut list = list();
        assert_eq!(list.select_next(), Some(RoomId(1)));
        assert_eq!(list.select_next(), Some(RoomId(5)));
        assert_eq!(list.select_previous(), Some(RoomId(1)));
        assert_eq!(list.select_previous(), Some(RoomId(9)));
        assert_eq!(list.select_next(), Some(RoomId(1)));

        let mut fresh = RoomList::new(user("alice"));
        assert_eq!(fresh.select_previous(), None);
        assert_eq!(fresh.select_next(), None);
        fresh.insert(lobby());
        assert_eq!(fresh.select_previous(), Some(RoomId(1)));
        fresh.remove(RoomId(1));
        assert_eq!(fresh.selected_id(), None);
        assert!(fresh.is_empty());
    }
}
