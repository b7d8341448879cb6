//! The sending side of one connection: a bounded queue of encoded frames.
//!
//! Everyone who delivers to a connection (its own request handling, room actors, the
//! persister) pushes without waiting. The queue is a plain deque behind a lock that
//! allocates only while frames wait, so an idle connection's queue costs a few dozen
//! bytes, and its writer takes everything queued in one step. A full queue means the
//! client does not read fast enough: the connection is cancelled at once and the client
//! resyncs when it returns, so one slow receiver never delays anyone else. Frames that
//! may be lost (live voice) are offered instead, and dropped when the queue is filling
//! up.
//!
//! The fan-out of a stored message may also write to the socket itself
//! ([`Outbound::write_or_push`]) when nothing is queued and nobody is writing: at chat
//! rates most deliveries then cost one encryption and one system call, with no task to
//! wake. Whoever writes holds the queue's `busy` flag, so writes never interleave and
//! frames go out in the order they were pushed; what the socket does not take at once is
//! left to the writer task.

use crate::tls::stream::{TlsSink, TlsWriter};
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

/// What waits to be written, under the queue's lock.
#[derive(Default)]
struct Waiting {
    frames: VecDeque<Bytes>,
    /// Ciphertext a direct write could not finish; the writer sends it before any frame.
    leftover: Vec<u8>,
    /// Someone (the writer task, or a direct write) is writing to the socket.
    busy: bool,
    /// The writer is finishing: no more direct writes.
    closing: bool,
    /// The socket, for direct writes; dropped with the writer, so a handle kept
    /// elsewhere does not keep the socket open. `None` where there is none (unit tests).
    sink: Option<Arc<TlsSink>>,
}

impl Waiting {
    /// Whether a direct write may go ahead now without overtaking anything.
    fn idle(&self) -> bool {
        self.frames.is_empty()
            && self.leftover.is_empty()
            && !self.busy
            && !self.closing
            && self.sink.is_some()
    }
}

/// The queue shared by a connection's senders and its writer.
struct Queue {
    waiting: Mutex<Waiting>,
    /// Signalled when a frame arrives in an empty queue, when a direct write hands work
    /// over, and when the writer should stop.
    ready: Notify,
    capacity: usize,
    /// The writer is gone.
    closed: AtomicBool,
    /// The writer should finish (the connection is ending or was cut off).
    stop: AtomicBool,
    too_slow: AtomicBool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Pushing cannot panic halfway, so a poisoned queue is still consistent.
        self.waiting
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
    /// This writer holds the queue's `busy` flag.
    writing: bool,
}

/// What the writer took from the queue: ciphertext first, then frames.
#[derive(Default)]
pub struct Taken {
    /// Ciphertext left by a direct write, to be written as it is.
    pub sealed: Vec<u8>,
    /// Frames, in order.
    pub frames: VecDeque<Bytes>,
}

impl Taken {
    /// Whether nothing was taken.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.frames.is_empty()
    }
}

