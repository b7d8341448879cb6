//! The persister: the one writer of room logs.
//!
//! Room actors hand it entries with their sequence numbers already assigned. It gathers
//! whatever is queued into one transaction, commits it durably, and only then delivers
//! each entry to its recipients and acknowledges it to its sender. Batching keeps one
//! fsync for many messages under load instead of skipping durability.
//!
//! At chat rates the persister delivers each small batch itself, right after its
//! commit. Under load it becomes a pipeline of two threads: `confide-persist` commits
//! and hands each committed (or failed) batch to `confide-deliver`, which delivers,
//! acknowledges and notifies, so the next commit (an fsync) does not wait for the last
//! fan-out. The persister delivers itself only while nothing is handed over, and both
//! threads are FIFO, so every room's entries still reach everyone in sequence order;
//! nothing is delivered or acknowledged before its commit.

use crate::fanout::FanOut;
use crate::outbound::{Outbound, encode};
use crate::store::{Effect, Store, Write};
use bytes::Bytes;
use confide_proto::{
    ErrorCode, Event, ProtoError, Reply, RequestId, RoomId, Seq, ServerFrame, Timestamp,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 2048;

/// Batches of at most this many jobs are delivered by writing to idle sockets directly.
const DIRECT_BATCH: usize = 2;

/// Jobs waiting for the persister before room actors wait for room.
const QUEUE: usize = 8192;

/// Committed batches waiting for delivery before the persister waits.
const DELIVERY_QUEUE: usize = 16;

/// How to tell the sender that its entry is stored.
#[derive(Debug)]
pub enum Ack {
    /// A message: send a [`Reply::Sent`] response on the connection.
    Sent {
        /// The sender's connection.
        out: Outbound,
        /// The request.
        id: RequestId,
        /// Released once acknowledged, bounding messages in flight per connection.
        permit: OwnedSemaphorePermit,
    },
    /// Anything else: complete the oneshot.
    Done(oneshot::Sender<Result<(), ProtoError>>),
    /// Complete the oneshot with a reply prepared when the job was made.
    Reply(oneshot::Sender<Result<Reply, ProtoError>>, Reply),
    /// Nobody is waiting.
    None,
}

/// What the persister tells a room actor.
#[derive(Debug, Clone, Copy)]
pub enum Notice {
    /// This membership change is now stored.
    Committed(Effect),
    /// A batch with this room's entries failed: reload state from the store.
    Reload,
}

/// One unit of work.
#[derive(Debug)]
pub struct Job {
    /// What to store; `None` only acknowledges, after everything queued before it is
    /// stored (a resent message whose original is still in flight).
    pub write: Option<Write>,
    /// Who receives the entry once stored.
    pub recipients: Arc<[Outbound]>,
    /// Additional receivers (a user who just joined or is being removed).
    pub extra: Vec<Outbound>,
    /// Frames for particular connections once stored, after the entry (Welcomes).
    pub pushes: Vec<(Outbound, Bytes)>,
    /// The acknowledgement; for a pure ack, the place the original was stored.
    pub ack: Ack,
    /// For a pure ack: where the original was stored.
    pub original: Option<(RoomId, Seq, Timestamp)>,
    /// The room actor's notice channel.
    pub notify: mpsc::UnboundedSender<Notice>,
}

/// Sends jobs to the persister.
#[derive(Debug, Clone)]
pub struct PersistHandle {
    tx: mpsc::Sender<Job>,
}

/// Room for a job in the persister's full queue, waited for.
pub type Backlog = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Waits until a job [`PersistHandle::submit`] returned is queued.
pub async fn queued(backlog: Option<Backlog>) {
    if let Some(backlog) = backlog {
        backlog.await;
    }
}

impl PersistHandle {
    /// Queues a job. The queue nearly always has room and the job is queued at once;
    /// when the persister is behind, the job waits in the returned future, which the
    /// caller awaits before queueing anything else (so its jobs stay in order).
    ///
    /// Not an `async fn`: a room actor's future would then hold a job inline, and that
    /// future is resident for every room; the rare wait is boxed instead.
    #[must_use = "the job is not queued until the backlog is awaited"]
    pub fn submit(&self, job: Job) -> Option<Backlog> {
        match self.tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                Some(Box::pin(async move {
                    if let Err(err) = tx.send(job).await {
                        fail(err.0, "the server is shutting down");
                    }
                }))
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                fail(job, "the server is shutting down");
                None
            }
        }
    }
}

