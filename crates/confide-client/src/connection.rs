//! The connection actor: the one task that owns the client's connection to the server.
//!
//! It receives [`Command`]s from every [`crate::ClientHandle`], sends them as requests,
//! routes responses back, feeds server events through the sequencer to the
//! [`crate::EventStream`], runs the sync loop, keeps the connection alive, and when the
//! connection drops, reconnects with backoff, logs in again, resends what was in flight
//! (a `Send` keeps its nonce, so it is stored once) and syncs again. Nothing else
//! touches the socket: its reader and writer tasks ([`transport`]) belong to this actor.
//! It must not block on the front end: events go out on an unbounded channel, and
//! requests wait in its queue only up to their deadline.

mod establish;
mod tls;
mod transport;

pub(crate) use establish::{Established, Login, Pin, establish, reply_kind};

/// Connects to `server` only to see its certificate: returns the certificate's
/// fingerprint without logging in or trusting it, so that a front end can ask its user
/// whether to trust a server it meets for the first time.
pub(crate) async fn probe(server: &ServerAddress) -> Result<Fingerprint, ClientError> {
    match tls::connect(server, None).await {
        Ok((_stream, fingerprint)) => Ok(fingerprint),
        Err(tls::TlsFailure::Connect(source)) => Err(ClientError::Connect {
            server: server.clone(),
            source,
        }),
        Err(tls::TlsFailure::Handshake { error, .. }) => Err(ClientError::Tls {
            server: server.clone(),
            source: error,
        }),
    }
}

use crate::address::ServerAddress;
use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::event::{ClientEvent, ConnectionState, TakenPositions};
use crate::fingerprint::Fingerprint;
use crate::profile::{Profile, Session};
use crate::secure::Upstream;
use crate::sequencer::{Accepted, RoomCursors};
use bytes::BytesMut;
use confide_proto::{
    ClientFrame, DeviceId, Event, MAX_FRAME_LEN, Password, ProtoError, Reply, Request, RequestId,
    RoomId, RoomInfo, ServerFrame, SessionToken, UserId, UserName, encode_frame,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use transport::{Inbound, Transport};

/// How often the actor checks deadlines, keep-alive and unsaved positions.
const TICK: Duration = Duration::from_millis(500);

/// Unsaved positions are written at most this often.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// After a failed sync, wait this long before trying again.
const SYNC_RETRY: Duration = Duration::from_secs(5);

/// What a handle asks of the actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a request and answer on `reply`.
    Request {
        request: Request,
        reply: oneshot::Sender<Result<Reply, ClientError>>,
    },
    /// Stop: close the connection, save positions, end the event stream.
    Close { done: oneshot::Sender<()> },
}

/// The fixed parts of the actor's job, from the configuration and the first connection.
#[derive(Debug)]
pub(crate) struct Settings {
    pub server: ServerAddress,
    pub profile: Profile,
    pub software: String,
    pub fingerprint: Fingerprint,
    pub sync: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub request_attempts: u32,
    pub keepalive_idle: Duration,
    pub dead_after: Duration,
    pub backoff: Backoff,
    pub max_reconnect_attempts: Option<u32>,
    pub sync_page: u32,
    /// This device, announced on every connection before anything else.
    pub device: DeviceId,
}

/// The account's credentials for logging in again.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub user_id: UserId,
    pub username: UserName,
    pub token: SessionToken,
    /// Kept only when the user gave a password, to log in again if the token is
    /// refused.
    pub password: Option<Password>,
}

/// The channels and state the actor starts with.
pub(crate) struct Start {
    pub settings: Settings,
    pub credentials: Credentials,
    pub commands: mpsc::Receiver<Command>,
    pub events: mpsc::UnboundedSender<Upstream>,
    pub taken: Arc<TakenPositions>,
    pub cursors: RoomCursors,
    pub established: Established,
}

