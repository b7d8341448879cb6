//! [`ClientHandle`]: the cloneable front door to a running client.
//!
//! Each async method sends a [`Command`] to the connection actor and waits for its
//! answer on a oneshot channel, then turns the protocol [`Reply`] into a typed result.
//! Server refusals come back as [`ClientError::Server`] with their
//! [`confide_proto::ErrorCode`]. The handle must not touch the socket or the sequencer;
//! it only talks to the actor (and the profile, for `logout`).

use crate::address::ServerAddress;
use crate::connection::{Command, reply_kind};
use crate::entry::Entry;
use crate::error::ClientError;
use crate::fingerprint::Fingerprint;
use crate::profile::Profile;
use crate::secure::{SecureCommand, Verification};
use confide_crypto::payload::{MessageId, Payload};
use confide_crypto::shared_key::SharedKey;
use confide_proto::{
    ErrorCode, MemberInfo, ProtoError, Reply, Request, RoomId, RoomInfo, RoomKind, RoomName, Seq,
    Target, Timestamp, UserId, UserName,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// The account the client is logged in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's id.
    pub user_id: UserId,
    /// The account's name as registered.
    pub username: UserName,
}

/// What the client knows about the server it is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The address the client connects to.
    pub address: ServerAddress,
    /// The fingerprint of the server's certificate.
    pub fingerprint: Fingerprint,
    /// Whether this connection pinned the fingerprint (first contact, or a new
    /// explicit fingerprint); front ends tell the user.
    pub newly_pinned: bool,
    /// The server's software, from its hello.
    pub software: String,
    /// The largest message body the server accepts.
    pub max_body: u32,
}

/// The server's acknowledgement of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentAck {
    /// The room it went to (for a direct message, the conversation's room).
    pub room: RoomId,
    /// Its sequence number in the room.
    pub seq: Seq,
    /// When the server stored it.
    pub timestamp: Timestamp,
}

/// One page of a room's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The entries, decrypted.
    pub entries: Vec<Entry>,
    /// Whether older entries exist.
    pub more: bool,
}

/// The largest page [`ClientHandle::all_history`] asks for.
const HISTORY_PAGE_MAX: usize = 500;

/// How many of a room's newest entries [`ClientHandle::search`] looks through.
pub const SEARCH_DEPTH: usize = 20_000;

/// Where the key of a shared-key room comes from.
pub enum RoomKey {
    /// A Fernet key file (`confide keygen`, or the original programs' `secret.key`).
    File(SharedKey),
    /// A passphrase, stretched with Argon2id and the room's salt.
    Passphrase(zeroize::Zeroizing<String>),
}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomKey::File(_) => f.write_str("RoomKey::File(..)"),
            RoomKey::Passphrase(_) => f.write_str("RoomKey::Passphrase(..)"),
        }
    }
}

/// A cloneable handle to a running client. All clones talk to the same connection.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    secure: mpsc::Sender<SecureCommand>,
    account: Account,
    server: ServerInfo,
    profile: Profile,
    // A std mutex: held only to look up or insert a name, never across an await.
    room_ids: Mutex<HashMap<String, RoomId>>,
}

