//! [`ClientHandle`]: the cloneable front door to a running client.
//!
//! Each async method sends a [`Command`] to the connection actor and waits for its
//! answer on a oneshot channel, then turns the protocol [`Reply`] into a typed result.
//! Server refusals come back as [`ClientError::Server`] with their
//! [`confide_proto::ErrorCode`]. The handle must not touch the socket or the sequencer;
//! it only talks to the actor (and the profile, for `logout`).

use crate::address::ServerAddress;
use crate::body;
use crate::connection::{Command, reply_kind};
use crate::error::ClientError;
use crate::fingerprint::Fingerprint;
use crate::profile::Profile;
use confide_proto::{
    ErrorCode, LogEntry, MemberInfo, MessageNonce, ProtoError, Reply, Request, RoomId, RoomInfo,
    RoomKind, RoomName, Seq, Target, Timestamp, UserId, UserName,
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
    /// The entries.
    pub entries: Vec<LogEntry>,
    /// Whether older entries exist.
    pub more: bool,
}

/// A cloneable handle to a running client. All clones talk to the same connection.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    account: Account,
    server: ServerInfo,
    profile: Profile,
    // A std mutex: held only to look up or insert a name, never across an await.
    room_ids: Mutex<HashMap<String, RoomId>>,
}

impl ClientHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        account: Account,
        server: ServerInfo,
        profile: Profile,
    ) -> ClientHandle {
        ClientHandle {
            inner: Arc::new(Inner {
                commands,
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

    /// Sends any request and returns the server's reply. The typed methods below are
    /// easier; this is for tests and for requests they do not cover.
    ///
    /// # Errors
    /// [`ClientError::Server`] if the server refused; [`ClientError::Timeout`] or
    /// [`ClientError::RetriesExhausted`] if no answer came in time;
    /// [`ClientError::Closed`] after [`ClientHandle::close`].
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Request { request, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends a message body. It is acknowledged only once stored; if the connection
    /// drops first it is resent with the same nonce, so it is stored exactly once.
    ///
    /// # Errors
    /// As [`ClientHandle::request`]; for example `NoSuchRoom`, `NotMember` or
    /// `NoSuchUser` from the server.
    pub async fn send(&self, target: Target, body: Vec<u8>) -> Result<SentAck, ClientError> {
        let nonce = MessageNonce(rand::random());
        match self
            .request(Request::Send {
                target,
                nonce,
                body,
            })
            .await?
        {
            Reply::Sent {
                room,
                seq,
                timestamp,
            } => Ok(SentAck {
                room,
                seq,
                timestamp,
            }),
            other => Err(unexpected("send", &other)),
        }
    }

    /// Sends a text message (see [`body::encode_text`]).
    ///
    /// # Errors
    /// As [`ClientHandle::send`].
    pub async fn send_text(&self, target: Target, text: &str) -> Result<SentAck, ClientError> {
        self.send(target, body::encode_text(text)).await
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
    /// first.
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn history(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        match self
            .request(Request::History {
                room,
                before,
                limit,
            })
            .await?
        {
            Reply::History { entries, more } => Ok(HistoryPage { entries, more }),
            other => Err(unexpected("history", &other)),
        }
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
        .await
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