/// A request from a handle, waiting for a connection or its answer.
#[derive(Debug)]
struct Pending {
    request: Request,
    reply: oneshot::Sender<Result<Reply, ClientError>>,
    deadline: Instant,
    /// Connections it was sent on so far.
    attempts: u32,
}

/// Why a request is in flight.
#[derive(Debug)]
enum Purpose {
    User(Pending),
    Sync,
    Ping,
    /// Tells the server which device this connection is.
    SetDevice,
}

/// The connection, or the way back to one.
enum Link {
    Up(Box<Up>),
    /// Waiting to try again.
    Waiting {
        attempt: u32,
        until: Instant,
    },
    /// An attempt is running.
    Connecting {
        attempt: u32,
        task: JoinHandle<Result<Box<Established>, ClientError>>,
    },
    /// Neither: between states, or stopped.
    Down,
}

/// A logged-in connection.
struct Up {
    transport: Transport,
    next_id: u64,
    in_flight: HashMap<RequestId, Purpose>,
    last_received: Instant,
    last_sent: Instant,
    ping_in_flight: bool,
    max_frame: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    Idle,
    /// A sync page is in flight; `again`: start another sync when this one ends.
    Running {
        again: bool,
    },
}

/// What woke the actor.
enum Step {
    Command(Option<Command>),
    Link(LinkEvent),
    Tick,
}

enum LinkEvent {
    Inbound(Option<Inbound>),
    Attempted(Result<Result<Box<Established>, ClientError>, tokio::task::JoinError>),
    RetryDue,
}

/// How the actor ended.
enum Stop {
    /// Closed by a handle (or all handles dropped, or logged out).
    Closed(String),
    /// Gave up: a permanent error or too many failed reconnections.
    GaveUp(String),
}

