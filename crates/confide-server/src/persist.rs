//! The persister: the one writer of room logs.
//!
//! Room actors hand it entries with their sequence numbers already assigned. It gathers
//! whatever is queued into one transaction, commits it durably, and only then delivers
//! each entry to its recipients and acknowledges it to its sender. Batching keeps one
//! fsync for many messages under load instead of skipping durability.
//!
//! Two threads form a pipeline: `confide-persist` commits batches and hands each
//! committed (or failed) batch to `confide-deliver`, which delivers, acknowledges and
//! notifies. Both are FIFO, so every room's entries still reach everyone in sequence
//! order, and nothing is delivered or acknowledged before its commit; but the next
//! batch's commit (an fsync) no longer waits for the previous batch's fan-out.

use crate::fanout::FanOut;
use crate::outbound::{Outbound, encode};
use crate::store::{Effect, Store, Write};
use bytes::Bytes;
use confide_proto::{
    ErrorCode, Event, ProtoError, Reply, RequestId, RoomId, Seq, ServerFrame, Timestamp,
};
use std::sync::Arc;
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

impl PersistHandle {
    /// Queues a job, waiting if the persister is behind.
    pub async fn submit(&self, job: Job) {
        if let Err(err) = self.tx.send(job).await {
            fail(err.0, "the server is shutting down");
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
    let deliverer = std::thread::Builder::new()
        .name("confide-deliver".to_owned())
        .spawn(move || run_delivery(&delivery, &recycle))?;
    let thread = std::thread::Builder::new()
        .name("confide-persist".to_owned())
        .spawn(move || {
            run(store, rx, &batches, &reuse);
            // Everything committed is delivered before the persister counts as done.
            drop(batches);
            if deliverer.join().is_err() {
                tracing::error!("the delivery thread panicked");
            }
        })?;
    Ok((PersistHandle { tx }, thread))
}

/// A batch on its way from the commit to its delivery.
struct Batch {
    jobs: Vec<Job>,
    /// The stored writes of `jobs`, in order, if the commit succeeded.
    writes: Vec<Write>,
    committed: bool,
}

fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    batches: &std::sync::mpsc::SyncSender<Batch>,
    reuse: &std::sync::mpsc::Receiver<(Vec<Job>, Vec<Write>)>,
) {
    while let Some(first) = rx.blocking_recv() {
        // The delivery thread hands emptied buffers back, so a steady stream of batches
        // allocates nothing.
        let (mut jobs, mut writes) = reuse.try_recv().unwrap_or_default();
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for job in &mut jobs {
            if let Some(write) = job.write.take() {
                writes.push(write);
            }
        }
        let started = std::time::Instant::now();
        let committed = match store.write(&writes) {
            Ok(()) => {
                tracing::trace!(
                    entries = writes.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                true
            }
            Err(err) => {
                tracing::error!(cause = %err, entries = writes.len(), "cannot store a batch");
                writes.clear();
                false
            }
        };
        let batch = Batch {
            jobs,
            writes,
            committed,
        };
        if let Err(lost) = batches.send(batch) {
            // The delivery thread is gone (it panicked): nobody can be told anything
            // in order any more; answer these here so no sender waits for ever.
            for job in lost.0.jobs {
                fail(job, "the server cannot deliver messages now");
            }
        }
    }
}

fn run_delivery(
    batches: &std::sync::mpsc::Receiver<Batch>,
    recycle: &std::sync::mpsc::Sender<(Vec<Job>, Vec<Write>)>,
) {
    let mut fan_out = FanOut::new();
    while let Ok(Batch {
        mut jobs,
        mut writes,
        committed,
    }) = batches.recv()
    {
        if committed {
            // A lone entry (chat rates) is written to idle receivers' sockets from
            // here; under load the writers coalesce many entries per write instead.
            let direct = jobs.len() <= DIRECT_BATCH;
            let mut stored = writes.drain(..);
            for job in jobs.drain(..) {
                let write = if job.original.is_none() {
                    stored.next()
                } else {
                    None
                };
                deliver(job, write, direct.then_some(&mut fan_out));
            }
        } else {
            for job in jobs.drain(..) {
                fail(job, "the server could not store this; try again");
            }
        }
        writes.clear();
        if jobs.capacity() <= MAX_BATCH && writes.capacity() <= MAX_BATCH {
            let _ = recycle.send((jobs, writes));
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
