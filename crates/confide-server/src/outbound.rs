//! The sending side of one connection: a bounded queue of encoded frames.
//!
//! Everyone who delivers to a connection (its own request handling, room actors, the
//! persister) pushes without waiting. The queue is a plain deque behind a lock that
//! allocates only while frames wait, so an idle connection's queue costs a few dozen
//! bytes, and its writer takes everything queued in one step. A full queue means the client does not read fast
//! enough: the connection is cancelled at once and the client resyncs when it returns,
//! so one slow receiver never delays anyone else. Frames that may be lost (live voice)
//! are offered instead, and dropped when the queue is filling up.

use bytes::{Bytes, BytesMut};
use confide_proto::{ServerFrame, UserId, encode_frame};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A connection's number, unique within one server run.
pub type ConnId = u64;

/// Largest frame the server sends. Replies that gather many entries keep themselves
/// under the client's 1 MiB limit by budget; this only guards against a bug.
const MAX_OUTGOING_FRAME: usize = 1 << 20;

/// The queue shared by a connection's senders and its writer.
struct Queue {
    frames: Mutex<VecDeque<Bytes>>,
    /// Signalled when a frame arrives in an empty queue.
    ready: Notify,
    capacity: usize,
    /// The writer is gone.
    closed: AtomicBool,
    /// The writer should finish (the connection is ending or was cut off).
    stop: AtomicBool,
    too_slow: AtomicBool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Bytes>> {
        // Pushing cannot panic halfway, so a poisoned queue is still consistent.
        self.frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A cloneable handle that queues frames for one connection.
#[derive(Clone)]
pub struct Outbound {
    /// The connection.
    pub conn: ConnId,
    /// The logged-in user, or `UserId(0)` before login.
    pub user: UserId,
    queue: Arc<Queue>,
    kill: CancellationToken,
}

/// The writer's end of a connection's queue.
pub struct Outgoing {
    queue: Arc<Queue>,
}

impl Outgoing {
    /// Waits until frames are queued, then moves all of them into `into` (which must be
    /// empty) in one step. Returns false, without waiting, once the writer should stop.
    pub async fn take_all(&mut self, into: &mut VecDeque<Bytes>) -> bool {
        loop {
            if self.try_take_all(into) {
                return true;
            }
            if self.queue.stop.load(Ordering::Acquire) {
                return false;
            }
            self.queue.ready.notified().await;
        }
    }

    /// Moves whatever is queued into `into` (which must be empty), leaving `into`'s
    /// allocation to the queue; false if nothing was queued.
    pub fn try_take_all(&mut self, into: &mut VecDeque<Bytes>) -> bool {
        debug_assert!(into.is_empty());
        let mut frames = self.queue.lock();
        if frames.is_empty() {
            return false;
        }
        std::mem::swap(&mut *frames, into);
        true
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.lock().clear();
    }
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
    pub fn new(conn: ConnId, capacity: usize, kill: CancellationToken) -> (Outbound, Outgoing) {
        let queue = Arc::new(Queue {
            frames: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            too_slow: AtomicBool::new(false),
        });
        (
            Outbound {
                conn,
                user: UserId(0),
                queue: Arc::clone(&queue),
                kill,
            },
            Outgoing { queue },
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
        self.enqueue(frame, self.queue.capacity)
    }

    /// Queues `frame` if fewer than `limit` frames wait; a full queue (limit = capacity)
    /// cuts the connection off.
    fn enqueue(&self, frame: Bytes, limit: usize) -> bool {
        let queue = &*self.queue;
        if queue.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut frames = queue.lock();
        if frames.len() >= limit {
            drop(frames);
            if limit < queue.capacity {
                return false;
            }
            if !queue.too_slow.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    conn = self.conn,
                    "outgoing queue full, disconnecting slow client"
                );
            }
            self.kill.cancel();
            self.stop_writer();
            return false;
        }
        let first = frames.is_empty();
        frames.push_back(frame);
        drop(frames);
        if first {
            queue.ready.notify_one();
        }
        true
    }

    /// Queues a frame that may be lost (live voice): it is dropped, and the connection
    /// kept, when the queue is more than half full. Lossy frames so never take the room
    /// that frames which must arrive need, and a listener who falls behind misses some
    /// audio instead of being disconnected. Returns whether the frame was queued.
    pub fn offer(&self, frame: Bytes) -> bool {
        self.enqueue(frame, self.queue.capacity.div_ceil(2))
    }

    /// Tells the writer to finish: it sends what is queued and closes the connection.
    pub fn stop_writer(&self) {
        self.queue.stop.store(true, Ordering::Release);
        self.queue.ready.notify_one();
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
        self.queue.closed.load(Ordering::Acquire) || self.kill.is_cancelled()
    }

    /// Whether the connection was cut off because its queue overflowed.
    #[must_use]
    pub fn was_too_slow(&self) -> bool {
        self.queue.too_slow.load(Ordering::Relaxed)
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
        let mut taken = VecDeque::new();
        assert!(out.offer(Bytes::from_static(b"a")));
        assert!(out.offer(Bytes::from_static(b"b")));
        // Half full: lossy frames stop, frames that must arrive still fit.
        assert!(!out.offer(Bytes::from_static(b"c")));
        assert!(out.push(Bytes::from_static(b"d")));
        assert!(!kill.is_cancelled());
        assert!(queue.try_take_all(&mut taken));
        assert_eq!(Vec::from(std::mem::take(&mut taken)), ["a", "b", "d"]);
        assert!(!queue.try_take_all(&mut taken));
        assert!(out.offer(Bytes::from_static(b"e")));
        assert!(out.offer(Bytes::from_static(b"f")));
        assert!(!kill.is_cancelled() && !out.was_too_slow());
    }

    #[test]
    fn a_full_queue_cuts_the_connection_off() {
        let kill = CancellationToken::new();
        let (out, _queue) = Outbound::new(1, 2, kill.clone());
        assert!(out.push(Bytes::from_static(b"a")));
        assert!(out.push(Bytes::from_static(b"b")));
        assert!(!out.push(Bytes::from_static(b"c")));
        assert!(kill.is_cancelled() && out.was_too_slow() && out.is_closed());
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_and_a_closed_queue_refuses_more() {
        let kill = CancellationToken::new();
        let (out, mut queue) = Outbound::new(1, 8, kill.clone());
        let pusher = out.clone();
        let push = tokio::spawn(async move {
            tokio::task::yield_now().await;
            assert!(pusher.push(Bytes::from_static(b"x")));
        });
        let mut taken = VecDeque::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            queue.take_all(&mut taken),
        )
        .await
        .expect("the writer was not woken");
        assert_eq!(Vec::from(taken), ["x"]);
        push.await.unwrap();
        drop(queue);
        assert!(out.is_closed());
        assert!(!out.push(Bytes::from_static(b"y")));
        assert!(!kill.is_cancelled(), "a closed queue is not a slow client");
    }
}
