//! The per-room sequencer: every log entry reaches the application exactly once, in
//! sequence order, without gaps.
//!
//! Entries come from two sources that overlap: live events pushed by the server and
//! pages of a sync. Both go through [`RoomCursors`], which remembers per room the last
//! sequence number delivered, drops duplicates, buffers live entries that arrive ahead
//! of a gap, and says when a sync is needed to fill one. It is a pure model: no I/O,
//! no clock, no channels, so the guarantee is unit-tested here. It must not decide
//! *when* to sync or persist; the connection actor does that.

use confide_proto::{LogEntry, RoomId, Seq, SyncCursor};
use std::collections::{BTreeMap, HashMap};

/// Live entries buffered per room while waiting for a gap to be filled; beyond this
/// the buffer is dropped and the sync that fills the gap fetches them again.
pub const DEFAULT_MAX_BUFFERED: usize = 10_000;

/// One entry released to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The entry.
    pub entry: LogEntry,
    /// Whether it arrived as a live event (`false`: from a sync page).
    pub live: bool,
}

/// What accepting one entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Entries now deliverable, in order (the accepted one and any buffered successors).
    pub delivered: Vec<Delivery>,
    /// The entry was held back behind a gap (or in a room with no known position), so a
    /// sync is needed to fill it.
    pub needs_sync: bool,
    /// The entry was a duplicate of one already delivered and was dropped.
    pub duplicate: bool,
    /// Sequence numbers skipped because the source had nothing for them: a sync page
    /// that jumps ahead (the server no longer has those entries), or a live gap when
    /// gap filling is off. Zero normally.
    pub skipped: u64,
    /// The room's buffer overflowed and was dropped; a sync will fetch its entries.
    pub overflowed: bool,
}

/// Per-room delivery positions and the buffers of early live entries.
#[derive(Debug, Clone)]
pub struct RoomCursors {
    rooms: HashMap<RoomId, RoomState>,
    fill_gaps: bool,
    max_buffered: usize,
}

#[derive(Debug, Clone, Default)]
struct RoomState {
    /// The last sequence number delivered; `None` until the room's position is known.
    last: Option<Seq>,
    /// Live entries that arrived ahead of a gap, by sequence number.
    buffer: BTreeMap<Seq, LogEntry>,
}

impl RoomCursors {
    /// An empty model.
    ///
    /// With `fill_gaps` (the client syncs), a live entry that does not directly follow
    /// the last delivered one, or that belongs to a room whose position is unknown, is
    /// buffered until a sync fills the gap. Without it (the client does not sync), such
    /// an entry is delivered at once and becomes the room's position; duplicates are
    /// still dropped.
    #[must_use]
    pub fn new(fill_gaps: bool, max_buffered: usize) -> RoomCursors {
        RoomCursors {
            rooms: HashMap::new(),
            fill_gaps,
            max_buffered: max_buffered.max(1),
        }
    }

    /// A model that resumes from saved positions (room → last delivered sequence).
    #[must_use]
    pub fn with_positions(
        fill_gaps: bool,
        max_buffered: usize,
        positions: impl IntoIterator<Item = (RoomId, Seq)>,
    ) -> RoomCursors {
        let mut cursors = RoomCursors::new(fill_gaps, max_buffered);
        for (room, seq) in positions {
            cursors.rooms.insert(
                room,
                RoomState {
                    last: Some(seq),
                    buffer: BTreeMap::new(),
                },
            );
        }
        cursors
    }

    /// Accepts an entry pushed live by the server.
    pub fn live(&mut self, entry: LogEntry) -> Accepted {
        let fill_gaps = self.fill_gaps;
        let max_buffered = self.max_buffered;
        let state = self.rooms.entry(entry.room).or_default();
        let mut accepted = Accepted::default();
        let seq = entry.seq;
        match state.last {
            Some(last) if seq <= last => accepted.duplicate = true,
            Some(last) if seq == last.next() => state.deliver(entry, true, &mut accepted),
            last if !fill_gaps => {
                accepted.skipped = last.map_or(0, |last| seq.0 - last.0 - 1);
                state.deliver(entry, true, &mut accepted);
            }
            _ => {
                accepted.needs_sync = true;
                if state.buffer.contains_key(&seq) {
                    accepted.duplicate = true;
                } else if state.buffer.len() >= max_buffered {
                    state.buffer.clear();
                    accepted.overflowed = true;
                } else {
                    state.buffer.insert(seq, entry);
                }
            }
        }
        accepted
    }