impl Outgoing {
    /// Waits until there is something to write and nobody else is writing, then moves
    /// all of it into `into` (which must be empty) in one step, and with it the right to
    /// write. Returns false, without waiting, once the writer should stop.
    pub async fn take_all(&mut self, into: &mut Taken) -> bool {
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

    /// Moves whatever waits into `into` (which must be empty), leaving `into`'s
    /// allocations to the queue; false if nothing waits or a direct write is under way.
    /// Returning false also gives up the right to write.
    pub fn try_take_all(&mut self, into: &mut Taken) -> bool {
        debug_assert!(into.is_empty());
        let mut waiting = self.queue.lock();
        if waiting.busy && !self.writing {
            // A direct write is under way; it wakes the writer when done.
            return false;
        }
        if waiting.frames.is_empty() && waiting.leftover.is_empty() {
            waiting.busy = false;
            self.writing = false;
            return false;
        }
        std::mem::swap(&mut waiting.frames, &mut into.frames);
        std::mem::swap(&mut waiting.leftover, &mut into.sealed);
        waiting.busy = true;
        self.writing = true;
        true
    }

    /// For the writer's last step: ends direct writes, waits for one under way, and
    /// moves whatever is left into `into` (which must be empty).
    pub async fn finish(&mut self, into: &mut Taken) {
        loop {
            {
                let mut waiting = self.queue.lock();
                waiting.closing = true;
                if !waiting.busy || self.writing {
                    std::mem::swap(&mut waiting.frames, &mut into.frames);
                    std::mem::swap(&mut waiting.leftover, &mut into.sealed);
                    waiting.busy = true;
                    self.writing = true;
                    return;
                }
            }
            self.queue.ready.notified().await;
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        let mut waiting = self.queue.lock();
        waiting.frames.clear();
        waiting.leftover = Vec::new();
        waiting.closing = true;
        waiting.sink = None;
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
    /// A handle for a new connection, and the receiving end its writer drains. With a
    /// `sink`, [`Outbound::write_or_push`] may write to the socket directly.
    #[must_use]
    pub fn new(
        conn: ConnId,
        capacity: usize,
        kill: CancellationToken,
        sink: Option<Arc<TlsSink>>,
    ) -> (Outbound, Outgoing) {
        let queue = Arc::new(Queue {
            waiting: Mutex::new(Waiting {
                sink,
                ..Waiting::default()
            }),
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
            Outgoing {
                queue,
                writing: false,
            },
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

    /// Writes `frame` to the socket at once if nothing is queued and nobody is writing,
    /// else queues it like [`Outbound::push`]. `scratch` is the caller's buffer for the
    /// ciphertext, kept between calls so a direct write allocates nothing. Meant for
    /// code that is not the connection's own (the persister's fan-out): it never waits
    /// for the socket.
    pub fn write_or_push(&self, frame: &Bytes, scratch: &mut Vec<u8>) -> bool {
        let queue = &*self.queue;
        if queue.closed.load(Ordering::Acquire) || queue.stop.load(Ordering::Acquire) {
            return self.push(frame.clone());
        }
        let sink = {
            let mut waiting = queue.lock();
            match &waiting.sink {
                Some(sink) if waiting.idle() => {
                    let sink = Arc::clone(sink);
                    waiting.busy = true;
                    sink
                }
                _ => {
                    drop(waiting);
                    return self.push(frame.clone());
                }
            }
        };
        scratch.clear();
        // The fan-out runs on the persister's threads: a bug in TLS must cost this
        // connection only, not every room's persistence.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sink.seal(frame, scratch)
                .and_then(|()| sink.try_write(scratch))
        }))
        .unwrap_or_else(|_| Err(std::io::Error::other("sending panicked")));
        let mut waiting = queue.lock();
        waiting.busy = false;
        let ok = match result {
            Ok(written) => {
                if let Some(rest) = scratch.get(written..).filter(|rest| !rest.is_empty()) {
                    // The socket is full: the writer finishes when it can.
                    waiting.leftover.extend_from_slice(rest);
                }
                true
            }
            Err(err) => {
                // The connection is broken; its reader sees that too and ends it.
                tracing::debug!(conn = self.conn, cause = %err, "direct write failed");
                waiting.closing = true;
                self.queue.closed.store(true, Ordering::Release);
                false
            }
        };
        let wake = !waiting.frames.is_empty() || !waiting.leftover.is_empty() || waiting.closing;
        drop(waiting);
        if scratch.capacity() > MAX_KEPT_SCRATCH {
            *scratch = Vec::new();
        }
        if wake {
            queue.ready.notify_one();
        }
        ok
    }

    /// Queues `frame` if fewer than `limit` frames wait; a full queue (limit = capacity)
    /// cuts the connection off.
    fn enqueue(&self, frame: Bytes, limit: usize) -> bool {
        let queue = &*self.queue;
        if queue.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut waiting = queue.lock();
        if waiting.frames.len() >= limit {
            drop(waiting);
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
        // Wake the writer when the queue becomes non-empty, unless a direct write is
        // under way: that one wakes it when done.
        let wake = waiting.frames.is_empty() && waiting.leftover.is_empty() && !waiting.busy;
        waiting.frames.push_back(frame);
        drop(waiting);
        if wake {
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

/// The writer task of a connection: the only code that waits on its socket. It writes
/// whatever the queue holds, coalesced, until told to stop, then closes TLS.
pub async fn write_loop(mut writer: TlsWriter, mut queue: Outgoing) {
    // What is taken from the queue in one step, and the buffer frames are gathered in
    // when there are several; all are released whenever the queue runs dry, so an idle
    // connection holds none. The queue's one wake-up also says when to stop.
    let mut taken = Taken::default();
    let mut batch = BytesMut::new();
    loop {
        if !queue.try_take_all(&mut taken) {
            // Nothing to send: hold no buffers while waiting.
            taken = Taken::default();
            batch = BytesMut::new();
            writer.release_buffers();
            if !queue.take_all(&mut taken).await {
                break;
            }
        }
        if write_taken(&mut writer, &mut taken, &mut batch)
            .await
            .is_err()
        {
            return;
        }
    }
    // Closing: deliver what is already queued (such as a final error).
    queue.finish(&mut taken).await;
    if write_taken(&mut writer, &mut taken, &mut batch)
        .await
        .is_err()
    {
        return;
    }
    writer.close().await;
}

/// Writes what was taken from the queue: leftover ciphertext, then the frames, as few
/// writes as [`MAX_COALESCE`] allows. Leaves `taken` empty.
async fn write_taken(
    writer: &mut TlsWriter,
    taken: &mut Taken,
    batch: &mut BytesMut,
) -> std::io::Result<()> {
    if !taken.sealed.is_empty() {
        let written = writer.write_sealed(&taken.sealed).await;
        taken.sealed.clear();
        written?;
    }
    let frames = &mut taken.frames;
    while let Some(first) = frames.pop_front() {
        let written = if frames.is_empty() {
            // The common case at chat rates: one frame, written as it is.
            writer.write(&first).await
        } else {
            batch.extend_from_slice(&first);
            while batch.len() < MAX_COALESCE {
                let Some(frame) = frames.pop_front() else {
                    break;
                };
                batch.extend_from_slice(&frame);
            }
            // A write to a peer that does not read blocks here; the connection task
            // gives up on this writer after a grace period and aborts it.
            let written = writer.write(batch).await;
            batch.clear();
            written
        };
        if written.is_err() {
            frames.clear();
            return written;
        }
    }
    Ok(())
}

/// Bytes gathered into one write at most.
const MAX_COALESCE: usize = 256 * 1024;

/// A direct writer's scratch buffer is freed after a write that grew it past this.
const MAX_KEPT_SCRATCH: usize = 256 * 1024;

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
    use crate::tls::stream::testing::{LIMIT, pair};
    use tokio::io::AsyncReadExt as _;

    fn frames(taken: &mut Taken) -> Vec<Bytes> {
        Vec::from(std::mem::take(&mut taken.frames))
    }

    #[test]
    fn offered_frames_are_dropped_when_the_queue_is_half_full() {
        let kill = CancellationToken::new();
        let (out, mut queue) = Outbound::new(1, 4, kill.clone(), None);
        let mut taken = Taken::default();
        assert!(out.offer(Bytes::from_static(b"a")));
        assert!(out.offer(Bytes::from_static(b"b")));
        // Half full: lossy frames stop, frames that must arrive still fit.
        assert!(!out.offer(Bytes::from_static(b"c")));
        assert!(out.push(Bytes::from_static(b"d")));
        assert!(!kill.is_cancelled());
        assert!(queue.try_take_all(&mut taken));
        assert_eq!(frames(&mut taken), ["a", "b", "d"]);
        assert!(!queue.try_take_all(&mut taken));
        assert!(out.offer(Bytes::from_static(b"e")));
        assert!(out.offer(Bytes::from_static(b"f")));
        assert!(!kill.is_cancelled() && !out.was_too_slow());
    }

    #[test]
    fn a_full_queue_cuts_the_connection_off() {
        let kill = CancellationToken::new();
        let (out, _queue) = Outbound::new(1, 2, kill.clone(), None);
        assert!(out.push(Bytes::from_static(b"a")));
        assert!(out.push(Bytes::from_static(b"b")));
        assert!(!out.push(Bytes::from_static(b"c")));
        assert!(kill.is_cancelled() && out.was_too_slow() && out.is_closed());
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_and_a_closed_queue_refuses_more() {
        let kill = CancellationToken::new();
        let (out, mut queue) = Outbound::new(1, 8, kill.clone(), None);
        let pusher = out.clone();
        let push = tokio::spawn(async move {
            tokio::task::yield_now().await;
            assert!(pusher.push(Bytes::from_static(b"x")));
        });
        let mut taken = Taken::default();
        tokio::time::timeout(LIMIT, queue.take_all(&mut taken))
            .await
            .expect("the writer was not woken");
        assert_eq!(frames(&mut taken), ["x"]);
        push.await.unwrap();
        drop(queue);
        assert!(out.is_closed());
        assert!(!out.push(Bytes::from_static(b"y")));
        assert!(!kill.is_cancelled(), "a closed queue is not a slow client");
    }

    /// Frame `index` of the ordering test: its number, then filler; every 50th is
    /// large enough to fill the socket and leave ciphertext for the writer.
    fn numbered(index: u32) -> Bytes {
        let len = if index % 50 == 49 { 300 * 1024 } else { 40 };
        let mut frame = vec![(index % 251) as u8; len];
        frame[..4].copy_from_slice(&index.to_le_bytes());
        frame[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        Bytes::from(frame)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_writes_and_queued_frames_arrive_whole_and_in_order() {
        const FRAMES: u32 = 400;
        let (_reader, writer, mut client, _dir) = pair().await;
        let kill = CancellationToken::new();
        let (out, queue) = Outbound::new(1, 1 << 16, kill.clone(), Some(writer.sink()));
        let write_task = tokio::spawn(write_loop(writer, queue));
        // One thread that is not the runtime's, as the persister: every third frame
        // queued, the others written directly when the connection is idle.
        let fan_out = out.clone();
        let sender = std::thread::spawn(move || {
            let mut scratch = Vec::new();
            for index in 0..FRAMES {
                let frame = numbered(index);
                let ok = if index % 3 == 0 {
                    fan_out.push(frame)
                } else {
                    fan_out.write_or_push(&frame, &mut scratch)
                };
                assert!(ok, "frame {index} refused");
            }
        });
        let mut next = 0u32;
        let mut buf = vec![0u8; 8];
        tokio::time::timeout(LIMIT * 3, async {
            while next < FRAMES {
                client.read_exact(&mut buf[..8]).await.unwrap();
                let index = u32::from_le_bytes(buf[..4].try_into().unwrap());
                let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
                assert_eq!(index, next, "frames out of order");
                buf.resize(len, 0);
                client.read_exact(&mut buf[8..len]).await.unwrap();
                assert!(buf[8..].iter().all(|&byte| byte == (index % 251) as u8));
                next += 1;
            }
        })
        .await
        .expect("not every frame arrived");
        sender.join().unwrap();
        assert!(!kill.is_cancelled());
        out.stop_writer();
        tokio::time::timeout(LIMIT, write_task)
            .await
            .unwrap()
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(LIMIT, client.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "close_notify ends the stream");
    }

    #[tokio::test]
    async fn an_idle_connection_is_written_without_its_writer_and_the_rest_waits_for_it() {
        let (_reader, writer, mut client, _dir) = pair().await;
        let kill = CancellationToken::new();
        let (out, queue) = Outbound::new(1, 64, kill, Some(writer.sink()));
        let mut scratch = Vec::new();
        // No writer task yet: an idle connection is written to directly.
        assert!(out.write_or_push(&Bytes::from_static(b"direct"), &mut scratch));
        let mut got = [0u8; 6];
        tokio::time::timeout(LIMIT, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"direct");
        // More than the socket takes: the rest is left for the writer, and what comes
        // after it queues behind it.
        let big = Bytes::from(vec![7u8; 8 << 20]);
        assert!(out.write_or_push(&big, &mut scratch));
        assert!(out.write_or_push(&Bytes::from_static(b"after"), &mut scratch));
        tokio::spawn(write_loop(writer, queue));
        let mut all = vec![0u8; big.len() + 5];
        tokio::time::timeout(LIMIT, client.read_exact(&mut all))
            .await
            .unwrap()
            .unwrap();
        assert!(all[..big.len()].iter().all(|&byte| byte == 7));
        assert_eq!(&all[big.len()..], b"after");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_whose_tls_fails_refuses_direct_writes_and_its_writer_ends() {
        let (mut reader, writer, client, _dir) = pair().await;
        let (out, queue) = Outbound::new(1, 1 << 16, CancellationToken::new(), Some(writer.sink()));
        let write_task = tokio::spawn(write_loop(writer, queue));
        let fan_out = out.clone();
        let sender = std::thread::spawn(move || {
            let mut scratch = Vec::new();
            let frame = Bytes::from(vec![1u8; 200]);
            // Bounded: the connection fails within the test's time.
            let deadline = std::time::Instant::now() + LIMIT;
            while std::time::Instant::now() < deadline {
                if !fan_out.write_or_push(&frame, &mut scratch) {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            false
        });
        // The client forges a record; the reader fails while direct writes go on.
        let (mut tcp, _) = client.into_inner();
        let mut record = vec![23, 3, 3, 0, 40];
        record.extend_from_slice(&[0x5a; 40]);
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &record)
            .await
            .unwrap();
        let mut got = BytesMut::new();
        loop {
            let read = tokio::time::timeout(LIMIT, reader.read(&mut got))
                .await
                .unwrap();
            if read.is_err() {
                break;
            }
            got.clear();
        }
        assert!(
            tokio::task::spawn_blocking(move || sender.join().unwrap())
                .await
                .unwrap(),
            "direct writes went on after TLS failed"
        );
        out.stop_writer();
        tokio::time::timeout(LIMIT, write_task)
            .await
            .unwrap()
            .unwrap();
        assert!(out.is_closed());
    }

    #[tokio::test]
    async fn the_socket_is_released_with_the_writer_not_with_the_last_handle() {
        let (_reader, writer, mut client, _dir) = pair().await;
        let sink = Arc::downgrade(&writer.sink());
        let (out, queue) = Outbound::new(1, 64, CancellationToken::new(), Some(writer.sink()));
        let write_task = tokio::spawn(write_loop(writer, queue));
        out.stop_writer();
        tokio::time::timeout(LIMIT, write_task)
            .await
            .unwrap()
            .unwrap();
        // The handle lives on (as in a room's member list) but holds no socket.
        assert!(sink.upgrade().is_none(), "the socket outlived its writer");
        let mut scratch = Vec::new();
        assert!(!out.write_or_push(&Bytes::from_static(b"late"), &mut scratch));
        let mut rest = Vec::new();
        let read = tokio::time::timeout(LIMIT, client.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "close_notify ends the stream");
    }
}