impl ClientHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        secure: mpsc::Sender<SecureCommand>,
        account: Account,
        server: ServerInfo,
        profile: Profile,
    ) -> ClientHandle {
        ClientHandle {
            inner: Arc::new(Inner {
                commands,
                secure,
                account,
                server,
                profile,
                room_ids: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Who the client is logged in as.
    #[must_use]
    pub fn user(&self) -> &Account {
        &self.inner.account
    }

    /// The server the client is connected to.
    #[must_use]
    pub fn server(&self) -> &ServerInfo {
        &self.inner.server
    }

    /// The profile the client uses.
    #[must_use]
    pub fn profile(&self) -> &Profile {
        &self.inner.profile
    }

    /// Switches this client's speaker for a room's live voice on or off: only while it
    /// is on does the server relay voice here ([`crate::ClientEvent::Voice`]).
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; `NotMember`.
    pub async fn listen(&self, room: RoomId, on: bool) -> Result<(), ClientError> {
        self.request(Request::Listen { room, on }).await.map(|_| ())
    }

    /// Sends one frame of live voice (Opus packets) to the room's listeners, sealed
    /// under a key exported from the room's current MLS epoch.
    ///
    /// # Errors
    /// If this device is not in the room's group yet, or the server refuses.
    pub async fn send_live_voice(
        &self,
        room: RoomId,
        frame: confide_crypto::voice::VoiceFrame,
    ) -> Result<(), ClientError> {
        self.secure(|reply| SecureCommand::SendVoice { room, frame, reply })
            .await
    }

    /// The end-to-end layer's command queue.
    pub(crate) fn secure_sender(&self) -> &mpsc::Sender<SecureCommand> {
        &self.inner.secure
    }

    /// Sends any request and returns the server's reply. The typed methods below are
    /// easier; this is for tests and for requests they do not cover.
    ///
    /// # Errors
    /// [`ClientError::Server`] if the server refused; [`ClientError::Timeout`] or
    /// [`ClientError::RetriesExhausted`] if no answer came in time;
    /// [`ClientError::Closed`] after [`ClientHandle::close`].
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let answer = self.submit(request).await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Hands a request to the connection and returns where its answer will arrive:
    /// requests submitted one after another reach the server in that order (chunks of
    /// an upload must), while their answers are awaited later.
    pub(crate) async fn submit(
        &self,
        request: Request,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Request { request, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(answer)
    }

    /// Asks the end-to-end layer and waits for its answer.
    async fn secure<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> SecureCommand,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .secure
            .send(command(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends a message, end-to-end encrypted for the room's group (or with the room's
    /// shared key). It is acknowledged only once stored; if the connection drops first
    /// it is resent unchanged, so it is stored exactly once. The plaintext is kept in
    /// the local history, since MLS cannot decrypt one's own messages.
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; for example `NoSuchRoom`, `NotMember` or
    /// `NoSuchUser` from the server; [`ClientError::E2e`] if the payload is invalid or
    /// the room's group cannot be joined.
    pub async fn send(&self, target: Target, payload: Payload) -> Result<SentAck, ClientError> {
        self.secure(|reply| SecureCommand::Send {
            target,
            payload,
            reply,
        })
        .await
    }

    /// Sends a text message (see [`ClientHandle::send`]).
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn send_text(&self, target: Target, text: &str) -> Result<SentAck, ClientError> {
        self.send(
            target,
            Payload::Text {
                text: text.to_owned(),
            },
        )
        .await
    }

    /// Replies to the message `to` in `room`.
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn reply(
        &self,
        room: RoomId,
        to: MessageId,
        text: &str,
    ) -> Result<SentAck, ClientError> {
        let text = text.to_owned();
        self.send(Target::Room(room), Payload::Reply { to, text })
            .await
    }

    /// Replaces the text of one of this user's messages (others show the newest edit).
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn edit(
        &self,
        room: RoomId,
        target: MessageId,
        text: &str,
    ) -> Result<SentAck, ClientError> {
        let text = text.to_owned();
        self.send(Target::Room(room), Payload::Edit { target, text })
            .await
    }

    /// Deletes one of this user's messages for everyone (clients stop showing it; the
    /// ciphertext stays in the server's log). A file it carries stays on the server
    /// until [`ClientHandle::delete_blob`].
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn delete(&self, room: RoomId, target: MessageId) -> Result<SentAck, ClientError> {
        self.send(Target::Room(room), Payload::Delete { target })
            .await
    }

    /// Adds (or, with `add: false`, takes back) an emoji reaction to a message.
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn react(
        &self,
        room: RoomId,
        target: MessageId,
        emoji: &str,
        add: bool,
    ) -> Result<SentAck, ClientError> {
        let emoji = emoji.to_owned();
        self.send(Target::Room(room), Payload::Reaction { target, emoji, add })
            .await
    }

    /// Tells the others that this user read `room` up to the message `up_to` (call it
    /// when the conversation is on screen with new messages). Receipts are sent only in
    /// direct conversations and rooms of at most
    /// [`crate::secure::live::RECEIPT_ROOM_MAX`] members, once per message; returns
    /// whether one went out. Delivery receipts are sent by the client core itself.
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn mark_read(&self, room: RoomId, up_to: MessageId) -> Result<bool, ClientError> {
        self.secure(|reply| SecureCommand::MarkRead { room, up_to, reply })
            .await
    }

    /// Tells the room's other members that this user is typing (`active`) or stopped.
    /// Call it on every edit of the input: notices go out at most every
    /// [`crate::secure::live::TYPING_REPEAT`] per room, encrypted like messages but
    /// relayed without being stored. A stop goes out only if a start did, and sending
    /// a message ends typing without one. Returns whether a notice was sent (nothing is
    /// sent in a room whose group this device has not joined yet).
    ///
    /// # Errors
    /// As [`ClientHandle::send`], except that a group that moved on is not an error.
    pub async fn typing(&self, room: RoomId, active: bool) -> Result<bool, ClientError> {
        self.secure(|reply| SecureCommand::Typing {
            room,
            active,
            reply,
        })
        .await
    }

    /// Fetches `user`'s identity, checks it against what is pinned, and returns the
    /// safety number of this account and theirs.
    ///
    /// # Errors
    /// [`ClientError::E2e`] if they never published an identity or it does not verify.
    pub async fn verification(&self, user: &UserName) -> Result<Verification, ClientError> {
        let user = user.clone();
        self.secure(|reply| SecureCommand::Verification { user, reply })
            .await
    }

    /// Records that the user compared the safety number with `user` and it matched;
    /// `false` if `user` was never looked up.
    ///
    /// # Errors
    /// If the keys cannot be saved.
    pub async fn mark_verified(&self, user: &UserName) -> Result<bool, ClientError> {
        let user = user.clone();
        self.secure(|reply| SecureCommand::MarkVerified { user, reply })
            .await
    }

    /// Waits until this device's end-to-end keys are published (done once per
    /// connection start, before any message is sent).
    ///
    /// # Errors
    /// If publishing failed.
    pub async fn keys_published(&self) -> Result<(), ClientError> {
        self.secure(|reply| SecureCommand::Published { reply })
            .await
    }

    /// Keeps the key of a shared-key room in this profile (sealed), so that its
    /// messages can be sent and read.
    ///
    /// # Errors
    /// If the local history cannot be written.
    pub async fn set_room_key(&self, room: RoomId, key: SharedKey) -> Result<(), ClientError> {
        self.secure(|reply| SecureCommand::SetRoomKey { room, key, reply })
            .await
    }

    /// The id of the room called `name` (resolved with [`ClientHandle::rooms`], then
    /// cached).
    ///
    /// # Errors
    /// `NoSuchRoom` if the server lists no such room.
    pub async fn room_id(&self, name: &RoomName) -> Result<RoomId, ClientError> {
        let key = name.canonical();
        if let Some(id) = self.cached(&key) {
            return Ok(id);
        }
        self.rooms().await?;
        self.cached(&key).ok_or_else(|| {
            ClientError::Server(ProtoError::new(ErrorCode::NoSuchRoom, name.to_string()))
        })
    }

    /// The id of the direct conversation with `peer`.
    ///
    /// # Errors
    /// `NoSuchRoom` if there is no conversation with that user yet.
    pub async fn direct_room_id(&self, peer: &UserName) -> Result<RoomId, ClientError> {
        let key = direct_key(peer);
        if let Some(id) = self.cached(&key) {
            return Ok(id);
        }
        self.rooms().await?;
        self.cached(&key).ok_or_else(|| {
            ClientError::Server(ProtoError::new(
                ErrorCode::NoSuchRoom,
                format!("no conversation with {peer}"),
            ))
        })
    }

    /// The direct conversation with `peer`, created on the server if needed (nothing is
    /// sent; its MLS group is made with the first message).
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; `NoSuchUser` for an unknown name.
    pub async fn open_direct(&self, peer: &UserName) -> Result<RoomInfo, ClientError> {
        match self
            .request(Request::OpenDirect {
                user: peer.to_string(),
            })
            .await?
        {
            Reply::Room(info) => Ok(info),
            other => Err(ClientError::Protocol(format!(
                "unexpected answer to open_direct: {}",
                reply_kind(&other)
            ))),
        }
    }

    /// Rooms the user is in or invited to, and public rooms.
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, ClientError> {
        match self.request(Request::ListRooms).await? {
            Reply::Rooms(rooms) => {
                for room in &rooms {
                    self.remember(room);
                }
                Ok(rooms)
            }
            other => Err(unexpected("list_rooms", &other)),
        }
    }

    /// Members of a room with their online state.
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; `NoSuchRoom` or `NotMember` from the server.
    pub async fn members(&self, room: RoomId) -> Result<Vec<MemberInfo>, ClientError> {
        match self.request(Request::Members { room }).await? {
            Reply::Members(members) => Ok(members),
            other => Err(unexpected("members", &other)),
        }
    }

    /// Up to `limit` entries of a room before `before` (the newest if `None`), oldest
    /// first, decrypted (messages come from the local history: the room is caught up
    /// first).
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn history(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        self.secure(|reply| SecureCommand::History {
            room,
            before,
            limit,
            reply,
        })
        .await
    }

    /// A room's whole history this account may read, oldest first, decrypted, at most
    /// `max` entries (the newest ones). Pages through [`ClientHandle::history`].
    ///
    /// # Errors
    /// As [`ClientHandle::history`].
    pub async fn all_history(&self, room: RoomId, max: usize) -> Result<Vec<Entry>, ClientError> {
        let mut pages: Vec<Vec<Entry>> = Vec::new();
        let mut before = None;
        let mut count = 0;
        // Bounded by `max`, and by the log itself (each page moves `before` back).
        while count < max {
            let limit = u32::try_from((max - count).min(HISTORY_PAGE_MAX)).unwrap_or(500);
            let page = self.history(room, before, limit).await?;
            let Some(first) = page.entries.first() else {
                break;
            };
            before = Some(first.seq);
            count += page.entries.len();
            pages.push(page.entries);
            if !page.more {
                break;
            }
        }
        Ok(pages.into_iter().rev().flatten().collect())
    }

    /// Messages of a room whose text contains `query` (ignoring case), newest first, at
    /// most `limit`: the matching happens here, on the decrypted local history, over at
    /// most the newest [`SEARCH_DEPTH`] entries.
    ///
    /// # Errors
    /// As [`ClientHandle::history`].
    pub async fn search(
        &self,
        room: RoomId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, ClientError> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        let mut before = None;
        let mut seen = 0;
        while seen < SEARCH_DEPTH && found.len() < limit {
            let page = self.history(room, before, 500).await?;
            let Some(first) = page.entries.first() else {
                break;
            };
            before = Some(first.seq);
            seen += page.entries.len();
            found.extend(
                page.entries
                    .into_iter()
                    .rev()
                    .filter(|entry| {
                        entry
                            .text()
                            .is_some_and(|text| text.to_lowercase().contains(&needle))
                    })
                    .take(limit - found.len()),
            );
            if !page.more {
                break;
            }
        }
        Ok(found)
    }

    /// Creates a room owned by the user.
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; `RoomExists` from the server.
    pub async fn create_room(
        &self,
        name: RoomName,
        private: bool,
    ) -> Result<RoomInfo, ClientError> {
        self.room_reply(
            "create_room",
            Request::CreateRoom {
                name: name.to_string(),
                private,
                encryption: confide_proto::RoomEncryption::Mls,
            },
        )
        .await
    }

    /// Creates a shared-key room (weaker than MLS: for people coming from the
    /// original programs) and keeps its key in this profile. A passphrase room gets a
    /// random salt, stored with the room, so every member derives the same key.
    ///
    /// # Errors
    /// As [`ClientHandle::create_room`]; [`ClientError::E2e`] for an empty passphrase.
    pub async fn create_shared_key_room(
        &self,
        name: RoomName,
        private: bool,
        key: RoomKey,
    ) -> Result<RoomInfo, ClientError> {
        let salt = match &key {
            RoomKey::File(_) => None,
            RoomKey::Passphrase(_) => Some(rand::random::<[u8; 16]>()),
        };
        // Derive first: a bad passphrase must not leave a keyless room behind.
        let shared = derive_room_key(key, salt)?;
        let info = self
            .room_reply(
                "create_room",
                Request::CreateRoom {
                    name: name.to_string(),
                    private,
                    encryption: confide_proto::RoomEncryption::SharedKey { salt },
                },
            )
            .await?;
        self.set_room_key(info.id, shared).await?;
        Ok(info)
    }

    /// Keeps the key of a shared-key room this user is in (from its key file or
    /// passphrase, with the room's salt).
    ///
    /// # Errors
    /// [`ClientError::E2e`] if the room is not a shared-key room, the kind of key does
    /// not match the room, or the passphrase is empty.
    pub async fn add_room_key(&self, room: &RoomInfo, key: RoomKey) -> Result<(), ClientError> {
        let confide_proto::RoomEncryption::SharedKey { salt } = room.encryption else {
            return Err(crate::secure::E2eError::NotSharedKey(room.label()).into());
        };
        let shared = derive_room_key(key, salt)?;
        self.set_room_key(room.id, shared).await
    }

    /// Joins a public room, or a private one the user was invited to.
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; `NotInvited` or `Banned` from the server.
    pub async fn join(&self, name: RoomName) -> Result<RoomInfo, ClientError> {
        self.room_reply(
            "join",
            Request::Join {
                name: name.to_string(),
            },
        )
        .await
    }

    /// Leaves a room.
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn leave(&self, room: RoomId) -> Result<(), ClientError> {
        self.ok_reply("leave", Request::Leave { room }).await
    }

    /// Invites a user to a room.
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn invite(&self, room: RoomId, user: UserName) -> Result<(), ClientError> {
        self.ok_reply(
            "invite",
            Request::Invite {
                room,
                user: user.to_string(),
            },
        )
        .await
    }

    /// Removes a member (room owner only).
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; `Forbidden` from the server.
    pub async fn kick(&self, room: RoomId, user: UserName) -> Result<(), ClientError> {
        self.ok_reply(
            "kick",
            Request::Kick {
                room,
                user: user.to_string(),
            },
        )
        .await?;
        self.remove_from_group(room).await
    }

    /// Removes a member and keeps them out (room owner only).
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn ban(&self, room: RoomId, user: UserName) -> Result<(), ClientError> {
        self.ok_reply(
            "ban",
            Request::Ban {
                room,
                user: user.to_string(),
            },
        )
        .await?;
        self.remove_from_group(room).await
    }

    /// Commits the removal of whoever is no longer a member from the room's group at
    /// once, rather than at the next message, so that the removed devices lose the keys
    /// of every later epoch.
    async fn remove_from_group(&self, room: RoomId) -> Result<(), ClientError> {
        self.secure(|reply| SecureCommand::RemoveDeparted { room, reply })
            .await
    }

    /// Lifts a ban (room owner only).
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn unban(&self, room: RoomId, user: UserName) -> Result<(), ClientError> {
        self.ok_reply(
            "unban",
            Request::Unban {
                room,
                user: user.to_string(),
            },
        )
        .await
    }

    /// Ends the session on the server, deletes `session.json` if it holds this
    /// session, and stops the client.
    ///
    /// # Errors
    /// As [`ClientHandle::request`], or a profile error if the session file cannot be
    /// removed.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.ok_reply("logout", Request::Logout).await?;
        let profile = &self.inner.profile;
        let stored = profile.session()?;
        if stored.is_some_and(|session| {
            session.server == self.inner.server.address
                && session.username.same_as(&self.inner.account.username)
        }) {
            profile.remove_session()?;
        }
        self.close().await;
        Ok(())
    }

    /// Checks that the server answers; returns the server's time.
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn ping(&self) -> Result<Timestamp, ClientError> {
        match self.request(Request::Ping).await? {
            Reply::Pong { timestamp } => Ok(timestamp),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Stops the client: closes the connection, saves room positions, fails pending
    /// requests with [`ClientError::Closed`] and ends the event stream after a final
    /// [`crate::ConnectionState::Disconnected`]. Returns when the client has stopped;
    /// calling it again is harmless.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { done })
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
    }

    async fn room_reply(
        &self,
        kind: &'static str,
        request: Request,
    ) -> Result<RoomInfo, ClientError> {
        match self.request(request).await? {
            Reply::Room(info) => {
                self.remember(&info);
                Ok(info)
            }
            other => Err(unexpected(kind, &other)),
        }
    }

    async fn ok_reply(&self, kind: &'static str, request: Request) -> Result<(), ClientError> {
        match self.request(request).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected(kind, &other)),
        }
    }

    fn cached(&self, key: &str) -> Option<RoomId> {
        self.inner
            .room_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
    }

    fn remember(&self, info: &RoomInfo) {
        let key = match (&info.kind, &info.name) {
            (RoomKind::Direct { peer }, _) => direct_key(peer),
            (_, Some(name)) => name.canonical(),
            (_, None) => return,
        };
        self.inner
            .room_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, info.id);
    }
}

/// The key of a shared-key room from what the user gave and the room's salt.
fn derive_room_key(key: RoomKey, salt: Option<[u8; 16]>) -> Result<SharedKey, ClientError> {
    use crate::secure::E2eError;
    match (key, salt) {
        (RoomKey::File(key), None) => Ok(key),
        (RoomKey::Passphrase(passphrase), Some(salt)) => SharedKey::from_passphrase(
            &passphrase,
            &confide_crypto::shared_key::Salt::from_bytes(salt),
        )
        .map_err(|err| E2eError::RoomKey(err).into()),
        (RoomKey::File(_), Some(_)) => Err(E2eError::RoomKeyKind(
            "this room's key comes from a passphrase, not a key file",
        )
        .into()),
        (RoomKey::Passphrase(_), None) => Err(E2eError::RoomKeyKind(
            "this room's key comes from a key file, not a passphrase",
        )
        .into()),
    }
}

/// Cache key of a direct conversation; `@` cannot start a room name, so it cannot
/// collide with one.
fn direct_key(peer: &UserName) -> String {
    format!("@{}", peer.canonical())
}

fn unexpected(request: &str, reply: &Reply) -> ClientError {
    ClientError::Protocol(format!(
        "unexpected answer to {request}: {}",
        reply_kind(reply)
    ))
}
