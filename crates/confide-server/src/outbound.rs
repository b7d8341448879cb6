//! The sending side of one connection: a bounded queue of encoded frames.
//!
//! Everyone who delivers to a connection (its own request handling, room actors, the
//! persister) pushes without waiting. A full queue means the client does not read fast
//! enough: the connection is cancelled at once and the client resyncs when it returns,
//! so one slow receiver never delays anyone else. Frames that may be lost (live voice)
//! are offered instead, and dropped when the queue is filling up.

use bytes::{Bytes, BytesMut};
use confide_proto::{ServerFrame, UserId, encode_frame};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A connection's number, unique within one server run.
pub type ConnId = u64;

/// Largest frame the server sends. Replies that gather many entries keep themselves
/// under the client's 1 MiB limit by budget; this only guards against a bug.
const MAX_OUTGOING_FRAME: usize = 1 << 20;

/// A cloneable handle that queues frames for one connection.
#[derive(Clone)]
pub struct Outbound {
    /// The connection.
    pub conn: ConnId,
    /// The logged-in user, or `UserId(0)` before login.
    pub user: UserId,
    tx: mpsc::Sender<Bytes>,
    kill: CancellationToken,
    too_slow: Arc<AtomicBool>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("conn", &self.conn)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// A handle for a new connection, and the receiving end its writer drains.
    #[must_use]
    pub fn new(
        conn: ConnId,
        capacity: usize,
        kill: CancellationToken,
    ) -> (Outbound, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Outbound {
                conn,
                user: UserId(0),
                tx,
                kill,
                too_slow: Arc::new(AtomicBool::new(false)),
            },
            rx,
        )
    }

    /// The same connection, now logged in as `user`.
    #[must_use]
    pub fn for_user(&self, user: UserId) -> Outbound {
        Outbound {
            user,
            ..self.clone()
        }
    }

    /// Queues an encoded frame. Returns false if the connection is gone or was just
    /// cut off for being too slow.
    pub fn push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.too_slow.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        conn = self.conn,
                        "outgoing queue full, disconnecting slow client"
                    );
                }
                self.kill.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame that may be lost (live voice): it is dropped, and the connection
    /// kept, when the queue is more than half full. Lossy frames so never take the room
    /// that frames which must arrive need, and a listener who falls behind misses some
    /// audio instead of being disconnected. Returns whether the frame was queued.
    pub fn offer(&self, frame: Bytes) -> bool {
        let queued = self.tx.max_capacity().saturating_sub(self.tx.capacity());
        if queued >= self.tx.max_capacity().div_ceil(2) {
            return false;
        }
        self.tx.try_send(frame).is_ok()
    }

    /// Encodes and queues one frame.
    pub fn send(&self, frame: &ServerFrame) -> bool {
        match encode(frame) {
            Some(bytes) => self.push(bytes),
            None => false,
        }
    }

    /// Whether the connection has ended.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.kill.is_cancelled()
    }

    /// Whether the connection was cut off because its queue overflowed.
    #[must_use]
    pub fn was_too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Relaxed)
    }
}

/// Encodes a frame once so it can be shared among many receivers.
#[must_use]
pub fn encode(frame: &ServerFrame) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    match encode_frame(frame, MAX_OUTGOING_FRAME, &mut buf) {
        Ok(()) => Some(buf.freeze()),
        Err(err) => {
            tracing::error!(cause = %err, "cannot encode an outgoing frame");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_frames_are_dropped_when_the_queue_is_half_full() {
        let kill = CancellationToken::new();
        let (out, mut queue) = Outbound::new(1, 4, kill.clone());
        assert!(out.offer(Bytes::from_static(b"a")));
        assert!(out.offer(Bytes::from_static(b"b")));
        // Half full: lossy frames stop, frames that must arrive still fit.
        assert!(!out.offer(Bytes::from_static(b"c")));
        assert!(out.push(Bytes::from_static(b"d")));
        assert!(!kill.is_cancelled());
        assert_eq!(queue.try_recv().unwrap(), "a");
        assert!(!out.offer(Bytes::from_static(b"e")));
        assert_eq!(queue.try_recv().unwrap(), "b");
        assert!(out.offer(Bytes::from_static(b"f")));
        assert!(!kill.is_cancelled() && !out.was_too_slow());
    }
}
