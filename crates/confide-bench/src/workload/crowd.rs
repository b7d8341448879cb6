//! Many simulated users at once: connecting them (bounded in parallel), one reader task
//! per user that accounts for everything it receives, sender tasks, and waiting until
//! everything expected has arrived or the run's time is up.
//!
//! The same code drives Confide (TLS, frames) and the relay (plain lines), so both are
//! measured by one generator. Readers never block senders: a sender's window of
//! unacknowledged messages is a semaphore that its reader refills as acknowledgements
//! (Confide) or echoes of its own messages (relay) come back.

use crate::body::{Stamp, now_ns};
use crate::client::{Link, LinkReader, Session, user_name};
use crate::entry_view::message_entry;
use crate::relay;
use crate::server::TargetKind;
use crate::stats::{Outcome, Receipts};
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Buf as _, BufMut as _, BytesMut};
use confide_proto::frame::{FrameDecoder, decode_frame};
use confide_proto::{
    ClientFrame, EntryKind, Event, MAX_FRAME_LEN, MessageNonce, Reply, Request, RequestId, RoomId,
    Seq, ServerFrame, SessionToken, Target, encode_frame,
};
use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Ctx;
use super::plan::{Groups, Pairs, Plan};

/// How a user gets into the workload's room after connecting.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Register a new account (Confide) and stay in the lobby; the relay joins group
    /// `lobby`. User 0 also looks up the lobby's id.
    Lobby,
    /// Register, then join (or create) the room of the user's group.
    Group(Groups),
    /// Log in with these tokens (by user index) instead of registering.
    Resume(Arc<Vec<SessionToken>>),
}

/// What a user's reader shares with the coordinator while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Distinct expected messages received.
    pub distinct: AtomicU64,
    /// When the last of them arrived ([`now_ns`]).
    pub last_ns: AtomicU64,
    /// Messages acknowledged by the server.
    pub acked: AtomicU64,
    /// Sends refused by the server.
    pub refused: AtomicU64,
    /// When the last acknowledgement arrived.
    pub last_ack_ns: AtomicU64,
    /// Whether the connection ended before the reader was stopped.
    pub ended: AtomicBool,
}

/// What a reader found, returned when it stops.
pub struct ReaderOutcome {
    /// Messages received.
    pub receipts: Receipts,
    /// Highest sequence number seen per room (Confide).
    pub cursors: HashMap<RoomId, Seq>,
    /// The first refusal of a send, if any.
    pub first_refusal: Option<String>,
    /// Why the connection ended before the reader was stopped.
    pub ended: Option<String>,
}

/// One connected simulated user.
pub struct Member {
    /// Its index (its name is [`user_name`] of it).
    pub index: u32,
    /// Shared with its reader.
    pub progress: Arc<Progress>,
    /// Its window of unacknowledged sends.
    pub window: Arc<Semaphore>,
    /// Stops its reader.
    pub stop: CancellationToken,
    /// Writes to its connection (taken by its sender while it sends).
    pub writer: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    /// Its reader task.
    pub reader: Option<JoinHandle<ReaderOutcome>>,
    /// Its session token (Confide).
    pub token: Option<SessionToken>,
    /// The room it sends to (Confide: the lobby for user 0, or its group's room).
    pub room: Option<RoomId>,
    /// The first request id free for its sends.
    pub next_id: u64,
}

/// Users connected for one run. Dropping it stops every reader.
pub struct Crowd {
    /// By index order.
    pub members: Vec<Member>,
    stop_all: CancellationToken,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop_all.cancel();
    }
}

