//! [`Timeline`]: per room, the lines of the conversation in log order.
//!
//! Lines are room log entries (messages and membership changes) keyed by their
//! sequence number, so an entry seen twice (live, in a sync and in a page of history)
//! is kept once, and older history loaded later lands in its place. Each room keeps at
//! most a fixed number of lines, dropping the oldest. Day separators are not stored:
//! [`Timeline::rows`] computes them when drawing, from the timestamps and a day
//! function the front end chooses (its time zone). This module must not decode bodies
//! any other way than through [`crate::body`], nor format text for people.

use crate::entry::{self, Content, Entry, Protection, Unreadable};
use crate::event::ClientEvent;
use confide_proto::{Epoch, MemberChange, Membership, RoomId, Seq, Timestamp, UserName};
use std::collections::{HashMap, VecDeque};

/// Lines kept per room unless [`Timeline::with_capacity`] says otherwise.
pub const DEFAULT_CAPACITY: usize = 5000;

/// One line of a conversation: a room log entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimelineLine {
    /// Its place in the room's log.
    pub seq: Seq,
    /// When the server stored it.
    pub timestamp: Timestamp,
    /// Who wrote it, or who made the membership change.
    pub sender: UserName,
    /// What it says.
    pub kind: LineKind,
}

/// What a [`TimelineLine`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineKind {
    /// A decrypted message: its text, or a summary of what it does.
    Message {
        /// The text, as sent (front ends neutralise control characters when showing it).
        text: String,
        /// How it was protected (shared-key rooms are weaker: front ends say so).
        protection: Protection,
    },
    /// A message this device cannot show, and why (attacks are shown loudly).
    Unreadable {
        /// Why.
        reason: Unreadable,
    },
    /// A membership change, made by the line's sender.
    Member {
        /// Whose membership changed.
        user: UserName,
        /// How.
        change: MemberChange,
    },
    /// An MLS commit: the room's encryption group moved to the next epoch.
    Commit {
        /// The epoch the commit was made in.
        epoch: Epoch,
    },
}

/// One row to draw, from [`Timeline::rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row<'a, D> {
    /// The lines below are from this day.
    Day(D),
    /// A line.
    Line(&'a TimelineLine),
}

impl TimelineLine {
    /// The line for a log entry.
    #[must_use]
    pub fn from_entry(entry: &Entry) -> TimelineLine {
        let kind = match &entry.content {
            Content::Message { protection, .. } => LineKind::Message {
                text: entry::summary(&entry.content),
                protection: *protection,
            },
            Content::Unreadable(reason) => LineKind::Unreadable {
                reason: reason.clone(),
            },
            Content::Member { user, change } => LineKind::Member {
                user: user.clone(),
                change: *change,
            },
            Content::Commit { epoch } => LineKind::Commit { epoch: *epoch },
        };
        TimelineLine {
            seq: entry.seq,
            timestamp: entry.timestamp,
            sender: entry.sender.clone(),
            kind,
        }
    }
}

/// The conversation lines of every room, bounded per room.
#[derive(Debug, Clone)]
pub struct Timeline {
    capacity: usize,
    rooms: HashMap<RoomId, RoomLines>,
}

#[derive(Debug, Clone, Default)]
struct RoomLines {
    // Strictly increasing by sequence number.
    lines: VecDeque<TimelineLine>,
    // The server said there is nothing older than the oldest line.
    complete: bool,
}

impl Default for Timeline {
    fn default() -> Timeline {
        Timeline::new()
    }
}