/// Starts the persister thread. It runs until every [`PersistHandle`] is dropped and
/// its queue is empty.
///
/// # Errors
/// If the thread cannot be started.
pub fn start(
    store: Arc<dyn Store>,
) -> std::io::Result<(PersistHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (batches, delivery) = std::sync::mpsc::sync_channel(DELIVERY_QUEUE);
    let (recycle, reuse) = std::sync::mpsc::channel();
    let shared = Arc::new(Delivery {
        fan_out: Mutex::new(FanOut::new()),
        handed: AtomicUsize::new(0),
    });
    let deliverer = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("confide-deliver".to_owned())
            .spawn(move || run_delivery(&shared, &delivery, &recycle))?
    };
    let thread = std::thread::Builder::new()
        .name("confide-persist".to_owned())
        .spawn(move || {
            run(store, rx, &shared, &batches, &reuse);
            // Everything committed is delivered before the persister counts as done.
            drop(batches);
            if deliverer.join().is_err() {
                tracing::error!("the delivery thread panicked");
            }
        })?;
    Ok((PersistHandle { tx }, thread))
}

/// What the two threads share.
struct Delivery {
    /// Used by one thread at a time: the persister only while nothing is handed over.
    fan_out: Mutex<FanOut>,
    /// Batches handed to the delivery thread and not yet delivered.
    handed: AtomicUsize,
}

impl Delivery {
    fn fan_out(&self) -> MutexGuard<'_, FanOut> {
        // A fan-out that panicked halfway has delivered what it could; it is still usable.
        self.fan_out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A batch on its way from the commit to its delivery.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    /// The stored writes of `jobs`, in order, if the commit succeeded.
    writes: Vec<Write>,
    committed: bool,
}

impl Batch {
    /// Delivers and acknowledges a committed batch, or fails every job of one that was
    /// not; leaves the batch empty, its buffers kept.
    fn deliver(&mut self, fan_out: &mut FanOut) {
        if self.committed {
            // A lone entry (chat rates) is written to idle receivers' sockets directly;
            // under load the writers coalesce many entries per write instead.
            let direct = self.jobs.len() <= DIRECT_BATCH;
            let mut stored = self.writes.drain(..);
            for job in self.jobs.drain(..) {
                let write = if job.original.is_none() {
                    stored.next()
                } else {
                    None
                };
                deliver(job, write, direct.then_some(&mut *fan_out));
            }
        } else {
            for job in self.jobs.drain(..) {
                fail(job, "the server could not store this; try again");
            }
        }
        self.writes.clear();
        self.committed = false;
    }
}

fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    shared: &Delivery,
    batches: &std::sync::mpsc::SyncSender<Batch>,
    reuse: &std::sync::mpsc::Receiver<Batch>,
) {
    let mut batch = Batch::default();
    while let Some(first) = rx.blocking_recv() {
        batch.jobs.push(first);
        while batch.jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.jobs.push(job),
                Err(_) => break,
            }
        }
        for job in &mut batch.jobs {
            if let Some(write) = job.write.take() {
                batch.writes.push(write);
            }
        }
        let started = std::time::Instant::now();
        batch.committed = match store.write(&batch.writes) {
            Ok(()) => {
                tracing::trace!(
                    entries = batch.writes.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                true
            }
            Err(err) => {
                tracing::error!(cause = %err, entries = batch.writes.len(), "cannot store a batch");
                batch.writes.clear();
                false
            }
        };
        // At chat rates the persister delivers a small batch itself, which is quickest.
        // Under load, or while the delivery thread is still busy (its batches must go
        // first), it hands the batch over and commits the next one meanwhile.
        if batch.jobs.len() <= DIRECT_BATCH && shared.handed.load(Ordering::Acquire) == 0 {
            batch.deliver(&mut shared.fan_out());
            continue;
        }
        shared.handed.fetch_add(1, Ordering::AcqRel);
        // The delivery thread hands emptied buffers back, so a steady stream of batches
        // allocates nothing.
        let next = reuse.try_recv().unwrap_or_default();
        if let Err(lost) = batches.send(std::mem::replace(&mut batch, next)) {
            // The delivery thread is gone (it panicked): nobody can be told anything in
            // order any more; answer these here so no sender waits for ever.
            for job in lost.0.jobs {
                fail(job, "the server cannot deliver messages now");
            }
        }
    }
}

fn run_delivery(
    shared: &Delivery,
    batches: &std::sync::mpsc::Receiver<Batch>,
    recycle: &std::sync::mpsc::Sender<Batch>,
) {
    while let Ok(mut batch) = batches.recv() {
        batch.deliver(&mut shared.fan_out());
        shared.handed.fetch_sub(1, Ordering::AcqRel);
        if batch.jobs.capacity() <= MAX_BATCH && batch.writes.capacity() <= MAX_BATCH {
            let _ = recycle.send(batch);
        }
    }
}

fn deliver(job: Job, write: Option<Write>, direct: Option<&mut FanOut>) {
    let mut place = job.original;
    if let Some(Write::Append(append)) = write {
        let entry = append.entry;
        place = Some((entry.room, entry.seq, entry.timestamp));
        if let Some(frame) = encode(&ServerFrame::Event(Event::Entry(entry))) {
            match direct {
                Some(fan_out) => {
                    fan_out.deliver(&frame, &job.recipients);
                    for out in &job.extra {
                        fan_out.deliver_one(&frame, out);
                    }
                }
                None => {
                    for out in job.recipients.iter().chain(job.extra.iter()) {
                        out.push(frame.clone());
                    }
                }
            }
        }
        // Only after the entry is queued: the room reacts to the notice with frames of its
        // own (a removed member's room update), which must follow the entry they explain.
        if let Some(effect) = append.effect {
            let _ = job.notify.send(Notice::Committed(effect));
        }
    }
    for (out, frame) in job.pushes {
        out.push(frame);
    }
    match job.ack {
        Ack::Sent { out, id, permit } => {
            let result = match place {
                Some((room, seq, timestamp)) => Ok(Reply::Sent {
                    room,
                    seq,
                    timestamp,
                }),
                None => Err(ProtoError::new(
                    ErrorCode::Internal,
                    "message was not stored",
                )),
            };
            out.send(&ServerFrame::Response { id, result });
            drop(permit);
        }
        Ack::Done(reply) => {
            let _ = reply.send(Ok(()));
        }
        Ack::Reply(tx, reply) => {
            let _ = tx.send(Ok(reply));
        }
        Ack::None => {}
    }
}

