//! The end-to-end layer: the one task that owns this device's keys, its MLS groups and
//! its decrypted history.
//!
//! It sits between the connection actor and the front ends. Every room entry the actor
//! delivers (in log order) passes through it: commits move the room's group to its next
//! epoch, messages are decrypted and authenticated, and the result is written to the
//! local history ([`store`]) before the front end sees it, since MLS decrypts a message
//! only once. A message that cannot be read becomes an entry saying why (tampered,
//! replayed, an unknown device), never a crash or a silent drop.
//!
//! Sending also goes through it, so that one owner orders group changes: before
//! encrypting, it makes sure this device is in the room's group (creating it, joining
//! from a Welcome or by an external commit) and that the group holds exactly the
//! devices on the signed lists of the room's members (adding and removing them in a
//! commit), and it retries after catching up when the server says the epoch moved on.
//! It must never log message text or keys.

pub mod group;
pub mod live;
pub mod store;
mod voice;

use crate::connection::Command;
use crate::entry::{Content, Entry, Protection, Unreadable};
use crate::error::ClientError;
use crate::event::ClientEvent;
use crate::handle::{HistoryPage, SentAck};
use crate::keys::{E2eState, KeyStore};
use confide_crypto::payload::{Envelope, MessageId, Payload, PayloadError};
use confide_crypto::safety::SafetyNumber;
use confide_crypto::shared_key::SharedKey;
use confide_crypto::{CryptoError, Incoming, SignedDeviceList, TrustChange};
use confide_proto::{
    DeviceId, EntryKind, ErrorCode, LogEntry, PendingWelcome, ProtoError, Reply, Request, RoomId,
    RoomInfo, Seq, Target, UserName,
};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use store::{LocalStore, StoreError, Stored};
use tokio::sync::{mpsc, oneshot};

/// Items taken from the actor per batch (one save of the keys per batch).
const BATCH: usize = 256;

/// A kept outgoing text older than this (by its send time) when the device has read its
/// room to the end belongs to a send the server never stored. Generous: a send whose
/// connection dropped is stored, if at all, within moments.
const UNSTORED_AFTER_MS: u64 = 60 * 60 * 1000;

/// What the connection actor hands to this layer, in order.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// A room log entry, in order within its room.
    Entry { entry: LogEntry, live: bool },
    /// A Welcome for this device was stored.
    Welcome(PendingWelcome),
    /// A user published a new identity or device list.
    IdentityChanged(UserName),
    /// An ephemeral message (a typing notice) relayed without being stored.
    Ephemeral {
        room: RoomId,
        sender: UserName,
        device: Option<DeviceId>,
        body: Vec<u8>,
    },
    /// Live voice from a member, for a connection that listens.
    Voice {
        room: RoomId,
        sender: UserName,
        device: Option<DeviceId>,
        body: Vec<u8>,
    },
    /// Anything else, passed on unchanged.
    Event(ClientEvent),
}