impl Timeline {
    /// An empty timeline keeping [`DEFAULT_CAPACITY`] lines per room.
    #[must_use]
    pub fn new() -> Timeline {
        Timeline::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty timeline keeping at most `capacity` lines per room (at least one).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Timeline {
        Timeline {
            capacity: capacity.max(1),
            rooms: HashMap::new(),
        }
    }

    /// Updates the timeline from a client event: an entry becomes a line (unless its
    /// room already has it); a [`ClientEvent::Room`] saying the user is no longer a
    /// member forgets the room's lines. Returns whether lines changed.
    pub fn apply(&mut self, event: &ClientEvent) -> bool {
        match event {
            ClientEvent::Entry { entry, .. } => self.insert(entry),
            ClientEvent::Room(info) if info.membership != Membership::Joined => {
                self.forget(info.id)
            }
            _ => false,
        }
    }

    /// Adds one entry in its place; returns `false` if the room already had it or it
    /// is older than what a full room keeps.
    pub fn insert(&mut self, entry: &Entry) -> bool {
        let capacity = self.capacity;
        let room = self.rooms.entry(entry.room).or_default();
        let at = match room.lines.back() {
            // The common case: a new entry after the newest line.
            Some(last) if entry.seq > last.seq => room.lines.len(),
            None => 0,
            Some(_) => match room.lines.binary_search_by_key(&entry.seq, |line| line.seq) {
                Ok(_) => return false,
                Err(at) => at,
            },
        };
        if at == 0 && room.lines.len() >= capacity {
            return false;
        }
        room.lines.insert(at, TimelineLine::from_entry(entry));
        if room.lines.len() > capacity {
            room.lines.pop_front();
            room.complete = false;
        }
        true
    }

    /// Adds a page of older entries (from [`crate::ClientHandle::history`]), in any
    /// order and for any rooms, skipping those already present. Returns how many lines
    /// were added.
    pub fn load_history<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> usize {
        let mut entries: Vec<&Entry> = entries.into_iter().collect();
        // Newest first, so that a page larger than the capacity keeps its newest part.
        entries.sort_by_key(|entry| std::cmp::Reverse((entry.room, entry.seq)));
        entries
            .into_iter()
            .filter(|entry| self.insert(entry))
            .count()
    }

    /// Records that a room has no entries older than its oldest line (the server
    /// answered a history request with `more: false`).
    pub fn mark_complete(&mut self, room: RoomId) {
        self.rooms.entry(room).or_default().complete = true;
    }

    /// Whether older history of the room cannot exist: the server said so, or the
    /// oldest line is the room's first entry.
    #[must_use]
    pub fn is_complete(&self, room: RoomId) -> bool {
        self.rooms.get(&room).is_some_and(|lines| {
            lines.complete || lines.lines.front().is_some_and(|line| line.seq <= Seq(1))
        })
    }

    /// Whether the room holds as many lines as it may (older history would be dropped).
    #[must_use]
    pub fn is_full(&self, room: RoomId) -> bool {
        self.len(room) >= self.capacity
    }

    /// Forgets a room's lines; returns whether it had any state.
    pub fn forget(&mut self, room: RoomId) -> bool {
        self.rooms.remove(&room).is_some()
    }

    /// A room's lines, oldest first.
    pub fn lines(&self, room: RoomId) -> impl DoubleEndedIterator<Item = &TimelineLine> + '_ {
        self.rooms
            .get(&room)
            .into_iter()
            .flat_map(|lines| lines.lines.iter())
    }

    /// How many lines a room holds.
    #[must_use]
    pub fn len(&self, room: RoomId) -> usize {
        self.rooms.get(&room).map_or(0, |lines| lines.lines.len())
    }

    /// Whether a room holds no lines.
    #[must_use]
    pub fn is_empty(&self, room: RoomId) -> bool {
        self.len(room) == 0
    }

    /// The oldest line's sequence number: what to pass as `before` for older history.
    #[must_use]
    pub fn oldest_seq(&self, room: RoomId) -> Option<Seq> {
        self.rooms.get(&room)?.lines.front().map(|line| line.seq)
    }

    /// The newest line's sequence number.
    #[must_use]
    pub fn newest_seq(&self, room: RoomId) -> Option<Seq> {
        self.rooms.get(&room)?.lines.back().map(|line| line.seq)
    }