fn fail(job: Job, why: &str) {
    match job.ack {
        Ack::Sent { out, id, permit } => {
            out.send(&ServerFrame::Response {
                id,
                result: Err(ProtoError::new(ErrorCode::Internal, why)),
            });
            drop(permit);
        }
        Ack::Done(reply) => {
            let _ = reply.send(Err(ProtoError::new(ErrorCode::Internal, why)));
        }
        Ack::Reply(tx, _) => {
            let _ = tx.send(Err(ProtoError::new(ErrorCode::Internal, why)));
        }
        Ack::None => {}
    }
    // The room assumed this entry would be stored; it must reload what really is.
    let _ = job.notify.send(Notice::Reload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{Outgoing, Taken};
    use crate::store::{Append, MemoryStore};
    use confide_proto::{EntryKind, FrameDecoder, LogEntry, UserId, UserName};
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;

    const ENTRIES: u64 = 3000;

    fn job(seq: u64, recipients: &Arc<[Outbound]>, permits: &Arc<Semaphore>) -> Job {
        let (notify, _) = mpsc::unbounded_channel();
        let entry = LogEntry {
            room: RoomId(1),
            seq: Seq(seq),
            timestamp: Timestamp(0),
            sender: UserName::parse("alice").unwrap(),
            device: None,
            kind: EntryKind::Message {
                body: seq.to_be_bytes().to_vec(),
            },
        };
        Job {
            write: Some(Write::Append(Append {
                entry,
                nonce: None,
                effect: None,
                group: None,
            })),
            recipients: Arc::clone(recipients),
            extra: Vec::new(),
            pushes: Vec::new(),
            ack: Ack::Sent {
                out: recipients[0].clone(),
                id: RequestId(seq),
                permit: Arc::clone(permits).try_acquire_owned().unwrap(),
            },
            original: None,
            notify,
        }
    }

    /// What one receiver got: `Entry(seq)` or `Ack(request)`, in order.
    fn received(queue: &mut Outgoing) -> Vec<(bool, u64)> {
        let mut taken = Taken::default();
        let mut got = Vec::new();
        while queue.try_take_all(&mut taken) {
            for frame in taken.frames.drain(..) {
                let mut buf = bytes::BytesMut::from(&frame[..]);
                let payload = FrameDecoder::new(1 << 20)
                    .next_payload(&mut buf)
                    .unwrap()
                    .unwrap();
                match confide_proto::decode_value::<ServerFrame>(&payload).unwrap() {
                    ServerFrame::Event(Event::Entry(entry)) => got.push((true, entry.seq.0)),
                    ServerFrame::Response { id, result } => {
                        assert!(result.is_ok(), "{result:?}");
                        got.push((false, id.0));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        got
    }

    #[tokio::test]
    async fn a_burst_is_stored_delivered_and_acknowledged_in_order() {
        let (handle, thread) = start(Arc::new(MemoryStore::new())).unwrap();
        let mut outs = Vec::new();
        let mut queues = Vec::new();
        for conn in 0..3 {
            let (out, queue) = Outbound::new(conn, 1 << 16, CancellationToken::new(), None);
            outs.push(out.for_user(UserId(conn + 1)));
            queues.push(queue);
        }
        let recipients: Arc<[Outbound]> = outs.into();
        let permits = Arc::new(Semaphore::new(ENTRIES as usize));
        // Submitted as fast as possible: the persister gathers them into batches, and
        // hands most of those to the delivery thread while it commits the next.
        for seq in 1..=ENTRIES {
            queued(handle.submit(job(seq, &recipients, &permits))).await;
        }
        drop(handle);
        drop(recipients);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        assert_eq!(
            permits.available_permits(),
            ENTRIES as usize,
            "every send acked"
        );
        for (conn, queue) in queues.iter_mut().enumerate() {
            let got = received(queue);
            let entries: Vec<u64> = got.iter().filter(|e| e.0).map(|e| e.1).collect();
            assert_eq!(
                entries,
                (1..=ENTRIES).collect::<Vec<_>>(),
                "receiver {conn}"
            );
            if conn == 0 {
                // The sender's acknowledgement of each entry follows that entry.
                let mut seen = 0;
                for (is_entry, number) in got {
                    if is_entry {
                        seen = number;
                    } else {
                        assert!(number <= seen, "ack {number} before its entry");
                    }
                }
            } else {
                assert_eq!(
                    got.len() as u64,
                    ENTRIES,
                    "receiver {conn} got only entries"
                );
            }
        }
    }
}
