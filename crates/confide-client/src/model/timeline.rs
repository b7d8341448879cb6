//! [`Timeline`]: per room, the lines of the conversation in log order.
//!
//! Lines are room log entries (messages and membership changes) keyed by their
//! sequence number, so an entry seen twice (live, in a sync and in a page of history)
//! is kept once, and older history loaded later lands in its place. Each room keeps at
//! most a fixed number of lines, dropping the oldest. Day separators are not stored:
//! [`Timeline::rows`] computes them when drawing, from the timestamps and a day
//! function the front end chooses (its time zone).
//!
//! Edits, deletions and reactions are messages too, but they change an earlier message
//! instead of adding a line: the target line shows the newest edit by its own sender,
//! "deleted" after its sender deleted it, and the reactions with who made them. One that
//! arrives before its target is loaded waits (bounded) until the target comes. Receipts
//! and typing notices add no line. This module must not format text for people.

use crate::entry::{self, Content, Entry, Protection, Unreadable};
use crate::event::ClientEvent;
use confide_crypto::payload::{FilePointer, MessageId, Payload, ReceiptKind, VoicePointer};
use confide_proto::{Epoch, MemberChange, Membership, RoomId, Seq, Timestamp, UserName};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Changes (edits, deletions, reactions) kept per room while their target is not
/// loaded; the oldest are dropped beyond this.
const PENDING_CHANGES: usize = 2000;

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
    // Which changes were applied (so that each applies once and the newest wins).
    applied: Applied,
}

/// A reaction on a message: the emoji and who reacted, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// Who reacted with it.
    pub users: Vec<UserName>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Applied {
    edit: Option<Seq>,
    // Emoji -> canonical user -> (user, the change's place, added).
    reactions: BTreeMap<String, BTreeMap<String, (UserName, Seq, bool)>>,
}

/// How far one of this user's messages got, from the receipts of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Receipt {
    /// The server stored it.
    Sent,
    /// Someone's device received it.
    Delivered,
    /// Someone read it.
    Read,
}