    /// Accepts an entry from a sync (or other catch-up) reply.
    ///
    /// The server returns a room's entries without gaps, so an entry further ahead than
    /// the next one means the server no longer has the ones between: it is delivered
    /// and the jump is reported in [`Accepted::skipped`].
    pub fn synced(&mut self, entry: LogEntry) -> Accepted {
        let state = self.rooms.entry(entry.room).or_default();
        let mut accepted = Accepted::default();
        match state.last {
            Some(last) if entry.seq <= last => accepted.duplicate = true,
            Some(last) => {
                accepted.skipped = entry.seq.0 - last.0 - 1;
                state.deliver(entry, false, &mut accepted);
            }
            None => state.deliver(entry, false, &mut accepted),
        }
        accepted
    }

    /// The last delivered sequence number of `room`, if its position is known.
    #[must_use]
    pub fn last(&self, room: RoomId) -> Option<Seq> {
        self.rooms.get(&room).and_then(|state| state.last)
    }

    /// Sync cursors for every room whose position is known, ordered by room.
    #[must_use]
    pub fn cursors(&self) -> Vec<SyncCursor> {
        let mut cursors: Vec<SyncCursor> = self
            .rooms
            .iter()
            .filter_map(|(room, state)| state.last.map(|seen| SyncCursor { room: *room, seen }))
            .collect();
        cursors.sort_by_key(|cursor| cursor.room);
        cursors
    }

    /// Whether some room holds live entries waiting for a gap to be filled.
    #[must_use]
    pub fn has_gaps(&self) -> bool {
        self.rooms.values().any(|state| !state.buffer.is_empty())
    }

    /// How many live entries are buffered in `room`.
    #[must_use]
    pub fn buffered(&self, room: RoomId) -> usize {
        self.rooms.get(&room).map_or(0, |state| state.buffer.len())
    }

    /// Moves `room`'s position back to `seq` (for example when the server's log turns
    /// out to be shorter than the saved position, because the server was reset), so
    /// that entries after it are delivered again. Buffered entries are dropped.
    pub fn rewind(&mut self, room: RoomId, seq: Seq) {
        let state = self.rooms.entry(room).or_default();
        state.last = Some(seq);
        state.buffer.clear();
    }
}

