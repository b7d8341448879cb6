//! Room actors: one task per room owns its sequence counter, members, invitations,
//! bans and the connections subscribed to it.
//!
//! Everything that changes a room goes through its actor, so sequence numbers are
//! assigned in one place and membership checks never race. The actor assigns numbers
//! and hands entries to the persister; it never waits for a commit, so a room keeps
//! accepting messages while earlier ones are being written.
//!
//! As the MLS delivery service, the actor also owns the room's group epoch: commits
//! are accepted only for the current epoch (compare and swap, see `room::group`), so the
//! first valid commit of an epoch wins. It verifies commits against a public copy of the
//! group (no key) and never decrypts anything.
//!
//! It also relays live voice to the connections that listen in the room
//! (`room::voice`), without storing or reading it.

mod group;
mod voice;

pub use group::{CommitRequest, Ephemeral, ResolvedWelcome};
pub use voice::Voice;

use crate::outbound::{ConnId, Outbound, encode};
use crate::persist::{Ack, Backlog, Job, Notice, PersistHandle, queued};
use crate::sessions::Sessions;
use crate::store::{Append, Effect, GroupRecord, RoomRecord, Store, StoreError, StoredKind, Write};
use confide_proto::{
    DeviceId, EntryKind, ErrorCode, Event, LogEntry, MemberChange, MemberInfo, Membership,
    MessageNonce, ProtoError, Reply, RequestId, RoomId, RoomInfo, RoomKind, Seq, ServerFrame,
    Timestamp, UserId, UserName,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How many recent message nonces a room remembers to recognise resent messages.
const RECENT_NONCES: usize = 65_536;

/// Commands queued per room before senders wait.
const QUEUE: usize = 4096;

/// Rooms with at least this many members online gather presence changes and send them
/// together; smaller rooms tell each change at once.
const PRESENCE_GATHER_FROM: usize = 100;

/// How long a large room gathers presence changes. When thousands of people log in at
/// once (a server restart), telling each login to everyone online separately would be
/// millions of frames; gathered, each online member gets a few frames a second.
const PRESENCE_GATHER: std::time::Duration = std::time::Duration::from_millis(250);

/// A user as room actors see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The account.
    pub id: UserId,
    /// Its name.
    pub name: UserName,
}

/// A change of membership asked of a room.
#[derive(Debug, Clone)]
pub enum Action {
    /// The actor created the room and becomes its first member.
    Create,
    /// The actor joins.
    Join,
    /// The actor joins unless already a member or banned (the lobby at login).
    EnsureMember,
    /// The actor leaves.
    Leave,
    /// The actor invites someone.
    Invite(Person),
    /// The owner removes someone.
    Kick(Person),
    /// The owner removes and bans someone.
    Ban(Person),
    /// The owner lifts a ban.
    Unban(Person),
}

/// A message to post.
#[derive(Debug)]
pub struct Post {
    /// Who sends it.
    pub sender: Person,
    /// The device the sender's connection named, if any.
    pub device: Option<DeviceId>,
    /// The sender's nonce.
    pub nonce: MessageNonce,
    /// Opaque bytes.
    pub body: Vec<u8>,
    /// The sender's connection, for the acknowledgement.
    pub out: Outbound,
    /// The request to acknowledge.
    pub id: RequestId,
    /// Held until acknowledged.
    pub permit: OwnedSemaphorePermit,
}

/// A room as one user sees it, plus the point they joined at.
#[derive(Debug, Clone)]
pub struct RoomView {
    /// What the user may know of the room.
    pub info: RoomInfo,
    /// The sequence number of the entry that made them a member, if they are one.
    pub joined_seq: Option<Seq>,
}

/// What a room actor is asked. Large payloads are boxed: every room's queue allocates
/// room for 32 commands up front.
enum Command {
    Post(Box<Post>),
    Subscribe(Outbound),
    Unsubscribe(UserId, ConnId),
    Change(Person, Action, oneshot::Sender<Result<(), ProtoError>>),
    Members(UserId, oneshot::Sender<Result<Vec<MemberInfo>, ProtoError>>),
    View(UserId, oneshot::Sender<RoomView>),
    InitGroup(Person, Box<group::InitGroup>, ReplyTx),
    Commit(Box<CommitRequest>, ReplyTx),
    GroupInfo(UserId, ReplyTx),
    Ephemeral(Ephemeral, oneshot::Sender<Result<(), ProtoError>>),
    Online(oneshot::Sender<Arc<[Outbound]>>),
    Listen(Outbound, bool, oneshot::Sender<Result<(), ProtoError>>),
    Voice(Voice, oneshot::Sender<Result<(), ProtoError>>),
    /// Sent to every resident room once an idle period (see [`sweep`]).
    Idle,
}

/// Where a room sends the reply to a request it answers once stored.
type ReplyTx = oneshot::Sender<Result<Reply, ProtoError>>;