/// Connects users `indices` with bounded parallelism, each entering as `entry`, and
/// starts their readers.
///
/// # Errors
/// If any user cannot connect or log in before the run's deadline.
pub async fn connect(
    ctx: &Ctx,
    indices: std::ops::Range<u32>,
    entry: &Entry,
    plan: &Arc<dyn Plan>,
) -> Result<Crowd> {
    let stop_all = CancellationToken::new();
    let limit = Arc::new(Semaphore::new(ctx.settings.connect_parallelism.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in indices.clone() {
        let limit = Arc::clone(&limit);
        let setup = Setup {
            index,
            addr: ctx.target.addr,
            tls: ctx.tls.clone(),
            kind: ctx.target.kind,
            entry: entry.clone(),
            plan: Arc::clone(plan),
            frames: Arc::clone(&ctx.frames),
            window: ctx.settings.window,
            stop: stop_all.child_token(),
        };
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|err| anyhow!(err))?;
            setup
                .run()
                .await
                .with_context(|| format!("user {}", user_name(index)))
        });
    }
    let mut members = Vec::with_capacity(indices.len());
    let deadline = ctx.measure_deadline();
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .map_err(|_| anyhow!("connecting the users took longer than the run allows"))?
    {
        members.push(joined.context("a connect task failed")??);
    }
    members.sort_by_key(|member| member.index);
    Ok(Crowd { members, stop_all })
}

struct Setup {
    index: u32,
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    kind: TargetKind,
    entry: Entry,
    plan: Arc<dyn Plan>,
    frames: Arc<AtomicU64>,
    window: u32,
    stop: CancellationToken,
}

impl Setup {
    async fn run(self) -> Result<Member> {
        let mut token = None;
        let mut room = None;
        let mut cursors = HashMap::new();
        let mut next_id = 1;
        let link = match (self.kind, &self.tls) {
            (TargetKind::Confide, Some(tls)) => {
                let mut session = Session::connect(self.addr, tls).await?;
                match &self.entry {
                    Entry::Lobby => {
                        token = Some(session.register(&user_name(self.index)).await?);
                        if self.index == 0 {
                            room = Some(session.lobby().await?);
                        }
                    }
                    Entry::Group(groups) => {
                        token = Some(session.register(&user_name(self.index)).await?);
                        let name = format!("room{}", groups.group_of(self.index));
                        room = Some(session.join_or_create(&name).await?);
                    }
                    Entry::Resume(tokens) => {
                        let saved = tokens
                            .get(self.index as usize)
                            .context("no token for this user")?
                            .clone();
                        session.resume(saved.clone()).await?;
                        token = Some(saved);
                    }
                }
                cursors = std::mem::take(&mut session.cursors);
                next_id = session.next_request_id();
                session.into_link()
            }
            (TargetKind::Relay, _) => {
                let group = match &self.entry {
                    Entry::Group(groups) => format!("room{}", groups.group_of(self.index)),
                    Entry::Lobby | Entry::Resume(_) => "lobby".to_owned(),
                };
                relay::connect(self.addr, &group).await?
            }
            (TargetKind::Confide, None) => bail!("no TLS configuration for Confide"),
        };
        let progress = Arc::new(Progress::default());
        let window = Arc::new(Semaphore::new(self.window as usize));
        let Link {
            reader: stream,
            writer,
            pending,
        } = link;
        let state = Reader {
            index: self.index,
            kind: self.kind,
            plan: self.plan,
            progress: Arc::clone(&progress),
            frames: self.frames,
            window: Arc::clone(&window),
            stop: self.stop.clone(),
            receipts: Receipts::default(),
            cursors,
            first_refusal: None,
        };
        let task = tokio::spawn(state.run(stream, pending));
        Ok(Member {
            index: self.index,
            progress,
            window,
            stop: self.stop,
            writer: Some(writer),
            reader: Some(task),
            token,
            room,
            next_id,
        })
    }
}

/// A user's reader task: reads until stopped, accounting for every message.
struct Reader {
    index: u32,
    kind: TargetKind,
    plan: Arc<dyn Plan>,
    progress: Arc<Progress>,
    frames: Arc<AtomicU64>,
    window: Arc<Semaphore>,
    stop: CancellationToken,
    receipts: Receipts,
    cursors: HashMap<RoomId, Seq>,
    first_refusal: Option<String>,
}

