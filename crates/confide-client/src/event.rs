//! What the client tells its front end: [`ClientEvent`]s on an [`EventStream`].
//!
//! The stream delivers room entries exactly once and in order per room (the sequencer
//! sees to that), and remembers what the front end has taken from it, so that the
//! positions saved in the profile cover only entries the front end actually received.
//! This module must not touch the network or the profile.

use crate::address::ServerAddress;
use crate::entry::Entry;
use crate::fingerprint::Fingerprint;
use confide_proto::{RoomId, RoomInfo, Seq, UserName};
use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Something the front end should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A room log entry (a message, decrypted or with the reason it cannot be read; a
    /// membership change; a commit), delivered once and in sequence order per room.
    Entry {
        /// The entry.
        entry: Entry,
        /// Whether it arrived live (`false`: caught up by a sync after being away).
        live: bool,
    },
    /// A user came online or went offline.
    Presence {
        /// A room shared with that user.
        room: RoomId,
        /// Who.
        user: UserName,
        /// Online now or not.
        online: bool,
    },
    /// A room the client did not know yet, or whose membership, name or owner
    /// changed (joined, invited, removed, a direct conversation started). Also sent for
    /// each room a sync reports that the client had not seen in this run.
    Room(RoomInfo),
    /// The connection's state changed.
    Connection(ConnectionState),
    /// A catch-up finished: everything missed up to now has been delivered.
    SyncComplete,
    /// The server's certificate was pinned for the first time (trust on first use) or
    /// re-pinned because an explicit fingerprint was given.
    ServerPinned {
        /// The server.
        server: ServerAddress,
        /// Its certificate's fingerprint.
        fingerprint: Fingerprint,
    },
    /// A user who shares a room with this one published a new identity key or a new
    /// device list. A new identity key of a verified user must be shown loudly: it is
    /// either a reinstall or an attack, and only comparing safety numbers again tells.
    IdentityChanged {
        /// Who.
        user: UserName,
        /// The identity key changed (not only the device list).
        key_changed: bool,
        /// The user had been verified before the change (verification is reset).
        was_verified: bool,
    },
    /// Someone in a room started or stopped typing (an ephemeral, end-to-end encrypted
    /// notice; see [`crate::model::Typing`] for how long to show it).
    Typing {
        /// The room.
        room: RoomId,
        /// Who.
        user: UserName,
        /// Typing now, or stopped.
        active: bool,
    },
    /// Live voice from someone in a room whose speaker this client switched on
    /// ([`crate::ClientHandle::listen`]): decrypted Opus packets, in order per speaker.
    Voice {
        /// The room.
        room: RoomId,
        /// Who is speaking.
        user: UserName,
        /// The packets and when the sender captured them.
        frame: confide_crypto::voice::VoiceFrame,
    },
    /// Something the user may want to know that is not an error (for example that
    /// entries were skipped because the server no longer has them).
    Warning(String),
}

/// The state of the connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected and logged in again after a reconnection.
    Connected,
    /// The connection dropped; the next attempt starts after `retry_in`.
    Reconnecting {
        /// 1 for the first attempt after a drop.
        attempt: u32,
        /// Delay before the attempt.
        retry_in: Duration,
    },
    /// The client stopped (closed, logged out or gave up); the stream ends next.
    Disconnected {
        /// Why, for people.
        reason: String,
    },
}

/// The stream of [`ClientEvent`]s of one client.
///
/// Events queue without bound until they are read, so read the stream, or drop it if
/// the events are not wanted (the client then discards them). The stream ends after
/// [`ConnectionState::Disconnected`].
#[derive(Debug)]
pub struct EventStream {
    events: mpsc::UnboundedReceiver<ClientEvent>,
    taken: Arc<TakenPositions>,
}

impl EventStream {
    pub(crate) fn new(
        events: mpsc::UnboundedReceiver<ClientEvent>,
        taken: Arc<TakenPositions>,
    ) -> EventStream {
        EventStream { events, taken }
    }

    /// The next event, or `None` once the client has stopped.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        let event = self.events.try_recv().ok()?;
        self.taken.record(&event);
        Some(event)
    }

    /// Saves positions only for these rooms from now on. A front end that shows one
    /// room uses this so that entries of other rooms, which it receives but does not
    /// show, are still caught up on the next run.
    pub fn persist_only(&self, rooms: impl IntoIterator<Item = RoomId>) {
        self.taken.restrict(rooms.into_iter().collect());
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        let poll = self.events.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &poll {
            self.taken.record(event);
        }
        poll
    }
}

impl futures_core::Stream for EventStream {
    type Item = ClientEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.get_mut().poll_event(cx)
    }
}

/// Per room, the last entry the front end has taken from the stream: what the profile
/// saves, so a restart resumes after what was actually received.
#[derive(Debug)]
pub(crate) struct TakenPositions {
    // A std mutex: the stream and the actor each hold it for a map update or a copy,
    // never across an await.
    inner: Mutex<TakenState>,
}