impl RoomState {
    /// Delivers `entry` (which the caller checked may be delivered now), then every
    /// buffered entry that now follows without a gap.
    fn deliver(&mut self, entry: LogEntry, live: bool, accepted: &mut Accepted) {
        let mut last = entry.seq;
        accepted.delivered.push(Delivery { entry, live });
        while let Some((&seq, _)) = self.buffer.first_key_value() {
            if seq > last.next() {
                break;
            }
            let Some((seq, buffered)) = self.buffer.pop_first() else {
                break;
            };
            if seq == last.next() {
                last = seq;
                accepted.delivered.push(Delivery {
                    entry: buffered,
                    live: true,
                });
            }
        }
        self.last = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confide_proto::{EntryKind, Timestamp, UserName};

    fn entry(room: u64, seq: u64) -> LogEntry {
        LogEntry {
            room: RoomId(room),
            seq: Seq(seq),
            timestamp: Timestamp(1_700_000_000_000 + seq as i64),
            sender: UserName::parse("alice").unwrap(),
            device: None,
            kind: EntryKind::Message {
                body: format!("m{seq}").into_bytes(),
            },
        }
    }

    fn seqs(accepted: &Accepted) -> Vec<(u64, u64, bool)> {
        accepted
            .delivered
            .iter()
            .map(|d| (d.entry.room.0, d.entry.seq.0, d.live))
            .collect()
    }

    /// Feeds a scripted mix of live and synced entries and returns every delivery, in
    /// order, per room.
    fn run(cursors: &mut RoomCursors, script: &[(bool, u64, u64)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(live, room, seq) in script {
            let accepted = if live {
                cursors.live(entry(room, seq))
            } else {
                cursors.synced(entry(room, seq))
            };
            out.extend(
                accepted
                    .delivered
                    .iter()
                    .map(|d| (d.entry.room.0, d.entry.seq.0)),
            );
        }
        out
    }

    #[test]
    fn in_order_live_entries_are_delivered_at_once() {
        let mut cursors = RoomCursors::with_positions(true, 10, [(RoomId(1), Seq(4))]);
        for seq in 5..=8 {
            let accepted = cursors.live(entry(1, seq));
            assert_eq!(seqs(&accepted), vec![(1, seq, true)]);
            assert!(!accepted.needs_sync);
        }
        assert_eq!(cursors.last(RoomId(1)), Some(Seq(8)));
        assert!(!cursors.has_gaps());
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut cursors = RoomCursors::with_positions(true, 10, [(RoomId(1), Seq(4))]);
        let accepted = cursors.live(entry(1, 4));
        assert!(accepted.duplicate);
        assert!(accepted.delivered.is_empty());
        assert!(cursors.live(entry(1, 2)).duplicate);
        assert_eq!(seqs(&cursors.live(entry(1, 5))), vec![(1, 5, true)]);
        assert!(cursors.live(entry(1, 5)).duplicate);
        assert!(cursors.synced(entry(1, 5)).duplicate);
    }

    #[test]
    fn a_gap_buffers_live_entries_until_sync_fills_it() {
        let mut cursors = RoomCursors::with_positions(true, 10, [(RoomId(1), Seq(4))]);
        let accepted = cursors.live(entry(1, 7));
        assert!(accepted.needs_sync);
        assert!(accepted.delivered.is_empty());
        assert!(cursors.live(entry(1, 8)).needs_sync);
        // The same early entry again is not buffered twice.
        assert!(cursors.live(entry(1, 8)).duplicate);
        assert_eq!(cursors.buffered(RoomId(1)), 2);
        assert!(cursors.has_gaps());
        assert_eq!(cursors.cursors()[0].seen, Seq(4));

        assert_eq!(seqs(&cursors.synced(entry(1, 5))), vec![(1, 5, false)]);
        // Sync reaches the buffered entries: 6 comes from sync, 7 and 8 were live.
        assert_eq!(
            seqs(&cursors.synced(entry(1, 6))),
            vec![(1, 6, false), (1, 7, true), (1, 8, true)]
        );
        // The sync page also contains 7 and 8: duplicates now.
        assert!(cursors.synced(entry(1, 7)).duplicate);
        assert!(cursors.synced(entry(1, 8)).duplicate);
        assert!(!cursors.has_gaps());
        assert_eq!(cursors.last(RoomId(1)), Some(Seq(8)));
    }

    #[test]
    fn overlapping_sync_and_live_deliver_each_entry_once_in_order() {
        // Every interleaving of a sync page 3..=10 and live entries 6..=12 must deliver
        // 3..=12 exactly once and in order.
        let synced: Vec<(bool, u64, u64)> = (3..=10).map(|seq| (false, 1, seq)).collect();
        let live: Vec<(bool, u64, u64)> = (6..=12).map(|seq| (true, 1, seq)).collect();
        for split in 0..=synced.len() {
            for live_split in 0..=live.len() {
                let mut script = Vec::new();
                script.extend_from_slice(&live[..live_split]);
                script.extend_from_slice(&synced[..split]);
                script.extend_from_slice(&live[live_split..]);
                script.extend_from_slice(&synced[split..]);
                let mut cursors = RoomCursors::with_positions(true, 100, [(RoomId(1), Seq(2))]);
                let delivered = run(&mut cursors, &script);
                let expected: Vec<(u64, u64)> = (3..=12).map(|seq| (1, seq)).collect();
                assert_eq!(delivered, expected, "split {split} live {live_split}");
            }
        }
    }

    #[test]
    fn rooms_are_independent() {
        let mut cursors =
            RoomCursors::with_positions(true, 10, [(RoomId(1), Seq(1)), (RoomId(2), Seq(9))]);
        let delivered = run(
            &mut cursors,
            &[(true, 1, 3), (true, 2, 10), (true, 1, 2), (true, 2, 10)],
        );
        assert_eq!(delivered, vec![(2, 10), (1, 2), (1, 3)]);
    }

    #[test]
    fn unknown_rooms_wait_for_sync_when_filling_gaps() {
        let mut cursors = RoomCursors::new(true, 10);
        let accepted = cursors.live(entry(5, 3));
        assert!(accepted.needs_sync);
        assert!(accepted.delivered.is_empty());
        assert!(
            cursors.cursors().is_empty(),
            "no cursor: sync starts at the join"
        );
        // Sync from the join point (seq 1) fills up to the buffered entry.
        let delivered = run(&mut cursors, &[(false, 5, 1), (false, 5, 2)]);
        assert_eq!(delivered, vec![(5, 1), (5, 2), (5, 3)]);
        assert_eq!(cursors.last(RoomId(5)), Some(Seq(3)));
    }

    #[test]
    fn without_gap_filling_live_entries_flow_but_duplicates_still_drop() {
        let mut cursors = RoomCursors::new(false, 10);
        let first = cursors.live(entry(5, 3));
        assert_eq!(seqs(&first), vec![(5, 3, true)]);
        assert!(!first.needs_sync);
        assert!(cursors.live(entry(5, 3)).duplicate);
        let jump = cursors.live(entry(5, 6));
        assert_eq!(seqs(&jump), vec![(5, 6, true)]);
        assert_eq!(jump.skipped, 2);
        assert!(!jump.needs_sync);
    }

    #[test]
    fn sync_that_jumps_ahead_is_delivered_and_reported() {
        let mut cursors = RoomCursors::with_positions(true, 10, [(RoomId(1), Seq(2))]);
        let accepted = cursors.synced(entry(1, 6));
        assert_eq!(seqs(&accepted), vec![(1, 6, false)]);
        assert_eq!(accepted.skipped, 3);
    }

    #[test]
    fn buffer_overflow_drops_the_buffer_and_relies_on_sync() {
        let mut cursors = RoomCursors::with_positions(true, 3, [(RoomId(1), Seq(0))]);
        for seq in 5..8 {
            assert!(!cursors.live(entry(1, seq)).overflowed);
        }
        let accepted = cursors.live(entry(1, 8));
        assert!(accepted.overflowed);
        assert!(accepted.needs_sync);
        assert_eq!(cursors.buffered(RoomId(1)), 0);
        // Sync then delivers everything once.
        let delivered = run(
            &mut cursors,
            &(1..=9).map(|s| (false, 1, s)).collect::<Vec<_>>(),
        );
        assert_eq!(delivered, (1..=9).map(|s| (1, s)).collect::<Vec<_>>());
    }

    #[test]
    fn positions_persist_across_runs() {
        let mut first = RoomCursors::new(true, 10);
        run(
            &mut first,
            &[(false, 1, 1), (false, 1, 2), (false, 3, 7), (true, 1, 3)],
        );
        let saved: Vec<(RoomId, Seq)> = first
            .cursors()
            .into_iter()
            .map(|cursor| (cursor.room, cursor.seen))
            .collect();
        assert_eq!(saved, vec![(RoomId(1), Seq(3)), (RoomId(3), Seq(7))]);

        let mut second = RoomCursors::with_positions(true, 10, saved);
        // A sync of the next run returns what was already seen, then new entries.
        let delivered = run(
            &mut second,
            &[(false, 1, 3), (false, 1, 4), (false, 3, 7), (false, 3, 8)],
        );
        assert_eq!(delivered, vec![(1, 4), (3, 8)]);
    }

    #[test]
    fn rewind_allows_redelivery() {
        let mut cursors = RoomCursors::with_positions(true, 10, [(RoomId(1), Seq(50))]);
        cursors.live(entry(1, 60));
        cursors.rewind(RoomId(1), Seq(2));
        assert_eq!(cursors.buffered(RoomId(1)), 0);
        assert_eq!(seqs(&cursors.live(entry(1, 3))), vec![(1, 3, true)]);
    }
}