/// Bytes reserved for each read: one full TLS record of plaintext.
const READ_CHUNK: usize = 16 * 1024;

impl Reader {
    async fn run(mut self, mut stream: LinkReader, mut buf: BytesMut) -> ReaderOutcome {
        let decoder = FrameDecoder::new(MAX_FRAME_LEN);
        let mut stop = StopWatch::new(self.stop.clone());
        let ended = loop {
            let now = now_ns();
            let handled = match self.kind {
                TargetKind::Confide => self.frames_in(&mut buf, now),
                TargetKind::Relay => Ok(self.lines_in(&mut buf, now)),
            };
            match handled {
                Ok(count) if count > 0 => {
                    self.frames.fetch_add(count, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(reason) => break Some(reason),
            }
            let wanted = match self.kind {
                TargetKind::Confide => decoder.bytes_wanted(&buf),
                TargetKind::Relay => 1,
            };
            buf.reserve(wanted.max(READ_CHUNK));
            // Seen even in a stream that never pauses.
            if stop.fired() {
                break None;
            }
            tokio::select! {
                biased;
                read = stream.read(&mut buf) => match read {
                    Ok(0) => break Some("the server closed the connection".to_owned()),
                    Ok(_) => {}
                    Err(err) => break Some(format!("read failed: {err}")),
                },
                () = std::future::poll_fn(|cx| stop.poll(cx)) => break None,
            }
        };
        if ended.is_some() {
            self.progress.ended.store(true, Ordering::Relaxed);
            // A sender waiting for its window must not wait for a dead connection.
            self.window.close();
        }
        ReaderOutcome {
            receipts: self.receipts,
            cursors: self.cursors,
            first_refusal: self.first_refusal,
            ended,
        }
    }

    /// Handles every complete frame in `buf`, where they are (no frame is split off
    /// the buffer); returns how many.
    fn frames_in(&mut self, buf: &mut BytesMut, now: u64) -> Result<u64, String> {
        let mut count = 0;
        let mut start = 0;
        while let Some((payload, total)) = decode_frame(&buf[start..], MAX_FRAME_LEN)
            .map_err(|err| format!("bad frame from the server: {err}"))?
        {
            count += 1;
            start += total;
            self.frame_in(payload, now)?;
        }
        buf.advance(start);
        Ok(count)
    }

    /// Handles one frame's payload.
    fn frame_in(&mut self, payload: &[u8], now: u64) -> Result<(), String> {
        // Most frames are messages: read those in place (see `entry_view`).
        if let Some(entry) = message_entry(payload) {
            let cursor = self.cursors.entry(entry.room).or_default();
            *cursor = (*cursor).max(entry.seq);
            if let Some(stamp) = Stamp::parse(entry.body) {
                self.record(stamp, now);
            }
            return Ok(());
        }
        let frame = ServerFrame::from_payload(payload)
            .map_err(|err| format!("undecodable frame from the server: {err}"))?;
        match frame {
            ServerFrame::Event(Event::Entry(entry)) => {
                let cursor = self.cursors.entry(entry.room).or_default();
                *cursor = (*cursor).max(entry.seq);
                if let EntryKind::Message { body } = &entry.kind
                    && let Some(stamp) = Stamp::parse(body)
                {
                    self.record(stamp, now);
                }
            }
            ServerFrame::Event(_) => {}
            ServerFrame::Response {
                result: Ok(Reply::Sent { .. }),
                ..
            } => {
                self.progress.acked.fetch_add(1, Ordering::Relaxed);
                self.progress.last_ack_ns.store(now, Ordering::Relaxed);
                self.window.add_permits(1);
            }
            ServerFrame::Response { result: Ok(_), .. } => {}
            ServerFrame::Response {
                result: Err(err), ..
            } => {
                self.progress.refused.fetch_add(1, Ordering::Relaxed);
                self.first_refusal.get_or_insert_with(|| err.to_string());
                self.window.add_permits(1);
            }
            ServerFrame::Fatal(err) => return Err(format!("the server ended it: {err}")),
        }
        Ok(())
    }

    /// Handles every complete line in `buf`; returns how many.
    fn lines_in(&mut self, buf: &mut BytesMut, now: u64) -> u64 {
        let mut count = 0;
        let mut start = 0;
        while let Some(length) = buf[start..].iter().position(|&byte| byte == b'\n') {
            let line = &buf[start..start + length];
            if let Some(stamp) = Stamp::parse(line) {
                let own = stamp.sender == self.index;
                let outcome = self.record(stamp, now);
                // The relay has no acknowledgements: the echo of a user's own message
                // frees its window instead.
                if own && outcome == Outcome::New {
                    self.window.add_permits(1);
                }
            }
            count += 1;
            start += length + 1;
        }
        buf.advance(start);
        count
    }

    fn record(&mut self, stamp: Stamp, now: u64) -> Outcome {
        let expected = self.plan.expects(self.index, stamp.sender, stamp.counter);
        let outcome = self.receipts.record(
            stamp.sender,
            stamp.counter,
            now.saturating_sub(stamp.sent_ns),
            expected,
        );
        if outcome == Outcome::New {
            self.progress.distinct.fetch_add(1, Ordering::Relaxed);
            self.progress.last_ns.store(now, Ordering::Relaxed);
        }
        outcome
    }
}

/// A reader's wait for its stop, cheap to look at on every pass.
///
/// Polling a [`CancellationToken`]'s wait locks the token and its list of waiters, and a
/// reader looks each time its socket runs dry: once per message at chat rates. Here
/// the wait is polled with a waker of its own, which notes that it fired before it
/// wakes the reader's task; until then, looking costs one atomic load.
struct StopWatch {
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The note and the task it wakes, once the wait has been polled.
    waker: Option<Arc<StopWaker>>,
    /// The wait has ended.
    stopped: bool,
}

struct StopWaker {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for StopWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl StopWatch {
    fn new(token: CancellationToken) -> StopWatch {
        StopWatch {
            wait: Box::pin(token.cancelled_owned()),
            waker: None,
            stopped: false,
        }
    }

    /// Whether the stop came (and the wait was not just woken for nothing).
    fn fired(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        match &self.waker {
            Some(waker) if waker.fired.load(Ordering::Acquire) => {
                let task = waker.task.clone();
                self.poll_with(task).is_ready()
            }
            _ => false,
        }
    }

    /// Ready once stopped; otherwise the task of `cx` is woken when that happens.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopped {
            return Poll::Ready(());
        }
        match &self.waker {
            Some(waker)
                if !waker.fired.load(Ordering::Acquire) && waker.task.will_wake(cx.waker()) =>
            {
                Poll::Pending
            }
            _ => self.poll_with(cx.waker().clone()),
        }
    }

    fn poll_with(&mut self, task: Waker) -> Poll<()> {
        let waker = Arc::new(StopWaker {
            fired: AtomicBool::new(false),
            task,
        });
        let poll = self
            .wait
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(Arc::clone(&waker))));
        self.waker = Some(waker);
        self.stopped = poll.is_ready();
        poll
    }
}