#[derive(Debug)]
struct TakenState {
    enabled: bool,
    positions: BTreeMap<RoomId, Seq>,
    only: Option<HashSet<RoomId>>,
    dirty: bool,
}

impl TakenPositions {
    /// Positions starting from `saved`; `enabled: false` records nothing.
    pub(crate) fn new(enabled: bool, saved: BTreeMap<RoomId, Seq>) -> TakenPositions {
        TakenPositions {
            inner: Mutex::new(TakenState {
                enabled,
                positions: saved,
                only: None,
                dirty: false,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut TakenState) -> T) -> T {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    fn record(&self, event: &ClientEvent) {
        let ClientEvent::Entry { entry, .. } = event else {
            return;
        };
        self.with(|state| {
            if !state.enabled
                || state
                    .only
                    .as_ref()
                    .is_some_and(|only| !only.contains(&entry.room))
            {
                return;
            }
            let position = state.positions.entry(entry.room).or_default();
            if entry.seq > *position {
                *position = entry.seq;
                state.dirty = true;
            }
        });
    }

    fn restrict(&self, rooms: HashSet<RoomId>) {
        self.with(|state| state.only = Some(rooms));
    }

    /// Moves a room back (the server's log is shorter than the saved position).
    pub(crate) fn rewind(&self, room: RoomId, seq: Seq) {
        self.with(|state| {
            if state.enabled && state.positions.get(&room).is_some_and(|last| *last > seq) {
                state.positions.insert(room, seq);
                state.dirty = true;
            }
        });
    }

    /// The positions if they changed since the last call.
    pub(crate) fn take_changed(&self) -> Option<BTreeMap<RoomId, Seq>> {
        self.with(|state| {
            if !state.dirty {
                return None;
            }
            state.dirty = false;
            Some(state.positions.clone())
        })
    }

    /// Marks the positions as changed again (after a failed save).
    pub(crate) fn mark_dirty(&self) {
        self.with(|state| state.dirty = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Content, Unreadable};
    use confide_proto::Timestamp;

    fn entry_event(room: u64, seq: u64) -> ClientEvent {
        ClientEvent::Entry {
            entry: Entry {
                room: RoomId(room),
                seq: Seq(seq),
                timestamp: Timestamp(0),
                sender: UserName::parse("bob").unwrap(),
                device: None,
                content: Content::Unreadable(Unreadable::BeforeJoin),
            },
            live: true,
        }
    }

    #[tokio::test]
    async fn positions_follow_what_the_front_end_takes() {
        let (tx, rx) = mpsc::unbounded_channel();
        let taken = Arc::new(TakenPositions::new(
            true,
            BTreeMap::from([(RoomId(1), Seq(3))]),
        ));
        let mut stream = EventStream::new(rx, taken.clone());
        for seq in 4..=6 {
            tx.send(entry_event(1, seq)).unwrap();
        }
        tx.send(ClientEvent::SyncComplete).unwrap();
        assert_eq!(taken.take_changed(), None);
        assert!(matches!(
            stream.next().await,
            Some(ClientEvent::Entry { .. })
        ));
        assert_eq!(
            taken.take_changed(),
            Some(BTreeMap::from([(RoomId(1), Seq(4))]))
        );
        assert_eq!(taken.take_changed(), None, "only when changed");
        // Entries still queued are not counted as received.
        assert!(stream.try_next().is_some());
        assert_eq!(
            taken.take_changed(),
            Some(BTreeMap::from([(RoomId(1), Seq(5))]))
        );
        drop(tx);
        assert!(stream.next().await.is_some());
        assert_eq!(stream.next().await, Some(ClientEvent::SyncComplete));
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn persist_only_and_disabled_positions() {
        let (tx, rx) = mpsc::unbounded_channel();
        let taken = Arc::new(TakenPositions::new(true, BTreeMap::new()));
        let mut stream = EventStream::new(rx, taken.clone());
        stream.persist_only([RoomId(2)]);
        tx.send(entry_event(1, 1)).unwrap();
        tx.send(entry_event(2, 9)).unwrap();
        stream.next().await;
        stream.next().await;
        assert_eq!(
            taken.take_changed(),
            Some(BTreeMap::from([(RoomId(2), Seq(9))]))
        );
        taken.rewind(RoomId(2), Seq(4));
        assert_eq!(
            taken.take_changed(),
            Some(BTreeMap::from([(RoomId(2), Seq(4))]))
        );

        let (tx, rx) = mpsc::unbounded_channel();
        let disabled = Arc::new(TakenPositions::new(false, BTreeMap::new()));
        let mut stream = EventStream::new(rx, disabled.clone());
        tx.send(entry_event(1, 1)).unwrap();
        stream.next().await;
        assert_eq!(disabled.take_changed(), None);
    }
}