/// What a [`crate::ClientHandle`] asks of this layer.
#[derive(Debug)]
pub(crate) enum SecureCommand {
    Send {
        target: Target,
        payload: Payload,
        reply: oneshot::Sender<Result<SentAck, ClientError>>,
    },
    History {
        room: RoomId,
        before: Option<Seq>,
        limit: u32,
        reply: oneshot::Sender<Result<HistoryPage, ClientError>>,
    },
    Verification {
        user: UserName,
        reply: oneshot::Sender<Result<Verification, ClientError>>,
    },
    MarkVerified {
        user: UserName,
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    SetRoomKey {
        room: RoomId,
        key: SharedKey,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Sends a typing notice (throttled); answers whether one went out.
    Typing {
        room: RoomId,
        active: bool,
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    /// Says that this user read `room` up to the message `up_to` (in rooms small enough
    /// for receipts); answers whether a receipt went out.
    MarkRead {
        room: RoomId,
        up_to: MessageId,
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    /// Removes from the room's group the devices of users who are no longer members
    /// (at once, after a kick or ban).
    RemoveDeparted {
        room: RoomId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Sends a live voice frame (answered with the server's acknowledgement).
    SendVoice {
        room: RoomId,
        frame: confide_crypto::voice::VoiceFrame,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Reads, writes or forgets the record of an upload in progress.
    Upload {
        /// Names the file and room.
        digest: [u8; 32],
        /// What to do.
        op: UploadOp,
        reply: oneshot::Sender<Result<Option<store::UploadRecord>, ClientError>>,
    },
    /// Answered once the device's keys are published (or publishing failed).
    Published {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// What [`SecureCommand::Upload`] does with an upload record.
#[derive(Debug)]
pub(crate) enum UploadOp {
    /// Answers the record, if any.
    Find,
    /// Stores this record.
    Save(store::UploadRecord),
    /// Forgets the record.
    Forget,
}

/// What `verify` shows about another user.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The user.
    pub user: UserName,
    /// The safety number of the two identities.
    pub safety_number: SafetyNumber,
    /// Whether the user was verified before (for the identity key pinned now).
    pub verified: bool,
    /// Whether their identity key changed since first contact and was not verified
    /// again since (warn loudly).
    pub key_changed: bool,
    /// What changed since the last look.
    pub change: TrustChange,
}

/// Why an end-to-end operation failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// The keys in the profile could not be read or written.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyStoreError),
    /// The local history could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cryptography failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The message is not valid (too long, empty field).
    #[error("invalid message: {0}")]
    Payload(#[from] PayloadError),
    /// The user has never set up end-to-end encryption.
    #[error("{0} has not set up end-to-end encryption yet (they need to log in once)")]
    NoIdentity(UserName),
    /// The user's published identity does not check out.
    #[error("the identity {user} published is invalid: {reason}")]
    BadIdentity {
        /// Whose.
        user: UserName,
        /// Why.
        reason: confide_crypto::IdentityError,
    },
    /// A shared-key room whose key this profile does not have.
    #[error("no key for room {0}: add it with the room's key file or passphrase")]
    NoRoomKey(RoomId),
    /// A room that has no shared key.
    #[error("{0} is not a shared-key room")]
    NotSharedKey(String),
    /// The shared key could not be made.
    #[error("cannot make the room's key: {0}")]
    RoomKey(#[from] confide_crypto::shared_key::SharedKeyError),
    /// The kind of key does not fit the room.
    #[error("{0}")]
    RoomKeyKind(&'static str),
    /// The room's group kept changing while this device tried to send.
    #[error("room {0}: the group kept changing; try again")]
    Contended(RoomId),
}

impl From<E2eError> for ClientError {
    fn from(err: E2eError) -> ClientError {
        ClientError::E2e(Box::new(err))
    }
}

impl From<StoreError> for ClientError {
    fn from(err: StoreError) -> ClientError {
        E2eError::from(err).into()
    }
}

impl From<CryptoError> for ClientError {
    fn from(err: CryptoError) -> ClientError {
        E2eError::from(err).into()
    }
}

/// Sends requests to the connection actor without keeping it alive: when every
/// handle is gone, the actor stops, and so does this layer.
#[derive(Debug, Clone)]
pub(crate) struct Requester {
    commands: mpsc::WeakSender<Command>,
}

impl Requester {
    pub(crate) fn new(commands: &mpsc::Sender<Command>) -> Requester {
        Requester {
            commands: commands.downgrade(),
        }
    }

    pub(crate) async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let commands = self.commands.upgrade().ok_or(ClientError::Closed)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Request { request, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        drop(commands);
        answer.await.map_err(|_| ClientError::Closed)?
    }
}

/// The task's channels and state.
pub(crate) struct Secure {
    requests: Requester,
    upstream: mpsc::UnboundedReceiver<Upstream>,
    commands: mpsc::Receiver<SecureCommand>,
    events: mpsc::UnboundedSender<ClientEvent>,
    keys: KeyStore,
    state: E2eState,
    store: LocalStore,
    me: UserName,
    rooms: HashMap<RoomId, RoomInfo>,
    processed: HashMap<u64, u64>,
    /// Rooms whose membership may differ from their group's (checked before sending).
    dirty: HashSet<RoomId>,
    /// Whether the device state changed since it was last saved.
    unsaved: bool,
    /// Processed positions not yet written (written after the device state).
    unsaved_processed: HashMap<u64, u64>,
    /// Why publishing this device's keys failed, if it did.
    publish_failed: Option<String>,
    /// When this device last said it was typing, per room.
    typing_sent: HashMap<RoomId, tokio::time::Instant>,
    /// Rooms where someone left, and when to check that their devices were removed.
    departures: HashMap<RoomId, tokio::time::Instant>,
    /// Per room, the newest message from someone else not yet confirmed delivered.
    delivered_due: HashMap<RoomId, MessageId>,
    /// Per room, the message this user last said they read.
    read_sent: HashMap<RoomId, MessageId>,
    /// Live voice keys and counters.
    voice: voice::VoiceState,
}

/// What the task starts with.
pub(crate) struct SecureStart {
    pub requests: Requester,
    pub upstream: mpsc::UnboundedReceiver<Upstream>,
    pub commands: mpsc::Receiver<SecureCommand>,
    pub events: mpsc::UnboundedSender<ClientEvent>,
    pub keys: KeyStore,
    pub state: E2eState,
    pub store: LocalStore,
    pub me: UserName,
}

fn server_error(code: ErrorCode, message: impl Into<String>) -> ClientError {
    ClientError::Server(ProtoError::new(code, message.into()))
}

fn unexpected(request: &'static str) -> ClientError {
    ClientError::Protocol(format!("unexpected answer to {request}"))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn is_code(err: &ClientError, code: ErrorCode) -> bool {
    matches!(err, ClientError::Server(e) if e.code == code)
}

impl Secure {
    pub(crate) fn new(start: SecureStart) -> Result<Secure, ClientError> {
        let processed = start.store.processed()?.into_iter().collect();
        Ok(Secure {
            requests: start.requests,
            upstream: start.upstream,
            commands: start.commands,
            events: start.events,
            keys: start.keys,
            state: start.state,
            store: start.store,
            me: start.me,
            rooms: HashMap::new(),
            processed,
            dirty: HashSet::new(),
            unsaved: false,
            unsaved_processed: HashMap::new(),
            publish_failed: None,
            typing_sent: HashMap::new(),
            departures: HashMap::new(),
            delivered_due: HashMap::new(),
            read_sent: HashMap::new(),
            voice: voice::VoiceState::new(),
        })
    }

    /// Runs until the connection actor stops.
    pub(crate) async fn run(mut self) {
        if let Err(err) = self.publish().await {
            tracing::warn!(cause = %err, "cannot publish this device's keys");
            self.publish_failed = Some(err.to_string());
            self.emit(ClientEvent::Warning(format!(
                "cannot publish this device's end-to-end keys: {err}"
            )));
        }
        let mut commands_open = true;
        loop {
            let departure = self.next_departure();
            tokio::select! {
                biased;
                item = self.upstream.recv() => {
                    let Some(item) = item else { break };
                    self.on_batch(item).await;
                    self.send_delivery_receipts().await;
                }
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command).await,
                    None => commands_open = false,
                },
                () = tokio::time::sleep_until(
                    departure.unwrap_or_else(tokio::time::Instant::now)
                ), if departure.is_some() => self.run_departures().await,
            }
        }
        if let Err(err) = self.flush() {
            tracing::warn!(cause = %err, "cannot save the end-to-end state");
        }
    }

    fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    /// A request to the actor; the future does not borrow `self` (the task holds the
    /// local database, which must not be shared between threads).
    fn request(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = Result<Reply, ClientError>> + Send + 'static {
        let requests = self.requests.clone();
        async move { requests.request(request).await }
    }

    fn device_id(&self) -> DeviceId {
        DeviceId(self.state.device.id().device)
    }

    /// Takes what the actor has queued (up to [`BATCH`] items after `first`),
    /// processes it in order, saves, then passes the results on.
    async fn on_batch(&mut self, first: Upstream) {
        let mut items = vec![first];
        while items.len() < BATCH {
            match self.upstream.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Upstream::Entry { entry, live } => match self.process(&entry).await {
                    Ok(entry) => {
                        if entry.is_new_message()
                            && !entry.sender.same_as(&self.me)
                            && let Content::Message { envelope, .. } = &entry.content
                        {
                            self.delivered_due.insert(entry.room, envelope.id);
                        }
                        if let Content::Unreadable(reason) = &entry.content
                            && reason.is_alert()
                        {
                            out.push(ClientEvent::Warning(format!(
                                "room {} message {} from {}: {reason}",
                                entry.room, entry.seq, entry.sender
                            )));
                        }
                        out.push(ClientEvent::Entry { entry, live });
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, room = %entry.room, seq = %entry.seq, "cannot process entry");
                        out.push(ClientEvent::Warning(format!(
                            "room {} entry {}: {err}",
                            entry.room, entry.seq
                        )));
                        out.push(ClientEvent::Entry {
                            entry: Entry::from_log(
                                &entry,
                                Content::Unreadable(Unreadable::Failed(err.to_string())),
                            ),
                            live,
                        });
                    }
                },
                Upstream::Welcome(welcome) => {
                    if let Err(err) = self.on_welcome(welcome).await {
                        out.push(ClientEvent::Warning(format!("cannot use a Welcome: {err}")));
                    }
                }
                Upstream::IdentityChanged(user) => {
                    if let Some(warning) = self.on_identity_changed(&user).await {
                        out.push(warning);
                    }
                }
                Upstream::Voice {
                    room,
                    sender,
                    device,
                    body,
                } => {
                    let voice = live::EphemeralIn {
                        room,
                        sender,
                        device,
                        body,
                    };
                    if let Some(event) = self.on_voice(voice) {
                        out.push(event);
                    }
                }
                Upstream::Ephemeral {
                    room,
                    sender,
                    device,
                    body,
                } => {
                    let ephemeral = live::EphemeralIn {
                        room,
                        sender,
                        device,
                        body,
                    };
                    if let Some(event) = self.on_ephemeral(ephemeral).await {
                        out.push(event);
                    }
                }
                Upstream::Event(event) => {
                    match &event {
                        ClientEvent::Room(info) => {
                            self.dirty.insert(info.id);
                            self.rooms.insert(info.id, info.clone());
                        }
                        ClientEvent::Connection(crate::ConnectionState::Connected) => {
                            // Members may have changed while away.
                            self.dirty.extend(self.rooms.keys().copied());
                        }
                        _ => {}
                    }
                    out.push(event);
                }
            }
        }
        if let Err(err) = self.flush() {
            tracing::warn!(cause = %err, "cannot save the end-to-end state");
            out.push(ClientEvent::Warning(format!(
                "cannot save the end-to-end state: {err}"
            )));
        }
        for event in out {
            self.emit(event);
        }
    }

    /// Saves the device state if it changed, then the processed positions.
    fn flush(&mut self) -> Result<(), ClientError> {
        if self.unsaved {
            self.keys.save(&self.state).map_err(E2eError::from)?;
            self.unsaved = false;
        }
        if !self.unsaved_processed.is_empty() {
            let positions: Vec<(u64, u64)> = self.unsaved_processed.drain().collect();
            self.store.batch(|store| {
                for (room, seq) in &positions {
                    store.set_processed(*room, *seq)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn processed_up_to(&self, room: RoomId) -> u64 {
        self.processed.get(&room.0).copied().unwrap_or(0)
    }

    fn mark_processed(&mut self, room: RoomId, seq: Seq) {
        let slot = self.processed.entry(room.0).or_insert(0);
        if seq.0 > *slot {
            *slot = seq.0;
            self.unsaved_processed.insert(room.0, seq.0);
        }
    }

    /// What this device knows of `room`, asking the server if needed (or if
    /// `refresh`).
    async fn room_info(&mut self, room: RoomId, refresh: bool) -> Result<RoomInfo, ClientError> {
        if !refresh && let Some(info) = self.rooms.get(&room) {
            return Ok(info.clone());
        }
        match self.request(Request::ListRooms).await? {
            Reply::Rooms(rooms) => {
                for info in rooms {
                    self.rooms.insert(info.id, info);
                }
            }
            _ => return Err(unexpected("list_rooms")),
        }
        self.rooms.get(&room).cloned().ok_or_else(|| {
            server_error(ErrorCode::NoSuchRoom, format!("room {room} is not listed"))
        })
    }

    /// Turns one log entry into what the front end sees, decrypting it once.
    async fn process(&mut self, entry: &LogEntry) -> Result<Entry, ClientError> {
        let room = entry.room;
        match &entry.kind {
            EntryKind::Member { user, change } => {
                self.dirty.insert(room);
                if entry.seq.0 > self.processed_up_to(room) {
                    self.on_departure(room, user, *change);
                }
                self.mark_processed(room, entry.seq);
                Ok(Entry::from_log(
                    entry,
                    Content::Member {
                        user: user.clone(),
                        change: *change,
                    },
                ))
            }
            EntryKind::Commit { epoch, data } => {
                if entry.seq.0 > self.processed_up_to(room) {
                    self.apply_commit(entry, *epoch, data).await?;
                    self.mark_processed(room, entry.seq);
                }
                Ok(Entry::from_log(entry, Content::Commit { epoch: *epoch }))
            }
            EntryKind::Message { body } => {
                if let Some(stored) = self.store.message(room.0, entry.seq.0)? {
                    return Ok(Entry::from_log(entry, stored_content(stored)));
                }
                let stored = if entry.seq.0 <= self.processed_up_to(room) {
                    Stored::Unreadable(Unreadable::BeforeJoin)
                } else {
                    self.decrypt(entry, body).await?
                };
                self.store
                    .put_message(room.0, entry.seq.0, stored.clone())?;
                self.mark_processed(room, entry.seq);
                Ok(Entry::from_log(entry, stored_content(stored)))
            }
        }
    }

    async fn decrypt(&mut self, entry: &LogEntry, body: &[u8]) -> Result<Stored, ClientError> {
        let room = entry.room;
        let info = match self.room_info(room, false).await {
            Ok(info) => Some(info),
            Err(ClientError::Server(_)) => None,
            Err(err) => return Err(err),
        };
        if let Some(info) = &info
            && let confide_proto::RoomEncryption::SharedKey { .. } = info.encryption
        {
            return Ok(self.decrypt_shared(room, body)?);
        }
        if !self.state.device.has_group(room.0) {
            let encrypted = confide_crypto::ds::inspect_application(room.0, body).is_ok();
            return Ok(Stored::Unreadable(if encrypted {
                Unreadable::BeforeJoin
            } else {
                Unreadable::NotEncrypted
            }));
        }
        let incoming = self.state.device.process(room.0, body);
        self.unsaved = true;
        let stored = match incoming {
            Ok(Incoming::Application { sender, plaintext }) => {
                if sender.id.user != entry.sender.canonical() {
                    Stored::Unreadable(Unreadable::Failed(format!(
                        "the server says {} sent it but it was signed by {}",
                        entry.sender, sender.id.user
                    )))
                } else if !self.device_allowed(&sender).await {
                    Stored::Unreadable(Unreadable::UnknownDevice {
                        device: sender.id.device,
                    })
                } else {
                    match Envelope::decode(&plaintext) {
                        Ok(envelope) => Stored::Message {
                            envelope,
                            protection: Protection::Mls,
                        },
                        Err(PayloadError::UnknownKind(_) | PayloadError::UnsupportedVersion(_)) => {
                            Stored::Unreadable(Unreadable::Unsupported)
                        }
                        Err(err) => Stored::Unreadable(Unreadable::Failed(err.to_string())),
                    }
                }
            }
            Ok(Incoming::OwnMessage) => match self.store.outgoing(&digest(body), room.0)? {
                Some(envelope) => {
                    // Its send failed without an answer, but the server had stored it:
                    // the text moves to the message, stored before it leaves the outbox.
                    let stored = Stored::Message {
                        envelope,
                        protection: Protection::Mls,
                    };
                    self.store
                        .put_message(room.0, entry.seq.0, stored.clone())?;
                    self.store.remove_outgoing(&digest(body))?;
                    stored
                }
                None => Stored::Unreadable(Unreadable::Failed(
                    "sent by this device, but its text was not kept".to_owned(),
                )),
            },
            Ok(Incoming::Commit { .. } | Incoming::AlreadyApplied | Incoming::Proposal) => {
                Stored::Unreadable(Unreadable::Failed(
                    "a handshake message where a message was expected".to_owned(),
                ))
            }
            Err(CryptoError::Tampered) => Stored::Unreadable(Unreadable::Tampered),
            Err(CryptoError::Replayed) => Stored::Unreadable(Unreadable::Replayed),
            Err(CryptoError::Malformed(_)) => Stored::Unreadable(Unreadable::NotEncrypted),
            Err(CryptoError::WrongEpoch { .. }) => Stored::Unreadable(Unreadable::BeforeJoin),
            Err(err) => Stored::Unreadable(Unreadable::Failed(err.to_string())),
        };
        Ok(stored)
    }

    fn decrypt_shared(&self, room: RoomId, body: &[u8]) -> Result<Stored, StoreError> {
        let Some(key) = self.store.shared_key(room.0)? else {
            return Ok(Stored::Unreadable(Unreadable::NoKey));
        };
        let Ok(token) = std::str::from_utf8(body) else {
            return Ok(Stored::Unreadable(Unreadable::NotEncrypted));
        };
        let Ok((timestamp, plaintext)) = key.decrypt_with_timestamp(token) else {
            // Fernet cannot tell a wrong key from an altered token.
            return Ok(Stored::Unreadable(Unreadable::WrongKey));
        };
        let plaintext = zeroize::Zeroizing::new(plaintext);
        let stored = match Envelope::decode(&plaintext) {
            Ok(envelope) => Stored::Message {
                envelope,
                protection: Protection::SharedKey,
            },
            // The original programs put plain UTF-8 text in their tokens.
            Err(_) => match std::str::from_utf8(&plaintext) {
                Ok(text) if !text.is_empty() => {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&digest(body)[..16]);
                    Stored::Message {
                        envelope: Envelope {
                            id: MessageId::from_bytes(id),
                            sent_at_ms: timestamp.saturating_mul(1000),
                            body: Payload::Text {
                                text: text.to_owned(),
                            },
                        },
                        protection: Protection::SharedKey,
                    }
                }
                _ => Stored::Unreadable(Unreadable::Failed(
                    "the token holds neither a Confide message nor text".to_owned(),
                )),
            },
        };
        Ok(stored)
    }

    /// Whether `member` is on its user's signed device list (fetching the list if this
    /// device does not know it yet or it may have changed).
    async fn device_allowed(&mut self, member: &confide_crypto::GroupMember) -> bool {
        if self.state.trust.allows(&member.id, &member.signature_key) {
            return true;
        }
        let Ok(user) = UserName::parse(&member.id.user) else {
            return false;
        };
        if self.fetch_identity(&user).await.is_err() {
            return false;
        }
        self.state.trust.allows(&member.id, &member.signature_key)
    }

    /// Fetches and checks `user`'s identity and pins it; returns what changed.
    async fn fetch_identity(
        &mut self,
        user: &UserName,
    ) -> Result<(SignedDeviceList, TrustChange), ClientError> {
        let bundle = match self
            .request(Request::FetchIdentity {
                user: user.to_string(),
            })
            .await?
        {
            Reply::Identity { bundle, .. } => {
                bundle.ok_or_else(|| E2eError::NoIdentity(user.clone()))?
            }
            _ => return Err(unexpected("fetch_identity")),
        };
        let signed = SignedDeviceList {
            identity_key: bundle.identity_key,
            device_list: bundle.device_list,
            signature: bundle.signature,
        };
        let change = self
            .state
            .trust
            .observe(&user.canonical(), &signed)
            .map_err(|reason| E2eError::BadIdentity {
                user: user.clone(),
                reason,
            })?;
        if change != TrustChange::Unchanged {
            self.unsaved = true;
        }
        // However the change was found (a live notice, a lookup before sending, a
        // message from a new device), the front end hears of it once.
        let key_changed = match &change {
            TrustChange::IdentityChanged { .. } => Some(true),
            TrustChange::DevicesChanged { .. } => Some(false),
            _ => None,
        };
        if let Some(key_changed) = key_changed {
            let was_verified = matches!(
                change,
                TrustChange::IdentityChanged {
                    was_verified: true,
                    ..
                }
            );
            self.emit(ClientEvent::IdentityChanged {
                user: user.clone(),
                key_changed,
                was_verified,
            });
        }
        Ok((signed, change))
    }

    /// A user published a new identity or device list: check it now (which warns).
    async fn on_identity_changed(&mut self, user: &UserName) -> Option<ClientEvent> {
        for info in self.rooms.values() {
            self.dirty.insert(info.id);
        }
        match self.fetch_identity(user).await {
            Ok(_) => None,
            Err(err) => Some(ClientEvent::Warning(format!(
                "the identity {user} published does not check out: {err}"
            ))),
        }
    }

    async fn on_command(&mut self, command: SecureCommand) {
        match command {
            SecureCommand::Send {
                target,
                payload,
                reply,
            } => {
                let result = self.send(target, payload).await;
                let saved = self.flush();
                let _ = reply.send(saved.and(result));
            }
            SecureCommand::History {
                room,
                before,
                limit,
                reply,
            } => {
                let result = self.history(room, before, limit).await;
                let saved = self.flush();
                let _ = reply.send(saved.and(result));
            }
            SecureCommand::Verification { user, reply } => {
                let result = self.verification(&user).await;
                let saved = self.flush();
                let _ = reply.send(saved.and(result));
            }
            SecureCommand::MarkVerified { user, reply } => {
                let marked = self.state.trust.mark_verified(&user.canonical());
                self.unsaved = true;
                let _ = reply.send(self.flush().map(|()| marked));
            }
            SecureCommand::MarkRead { room, up_to, reply } => {
                let result = self.mark_read(room, up_to).await;
                let saved = self.flush();
                let _ = reply.send(saved.and(result));
            }
            SecureCommand::Typing {
                room,
                active,
                reply,
            } => {
                let result = self.typing(room, active).await;
                let _ = reply.send(result);
            }
            SecureCommand::RemoveDeparted { room, reply } => {
                // Only a group this device is in; a room nobody wrote in has none.
                let result = self.remove_departed(room).await;
                let saved = self.flush();
                let _ = reply.send(saved.and(result));
            }
            SecureCommand::Published { reply } => {
                let result = match &self.publish_failed {
                    None => Ok(()),
                    Some(reason) => Err(ClientError::Protocol(format!(
                        "cannot publish this device's keys: {reason}"
                    ))),
                };
                let _ = reply.send(result);
            }
            SecureCommand::SetRoomKey { room, key, reply } => {
                let result = self.store.set_shared_key(room.0, &key).map_err(Into::into);
                let _ = reply.send(result);
            }
            SecureCommand::SendVoice { room, frame, reply } => {
                self.send_voice(room, &frame, reply);
            }
            SecureCommand::Upload { digest, op, reply } => {
                let result = match op {
                    UploadOp::Find => self.store.upload(&digest),
                    UploadOp::Save(record) => {
                        self.store.put_upload(&digest, &record).map(|()| None)
                    }
                    UploadOp::Forget => self.store.remove_upload(&digest).map(|()| None),
                };
                let _ = reply.send(result.map_err(Into::into));
            }
        }
    }

    async fn verification(&mut self, user: &UserName) -> Result<Verification, ClientError> {
        let (signed, change) = self.fetch_identity(user).await?;
        let canonical = user.canonical();
        let contact = self.state.trust.contact(&canonical);
        let verified = contact.is_some_and(|c| c.verified);
        let key_changed = contact.is_some_and(|c| c.key_changed);
        let safety_number = SafetyNumber::compute(
            (&self.me.canonical(), self.state.device.identity_key()),
            (&canonical, &signed.identity_key),
        );
        Ok(Verification {
            user: user.clone(),
            safety_number,
            verified,
            key_changed,
            change,
        })
    }

    /// One page of a room's history, decrypted: the server's page of entries, each
    /// message taken from the local history (the room is caught up first, so that
    /// everything this device may read has been decrypted).
    async fn history(
        &mut self,
        room: RoomId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        self.catch_up(room).await?;
        let (entries, more) = match self
            .request(Request::History {
                room,
                before,
                limit,
            })
            .await?
        {
            Reply::History { entries, more } => (entries, more),
            _ => return Err(unexpected("history")),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in &entries {
            out.push(self.process(entry).await?);
        }
        Ok(HistoryPage { entries: out, more })
    }

    /// Processes what the actor has queued, then the rest of `room`'s log from the
    /// server, so that this device's group is at the room's latest epoch. What is
    /// processed here reaches the front end later, from the local history, when the
    /// actor delivers it.
    async fn catch_up(&mut self, room: RoomId) -> Result<(), ClientError> {
        while let Ok(item) = self.upstream.try_recv() {
            self.on_batch(item).await;
        }
        let from = self.processed_up_to(room);
        let started_ms = now_ms();
        let mut pages: Vec<Vec<LogEntry>> = Vec::new();
        let mut before = None;
        let mut whole = false;
        // Bounded: 100 pages of 500 entries.
        for _ in 0..100 {
            let (entries, more) = match self
                .request(Request::History {
                    room,
                    before,
                    limit: 500,
                })
                .await?
            {
                Reply::History { entries, more } => (entries, more),
                _ => return Err(unexpected("history")),
            };
            let Some(first) = entries.first() else {
                whole = true;
                break;
            };
            let reached = first.seq.0 <= from.saturating_add(1);
            before = Some(first.seq);
            pages.push(entries);
            if reached || !more {
                whole = true;
                break;
            }
        }
        for entry in pages.into_iter().rev().flatten() {
            if entry.seq.0 > self.processed_up_to(room) {
                self.process(&entry).await?;
            }
        }
        if whole {
            // Everything the server stored up to now has been read, and an own message
            // read back leaves the outbox. A text kept for a send whose fate was unknown
            // and that is still there after this long was never stored.
            let forgotten = self
                .store
                .purge_outgoing(room.0, started_ms.saturating_sub(UNSTORED_AFTER_MS))?;
            if forgotten > 0 {
                tracing::debug!(%room, forgotten, "dropped texts of sends never stored");
            }
        }
        Ok(())
    }

    /// Joins the group a Welcome is for, unless this device is already in it.
    async fn on_welcome(&mut self, welcome: PendingWelcome) -> Result<(), ClientError> {
        let room = welcome.room;
        if !self.state.device.has_group(room.0) && welcome.seq.0 >= self.processed_up_to(room) {
            match self.state.device.join_from_welcome(&welcome.data) {
                Ok(joined) if joined == room.0 => {
                    self.unsaved = true;
                    self.mark_processed(room, welcome.seq);
                }
                Ok(joined) => {
                    // A Welcome for another group than the server said: drop it.
                    self.state.device.drop_group(joined)?;
                    tracing::warn!(%room, "a Welcome for another room than announced");
                }
                Err(err) => tracing::warn!(%room, cause = %err, "cannot join from a Welcome"),
            }
        }
        // Saved before acknowledging, so that a crash cannot lose the group.
        self.flush()?;
        match self
            .request(Request::AckWelcome {
                id: welcome.id,
                device: self.device_id(),
            })
            .await
        {
            // The same Welcome came live and in a fetch: acknowledged already.
            Err(err) if is_code(&err, ErrorCode::NoSuchWelcome) => Ok(()),
            Err(err) => Err(err),
            Ok(_) => Ok(()),
        }
    }

    /// Fetches and applies the Welcomes waiting for this device.
    async fn apply_welcomes(&mut self) -> Result<(), ClientError> {
        let welcomes = match self
            .request(Request::FetchWelcomes {
                device: self.device_id(),
            })
            .await?
        {
            Reply::Welcomes(welcomes) => welcomes,
            _ => return Err(unexpected("fetch_welcomes")),
        };
        for welcome in welcomes {
            self.on_welcome(welcome).await?;
        }
        Ok(())
    }

    /// Applies a commit from the log. Without a group, the commit may be the one that
    /// added this device: its Welcome was stored with it.
    async fn apply_commit(
        &mut self,
        entry: &LogEntry,
        epoch: confide_proto::Epoch,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let room = entry.room;
        if !self.state.device.has_group(room.0) {
            self.apply_welcomes().await?;
            return Ok(());
        }
        let current = self.state.device.epoch(room.0)?;
        if epoch.0 < current {
            // Already applied (this device's own commit, or processed before a crash).
            return Ok(());
        }
        match self.state.device.process(room.0, data) {
            Ok(Incoming::Commit {
                added,
                self_removed,
                ..
            }) => {
                self.unsaved = true;
                for member in &added {
                    if !self.device_allowed(member).await {
                        self.emit(ClientEvent::Warning(format!(
                            "room {room}: {} added device {:016x} of {}, which is not on \
                             their signed device list; its messages will be rejected",
                            entry.sender, member.id.device, member.id.user
                        )));
                    }
                }
                if self_removed {
                    self.dirty.remove(&room);
                }
            }
            Ok(_) => {}
            Err(CryptoError::Removed) => self.unsaved = true,
            Err(err) => {
                self.unsaved = true;
                return Err(err.into());
            }
        }
        Ok(())
    }

    /// Sends `payload` to `target`, encrypted for the room's group (or with the room's
    /// shared key).
    async fn send(&mut self, target: Target, payload: Payload) -> Result<SentAck, ClientError> {
        let envelope = Envelope {
            id: MessageId::from_bytes(rand::random()),
            sent_at_ms: now_ms(),
            body: payload,
        };
        envelope.validate().map_err(E2eError::from)?;
        let room = match target {
            Target::Room(room) => room,
            Target::User(user) => match self.request(Request::OpenDirect { user }).await? {
                Reply::Room(info) => {
                    let id = info.id;
                    self.rooms.insert(id, info);
                    id
                }
                _ => return Err(unexpected("open_direct")),
            },
        };
        let info = self.room_info(room, false).await?;
        if let confide_proto::RoomEncryption::SharedKey { .. } = info.encryption {
            return self.send_shared(room, &envelope).await;
        }
        // Bounded: the group may move on a few times under contention.
        for _ in 0..8 {
            self.prepare_room(room).await?;
            let ciphertext = self.state.device.encrypt(room.0, &envelope.encode())?;
            let digest = digest(&ciphertext);
            self.store.put_outgoing(&digest, room.0, &envelope)?;
            // The ratchet moved: save before the ciphertext leaves, so that a crash
            // cannot make this device reuse a key.
            self.unsaved = true;
            self.flush()?;
            let nonce = confide_proto::MessageNonce(rand::random());
            match self
                .request(Request::Send {
                    target: Target::Room(room),
                    nonce,
                    body: ciphertext,
                })
                .await
            {
                Ok(Reply::Sent {
                    room,
                    seq,
                    timestamp,
                }) => {
                    self.store.put_message(
                        room.0,
                        seq.0,
                        Stored::Message {
                            envelope,
                            protection: Protection::Mls,
                        },
                    )?;
                    self.store.remove_outgoing(&digest)?;
                    self.typing_ended(room);
                    return Ok(SentAck {
                        room,
                        seq,
                        timestamp,
                    });
                }
                Ok(_) => return Err(unexpected("send")),
                Err(err) if is_code(&err, ErrorCode::StaleEpoch) => {
                    self.store.remove_outgoing(&digest)?;
                    self.catch_up(room).await?;
                }
                Err(err) => {
                    // A refusal means nothing was stored. Any other failure (the
                    // connection dropped, the client is closing) leaves the message's
                    // fate unknown: keep its text, so that it reads back if the server
                    // did store it.
                    if matches!(err, ClientError::Server(_)) {
                        self.store.remove_outgoing(&digest)?;
                    }
                    return Err(err);
                }
            }
        }
        Err(E2eError::Contended(room).into())
    }

    async fn send_shared(
        &mut self,
        room: RoomId,
        envelope: &Envelope,
    ) -> Result<SentAck, ClientError> {
        let key = self
            .store
            .shared_key(room.0)?
            .ok_or(E2eError::NoRoomKey(room))?;
        // Text goes as plain UTF-8, which the original programs read; anything else
        // as a Confide envelope.
        let plaintext = match &envelope.body {
            Payload::Text { text } => zeroize::Zeroizing::new(text.as_bytes().to_vec()),
            _ => zeroize::Zeroizing::new(envelope.encode()),
        };
        let now = envelope.sent_at_ms / 1000;
        let token = key.encrypt(&plaintext, now, rand::random());
        let body = token.into_bytes();
        match self
            .request(Request::Send {
                target: Target::Room(room),
                nonce: confide_proto::MessageNonce(rand::random()),
                body: body.clone(),
            })
            .await?
        {
            Reply::Sent {
                room,
                seq,
                timestamp,
            } => {
                let stored = match &envelope.body {
                    // Stored as the receivers will see it (the id comes from the token).
                    Payload::Text { .. } => self.decrypt_shared(room, &body)?,
                    _ => Stored::Message {
                        envelope: envelope.clone(),
                        protection: Protection::SharedKey,
                    },
                };
                self.store.put_message(room.0, seq.0, stored)?;
                Ok(SentAck {
                    room,
                    seq,
                    timestamp,
                })
            }
            _ => Err(unexpected("send")),
        }
    }
}

/// Milliseconds since the Unix epoch, for envelopes.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn stored_content(stored: Stored) -> Content {
    match stored {
        Stored::Message {
            envelope,
            protection,
        } => Content::Message {
            envelope,
            protection,
        },
        Stored::Unreadable(reason) => Content::Unreadable(reason),
    }
}