/// Where a sender's messages go.
#[derive(Debug, Clone)]
pub enum Dest {
    /// One room (Confide).
    Room(RoomId),
    /// Each message to its peer by name (Confide direct messages).
    Peers(Arc<Pairs>),
    /// The relay: the sender's group.
    Group,
}

/// When a sender sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as its window allows: `count` messages, or until `until`.
    Full {
        /// Messages to send at most.
        count: u32,
        /// Stop sending then, if it comes first.
        until: Option<Instant>,
    },
    /// `count` messages, one every `interval`, the first at `first`.
    Every {
        /// Messages to send.
        count: u32,
        /// Time between two messages.
        interval: Duration,
        /// When to send the first.
        first: Instant,
    },
}

/// One sender's job.
#[derive(Debug, Clone)]
pub struct SendJob {
    /// Where its messages go.
    pub dest: Dest,
    /// When it sends.
    pub pace: Pace,
    /// Bytes per body.
    pub body_bytes: usize,
}

/// What a sender did.
pub struct SendOutcome {
    /// The sender's index.
    pub index: u32,
    /// Messages written.
    pub sent: u32,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    /// The connection's writer, to put back.
    pub writer: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
}

/// Most messages written at once by one sender at full speed.
const MAX_BATCH: u32 = 64;