pub(crate) struct Actor {
    settings: Settings,
    credentials: Credentials,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Upstream>,
    taken: Arc<TakenPositions>,
    cursors: RoomCursors,
    rooms: HashMap<RoomId, RoomInfo>,
    link: Link,
    queue: VecDeque<Pending>,
    sync: SyncState,
    sync_retry_at: Option<Instant>,
    last_save: Instant,
    stop: Option<Stop>,
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl Actor {
    /// An actor on an already established first connection.
    pub(crate) fn new(start: Start) -> Actor {
        let Start {
            settings,
            credentials,
            commands,
            events,
            taken,
            cursors,
            established,
        } = start;
        let now = Instant::now();
        let mut actor = Actor {
            settings,
            credentials,
            commands,
            events,
            taken,
            cursors,
            rooms: HashMap::new(),
            link: Link::Down,
            queue: VecDeque::new(),
            sync: SyncState::Idle,
            sync_retry_at: None,
            last_save: now,
            stop: None,
            close_waiters: Vec::new(),
        };
        actor.install(established);
        actor
    }

    /// The first request on every connection: which device this is. Its entries
    /// carry the device, and MLS requests need it.
    async fn announce_device(&mut self) {
        if matches!(self.link, Link::Up(_)) {
            self.send(Purpose::SetDevice).await;
        }
    }

    /// Runs until closed or until it gives up.
    #[tracing::instrument(name = "client", skip_all, fields(server = %self.settings.server))]
    pub(crate) async fn run(mut self) {
        self.announce_device().await;
        if self.settings.sync {
            self.request_sync().await;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.stop.is_none() {
            let step = tokio::select! {
                command = self.commands.recv() => Step::Command(command),
                event = next_link_event(&mut self.link) => Step::Link(event),
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Command(Some(Command::Request { request, reply })) => {
                    let pending = Pending {
                        request,
                        reply,
                        deadline: Instant::now() + self.settings.request_timeout,
                        attempts: 0,
                    };
                    self.submit(pending).await;
                }
                Step::Command(Some(Command::Close { done })) => {
                    self.close_waiters.push(done);
                    self.stop = Some(Stop::Closed("closed".to_owned()));
                }
                Step::Command(None) => {
                    self.stop = Some(Stop::Closed("all client handles were dropped".to_owned()));
                }
                Step::Link(LinkEvent::Inbound(Some(Inbound::Frame(frame)))) => {
                    self.on_frame(frame).await;
                }
                Step::Link(LinkEvent::Inbound(Some(Inbound::Closed(reason)))) => {
                    self.connection_lost(reason);
                }
                Step::Link(LinkEvent::Inbound(None)) => {
                    self.connection_lost("the connection's reader stopped".to_owned());
                }
                Step::Link(LinkEvent::Attempted(result)) => self.on_attempt(result).await,
                Step::Link(LinkEvent::RetryDue) => self.start_attempt(),
                Step::Tick => self.on_tick().await,
            }
        }
        self.shutdown().await;
    }

    /// Takes over a freshly established connection.
    fn install(&mut self, established: Established) {
        let Established {
            stream,
            buffer,
            early_frames,
            hello,
            token,
            user_id,
            username,
            next_id,
            ..
        } = established;
        if token != self.credentials.token {
            self.credentials.token = token;
            self.save_session();
        }
        self.credentials.user_id = user_id;
        self.credentials.username = username;
        let now = Instant::now();
        let max_frame = usize::try_from(hello.max_frame)
            .unwrap_or(MAX_FRAME_LEN)
            .min(MAX_FRAME_LEN);
        self.link = Link::Up(Box::new(Up {
            transport: Transport::start(stream, buffer),
            next_id,
            in_flight: HashMap::new(),
            last_received: now,
            last_sent: now,
            ping_in_flight: false,
            max_frame,
        }));
        for frame in early_frames {
            if let ServerFrame::Event(event) = frame {
                self.on_event(event);
            }
        }
    }

    /// Stores a token obtained by logging in again, if the profile's session is still
    /// this account's (another login may have replaced it meanwhile).
    fn save_session(&self) {
        let profile = &self.settings.profile;
        let ours = match profile.session() {
            Ok(Some(session)) => {
                session.server == self.settings.server
                    && session.username.same_as(&self.credentials.username)
            }
            Ok(None) => true,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot read the stored session");
                false
            }
        };
        if !ours {
            return;
        }
        let session = Session {
            server: self.settings.server.clone(),
            username: self.credentials.username.clone(),
            user_id: self.credentials.user_id,
            token: self.credentials.token.clone(),
        };
        if let Err(err) = profile.save_session(&session) {
            tracing::warn!(cause = %err, "cannot store the new session");
        }
    }

    fn emit(&self, event: ClientEvent) {
        // A dropped stream means nobody wants events; that is not an error.
        let _ = self.events.send(Upstream::Event(event));
    }

    fn emit_accepted(&self, accepted: Accepted) {
        if accepted.skipped > 0
            && let Some(first) = accepted.delivered.first()
        {
            self.emit(ClientEvent::Warning(format!(
                "room {}: {} entries before {} are not available and were skipped",
                first.entry.room, accepted.skipped, first.entry.seq
            )));
        }
        if accepted.overflowed {
            tracing::warn!("too many entries buffered behind a gap; relying on sync");
        }
        for delivery in accepted.delivered {
            let _ = self.events.send(Upstream::Entry {
                entry: delivery.entry,
                live: delivery.live,
            });
        }
    }

    /// Sends `pending` now if connected, else queues it for the next connection.
    async fn submit(&mut self, pending: Pending) {
        if matches!(self.link, Link::Up(_)) {
            self.send(Purpose::User(pending)).await;
        } else {
            self.queue.push_back(pending);
        }
    }

    /// Sends a request on the current connection. The caller checked it is up.
    async fn send(&mut self, purpose: Purpose) {
        let Link::Up(up) = &mut self.link else {
            if let Purpose::User(pending) = purpose {
                self.queue.push_back(pending);
            }
            return;
        };
        let id = RequestId(up.next_id);
        up.next_id += 1;
        let request = match &purpose {
            Purpose::User(pending) => pending.request.clone(),
            Purpose::Sync => Request::Sync {
                cursors: self.cursors.cursors(),
                limit: self.settings.sync_page,
            },
            Purpose::Ping => Request::Ping,
            Purpose::SetDevice => Request::SetDevice {
                device: self.settings.device,
            },
        };
        let kind = request.kind();
        let mut frame = BytesMut::new();
        if let Err(err) = encode_frame(&ClientFrame { id, request }, up.max_frame, &mut frame) {
            match purpose {
                Purpose::User(pending) => {
                    let _ = pending.reply.send(Err(ClientError::Encode(err)));
                }
                Purpose::Sync => {
                    tracing::warn!(cause = %err, "cannot encode a sync request");
                    self.sync = SyncState::Idle;
                }
                Purpose::Ping | Purpose::SetDevice => {}
            }
            return;
        }
        tracing::debug!(id = id.0, kind, len = frame.len(), "request");
        let purpose = match purpose {
            Purpose::User(mut pending) => {
                pending.attempts += 1;
                Purpose::User(pending)
            }
            other => other,
        };
        up.in_flight.insert(id, purpose);
        up.last_sent = Instant::now();
        // The writer's queue is bounded; if the server stops reading for as long as it
        // takes to declare a connection dead, treat it as dead rather than wait forever
        // (which would also stall `close`).
        let queued =
            tokio::time::timeout(self.settings.dead_after, up.transport.outgoing.send(frame)).await;
        match queued {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.connection_lost("the connection's writer stopped".to_owned()),
            Err(_) => self.connection_lost(format!(
                "the server did not read for {}s",
                self.settings.dead_after.as_secs()
            )),
        }
    }

    async fn on_frame(&mut self, frame: ServerFrame) {
        if let Link::Up(up) = &mut self.link {
            up.last_received = Instant::now();
        }
        match frame {
            ServerFrame::Response { id, result } => {
                let purpose = match &mut self.link {
                    Link::Up(up) => up.in_flight.remove(&id),
                    _ => None,
                };
                match purpose {
                    Some(Purpose::User(pending)) => self.on_reply(pending, result),
                    Some(Purpose::Sync) => self.on_synced(result).await,
                    Some(Purpose::Ping) => {
                        if let Link::Up(up) = &mut self.link {
                            up.ping_in_flight = false;
                        }
                    }
                    Some(Purpose::SetDevice) => {
                        if let Err(err) = result {
                            tracing::warn!(cause = %err, "the server refused this device");
                            self.emit(ClientEvent::Warning(format!(
                                "the server refused this device: {err}"
                            )));
                        }
                    }
                    None => tracing::debug!(id = id.0, "response to an unknown request"),
                }
            }
            ServerFrame::Event(event) => {
                if self.on_event(event) {
                    self.request_sync().await;
                }
            }
            ServerFrame::Fatal(err) => {
                // Expected (shutdown, a slow client): the reconnection handles it.
                tracing::info!(code = ?err.code, message = %err.message, "server ended the connection");
                self.connection_lost(format!("server closed the connection: {err}"));
            }
        }
    }

    /// Handles an event; returns whether a sync is needed to fill a gap.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Entry(entry) => {
                let accepted = self.cursors.live(entry);
                let needs_sync = accepted.needs_sync;
                self.emit_accepted(accepted);
                needs_sync && self.settings.sync
            }
            Event::Presence { room, user, online } => {
                self.emit(ClientEvent::Presence { room, user, online });
                false
            }
            Event::Room(info) => {
                self.rooms.insert(info.id, info.clone());
                self.emit(ClientEvent::Room(info));
                false
            }
            Event::Welcome { device, welcome } => {
                if device == self.settings.device {
                    let _ = self.events.send(Upstream::Welcome(welcome));
                }
                false
            }
            Event::IdentityChanged { user } => {
                let _ = self.events.send(Upstream::IdentityChanged(user));
                false
            }
            Event::Ephemeral {
                room,
                sender,
                device,
                body,
            } => {
                let _ = self.events.send(Upstream::Ephemeral {
                    room,
                    sender,
                    device,
                    body,
                });
                false
            }
            Event::Voice {
                room,
                sender,
                device,
                body,
            } => {
                let _ = self.events.send(Upstream::Voice {
                    room,
                    sender,
                    device,
                    body,
                });
                false
            }
        }
    }

    fn on_reply(&mut self, pending: Pending, result: Result<Reply, ProtoError>) {
        match (&pending.request, &result) {
            (_, Ok(Reply::Room(info))) => {
                self.rooms.insert(info.id, info.clone());
            }
            (Request::Logout, Ok(Reply::Ok)) => {
                self.stop = Some(Stop::Closed("logged out".to_owned()));
            }
            _ => {}
        }
        let _ = pending.reply.send(result.map_err(ClientError::Server));
    }

    /// Starts a sync, or asks for another one after the running one.
    async fn request_sync(&mut self) {
        if !self.settings.sync {
            return;
        }
        match self.sync {
            SyncState::Running { .. } => self.sync = SyncState::Running { again: true },
            SyncState::Idle => {
                if matches!(self.link, Link::Up(_)) {
                    self.sync = SyncState::Running { again: false };
                    self.sync_retry_at = None;
                    self.send(Purpose::Sync).await;
                }
            }
        }
    }

    async fn on_synced(&mut self, result: Result<Reply, ProtoError>) {
        let again = matches!(self.sync, SyncState::Running { again: true });
        let (rooms, entries, more) = match result {
            Ok(Reply::Synced {
                rooms,
                entries,
                more,
            }) => (rooms, entries, more),
            Ok(other) => {
                self.sync_failed(format!("unexpected answer to sync: {}", reply_kind(&other)));
                return;
            }
            Err(err) => {
                self.sync_failed(format!("sync failed: {err}"));
                return;
            }
        };
        for info in rooms {
            self.on_synced_room(info);
        }
        for entry in entries {
            let accepted = self.cursors.synced(entry);
            self.emit_accepted(accepted);
        }
        if more {
            self.sync = SyncState::Running { again };
            self.send(Purpose::Sync).await;
            return;
        }
        self.sync = SyncState::Idle;
        self.emit(ClientEvent::SyncComplete);
        if again {
            self.request_sync().await;
        }
    }

    fn sync_failed(&mut self, message: String) {
        tracing::warn!(%message, "sync");
        self.emit(ClientEvent::Warning(message));
        self.sync = SyncState::Idle;
        self.sync_retry_at = Some(Instant::now() + SYNC_RETRY);
    }

    /// Notes a room from a sync reply: rewinds a position that is ahead of the
    /// server's log, and announces rooms that are new or changed.
    fn on_synced_room(&mut self, info: RoomInfo) {
        if let Some(last) = self.cursors.last(info.id)
            && last > info.last_seq
        {
            self.cursors.rewind(info.id, info.last_seq);
            self.taken.rewind(info.id, info.last_seq);
            self.emit(ClientEvent::Warning(format!(
                "{}: the server's log ends at {} but this profile had seen {}; \
                 the server's history was reset",
                info.label(),
                info.last_seq,
                last
            )));
        }
        let changed = self.rooms.get(&info.id).is_none_or(|known| {
            known.name != info.name
                || known.kind != info.kind
                || known.owner != info.owner
                || known.membership != info.membership
        });
        self.rooms.insert(info.id, info.clone());
        if changed {
            self.emit(ClientEvent::Room(info));
        }
    }

    /// Drops the connection and schedules a reconnection; requests in flight go back
    /// to the front of the queue unless they used up their attempts.
    fn connection_lost(&mut self, reason: String) {
        let Link::Up(up) = std::mem::replace(&mut self.link, Link::Down) else {
            return;
        };
        tracing::info!(%reason, "connection lost");
        let mut in_flight: Vec<(RequestId, Purpose)> = up.in_flight.into_iter().collect();
        in_flight.sort_by_key(|(id, _)| *id);
        for (_, purpose) in in_flight.into_iter().rev() {
            let Purpose::User(pending) = purpose else {
                continue;
            };
            if pending.attempts >= self.settings.request_attempts {
                let request = pending.request.kind();
                let _ = pending.reply.send(Err(ClientError::RetriesExhausted {
                    request,
                    attempts: pending.attempts,
                }));
            } else {
                self.queue.push_front(pending);
            }
        }
        // A sync page in flight is lost; the next connection syncs again.
        self.sync = SyncState::Idle;
        self.schedule_attempt(1, &reason);
    }

    /// Waits before reconnection attempt `attempt`, or gives up past the limit.
    fn schedule_attempt(&mut self, attempt: u32, reason: &str) {
        if let Some(max) = self.settings.max_reconnect_attempts
            && attempt > max
        {
            self.stop = Some(Stop::GaveUp(format!(
                "gave up after {max} reconnection attempts: {reason}"
            )));
            return;
        }
        let retry_in = self.settings.backoff.delay(attempt, rand::random::<f64>());
        self.emit(ClientEvent::Connection(ConnectionState::Reconnecting {
            attempt,
            retry_in,
        }));
        self.link = Link::Waiting {
            attempt,
            until: Instant::now() + retry_in,
        };
    }

    fn start_attempt(&mut self) {
        let Link::Waiting { attempt, .. } = self.link else {
            return;
        };
        let server = self.settings.server.clone();
        let pin = Pin {
            expected: Some(self.settings.fingerprint),
            explicit: false,
            known_servers: self.settings.profile.known_servers_path(),
        };
        let software = self.settings.software.clone();
        let login = Login::Token {
            token: self.credentials.token.clone(),
            fallback: self
                .credentials
                .password
                .clone()
                .map(|password| (self.credentials.username.clone(), password)),
        };
        let timeout = self.settings.connect_timeout;
        tracing::debug!(attempt, "reconnecting");
        let task = tokio::spawn(async move {
            establish(&server, &pin, &software, &login, timeout)
                .await
                .map(Box::new)
        });
        self.link = Link::Connecting { attempt, task };
    }

    async fn on_attempt(
        &mut self,
        result: Result<Result<Box<Established>, ClientError>, tokio::task::JoinError>,
    ) {
        let attempt = match self.link {
            Link::Connecting { attempt, .. } => attempt,
            _ => 1,
        };
        let error = match result {
            Ok(Ok(established)) => {
                if !established.username.same_as(&self.credentials.username) {
                    self.stop = Some(Stop::GaveUp(format!(
                        "the server logged this session in as {} instead of {}",
                        established.username, self.credentials.username
                    )));
                    return;
                }
                self.install(*established);
                self.announce_device().await;
                tracing::info!(attempt, "reconnected");
                self.emit(ClientEvent::Connection(ConnectionState::Connected));
                while let Some(pending) = self.queue.pop_front() {
                    if !matches!(self.link, Link::Up(_)) {
                        self.queue.push_front(pending);
                        break;
                    }
                    self.send(Purpose::User(pending)).await;
                }
                self.request_sync().await;
                return;
            }
            Ok(Err(err)) => err,
            Err(join_error) => {
                ClientError::Protocol(format!("reconnection task failed: {join_error}"))
            }
        };
        if error.is_transient() {
            tracing::info!(attempt, cause = %error, "reconnection failed");
            self.schedule_attempt(attempt.saturating_add(1), &error.to_string());
        } else {
            tracing::warn!(cause = %error, "giving up reconnecting");
            self.stop = Some(Stop::GaveUp(error.to_string()));
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.expire_requests(now);
        let mut ping = false;
        let mut dead = None;
        if let Link::Up(up) = &self.link {
            let silent = now.saturating_duration_since(up.last_received);
            let quiet = now.saturating_duration_since(up.last_sent);
            if silent >= self.settings.dead_after {
                dead = Some(format!(
                    "no traffic from the server for {}s",
                    silent.as_secs()
                ));
            } else if silent >= self.settings.keepalive_idle
                && quiet >= self.settings.keepalive_idle
                && !up.ping_in_flight
            {
                ping = true;
            }
        }
        if let Some(reason) = dead {
            self.connection_lost(reason);
        } else if ping {
            if let Link::Up(up) = &mut self.link {
                up.ping_in_flight = true;
            }
            self.send(Purpose::Ping).await;
        }
        if self.sync_retry_at.is_some_and(|at| at <= now) {
            self.sync_retry_at = None;
            self.request_sync().await;
        }
        if now.saturating_duration_since(self.last_save) >= SAVE_INTERVAL {
            self.save_positions();
        }
    }

    /// Fails requests whose deadline has passed, queued or in flight.
    fn expire_requests(&mut self, now: Instant) {
        let timeout = self.settings.request_timeout;
        let expired = |pending: Pending| {
            let _ = pending.reply.send(Err(ClientError::Timeout {
                request: pending.request.kind(),
                after: timeout,
            }));
        };
        let (keep, gone): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|pending| pending.deadline > now);
        self.queue = keep.into();
        gone.into_iter().for_each(expired);
        if let Link::Up(up) = &mut self.link {
            let late: Vec<RequestId> = up
                .in_flight
                .iter()
                .filter_map(|(id, purpose)| match purpose {
                    Purpose::User(pending) if pending.deadline <= now => Some(*id),
                    _ => None,
                })
                .collect();
            for id in late {
                if let Some(Purpose::User(pending)) = up.in_flight.remove(&id) {
                    expired(pending);
                }
            }
        }
    }

    /// Writes the positions the front end has taken, if they changed.
    fn save_positions(&mut self) {
        self.last_save = Instant::now();
        let Some(positions) = self.taken.take_changed() else {
            return;
        };
        if let Err(err) = self.settings.profile.save_cursors(
            &self.settings.server,
            &self.credentials.username,
            &positions,
        ) {
            tracing::warn!(cause = %err, "cannot save room positions");
            self.taken.mark_dirty();
        }
    }

    async fn shutdown(mut self) {
        let (reason, error) = match self.stop.take() {
            Some(Stop::GaveUp(reason)) => (reason.clone(), Some(reason)),
            Some(Stop::Closed(reason)) => (reason, None),
            None => ("closed".to_owned(), None),
        };
        tracing::info!(%reason, "client stopping");
        let fail = |pending: Pending| {
            let err = match &error {
                Some(reason) => ClientError::Disconnected(reason.clone()),
                None => ClientError::Closed,
            };
            let _ = pending.reply.send(Err(err));
        };
        match std::mem::replace(&mut self.link, Link::Down) {
            Link::Up(up) => {
                for (_, purpose) in up.in_flight {
                    if let Purpose::User(pending) = purpose {
                        fail(pending);
                    }
                }
                // Dropping the transport lets the writer finish and close TLS.
            }
            Link::Connecting { task, .. } => task.abort(),
            Link::Waiting { .. } | Link::Down => {}
        }
        self.queue.drain(..).for_each(fail);
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Command::Close { done } => self.close_waiters.push(done),
            }
        }
        self.save_positions();
        self.emit(ClientEvent::Connection(ConnectionState::Disconnected {
            reason,
        }));
        for done in self.close_waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Waits for whatever the link does next: a frame, the end of a connection attempt, or
/// the time to start one.
async fn next_link_event(link: &mut Link) -> LinkEvent {
    match link {
        Link::Up(up) => LinkEvent::Inbound(up.transport.inbound.recv().await),
        Link::Connecting { task, .. } => LinkEvent::Attempted(task.await),
        Link::Waiting { until, .. } => {
            tokio::time::sleep_until(*until).await;
            LinkEvent::RetryDue
        }
        Link::Down => std::future::pending().await,
    }
}