/// A change one message makes to another.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Edit(String),
    Delete,
    React { emoji: String, add: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Modifier {
    seq: Seq,
    sender: UserName,
    change: Change,
}

/// What a [`TimelineLine`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineKind {
    /// A decrypted message: its text, or a summary of what it does.
    Message {
        /// The text, as sent or last edited (empty once deleted; front ends neutralise
        /// control characters when showing it).
        text: String,
        /// How it was protected (shared-key rooms are weaker: front ends say so).
        protection: Protection,
        /// The id its sender gave it (what replies, edits and reactions name).
        id: MessageId,
        /// The message it replies to.
        reply_to: Option<MessageId>,
        /// Whether its sender edited it.
        edited: bool,
        /// Whether its sender deleted it.
        deleted: bool,
        /// Its reactions, in the order they were first made.
        reactions: Vec<Reaction>,
        /// The file or voice message it carries (its text is then a summary); `None`
        /// once deleted. Boxed: most lines have none, and a pointer is large.
        media: Option<Box<Media>>,
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

/// A file or voice message that a line carries, for the front end to show and fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Media {
    /// A file: its name, size and type, and where and how to download it.
    File(FilePointer),
    /// A voice message: its audio file, length and waveform.
    Voice(VoicePointer),
}

impl Media {
    /// The encrypted file on the server: the file itself, or the voice message's audio.
    #[must_use]
    pub fn file(&self) -> &FilePointer {
        match self {
            Media::File(file) => file,
            Media::Voice(voice) => &voice.file,
        }
    }
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
            Content::Message {
                protection,
                envelope,
            } => {
                let (text, reply_to) = match &envelope.body {
                    Payload::Text { text } => (text.clone(), None),
                    Payload::Reply { to, text } => (text.clone(), Some(*to)),
                    _ => (entry::summary(&entry.content), None),
                };
                let media = match &envelope.body {
                    Payload::File(file) => Some(Box::new(Media::File(file.clone()))),
                    Payload::Voice(voice) => Some(Box::new(Media::Voice(voice.clone()))),
                    _ => None,
                };
                LineKind::Message {
                    text,
                    protection: *protection,
                    id: envelope.id,
                    reply_to,
                    edited: false,
                    deleted: false,
                    reactions: Vec::new(),
                    media,
                }
            }
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
            applied: Applied::default(),
        }
    }

    /// The message id, for a message line.
    #[must_use]
    pub fn message_id(&self) -> Option<MessageId> {
        match &self.kind {
            LineKind::Message { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Applies a change from a later message; returns whether the line changed. Edits
    /// and deletions count only from the line's own sender; of several, the newest (by
    /// log order) wins, whatever order they arrive in.
    fn modify(&mut self, modifier: &Modifier) -> bool {
        let same_sender = modifier.sender.canonical() == self.sender.canonical();
        let LineKind::Message {
            text,
            edited,
            deleted,
            reactions,
            media,
            ..
        } = &mut self.kind
        else {
            return false;
        };
        match &modifier.change {
            Change::Edit(new_text) => {
                if !same_sender || *deleted || self.applied.edit >= Some(modifier.seq) {
                    return false;
                }
                self.applied.edit = Some(modifier.seq);
                new_text.clone_into(text);
                *edited = true;
            }
            Change::Delete => {
                if !same_sender || *deleted {
                    return false;
                }
                *deleted = true;
                text.clear();
                reactions.clear();
                *media = None;
                self.applied.reactions.clear();
            }
            Change::React { emoji, add } => {
                if *deleted {
                    return false;
                }
                let users = self.applied.reactions.entry(emoji.clone()).or_default();
                let key = modifier.sender.canonical();
                if users
                    .get(&key)
                    .is_some_and(|(_, seq, _)| *seq >= modifier.seq)
                {
                    return false;
                }
                users.insert(key, (modifier.sender.clone(), modifier.seq, *add));
                *reactions = Self::reactions(&self.applied);
            }
        }
        true
    }

    fn reactions(applied: &Applied) -> Vec<Reaction> {
        let mut found: Vec<(Seq, Reaction)> = applied
            .reactions
            .iter()
            .filter_map(|(emoji, users)| {
                let present: Vec<&(UserName, Seq, bool)> =
                    users.values().filter(|(_, _, added)| *added).collect();
                let first = present.iter().map(|(_, seq, _)| *seq).min()?;
                Some((
                    first,
                    Reaction {
                        emoji: emoji.clone(),
                        users: present.iter().map(|(user, _, _)| user.clone()).collect(),
                    },
                ))
            })
            .collect();
        found.sort_by_key(|(first, _)| *first);
        found.into_iter().map(|(_, reaction)| reaction).collect()
    }
}

/// What an entry does to earlier messages, if it is an edit, a deletion or a reaction
/// (`Some(None)`: a message that adds no line, like a receipt).
fn modifier_of(entry: &Entry) -> Option<Option<(MessageId, Modifier)>> {
    let Content::Message { envelope, .. } = &entry.content else {
        return None;
    };
    if let Payload::Receipt { .. } = &envelope.body {
        return Some(None);
    }
    let (target, change) = match &envelope.body {
        Payload::Edit { target, text } => (*target, Change::Edit(text.clone())),
        Payload::Delete { target } => (*target, Change::Delete),
        Payload::Reaction { target, emoji, add } => (
            *target,
            Change::React {
                emoji: emoji.clone(),
                add: *add,
            },
        ),
        Payload::Receipt { .. } | Payload::Typing { .. } => return Some(None),
        _ => return None,
    };
    Some(Some((
        target,
        Modifier {
            seq: entry.seq,
            sender: entry.sender.clone(),
            change,
        },
    )))
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
    // Changes whose target is not loaded, oldest first.
    pending: VecDeque<(MessageId, Modifier)>,
    // Per reader (canonical name): the newest line they confirmed delivered, and read.
    receipts: HashMap<String, (Option<Seq>, Option<Seq>)>,
}

impl RoomLines {
    /// Applies a change to its target, or keeps it until the target comes.
    fn change(&mut self, target: MessageId, modifier: Modifier) -> bool {
        if let Some(line) = self
            .lines
            .iter_mut()
            .rev()
            .find(|line| line.message_id() == Some(target))
        {
            return line.modify(&modifier);
        }
        if !self.pending.contains(&(target, modifier.clone())) {
            self.pending.push_back((target, modifier));
            if self.pending.len() > PENDING_CHANGES {
                self.pending.pop_front();
            }
        }
        false
    }

    /// Records what a reader confirmed: every line up to the newest one named (read
    /// implies delivered). Receipts naming lines not loaded are ignored.
    fn receipt(&mut self, reader: &UserName, kind: ReceiptKind, up_to: &[MessageId]) -> bool {
        let newest = self
            .lines
            .iter()
            .filter(|line| line.message_id().is_some_and(|id| up_to.contains(&id)))
            .map(|line| line.seq)
            .max();
        let Some(newest) = newest else {
            return false;
        };
        let (delivered, read) = self.receipts.entry(reader.canonical()).or_default();
        let mut changed = false;
        if *delivered < Some(newest) {
            *delivered = Some(newest);
            changed = true;
        }
        if kind == ReceiptKind::Read && *read < Some(newest) {
            *read = Some(newest);
            changed = true;
        }
        changed
    }

    /// Applies the waiting changes of a line just added.
    fn settle(&mut self, at: usize) {
        let Some(id) = self.lines.get(at).and_then(TimelineLine::message_id) else {
            return;
        };
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = self
            .pending
            .drain(..)
            .partition(|(target, _)| *target == id);
        self.pending = rest;
        if let Some(line) = self.lines.get_mut(at) {
            for (_, modifier) in &mine {
                line.modify(modifier);
            }
        }
    }
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
        if let Content::Message { envelope, .. } = &entry.content
            && let Payload::Receipt { kind, up_to } = &envelope.body
        {
            return room.receipt(&entry.sender, *kind, up_to);
        }
        match modifier_of(entry) {
            Some(Some((target, modifier))) => return room.change(target, modifier),
            Some(None) => return false,
            None => {}
        }
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
        room.settle(at);
        if room.lines.len() > capacity {
            room.lines.pop_front();
            room.complete = false;
        }
        true
    }

    /// How far a line got: read or delivered if any other member said so for it or a
    /// later line, else sent. Meant for this user's own messages.
    #[must_use]
    pub fn receipt(&self, room: RoomId, line: &TimelineLine) -> Receipt {
        let Some(lines) = self.rooms.get(&room) else {
            return Receipt::Sent;
        };
        let me = line.sender.canonical();
        let mut best = Receipt::Sent;
        for (reader, (delivered, read)) in &lines.receipts {
            if *reader == me {
                continue;
            }
            if read.is_some_and(|seq| seq >= line.seq) {
                return Receipt::Read;
            }
            if delivered.is_some_and(|seq| seq >= line.seq) {
                best = Receipt::Delivered;
            }
        }
        best
    }

    /// The newest message line of someone other than `me` in a room: what a read
    /// receipt names.
    #[must_use]
    pub fn newest_from_others(&self, room: RoomId, me: &UserName) -> Option<&TimelineLine> {
        self.rooms
            .get(&room)?
            .lines
            .iter()
            .rev()
            .find(|line| line.message_id().is_some() && line.sender.canonical() != me.canonical())
    }

    /// The message line with this id in a room, if loaded.
    #[must_use]
    pub fn find(&self, room: RoomId, id: MessageId) -> Option<&TimelineLine> {
        self.rooms
            .get(&room)?
            .lines
            .iter()
            .rev()
            .find(|line| line.message_id() == Some(id))
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
        assert!(matches!(
            &lines[0].kind,
            LineKind::Message {
                text,
                protection: Protection::Mls,
                edited: false,
                deleted: false,
                ..
            } if text == "five"
        ));
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
        assert!(matches!(&eleven.kind, LineKind::Message { text, .. } if text == "live"));
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

    fn with(room: u64, seq: u64, sender: &str, body: Payload) -> Entry {
        let mut entry = message(room, seq, TS, sender, "");
        if let Content::Message { envelope, .. } = &mut entry.content {
            envelope.id = MessageId::from_bytes([u8::try_from(seq).unwrap(); 16]);
            envelope.body = body;
        }
        entry
    }

    fn id(seq: u8) -> MessageId {
        MessageId::from_bytes([seq; 16])
    }

    fn text(body: &str) -> Payload {
        Payload::Text {
            text: body.to_owned(),
        }
    }

    /// (text, edited, deleted, reactions as "emoji:user+user") of a room's line.
    fn shown(timeline: &Timeline, room: u64, target: u8) -> (String, bool, bool, Vec<String>) {
        let line = timeline.find(RoomId(room), id(target)).unwrap();
        let LineKind::Message {
            text,
            edited,
            deleted,
            reactions,
            ..
        } = &line.kind
        else {
            panic!("not a message");
        };
        let reactions = reactions
            .iter()
            .map(|r| {
                let users: Vec<&str> = r.users.iter().map(UserName::as_str).collect();
                format!("{}:{}", r.emoji, users.join("+"))
            })
            .collect();
        (text.clone(), *edited, *deleted, reactions)
    }

    fn react(seq: u64, sender: &str, target: u8, emoji: &str, add: bool) -> Entry {
        with(
            1,
            seq,
            sender,
            Payload::Reaction {
                target: id(target),
                emoji: emoji.to_owned(),
                add,
            },
        )
    }

    #[test]
    fn edits_deletions_and_reactions_change_their_target_instead_of_adding_lines() {
        let mut timeline = Timeline::new();
        timeline.insert(&with(1, 1, "bob", text("hello")));
        timeline.insert(&with(
            1,
            2,
            "alice",
            Payload::Reply {
                to: id(1),
                text: "hi bob".to_owned(),
            },
        ));
        let edit = |seq, sender, new: &str| {
            with(
                1,
                seq,
                sender,
                Payload::Edit {
                    target: id(1),
                    text: new.to_owned(),
                },
            )
        };
        assert!(timeline.insert(&edit(3, "bob", "hello there")));
        // Only the sender may edit; an older edit arriving late does not win.
        assert!(!timeline.insert(&edit(4, "mallory", "pwned")));
        assert!(!timeline.insert(&edit(2, "bob", "older")));
        assert!(timeline.insert(&react(5, "alice", 1, "👍", true)));
        assert!(timeline.insert(&react(6, "carol", 1, "👍", true)));
        assert!(timeline.insert(&react(7, "carol", 1, "🎉", true)));
        assert!(timeline.insert(&react(8, "carol", 1, "👍", false)));
        assert!(!timeline.insert(&react(8, "carol", 1, "👍", false)), "once");
        assert_eq!(
            shown(&timeline, 1, 1),
            (
                "hello there".to_owned(),
                true,
                false,
                vec!["👍:alice".to_owned(), "🎉:carol".to_owned()]
            )
        );
        assert_eq!(seqs(&timeline, 1), [1, 2], "changes add no lines");
        let reply = timeline.find(RoomId(1), id(2)).unwrap();
        assert!(matches!(
            &reply.kind,
            LineKind::Message { text, reply_to: Some(to), .. } if text == "hi bob" && *to == id(1)
        ));
        // Deleting hides the text and the reactions; nobody else may delete.
        let delete = |seq, sender| with(1, seq, sender, Payload::Delete { target: id(1) });
        assert!(!timeline.insert(&delete(9, "alice")));
        assert!(timeline.insert(&delete(10, "bob")));
        assert_eq!(
            shown(&timeline, 1, 1),
            (String::new(), true, true, Vec::new())
        );
        assert!(!timeline.insert(&react(11, "alice", 1, "😂", true)));
        // Receipts and typing notices add nothing.
        assert!(!timeline.insert(&with(1, 12, "bob", Payload::Typing { active: true })));
        assert_eq!(seqs(&timeline, 1), [1, 2]);
    }

    #[test]
    fn files_and_voice_messages_carry_their_pointer_until_deleted() {
        let file = FilePointer {
            blob: "ab".repeat(16),
            name: "report.pdf".to_owned(),
            size: 2048,
            mime: "application/pdf".to_owned(),
            sha256: [1; 32],
            key: confide_crypto::payload::FileKey::from_bytes([2; 32]),
            chunk_size: 1024,
        };
        let voice = VoicePointer {
            file: file.clone(),
            duration_ms: 1500,
            waveform: vec![0, 128, 255],
        };
        let mut timeline = Timeline::new();
        timeline.insert(&with(1, 1, "bob", Payload::File(file.clone())));
        timeline.insert(&with(1, 2, "bob", Payload::Voice(voice.clone())));
        timeline.insert(&with(1, 3, "bob", text("plain")));
        let media =
            |timeline: &Timeline, target| match &timeline.find(RoomId(1), id(target)).unwrap().kind
            {
                LineKind::Message { media, text, .. } => (media.as_deref().cloned(), text.clone()),
                _ => unreachable!(),
            };
        assert_eq!(
            media(&timeline, 1),
            (
                Some(Media::File(file)),
                "[file] report.pdf (2.0 KiB, application/pdf)".to_owned()
            )
        );
        assert_eq!(media(&timeline, 2).0, Some(Media::Voice(voice)));
        assert_eq!(media(&timeline, 3).0, None);
        assert!(timeline.insert(&with(1, 4, "bob", Payload::Delete { target: id(1) })));
        assert_eq!(
            media(&timeline, 1).0,
            None,
            "a deleted file is no longer offered"
        );
    }

    #[test]
    fn a_change_that_comes_before_its_target_waits_for_it() {
        let mut timeline = Timeline::new();
        // Live: the newest entries first; then a page of history with the target, in
        // which a reaction was later taken back.
        timeline.insert(&react(9, "carol", 3, "❤", false));
        timeline.insert(&with(
            1,
            8,
            "bob",
            Payload::Edit {
                target: id(3),
                text: "fixed".to_owned(),
            },
        ));
        timeline.load_history(&[
            with(1, 3, "bob", text("tpyo")),
            react(4, "carol", 3, "❤", true),
            react(5, "alice", 3, "❤", true),
        ]);
        assert_eq!(
            shown(&timeline, 1, 3),
            ("fixed".to_owned(), true, false, vec!["❤:alice".to_owned()])
        );
    }

    #[test]
    fn receipts_mark_own_messages_delivered_then_read() {
        let mut timeline = Timeline::new();
        timeline.insert(&with(1, 1, "alice", text("one")));
        timeline.insert(&with(1, 2, "alice", text("two")));
        timeline.insert(&with(1, 3, "bob", text("three")));
        let receipt = |seq, sender, kind, ids: &[u8]| {
            with(
                1,
                seq,
                sender,
                Payload::Receipt {
                    kind,
                    up_to: ids.iter().map(|i| id(*i)).collect(),
                },
            )
        };
        let state = |timeline: &Timeline, target: u8| {
            let line = timeline.find(RoomId(1), id(target)).unwrap().clone();
            timeline.receipt(RoomId(1), &line)
        };
        assert_eq!(state(&timeline, 1), Receipt::Sent);
        assert!(timeline.insert(&receipt(4, "bob", ReceiptKind::Delivered, &[2])));
        assert_eq!(
            state(&timeline, 1),
            Receipt::Delivered,
            "up to the newest named"
        );
        assert_eq!(state(&timeline, 2), Receipt::Delivered);
        // Her own receipts do not count for her own messages.
        timeline.insert(&receipt(5, "alice", ReceiptKind::Read, &[3]));
        assert_eq!(state(&timeline, 2), Receipt::Delivered);
        assert!(timeline.insert(&receipt(6, "bob", ReceiptKind::Read, &[1])));
        assert_eq!(state(&timeline, 1), Receipt::Read);
        assert_eq!(state(&timeline, 2), Receipt::Delivered);
        assert!(
            !timeline.insert(&receipt(7, "bob", ReceiptKind::Read, &[1])),
            "no news"
        );
        assert_eq!(seqs(&timeline, 1), [1, 2, 3], "receipts add no lines");
        assert_eq!(
            timeline
                .newest_from_others(RoomId(1), &user("alice"))
                .map(|l| l.seq),
            Some(Seq(3))
        );
    }
}