/// Talks to one room's actor.
#[derive(Clone)]
pub struct RoomHandle {
    /// The room.
    pub id: RoomId,
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Refuses a request with a code and a message for people.
fn deny<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError::new(code, message))
}

fn gone() -> ProtoError {
    ProtoError::new(ErrorCode::ShuttingDown, "the server is shutting down")
}

impl RoomHandle {
    /// Posts a message; the acknowledgement goes to the post's connection.
    pub async fn post(&self, post: Post) {
        if let Err(mpsc::error::SendError(Command::Post(post))) =
            self.tx.send(Command::Post(Box::new(post))).await
        {
            post.out.send(&ServerFrame::Response {
                id: post.id,
                result: Err(gone()),
            });
        }
    }

    /// Subscribes a member's connection to the room's entries and presence.
    pub async fn subscribe(&self, out: Outbound) {
        let _ = self.tx.send(Command::Subscribe(out)).await;
    }

    /// Ends a connection's subscription.
    pub async fn unsubscribe(&self, user: UserId, conn: ConnId) {
        let _ = self.tx.send(Command::Unsubscribe(user, conn)).await;
    }

    /// Changes membership; returns once the change is stored.
    ///
    /// # Errors
    /// Why the change is not allowed, or that it could not be stored.
    pub async fn change(&self, actor: Person, action: Action) -> Result<(), ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Change(actor, action, reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Members with their online state.
    ///
    /// # Errors
    /// [`ErrorCode::NotMember`] for a private room the asker is not in.
    pub async fn members(&self, asker: UserId) -> Result<Vec<MemberInfo>, ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Members(asker, reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The room as `viewer` sees it.
    ///
    /// # Errors
    /// If the server is shutting down.
    pub async fn view(&self, viewer: UserId) -> Result<RoomView, ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::View(viewer, reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Sends a command whose answer is a reply, and waits for it.
    async fn ask(&self, command: impl FnOnce(ReplyTx) -> Command) -> Result<Reply, ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(command(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Records that the room's group exists at epoch 0; returns once it is stored.
    ///
    /// # Errors
    /// See `room::group`: `NotMember`, `NoGroup`, `GroupExists`, `InvalidHandshake`.
    pub async fn init_group(
        &self,
        sender: Person,
        group_info: Vec<u8>,
        group_info_epoch: Result<u64, confide_crypto::ds::DsError>,
        watch: Option<Result<confide_crypto::ds::GroupWatch, confide_crypto::ds::DsError>>,
    ) -> Result<Reply, ProtoError> {
        let init = group::InitGroup {
            group_info,
            group_info_epoch,
            watch,
        };
        self.ask(|reply| Command::InitGroup(sender, Box::new(init), reply))
            .await
    }

    /// Appends a commit if it was made in the current epoch; returns once it is stored.
    ///
    /// # Errors
    /// See `room::group`: `StaleEpoch` when another commit won the epoch.
    pub async fn commit(&self, commit: CommitRequest) -> Result<Reply, ProtoError> {
        self.ask(|reply| Command::Commit(Box::new(commit), reply))
            .await
    }

    /// The group's latest GroupInfo, for a member or an invited user.
    ///
    /// # Errors
    /// `NotMember` or `NoGroup`.
    pub async fn group_info(&self, asker: UserId) -> Result<Reply, ProtoError> {
        self.ask(|reply| Command::GroupInfo(asker, reply)).await
    }

    /// Relays an ephemeral message to the members online, without storing it.
    ///
    /// # Errors
    /// `NotMember` for a user who is not in the room.
    pub async fn ephemeral(&self, ephemeral: Ephemeral) -> Result<(), ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ephemeral(ephemeral, reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The connections of the members who are online.
    ///
    /// # Errors
    /// If the server is shutting down.
    pub async fn online(&self) -> Result<Arc<[Outbound]>, ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Online(reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Turns live voice on or off for a member's connection (`out.user` is the member).
    ///
    /// # Errors
    /// `NotMember` for a user who is not in the room.
    pub async fn listen(&self, out: Outbound, on: bool) -> Result<(), ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Listen(out, on, reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Relays live voice to the connections listening in the room, without storing it.
    ///
    /// # Errors
    /// `NotMember` for a user who is not in the room.
    pub async fn voice(&self, voice: Voice) -> Result<(), ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Voice(voice, reply))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// What every room actor shares.
#[derive(Clone)]
pub struct RoomContext {
    /// The store, for loading state.
    pub store: Arc<dyn Store>,
    /// Who is online.
    pub sessions: Arc<Sessions>,
    /// Where entries go to be stored.
    pub persister: PersistHandle,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// The last Welcome id handed out, shared by all rooms (ids are server-wide).
    pub welcome_ids: Arc<AtomicU64>,
    /// The rooms whose actors run, by id (see [`Residents`]).
    pub residents: Residents,
    /// How long a room nobody is online in stays after its last use (between one and
    /// two such periods); `None` for ever.
    pub idle: Option<std::time::Duration>,
    /// The event log, for rooms leaving memory.
    pub events: crate::eventlog::EventLog,
}

/// The actors that run, by room. [`crate::state::Rooms`] finds and starts them; an
/// actor with nobody online and nothing to do removes itself, when nobody else holds
/// its handle, and stops (see `RoomActor::retire`).
pub type Residents = Arc<std::sync::Mutex<HashMap<RoomId, RoomHandle>>>;

struct Member {
    name: UserName,
    joined_seq: Seq,
}

struct RoomActor {
    record: RoomRecord,
    owner_name: Option<UserName>,
    last_seq: Seq,
    last_timestamp: Timestamp,
    members: HashMap<UserId, Member>,
    invited: HashSet<UserId>,
    banned: HashSet<UserId>,
    subscribers: HashMap<UserId, Vec<Outbound>>,
    recipients: Option<Arc<[Outbound]>>,
    /// Connections that receive live voice (`room::voice`), by connection.
    listeners: HashMap<ConnId, Outbound>,
    nonces: HashMap<(UserId, MessageNonce), (Seq, Timestamp)>,
    nonce_order: VecDeque<(UserId, MessageNonce)>,
    /// The MLS group as far as this actor has accepted commits (possibly ahead of the
    /// store by the commits in flight, like `last_seq`).
    group: Option<GroupRecord>,
    /// The group's public state at `group`'s epoch, to verify commits; built lazily
    /// (see `room::group`).
    watch: Option<confide_crypto::ds::GroupWatch>,
    /// The epoch whose stored GroupInfo could not be made into a watch.
    watch_failed: Option<confide_proto::Epoch>,
    context: RoomContext,
    notices: mpsc::UnboundedSender<Notice>,
    /// Presence changes not yet told, with whether each user was online before them.
    presence_changes: HashMap<UserId, bool>,
    /// When the gathered presence changes are told.
    presence_due: Option<tokio::time::Instant>,
    /// This actor's own command channel, to recognise its handle among the residents.
    me: mpsc::WeakSender<Command>,
    /// Whether a command or notice came since the idle timer last looked.
    used: bool,
}

/// Rooms asked about their idleness at once while the residents are locked.
const SWEEP_CHUNK: usize = 1024;

/// Asks every resident room, once per `idle`, whether it was used since the last time;
/// rooms that were not, with nobody online, leave memory (`RoomActor::retire`). A
/// room whose queue is full is busy and is skipped. Runs until `shutdown`.
pub async fn sweep(residents: Residents, idle: std::time::Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let ids: Vec<RoomId> = lock_residents(&residents).keys().copied().collect();
        for chunk in ids.chunks(SWEEP_CHUNK) {
            {
                // The handles are used in place, not copied: a copy held elsewhere
                // keeps a room from leaving (see `retire`).
                let residents = lock_residents(&residents);
                for id in chunk {
                    if let Some(handle) = residents.get(id) {
                        let _ = handle.tx.try_send(Command::Idle);
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

fn lock_residents(residents: &Residents) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomHandle>> {
    residents
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the actor of a room read by [`read`].
pub fn spawn_stored(
    context: RoomContext,
    stored: Stored,
    tracker: &tokio_util::task::TaskTracker,
) -> RoomHandle {
    spawn_loaded(context, stored.record, stored.loaded, tracker)
}

/// A room as the store has it, read by [`read`] to start its actor.
pub struct Stored {
    record: RoomRecord,
    loaded: Loaded,
}

impl Stored {
    /// The room's id.
    #[must_use]
    pub fn id(&self) -> RoomId {
        self.record.id
    }
}

/// Reads rooms `ids` to start their actors, in one go; `None` for a room that does not
/// exist. Blocking.
///
/// # Errors
/// If the store cannot be read.
pub fn read(store: &dyn Store, ids: &[RoomId]) -> Result<Vec<Option<Stored>>, StoreError> {
    Ok(store
        .room_states(ids, RECENT_NONCES)?
        .into_iter()
        .map(|state| state.map(Stored::from))
        .collect())
}

impl From<crate::store::RoomState> for Stored {
    fn from(state: crate::store::RoomState) -> Stored {
        let members = state
            .members
            .into_iter()
            .map(|member| {
                (
                    member.user,
                    Member {
                        name: member.name,
                        joined_seq: member.joined_seq,
                    },
                )
            })
            .collect();
        Stored {
            record: state.record,
            loaded: Loaded {
                owner_name: state.owner_name,
                last_seq: state.last.map_or(Seq(0), |(seq, _)| seq),
                last_timestamp: state.last.map_or(Timestamp(0), |(_, at)| at),
                members,
                invited: state.invited.into_iter().collect(),
                banned: state.banned.into_iter().collect(),
                nonces: state.nonces,
                group: state.group,
            },
        }
    }
}

/// Starts the actor of a direct conversation the store has just created: its state is
/// known (the two users, nothing else), so nothing is read back.
pub fn spawn_new_direct(
    context: RoomContext,
    record: RoomRecord,
    people: [Person; 2],
    tracker: &tokio_util::task::TaskTracker,
) -> RoomHandle {
    debug_assert_eq!(
        record.direct.map(|(a, b)| [a, b]),
        Some({
            let mut ids = [people[0].id, people[1].id];
            ids.sort();
            ids
        })
    );
    let members = people
        .into_iter()
        .map(|person| {
            (
                person.id,
                Member {
                    name: person.name,
                    joined_seq: Seq(0),
                },
            )
        })
        .collect();
    let loaded = Loaded {
        owner_name: None,
        last_seq: Seq(0),
        last_timestamp: Timestamp(0),
        members,
        invited: HashSet::new(),
        banned: HashSet::new(),
        nonces: Vec::new(),
        group: None,
    };
    spawn_loaded(context, record, loaded, tracker)
}

fn spawn_loaded(
    context: RoomContext,
    record: RoomRecord,
    loaded: Loaded,
    tracker: &tokio_util::task::TaskTracker,
) -> RoomHandle {
    let (tx, rx) = mpsc::channel(QUEUE);
    let me = tx.downgrade();
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let handle = RoomHandle { id: record.id, tx };
    let mut actor = RoomActor {
        record,
        owner_name: None,
        last_seq: Seq(0),
        last_timestamp: Timestamp(0),
        members: HashMap::new(),
        invited: HashSet::new(),
        banned: HashSet::new(),
        subscribers: HashMap::new(),
        recipients: None,
        listeners: HashMap::new(),
        nonces: HashMap::new(),
        nonce_order: VecDeque::new(),
        group: None,
        watch: None,
        watch_failed: None,
        context,
        notices,
        presence_changes: HashMap::new(),
        presence_due: None,
        me,
        used: false,
    };
    actor.apply(loaded);
    tracker.spawn(Box::new(actor).run(rx, notices_rx));
    handle
}

struct Loaded {
    owner_name: Option<UserName>,
    last_seq: Seq,
    last_timestamp: Timestamp,
    members: HashMap<UserId, Member>,
    invited: HashSet<UserId>,
    banned: HashSet<UserId>,
    nonces: Vec<crate::store::RecentNonce>,
    group: Option<GroupRecord>,
}

/// Encoded frames one after another, as one piece to queue.
fn concat<'a>(frames: impl Iterator<Item = &'a bytes::Bytes>) -> bytes::Bytes {
    let frames: Vec<&bytes::Bytes> = frames.collect();
    match frames.as_slice() {
        [one] => (*one).clone(),
        many => {
            let mut joined = bytes::BytesMut::with_capacity(many.iter().map(|f| f.len()).sum());
            for frame in many {
                joined.extend_from_slice(frame);
            }
            joined.freeze()
        }
    }
}

/// Resolves at `due`, or never without one.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
}

impl RoomActor {
    fn apply(&mut self, loaded: Loaded) {
        self.owner_name = loaded.owner_name;
        self.last_seq = loaded.last_seq;
        self.last_timestamp = loaded.last_timestamp;
        self.members = loaded.members;
        self.invited = loaded.invited;
        self.banned = loaded.banned;
        self.group = loaded.group;
        // A reload follows a failed write: keep the watch only if it is still at the
        // stored epoch; otherwise the next commit rebuilds it from the stored GroupInfo.
        let current = self.group.as_ref().map(|group| group.epoch.0);
        if self
            .watch
            .as_ref()
            .map(confide_crypto::ds::GroupWatch::epoch)
            != current
        {
            self.watch = None;
        }
        self.watch_failed = None;
        self.nonces.clear();
        self.nonce_order.clear();
        // Oldest first, so the newest are evicted last.
        for (key, place) in loaded.nonces.into_iter().rev() {
            self.remember(key, place);
        }
        let members = &self.members;
        self.subscribers
            .retain(|user, _| members.contains_key(user));
        self.listeners
            .retain(|_, out| members.contains_key(&out.user));
        self.recipients = None;
    }

    /// The actor's loop. The actor is boxed: an `async fn` keeps its arguments and its
    /// working copy apart, and this future is resident for every room.
    async fn run(
        mut self: Box<Self>,
        mut commands: mpsc::Receiver<Command>,
        mut notices: mpsc::UnboundedReceiver<Notice>,
    ) {
        let shutdown = self.context.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until_due(self.presence_due) => self.tell_presence(),
                Some(notice) = notices.recv() => {
                    self.used = true;
                    self.on_notice(notice).await;
                }
                command = commands.recv() => match command {
                    // Unused since the last look: leave if nothing needs this actor.
                    Some(Command::Idle) => {
                        if !std::mem::take(&mut self.used) && self.retire(&commands, &notices) {
                            break;
                        }
                    }
                    Some(command) => {
                        self.used = true;
                        self.handle(command).await;
                    }
                    None => break,
                },
            }
        }
    }

    /// Leaves memory if nobody is online in the room, nothing is in flight and no task
    /// holds the room's handle besides the residents: then, once removed from them,
    /// nobody can reach this actor, and the next use reads the room from the store,
    /// which has everything this actor handed to the persister.
    fn retire(
        &mut self,
        commands: &mpsc::Receiver<Command>,
        notices: &mpsc::UnboundedReceiver<Notice>,
    ) -> bool {
        let online = self
            .subscribers
            .values()
            .flatten()
            .any(|out| !out.is_closed());
        // Every job in the persister's hands holds a clone of `self.notices`.
        let in_flight = self.notices.strong_count() > 1 || !notices.is_empty();
        if online
            || in_flight
            || self.listeners.values().any(|out| !out.is_closed())
            || !self.presence_changes.is_empty()
        {
            return false;
        }
        let id = self.record.id;
        {
            let mut residents = lock_residents(&self.context.residents);
            // With the residents locked nobody can take a new copy of the handle, so
            // one sender left means the residents' own, and nothing queued means
            // nothing was sent by a copy since dropped.
            if commands.sender_strong_count() != 1 || !commands.is_empty() {
                return false;
            }
            let ours = residents.get(&id).is_some_and(|handle| {
                self.me
                    .upgrade()
                    .is_some_and(|me| me.same_channel(&handle.tx))
            });
            if !ours {
                return false;
            }
            residents.remove(&id);
        }
        self.context.events.record("room_unload", &[("room", &id)]);
        true
    }

    /// Carries out a command. The only waits are rebuilding the group watch (boxed) and
    /// room in the persister's queue (rare, boxed): this future is part of every room's
    /// resident task, so nothing large is held across a wait.
    async fn handle(&mut self, command: Command) {
        if let Command::Commit(commit, _) = &command
            && self.wants_watch(commit)
        {
            Box::pin(self.rebuild_watch()).await;
        }
        let backlog = self.carry_out(command);
        queued(backlog).await;
    }

    /// Carries out a command; returns the persister's backlog if its job must wait.
    fn carry_out(&mut self, command: Command) -> Option<Backlog> {
        match command {
            Command::Post(post) => {
                let job = self.post(*post)?;
                self.context.persister.submit(job)
            }
            Command::Subscribe(out) => {
                self.subscribe(out);
                None
            }
            Command::Unsubscribe(user, conn) => {
                self.unsubscribe(user, conn);
                None
            }
            Command::Change(actor, action, reply) => match self.change(&actor, action) {
                Ok(Some(mut job)) => {
                    job.ack = Ack::Done(reply);
                    self.context.persister.submit(job)
                }
                Ok(None) => {
                    let _ = reply.send(Ok(()));
                    None
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                    None
                }
            },
            Command::Members(asker, reply) => {
                let _ = reply.send(self.member_list(asker));
                None
            }
            Command::View(viewer, reply) => {
                let _ = reply.send(RoomView {
                    info: self.info(viewer),
                    joined_seq: self.members.get(&viewer).map(|member| member.joined_seq),
                });
                None
            }
            Command::InitGroup(sender, init, reply) => match self.init_group(&sender, *init) {
                Ok(job) => self.submit_reply(job, reply),
                Err(err) => {
                    let _ = reply.send(Err(err));
                    None
                }
            },
            Command::Commit(commit, reply) => match self.commit(*commit) {
                Ok(job) => self.submit_reply(job, reply),
                Err(err) => {
                    let _ = reply.send(Err(err));
                    None
                }
            },
            Command::GroupInfo(asker, reply) => {
                let _ = reply.send(self.group_info(asker));
                None
            }
            Command::Ephemeral(ephemeral, reply) => {
                let _ = reply.send(self.ephemeral(ephemeral));
                None
            }
            Command::Online(reply) => {
                let _ = reply.send(self.recipients());
                None
            }
            Command::Listen(out, on, reply) => {
                let _ = reply.send(self.listen(out, on));
                None
            }
            Command::Idle => None,
            Command::Voice(voice, reply) => {
                let _ = reply.send(self.voice(voice));
                None
            }
        }
    }

    /// Queues a job whose acknowledgement is a reply prepared by the actor.
    fn submit_reply(&self, (mut job, answer): (Job, Reply), reply: ReplyTx) -> Option<Backlog> {
        job.ack = Ack::Reply(reply, answer);
        self.context.persister.submit(job)
    }

    async fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Committed(Effect::AddMember(user)) => {
                // Connections that logged in while the join was being stored read the
                // store before it had the membership; subscribe them now.
                for out in self.context.sessions.connections(user) {
                    self.subscribe(out);
                }
            }
            Notice::Committed(
                Effect::RemoveMember(user) | Effect::Ban(user) | Effect::Invite(user),
            ) => {
                let info = self.info(user);
                if let Some(frame) = encode(&ServerFrame::Event(Event::Room(info))) {
                    for out in self.context.sessions.connections(user) {
                        out.push(frame.clone());
                    }
                }
            }
            Notice::Committed(Effect::Unban(_)) => {}
            Notice::Reload => {
                let store = Arc::clone(&self.context.store);
                let id = self.record.id;
                match tokio::task::spawn_blocking(move || read(store.as_ref(), &[id])).await {
                    Ok(Ok(mut stored)) => match stored.pop().flatten() {
                        Some(stored) => self.apply(stored.loaded),
                        None => tracing::error!(room = %id, "cannot reload room: it is gone"),
                    },
                    Ok(Err(err)) => tracing::error!(room = %id, cause = %err, "cannot reload room"),
                    Err(err) => tracing::error!(room = %id, cause = %err, "cannot reload room"),
                }
            }
        }
    }

    fn next_place(&mut self) -> (Seq, Timestamp) {
        self.last_seq = self.last_seq.next();
        // Timestamps never go backwards within a room, even if the clock does.
        self.last_timestamp = Timestamp(now().0.max(self.last_timestamp.0));
        (self.last_seq, self.last_timestamp)
    }

    fn remember(&mut self, key: (UserId, MessageNonce), place: (Seq, Timestamp)) {
        if self.nonces.insert(key, place).is_none() {
            self.nonce_order.push_back(key);
        }
        while self.nonce_order.len() > RECENT_NONCES {
            if let Some(old) = self.nonce_order.pop_front() {
                self.nonces.remove(&old);
            }
        }
    }

    fn recipients(&mut self) -> Arc<[Outbound]> {
        if let Some(recipients) = &self.recipients {
            return Arc::clone(recipients);
        }
        let list: Arc<[Outbound]> = self
            .subscribers
            .values()
            .flatten()
            .filter(|out| !out.is_closed())
            .cloned()
            .collect();
        self.recipients = Some(Arc::clone(&list));
        list
    }

    fn job(&mut self, append: Option<Append>, ack: Ack) -> Job {
        Job {
            write: append.map(Write::Append),
            recipients: self.recipients(),
            extra: Vec::new(),
            pushes: Vec::new(),
            ack,
            original: None,
            notify: self.notices.clone(),
        }
    }

    fn post(&mut self, post: Post) -> Option<Job> {
        let Post {
            sender,
            device,
            nonce,
            body,
            out,
            id,
            permit,
        } = post;
        if !self.members.contains_key(&sender.id) {
            out.send(&ServerFrame::Response {
                id,
                result: Err(ProtoError::new(
                    ErrorCode::NotMember,
                    "you are not a member of this room",
                )),
            });
            return None;
        }
        let key = (sender.id, nonce);
        if let Some(&(seq, timestamp)) = self.nonces.get(&key) {
            // A resend: acknowledge again once everything before it is stored, since
            // the original may still be in flight.
            let mut job = self.job(None, Ack::Sent { out, id, permit });
            job.original = Some((self.record.id, seq, timestamp));
            return Some(job);
        }
        if let Err(err) = self.check_application(&body) {
            out.send(&ServerFrame::Response {
                id,
                result: Err(err),
            });
            return None;
        }
        let (seq, timestamp) = self.next_place();
        self.remember(key, (seq, timestamp));
        let append = Append {
            entry: LogEntry {
                room: self.record.id,
                seq,
                timestamp,
                sender: sender.name,
                device,
                kind: EntryKind::Message { body },
            },
            nonce: Some(key),
            effect: None,
            group: None,
        };
        Some(self.job(Some(append), Ack::Sent { out, id, permit }))
    }

    fn member_entry(
        &mut self,
        by: &Person,
        subject: &Person,
        change: MemberChange,
        effect: Effect,
    ) -> Append {
        let (seq, timestamp) = self.next_place();
        Append {
            entry: LogEntry {
                room: self.record.id,
                seq,
                timestamp,
                sender: by.name.clone(),
                device: None,
                kind: EntryKind::Member {
                    user: subject.name.clone(),
                    change,
                },
            },
            nonce: None,
            effect: Some(effect),
            group: None,
        }
    }

    fn require_owner(&self, actor: &Person) -> Result<(), ProtoError> {
        if self.record.owner == Some(actor.id) {
            Ok(())
        } else {
            Err(ProtoError::new(
                ErrorCode::Forbidden,
                "only the room's owner can do that",
            ))
        }
    }

    fn is_lobby_or_direct(&self) -> bool {
        self.record.kind == StoredKind::Direct || self.record.owner.is_none()
    }

    fn change(&mut self, actor: &Person, action: Action) -> Result<Option<Job>, ProtoError> {
        let is_member = self.members.contains_key(&actor.id);
        match action {
            Action::EnsureMember if is_member || self.banned.contains(&actor.id) => Ok(None),
            Action::Create | Action::Join | Action::EnsureMember => {
                if is_member {
                    return deny(ErrorCode::AlreadyMember, "you are already in this room");
                }
                if self.banned.contains(&actor.id) {
                    return deny(ErrorCode::Banned, "you are banned from this room");
                }
                match self.record.kind {
                    StoredKind::Direct => {
                        return deny(
                            ErrorCode::Forbidden,
                            "direct conversations cannot be joined",
                        );
                    }
                    StoredKind::Private
                        if !self.invited.contains(&actor.id)
                            && self.record.owner != Some(actor.id) =>
                    {
                        return deny(
                            ErrorCode::NotInvited,
                            "this room is private; ask a member to invite you",
                        );
                    }
                    _ => {}
                }
                let change = if matches!(action, Action::Create) {
                    MemberChange::Created
                } else {
                    MemberChange::Joined
                };
                Ok(Some(self.add_member(actor, change)))
            }
            Action::Leave => {
                if !is_member {
                    return deny(ErrorCode::NotMember, "you are not in this room");
                }
                if self.is_lobby_or_direct() {
                    return deny(
                        ErrorCode::Forbidden,
                        "the lobby and direct conversations cannot be left",
                    );
                }
                Ok(Some(self.remove_member(
                    actor,
                    actor,
                    MemberChange::Left,
                    Effect::RemoveMember(actor.id),
                )))
            }
            Action::Invite(subject) => {
                if !is_member {
                    return deny(ErrorCode::NotMember, "you are not in this room");
                }
                if self.record.kind == StoredKind::Direct {
                    return deny(
                        ErrorCode::Forbidden,
                        "direct conversations have two members",
                    );
                }
                if self.members.contains_key(&subject.id) {
                    return deny(
                        ErrorCode::AlreadyMember,
                        format!("{} is already in this room", subject.name),
                    );
                }
                if self.banned.contains(&subject.id) {
                    return deny(
                        ErrorCode::Banned,
                        format!("{} is banned from this room", subject.name),
                    );
                }
                self.invited.insert(subject.id);
                let append = self.member_entry(
                    actor,
                    &subject,
                    MemberChange::Invited,
                    Effect::Invite(subject.id),
                );
                Ok(Some(self.job(Some(append), Ack::None)))
            }
            Action::Kick(subject) => {
                self.require_owner(actor)?;
                if subject.id == actor.id {
                    return deny(ErrorCode::InvalidArgument, "use leave to leave a room");
                }
                if !self.members.contains_key(&subject.id) {
                    return deny(
                        ErrorCode::NotMember,
                        format!("{} is not in this room", subject.name),
                    );
                }
                Ok(Some(self.remove_member(
                    actor,
                    &subject,
                    MemberChange::Kicked,
                    Effect::RemoveMember(subject.id),
                )))
            }
            Action::Ban(subject) => {
                self.require_owner(actor)?;
                if subject.id == actor.id {
                    return deny(ErrorCode::InvalidArgument, "you cannot ban yourself");
                }
                if self.banned.contains(&subject.id) {
                    return deny(
                        ErrorCode::InvalidArgument,
                        format!("{} is already banned", subject.name),
                    );
                }
                self.banned.insert(subject.id);
                self.invited.remove(&subject.id);
                Ok(Some(self.remove_member(
                    actor,
                    &subject,
                    MemberChange::Banned,
                    Effect::Ban(subject.id),
                )))
            }
            Action::Unban(subject) => {
                self.require_owner(actor)?;
                if !self.banned.remove(&subject.id) {
                    return deny(
                        ErrorCode::InvalidArgument,
                        format!("{} is not banned", subject.name),
                    );
                }
                let append = self.member_entry(
                    actor,
                    &subject,
                    MemberChange::Unbanned,
                    Effect::Unban(subject.id),
                );
                Ok(Some(self.job(Some(append), Ack::None)))
            }
        }
    }

    fn add_member(&mut self, actor: &Person, change: MemberChange) -> Job {
        let append = self.member_entry(actor, actor, change, Effect::AddMember(actor.id));
        self.members.insert(
            actor.id,
            Member {
                name: actor.name.clone(),
                joined_seq: append.entry.seq,
            },
        );
        self.invited.remove(&actor.id);
        // Everyone subscribed so far gets the entry; the joiner's connections get it as
        // extra receivers, after the room itself is announced to them.
        let recipients = self.recipients();
        let joiner = self.context.sessions.connections(actor.id);
        if let Some(frame) = encode(&ServerFrame::Event(Event::Room(self.info(actor.id)))) {
            for out in &joiner {
                out.push(frame.clone());
            }
        }
        for out in &joiner {
            self.subscribe(out.clone());
        }
        Job {
            write: Some(Write::Append(append)),
            recipients,
            extra: joiner,
            pushes: Vec::new(),
            ack: Ack::None,
            original: None,
            notify: self.notices.clone(),
        }
    }

    fn remove_member(
        &mut self,
        by: &Person,
        subject: &Person,
        change: MemberChange,
        effect: Effect,
    ) -> Job {
        let append = self.member_entry(by, subject, change, effect);
        // The removed member still receives the entry that removes them, and nothing
        // after it.
        let recipients = self.recipients();
        self.members.remove(&subject.id);
        if self.subscribers.remove(&subject.id).is_some() {
            self.recipients = None;
        }
        self.stop_listening_user(subject.id);
        Job {
            write: Some(Write::Append(append)),
            recipients,
            extra: Vec::new(),
            pushes: Vec::new(),
            ack: Ack::None,
            original: None,
            notify: self.notices.clone(),
        }
    }

    fn subscribe(&mut self, out: Outbound) {
        if !self.members.contains_key(&out.user) || out.is_closed() {
            return;
        }
        let user = out.user;
        let list = self.subscribers.entry(user).or_default();
        if list.iter().any(|existing| existing.conn == out.conn) {
            return;
        }
        list.push(out);
        let first = list.len() == 1;
        self.recipients = None;
        if first {
            self.presence(user, true);
        }
    }

    fn unsubscribe(&mut self, user: UserId, conn: ConnId) {
        self.listeners.remove(&conn);
        let Some(list) = self.subscribers.get_mut(&user) else {
            return;
        };
        let before = list.len();
        list.retain(|out| out.conn != conn && !out.is_closed());
        if list.len() == before {
            return;
        }
        self.recipients = None;
        if list.is_empty() {
            self.subscribers.remove(&user);
            self.presence(user, false);
        }
    }

    fn presence(&mut self, user: UserId, online: bool) {
        self.presence_changes.entry(user).or_insert(!online);
        if self.subscribers.len() < PRESENCE_GATHER_FROM {
            self.tell_presence();
        } else if self.presence_due.is_none() {
            self.presence_due = Some(tokio::time::Instant::now() + PRESENCE_GATHER);
        }
    }

    /// Tells everyone online the presence changes gathered since the last time, as one
    /// write of concatenated frames per connection. A user who went and came back in
    /// between is not mentioned; nobody is told about themselves.
    fn tell_presence(&mut self) {
        self.presence_due = None;
        let mut frames = Vec::new();
        for (user, was_online) in self.presence_changes.drain() {
            let online = self.subscribers.contains_key(&user);
            let Some(member) = self.members.get(&user) else {
                continue;
            };
            if online == was_online {
                continue;
            }
            let frame = ServerFrame::Event(Event::Presence {
                room: self.record.id,
                user: member.name.clone(),
                online,
            });
            if let Some(frame) = encode(&frame) {
                frames.push((user, frame));
            }
        }
        if frames.is_empty() {
            return;
        }
        let all = concat(frames.iter().map(|(_, frame)| frame));
        for (other, outs) in &self.subscribers {
            let bytes = if frames.iter().any(|(user, _)| user == other) {
                let rest = concat(
                    frames
                        .iter()
                        .filter(|(user, _)| user != other)
                        .map(|(_, frame)| frame),
                );
                if rest.is_empty() {
                    continue;
                }
                rest
            } else {
                all.clone()
            };
            for out in outs {
                out.push(bytes.clone());
            }
        }
    }

    fn info(&self, viewer: UserId) -> RoomInfo {
        let membership = if self.members.contains_key(&viewer) {
            Membership::Joined
        } else if self.invited.contains(&viewer) {
            Membership::Invited
        } else {
            Membership::None
        };
        let kind = match self.record.kind {
            StoredKind::Public => RoomKind::Public,
            StoredKind::Private => RoomKind::Private,
            StoredKind::Direct => {
                let peer = self
                    .members
                    .iter()
                    .find(|(id, _)| **id != viewer)
                    .or_else(|| self.members.iter().next())
                    .map(|(_, member)| member.name.clone());
                match peer {
                    Some(peer) => RoomKind::Direct { peer },
                    None => RoomKind::Private,
                }
            }
        };
        RoomInfo {
            id: self.record.id,
            name: self.record.name.clone(),
            kind,
            owner: self.owner_name.clone(),
            membership,
            last_seq: self.last_seq,
            member_count: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
            encryption: self.record.encryption.clone(),
            epoch: self.group.as_ref().map(|group| group.epoch),
        }
    }

    fn member_list(&self, asker: UserId) -> Result<Vec<MemberInfo>, ProtoError> {
        if self.record.kind != StoredKind::Public && !self.members.contains_key(&asker) {
            return deny(ErrorCode::NotMember, "you are not in this room");
        }
        let mut list: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|(id, member)| MemberInfo {
                user: member.name.clone(),
                owner: self.record.owner == Some(*id),
                online: self.subscribers.contains_key(id),
            })
            .collect();
        list.sort_by_key(|member| member.user.canonical());
        Ok(list)
    }
}