/// Starts member `member`'s sender; it stops at `deadline` whatever happens.
///
/// # Errors
/// If the member's writer is already taken.
pub fn start_sender(
    member: &mut Member,
    kind: TargetKind,
    job: SendJob,
    deadline: Instant,
) -> Result<JoinHandle<SendOutcome>> {
    let writer = member.writer.take().context("the writer is taken")?;
    let sender = Sender {
        index: member.index,
        kind,
        job,
        window: Arc::clone(&member.window),
        next_id: member.next_id.max(1_000_000),
        deadline,
    };
    Ok(tokio::spawn(sender.run(writer)))
}

struct Sender {
    index: u32,
    kind: TargetKind,
    job: SendJob,
    window: Arc<Semaphore>,
    next_id: u64,
    deadline: Instant,
}

impl Sender {
    async fn run(
        mut self,
        mut writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    ) -> SendOutcome {
        let mut sent = 0u32;
        let mut out = BytesMut::with_capacity(64 * 1024);
        let (count, until) = match self.job.pace {
            Pace::Full { count, until } => (count, until),
            Pace::Every { count, .. } => (count, None),
        };
        let error = loop {
            if sent >= count || until.is_some_and(|until| Instant::now() >= until) {
                break None;
            }
            if let Pace::Every {
                interval, first, ..
            } = self.job.pace
            {
                let at = first + interval * sent;
                if at >= self.deadline {
                    break Some("the run's time was up".to_owned());
                }
                tokio::time::sleep_until(at).await;
            }
            match tokio::time::timeout_at(self.deadline, self.window.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                Ok(Err(_)) => break Some("the connection ended".to_owned()),
                Err(_) => {
                    break Some("the run's time was up waiting for acknowledgements".to_owned());
                }
            }
            let mut batch = 1;
            if matches!(self.job.pace, Pace::Full { .. }) {
                while batch < MAX_BATCH.min(count - sent) {
                    match self.window.try_acquire() {
                        Ok(permit) => {
                            permit.forget();
                            batch += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            for _ in 0..batch {
                if let Err(err) = self.encode(sent, &mut out) {
                    return SendOutcome {
                        index: self.index,
                        sent,
                        error: Some(err),
                        writer: Some(writer),
                    };
                }
                sent += 1;
            }
            let written = tokio::time::timeout_at(self.deadline, async {
                writer.write_all(&out).await?;
                writer.flush().await
            })
            .await;
            out.clear();
            match written {
                Ok(Ok(())) => {}
                Ok(Err(err)) => break Some(format!("write failed: {err}")),
                Err(_) => break Some("the run's time was up while writing".to_owned()),
            }
        };
        SendOutcome {
            index: self.index,
            sent,
            error,
            writer: Some(writer),
        }
    }

    fn encode(&mut self, counter: u32, out: &mut BytesMut) -> Result<(), String> {
        let stamp = Stamp {
            sent_ns: now_ns(),
            sender: self.index,
            counter,
        };
        let body = stamp.to_body(self.job.body_bytes);
        let target = match (&self.job.dest, self.kind) {
            (_, TargetKind::Relay) | (Dest::Group, _) => {
                out.extend_from_slice(&body);
                out.put_u8(b'\n');
                return Ok(());
            }
            (Dest::Room(room), TargetKind::Confide) => Target::Room(*room),
            (Dest::Peers(pairs), TargetKind::Confide) => {
                let peer = pairs
                    .peer(self.index, counter)
                    .ok_or("no peer planned for this message")?;
                Target::User(user_name(peer))
            }
        };
        let mut nonce = [0u8; 16];
        nonce[..4].copy_from_slice(&self.index.to_le_bytes());
        nonce[4..8].copy_from_slice(&counter.to_le_bytes());
        let frame = ClientFrame {
            id: RequestId(self.next_id),
            request: Request::Send {
                target,
                nonce: MessageNonce(nonce),
                body,
            },
        };
        self.next_id += 1;
        encode_frame(&frame, MAX_FRAME_LEN, out).map_err(|err| err.to_string())
    }
}

/// Waits until traffic has settled: no frame received by anyone for `quiet`, or the
/// deadline. Returns whether it settled.
pub async fn settle(frames: &AtomicU64, quiet: Duration, deadline: Instant) -> bool {
    let mut last = frames.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = Instant::now();
        let current = frames.load(Ordering::Relaxed);
        if current != last {
            last = current;
            still_since = now;
        } else if now.duration_since(still_since) >= quiet {
            return true;
        }
        if now >= deadline {
            return false;
        }
    }
}

/// Waits until every member has received what `expected` says (by member position)
/// and, if `acks` is given, every sender has its `(member position, sent)` messages
/// answered; or until `deadline`. A member whose connection ended has nothing more to
/// wait for (what it lacks is lost). Returns false if the deadline came first.
pub async fn wait_for_deliveries(
    members: &[Member],
    expected: &[u64],
    acks: Option<&[(usize, u32)]>,
    deadline: Instant,
) -> bool {
    loop {
        let delivered = members.iter().zip(expected).all(|(member, &want)| {
            member.progress.distinct.load(Ordering::Relaxed) >= want
                || member.progress.ended.load(Ordering::Relaxed)
        });
        let acked = acks.is_none_or(|acks| {
            acks.iter().all(|&(position, sent)| {
                members.get(position).is_none_or(|member| {
                    let answered = member.progress.acked.load(Ordering::Relaxed)
                        + member.progress.refused.load(Ordering::Relaxed);
                    answered >= u64::from(sent) || member.progress.ended.load(Ordering::Relaxed)
                })
            })
        });
        if delivered && acked {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Stops the readers of `members` and returns what each found, by member position.
///
/// # Errors
/// If a reader task panicked.
pub async fn stop_readers(members: &mut [Member]) -> Result<Vec<ReaderOutcome>> {
    for member in members.iter() {
        member.stop.cancel();
    }
    let mut outcomes = Vec::with_capacity(members.len());
    for member in members.iter_mut() {
        let task = member.reader.take().context("reader already stopped")?;
        outcomes.push(task.await.context("a reader task failed")?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_watch_sees_the_stop_whether_its_reader_waits_or_is_busy() {
        // Waiting: the first poll registers, the cancellation wakes the task.
        let token = CancellationToken::new();
        let mut watch = StopWatch::new(token.clone());
        assert!(!watch.fired());
        let canceller = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                token.cancel();
            })
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| watch.poll(cx)),
        )
        .await
        .expect("the stop woke the task");
        canceller.await.unwrap();
        assert!(watch.fired());

        // Busy: polled once, then never again; the note alone shows the stop.
        let token = CancellationToken::new();
        let mut watch = StopWatch::new(token.clone());
        let pending = std::future::poll_fn(|cx| Poll::Ready(watch.poll(cx).is_pending())).await;
        assert!(pending);
        assert!(!watch.fired());
        token.cancel();
        assert!(watch.fired());

        // A parent's cancellation reaches a child's watch too.
        let parent = CancellationToken::new();
        let mut watch = StopWatch::new(parent.child_token());
        let pending = std::future::poll_fn(|cx| Poll::Ready(watch.poll(cx).is_pending())).await;
        assert!(pending);
        parent.cancel();
        assert!(watch.fired());
    }
}