    /// Whether the room has the entry with this sequence number.
    #[must_use]
    pub fn contains(&self, room: RoomId, seq: Seq) -> bool {
        self.rooms.get(&room).is_some_and(|lines| {
            lines
                .lines
                .binary_search_by_key(&seq, |line| line.seq)
                .is_ok()
        })
    }

    /// A room's lines with a [`Row::Day`] before the first line and wherever the day
    /// changes between two lines. `day_of` maps a timestamp to its day in the front
    /// end's time zone (for example a `chrono::NaiveDate`).
    pub fn rows<D: Clone + PartialEq>(
        &self,
        room: RoomId,
        day_of: impl Fn(Timestamp) -> D,
    ) -> Vec<Row<'_, D>> {
        let mut rows = Vec::with_capacity(self.len(room) + 1);
        let mut current: Option<D> = None;
        for line in self.lines(room) {
            let day = day_of(line.timestamp);
            if current.as_ref() != Some(&day) {
                rows.push(Row::Day(day.clone()));
                current = Some(day);
            }
            rows.push(Row::Line(line));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use confide_proto::{Membership, RoomKind};

    fn seqs(timeline: &Timeline, room: u64) -> Vec<u64> {
        timeline
            .lines(RoomId(room))
            .map(|line| line.seq.0)
            .collect()
    }

    #[test]
    fn entries_become_lines_in_log_order_once() {
        let mut timeline = Timeline::new();
        assert!(timeline.apply(&live(message(1, 5, TS, "alice", "five"))));
        assert!(timeline.apply(&live(message(1, 6, TS, "bob", "six"))));
        assert!(!timeline.apply(&live(message(1, 6, TS, "bob", "six"))));
        assert!(timeline.apply(&live(member(1, 7, "carol", "carol", MemberChange::Joined))));
        assert!(timeline.apply(&live(message(2, 1, TS, "dave", "elsewhere"))));
        assert!(!timeline.apply(&ClientEvent::SyncComplete));
        assert_eq!(seqs(&timeline, 1), [5, 6, 7]);
        assert_eq!(seqs(&timeline, 2), [1]);
        let lines: Vec<&TimelineLine> = timeline.lines(RoomId(1)).collect();
        assert_eq!(
            lines[0].kind,
            LineKind::Message {
                text: "five".to_owned(),
                protection: Protection::Mls,
            }
        );
        assert_eq!(lines[1].sender, user("bob"));
        assert_eq!(
            lines[2].kind,
            LineKind::Member {
                user: user("carol"),
                change: MemberChange::Joined
            }
        );
        assert_eq!(timeline.oldest_seq(RoomId(1)), Some(Seq(5)));
        assert_eq!(timeline.newest_seq(RoomId(1)), Some(Seq(7)));
        assert!(timeline.contains(RoomId(1), Seq(6)));
        assert!(!timeline.contains(RoomId(1), Seq(4)));
        assert_eq!(timeline.len(RoomId(3)), 0);
        assert!(timeline.is_empty(RoomId(3)));
        assert_eq!(timeline.oldest_seq(RoomId(3)), None);
    }

    #[test]
    fn history_is_prepended_out_of_order_without_duplicates() {
        let mut timeline = Timeline::new();
        for seq in 10..=12 {
            timeline.insert(&message(1, seq, TS, "alice", "live"));
        }
        // A page that overlaps what is there, shuffled, with a repeated entry.
        let page = [
            message(1, 9, TS, "bob", "nine"),
            message(1, 11, TS, "bob", "dup"),
            message(1, 7, TS, "bob", "seven"),
            message(1, 8, TS, "bob", "eight"),
            message(1, 7, TS, "bob", "seven again"),
            message(1, 12, TS, "bob", "dup"),
        ];
        assert_eq!(timeline.load_history(&page), 3);
        assert_eq!(seqs(&timeline, 1), [7, 8, 9, 10, 11, 12]);
        // The live line kept its text; the duplicate from history was ignored.
        let eleven = timeline.lines(RoomId(1)).nth(4).unwrap();
        assert_eq!(
            eleven.kind,
            LineKind::Message {
                text: "live".to_owned(),
                protection: Protection::Mls,
            }
        );
        assert_eq!(timeline.load_history(&page), 0);
        // A gap filled in the middle lands in its place.
        timeline.insert(&message(1, 20, TS, "alice", "later"));
        timeline.load_history(&[message(1, 15, TS, "bob", "middle")]);
        assert_eq!(seqs(&timeline, 1), [7, 8, 9, 10, 11, 12, 15, 20]);
    }

    #[test]
    fn completeness_from_the_server_or_the_first_entry() {
        let mut timeline = Timeline::new();
        timeline.insert(&message(1, 3, TS, "alice", "x"));
        assert!(!timeline.is_complete(RoomId(1)));
        timeline.mark_complete(RoomId(1));
        assert!(timeline.is_complete(RoomId(1)));
        timeline.load_history(&[message(2, 2, TS, "bob", "y")]);
        assert!(!timeline.is_complete(RoomId(2)));
        timeline.load_history(&[message(2, 1, TS, "bob", "first")]);
        assert!(timeline.is_complete(RoomId(2)));
        assert!(!timeline.is_complete(RoomId(5)));
    }

    #[test]
    fn rooms_are_bounded_keeping_the_newest() {
        let mut timeline = Timeline::with_capacity(3);
        for seq in 1..=5 {
            timeline.insert(&message(1, seq, TS, "alice", "x"));
        }
        assert_eq!(seqs(&timeline, 1), [3, 4, 5]);
        assert!(timeline.is_full(RoomId(1)));
        assert!(!timeline.is_complete(RoomId(1)));
        // Older history has no room left.
        assert_eq!(timeline.load_history(&[message(1, 2, TS, "bob", "old")]), 0);
        assert_eq!(seqs(&timeline, 1), [3, 4, 5]);
        // A page bigger than the capacity keeps its newest entries.
        let page: Vec<Entry> = (1..=10)
            .map(|seq| message(2, seq, TS, "bob", "p"))
            .collect();
        assert_eq!(timeline.load_history(&page), 3);
        assert_eq!(seqs(&timeline, 2), [8, 9, 10]);
        assert_eq!(Timeline::with_capacity(0).capacity, 1);
    }

    #[test]
    fn leaving_a_room_forgets_it() {
        let mut timeline = Timeline::new();
        timeline.insert(&message(4, 1, TS, "alice", "x"));
        let mut info = room(4, "dev", RoomKind::Public, Membership::Joined);
        assert!(!timeline.apply(&ClientEvent::Room(info.clone())));
        assert_eq!(timeline.len(RoomId(4)), 1);
        info.membership = Membership::None;
        assert!(timeline.apply(&ClientEvent::Room(info)));
        assert_eq!(timeline.len(RoomId(4)), 0);
    }

    #[test]
    fn day_separators_are_computed_from_timestamps() {
        let mut timeline = Timeline::new();
        timeline.load_history(&[
            message(1, 1, TS, "alice", "one"),
            message(1, 2, TS + 1000, "bob", "two"),
            message(1, 3, TS + DAY, "alice", "three"),
            message(1, 4, TS + 3 * DAY, "alice", "four"),
        ]);
        let day_of = |ts: Timestamp| ts.0.div_euclid(DAY);
        let rows = timeline.rows(RoomId(1), day_of);
        let shape: Vec<String> = rows
            .iter()
            .map(|row| match row {
                Row::Day(day) => format!("day {}", day - TS / DAY),
                Row::Line(line) => format!("line {}", line.seq),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "day 0", "line 1", "line 2", "day 1", "line 3", "day 3", "line 4"
            ]
        );
        // In a time zone three hours ahead, 21:19 UTC is already the next day.
        let ahead = |ts: Timestamp| (ts.0 + 3 * 3_600_000).div_euclid(DAY);
        assert_eq!(
            timeline.rows(RoomId(1), ahead).first(),
            Some(&Row::Day(TS / DAY + 1))
        );
        assert!(timeline.rows(RoomId(9), day_of).is_empty());
    }
}
