//! Requests, replies and events: everything exchanged after the handshake.
//!
//! A client sends [`ClientFrame`]s, each a [`Request`] with a client-chosen
//! [`RequestId`]. The server answers every request exactly once with a
//! [`ServerFrame::Response`] carrying the same id and either a [`Reply`] or a
//! [`ProtoError`], and pushes [`Event`]s as things happen.
//!
//! New variants are only ever appended, so that the position of each existing variant
//! (its postcard discriminant) never changes within a protocol version.

use crate::e2e::{
    ClaimedKeyPackage, DeviceId, Epoch, IdentityBundle, PendingWelcome, RoomEncryption, WelcomeId,
    WelcomeOut,
};
use crate::ids::{
    BlobId, MessageNonce, Password, RequestId, RoomId, Seq, SessionToken, Timestamp, UserId,
};
use crate::names::{RoomName, UserName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One request from the client, with the id its response will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client; echoed in the response.
    pub id: RequestId,
    /// What the client asks for.
    pub request: Request,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// A room the sender is a member of (including a direct conversation by its id).
    Room(RoomId),
    /// The direct conversation with this user (by name), created on first use.
    User(String),
}

/// What the client last saw in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncCursor {
    /// The room.
    pub room: RoomId,
    /// The highest sequence number the client has processed in it.
    pub seen: Seq,
}

/// Everything a client can ask. Requests other than `Register`, `Login`, `Resume` and
/// `Ping` need a logged-in connection.
///
/// Names in requests are plain strings that the server validates, so that a name that
/// breaks the rules gets [`ErrorCode::InvalidUsername`] or [`ErrorCode::InvalidRoomName`]
/// with the rule it breaks, not a decoding failure. Use [`UserName::parse`] and
/// [`RoomName::parse`] to check them before sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Create an account and log in. Replies [`Reply::LoggedIn`].
    Register {
        /// The new account's name (see [`UserName`] for the rules).
        username: String,
        /// At least [`Password::MIN_CHARS`] characters.
        password: Password,
    },
    /// Log in with a password. Replies [`Reply::LoggedIn`].
    Login {
        /// The account's name, in any case or normalization.
        username: String,
        /// The account's password.
        password: Password,
    },
    /// Log in with a token from an earlier [`Reply::LoggedIn`]. Replies [`Reply::LoggedIn`]
    /// with the same token.
    Resume {
        /// The session token.
        token: SessionToken,
    },
    /// End this session: the token stops working. Replies [`Reply::Ok`].
    Logout,
    /// Post a message. Replies [`Reply::Sent`] once the message is durably stored.
    Send {
        /// The room or user.
        target: Target,
        /// Random per message; a resend with the same nonce is acknowledged again
        /// without being stored twice.
        nonce: MessageNonce,
        /// Opaque to the server.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Catch up on everything missed. Replies [`Reply::Synced`].
    Sync {
        /// What the client has seen per room; rooms left out start from the point the
        /// user joined them.
        cursors: Vec<SyncCursor>,
        /// Most entries to return in this reply (the server may return fewer).
        limit: u32,
    },
    /// Older entries of one room, newest last. Replies [`Reply::History`].
    History {
        /// The room.
        room: RoomId,
        /// Only entries with a lower sequence number; `None` for the newest.
        before: Option<Seq>,
        /// Most entries to return.
        limit: u32,
    },
    /// Rooms the user is in or invited to, and public rooms. Replies [`Reply::Rooms`].
    ListRooms,
    /// Members of a room with their online state. Replies [`Reply::Members`].
    Members {
        /// The room.
        room: RoomId,
    },
    /// Create a room owned by the caller. Replies [`Reply::Room`].
    CreateRoom {
        /// Unique ignoring case and normalization (see [`RoomName`] for the rules).
        name: String,
        /// Private rooms can be joined only after an invitation.
        private: bool,
        /// MLS, or a shared key for compatibility with the original programs.
        encryption: RoomEncryption,
    },
    /// Join a public room, or a private room one was invited to. Replies [`Reply::Room`].
    Join {
        /// The room's name.
        name: String,
    },
    /// Leave a room. Replies [`Reply::Ok`].
    Leave {
        /// The room.
        room: RoomId,
    },
    /// Invite a user to a room the caller is in. Replies [`Reply::Ok`].
    Invite {
        /// The room.
        room: RoomId,
        /// Who to invite.
        user: String,
    },
    /// Remove a member (owner only). Replies [`Reply::Ok`].
    Kick {
        /// The room.
        room: RoomId,
        /// Who to remove.
        user: String,
    },
    /// Remove a member and keep them out (owner only). Replies [`Reply::Ok`].
    Ban {
        /// The room.
        room: RoomId,
        /// Who to ban.
        user: String,
    },
    /// Lift a ban (owner only). Replies [`Reply::Ok`].
    Unban {
        /// The room.
        room: RoomId,
        /// Who to let back in.
        user: String,
    },
    /// Liveness check. Replies [`Reply::Pong`].
    Ping,
    /// Say which device this connection belongs to, so that its messages and commits
    /// carry it. Replies [`Reply::Ok`].
    SetDevice {
        /// The device.
        device: DeviceId,
    },
    /// Publish the account's identity key and signed device list, replacing the
    /// previous one. Replies [`Reply::Ok`]; users who share a room are told with
    /// [`Event::IdentityChanged`].
    PublishIdentity {
        /// The bundle.
        bundle: IdentityBundle,
    },
    /// A user's identity bundle. Replies [`Reply::Identity`].
    FetchIdentity {
        /// The user's name.
        user: String,
    },
    /// Add one-time KeyPackages to a device's stock and replace its last-resort one.
    /// With nothing to add, it just reports the stock. Replies [`Reply::KeyPackageStock`].
    UploadKeyPackages {
        /// The device they belong to.
        device: DeviceId,
        /// TLS-encoded KeyPackages, each handed out once.
        one_time: Vec<Vec<u8>>,
        /// A KeyPackage handed out when the one-time stock is empty.
        last_resort: Option<Vec<u8>>,
    },
    /// Take one KeyPackage of each of a user's devices, to add them to a group.
    /// Replies [`Reply::KeyPackages`]. Rate-limited.
    ClaimKeyPackages {
        /// The user's name.
        user: String,
    },
    /// Record that the room's MLS group now exists at epoch 0, with its GroupInfo.
    /// First one wins; later ones get [`ErrorCode::GroupExists`]. Replies
    /// [`Reply::GroupInfo`].
    InitGroup {
        /// The room.
        room: RoomId,
        /// The TLS-encoded GroupInfo (with the ratchet tree) at epoch 0.
        group_info: Vec<u8>,
    },
    /// Append an MLS commit to the room's log. Accepted only if `epoch` is the room's
    /// current epoch (compare and swap); otherwise [`ErrorCode::StaleEpoch`] and the
    /// client catches up from the log and tries again. Replies [`Reply::Committed`].
    Commit {
        /// The room.
        room: RoomId,
        /// The epoch the commit was made in.
        epoch: Epoch,
        /// The TLS-encoded commit (an MLS public message, or an external commit).
        commit: Vec<u8>,
        /// The GroupInfo of the new epoch (with the ratchet tree), kept for external
        /// joins.
        group_info: Vec<u8>,
        /// A Welcome for the devices the commit adds, relayed until acknowledged.
        welcome: Option<WelcomeOut>,
    },
    /// The latest GroupInfo of a room's group, to join it by an external commit.
    /// Replies [`Reply::GroupInfo`].
    FetchGroupInfo {
        /// The room.
        room: RoomId,
    },
    /// Welcomes waiting for this device. Replies [`Reply::Welcomes`].
    FetchWelcomes {
        /// The device.
        device: DeviceId,
    },
    /// The device has processed a Welcome; the server forgets it. Replies [`Reply::Ok`].
    AckWelcome {
        /// The Welcome.
        id: WelcomeId,
        /// The device acknowledging it.
        device: DeviceId,
    },
    /// Relay a message to the room's members who are online, without storing it (typing
    /// indicators). Replies [`Reply::Ok`].
    SendEphemeral {
        /// The room.
        room: RoomId,
        /// Opaque to the server.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The direct conversation with a user, created if needed, without sending anything.
    /// Replies [`Reply::Room`].
    OpenDirect {
        /// The other user's name.
        user: String,
    },
    /// Start an upload: reserve a blob for an encrypted file of `size` bytes (as
    /// uploaded, that is ciphertext) in chunks of `chunk_size` bytes, the last one
    /// possibly shorter. Refused with [`ErrorCode::FileTooLarge`] before any byte is sent
    /// if the file is over the server's limit. Replies [`Reply::Blob`].
    CreateBlob {
        /// The room whose members may download it.
        room: RoomId,
        /// Total bytes to upload.
        size: u64,
        /// Bytes per chunk.
        chunk_size: u32,
    },
    /// How much of a blob the server holds, to resume an upload. Replies [`Reply::Blob`].
    BlobStatus {
        /// The blob.
        blob: BlobId,
    },
    /// Store the next chunk of a blob being uploaded (uploader only). `index` must be the
    /// number of chunks the server holds; a chunk it already holds is acknowledged again
    /// without being stored twice. The blob is complete, durable and downloadable once
    /// its last chunk is stored. Replies [`Reply::Blob`].
    PutChunk {
        /// The blob.
        blob: BlobId,
        /// The chunk's position, from 0.
        index: u32,
        /// Exactly `chunk_size` bytes, or the remainder for the last chunk.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// One chunk of a complete blob, for a member of its room. Replies [`Reply::Chunk`].
    GetChunk {
        /// The blob.
        blob: BlobId,
        /// The chunk's position, from 0.
        index: u32,
    },
    /// Turn this connection's speaker on or off for a room's live voice: only listening
    /// connections receive [`Event::Voice`]. Off when a connection starts. Replies
    /// [`Reply::Ok`].
    Listen {
        /// The room.
        room: RoomId,
        /// Whether to receive live voice.
        on: bool,
    },
    /// Relay live voice (end-to-end encrypted audio frames) to the room's listening
    /// connections, other than the sender's own. Never stored. Replies [`Reply::Ok`].
    SendVoice {
        /// The room.
        room: RoomId,
        /// Opaque to the server.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Delete a blob, complete or not, and give its bytes back to the uploader's quota
    /// (uploader only; anyone else is told [`ErrorCode::NoSuchBlob`]). Downloads of it
    /// fail with [`ErrorCode::NoSuchBlob`] from then on. Replies [`Reply::Ok`].
    DeleteBlob {
        /// The blob.
        blob: BlobId,
    },
}

impl Request {
    /// How many request variants this version knows; a discriminant at or above it is an
    /// unknown request type (from a newer client) rather than a malformed frame.
    pub const KNOWN_VARIANTS: u32 = 36;

    /// A short name for logs (never includes any field value).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Login { .. } => "login",
            Request::Resume { .. } => "resume",
            Request::Logout => "logout",
            Request::Send { .. } => "send",
            Request::Sync { .. } => "sync",
            Request::History { .. } => "history",
            Request::ListRooms => "list_rooms",
            Request::Members { .. } => "members",
            Request::CreateRoom { .. } => "create_room",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Invite { .. } => "invite",
            Request::Kick { .. } => "kick",
            Request::Ban { .. } => "ban",
            Request::Unban { .. } => "unban",
            Request::Ping => "ping",
            Request::SetDevice { .. } => "set_device",
            Request::PublishIdentity { .. } => "publish_identity",
            Request::FetchIdentity { .. } => "fetch_identity",
            Request::UploadKeyPackages { .. } => "upload_key_packages",
            Request::ClaimKeyPackages { .. } => "claim_key_packages",
            Request::InitGroup { .. } => "init_group",
            Request::Commit { .. } => "commit",
            Request::FetchGroupInfo { .. } => "fetch_group_info",
            Request::FetchWelcomes { .. } => "fetch_welcomes",
            Request::AckWelcome { .. } => "ack_welcome",
            Request::SendEphemeral { .. } => "send_ephemeral",
            Request::OpenDirect { .. } => "open_direct",
            Request::CreateBlob { .. } => "create_blob",
            Request::BlobStatus { .. } => "blob_status",
            Request::PutChunk { .. } => "put_chunk",
            Request::GetChunk { .. } => "get_chunk",
            Request::Listen { .. } => "listen",
            Request::SendVoice { .. } => "send_voice",
            Request::DeleteBlob { .. } => "delete_blob",
        }
    }
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The answer to one request.
    Response {
        /// The request's id.
        id: RequestId,
        /// What happened.
        result: Result<Reply, ProtoError>,
    },
    /// Something happened that the client should know about.
    Event(Event),
    /// A connection-level error (malformed frame, too slow, shutting down); the server
    /// closes the connection after sending it.
    Fatal(ProtoError),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to report.
    Ok,
    /// The connection is now logged in.
    LoggedIn {
        /// The account.
        user_id: UserId,
        /// The account's name as registered.
        username: UserName,
        /// Presents this to [`Request::Resume`] to log in again without the password.
        token: SessionToken,
    },
    /// The message is durably stored with this place in its room's log.
    Sent {
        /// The room it went to (for [`Target::User`], the direct conversation).
        room: RoomId,
        /// Its sequence number.
        seq: Seq,
        /// Server time of storage.
        timestamp: Timestamp,
    },
    /// Missed entries, ordered by room and then sequence number.
    Synced {
        /// Every room the user is in or invited to.
        rooms: Vec<RoomInfo>,
        /// Entries after the cursors, at most the requested limit.
        entries: Vec<LogEntry>,
        /// Whether more entries are waiting: sync again with updated cursors.
        more: bool,
    },
    /// A page of one room's log, oldest first.
    History {
        /// The entries.
        entries: Vec<LogEntry>,
        /// Whether older entries exist.
        more: bool,
    },
    /// Rooms.
    Rooms(Vec<RoomInfo>),
    /// Members of a room.
    Members(Vec<MemberInfo>),
    /// The room that was created or joined.
    Room(RoomInfo),
    /// Answer to [`Request::Ping`].
    Pong {
        /// Server time.
        timestamp: Timestamp,
    },
    /// A user's identity bundle, or `None` if they never published one.
    Identity {
        /// The user.
        user: UserName,
        /// Their latest bundle.
        bundle: Option<IdentityBundle>,
    },
    /// How many KeyPackages of the device the server still holds.
    KeyPackageStock {
        /// One-time packages not yet handed out.
        one_time: u32,
        /// Whether a last-resort package is stored.
        last_resort: bool,
    },
    /// One KeyPackage per device of the user (devices without any are left out).
    KeyPackages(Vec<ClaimedKeyPackage>),
    /// The commit is stored in the room's log and the group moved to `epoch`.
    Committed {
        /// The room.
        room: RoomId,
        /// The commit's place in the log.
        seq: Seq,
        /// Server time of storage.
        timestamp: Timestamp,
        /// The group's new epoch.
        epoch: Epoch,
    },
    /// The room's group's latest GroupInfo.
    GroupInfo {
        /// The room.
        room: RoomId,
        /// The group's current epoch.
        epoch: Epoch,
        /// The log position of the commit that started this epoch (0 for epoch 0).
        seq: Seq,
        /// The TLS-encoded GroupInfo with the ratchet tree.
        #[serde(with = "serde_bytes")]
        group_info: Vec<u8>,
    },
    /// Welcomes waiting for the device, oldest first.
    Welcomes(Vec<PendingWelcome>),
    /// A blob's size and how much of it the server holds.
    Blob(BlobInfo),
    /// One chunk of a blob.
    Chunk {
        /// The blob.
        blob: BlobId,
        /// The chunk's position, from 0.
        index: u32,
        /// The chunk's bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// An uploaded or uploading blob, as the server sees it: opaque encrypted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// Its id.
    pub blob: BlobId,
    /// The room whose members may download it.
    pub room: RoomId,
    /// Total bytes.
    pub size: u64,
    /// Bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
    /// Chunks the server holds, all from the start: the next chunk to upload.
    pub received: u32,
    /// Whether every chunk is stored (durably) and the blob can be downloaded.
    pub complete: bool,
}

impl BlobInfo {
    /// How many chunks the blob has (at least one: an empty upload is one empty chunk).
    #[must_use]
    pub fn chunks(&self) -> u32 {
        blob_chunks(self.size, self.chunk_size)
    }
}

/// Bytes each uploaded chunk of a blob adds to the file's plaintext: the 16-byte
/// ChaCha20-Poly1305 tag of the chunk's end-to-end encryption.
pub const BLOB_CHUNK_OVERHEAD: u32 = 16;

/// How many chunks of `chunk_size` bytes make `size` bytes: at least one, and `u32::MAX`
/// if `chunk_size` is 0 or the count does not fit.
#[must_use]
pub fn blob_chunks(size: u64, chunk_size: u32) -> u32 {
    if chunk_size == 0 {
        return u32::MAX;
    }
    let count = size.div_ceil(u64::from(chunk_size)).max(1);
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// What kind of room this is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomKind {
    /// Anyone may join.
    Public,
    /// Joined by invitation only.
    Private,
    /// A conversation between two users.
    Direct {
        /// The other user, from the point of view of the one asking.
        peer: UserName,
    },
}

/// The caller's relation to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Membership {
    /// A member.
    Joined,
    /// Invited, not yet joined.
    Invited,
    /// Neither (a public room one may join).
    None,
}

/// A room as one user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room.
    pub id: RoomId,
    /// Its name; `None` for a direct conversation.
    pub name: Option<RoomName>,
    /// Public, private or direct.
    pub kind: RoomKind,
    /// Who may kick and ban; `None` for the lobby and direct conversations.
    pub owner: Option<UserName>,
    /// The caller's membership.
    pub membership: Membership,
    /// The newest sequence number in the room's log.
    pub last_seq: Seq,
    /// How many members it has.
    pub member_count: u32,
    /// How its messages are protected.
    pub encryption: RoomEncryption,
    /// The MLS group's current epoch; `None` until its group is created (and always for
    /// shared-key rooms).
    pub epoch: Option<Epoch>,
}

impl RoomInfo {
    /// A label for people: the room's name, or `@peer` for a direct conversation.
    #[must_use]
    pub fn label(&self) -> String {
        match (&self.kind, &self.name) {
            (RoomKind::Direct { peer }, _) => format!("@{peer}"),
            (_, Some(name)) => name.to_string(),
            (_, None) => format!("room {}", self.id),
        }
    }
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Who.
    pub user: UserName,
    /// Whether they own the room.
    pub owner: bool,
    /// Whether they have at least one connection open.
    pub online: bool,
}

/// One entry of a room's log, as stored by the server and delivered to members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The room.
    pub room: RoomId,
    /// Its place in the room's log, starting at 1, without gaps.
    pub seq: Seq,
    /// When the server stored it.
    pub timestamp: Timestamp,
    /// Who posted it (for membership changes: who made the change).
    pub sender: UserName,
    /// The device it came from, when the connection named one.
    pub device: Option<DeviceId>,
    /// What it is.
    pub kind: EntryKind,
}

/// What a log entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A message; its body is opaque to the server.
    Message {
        /// The bytes the sender sent.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Someone's membership changed.
    Member {
        /// Whose.
        user: UserName,
        /// How.
        change: MemberChange,
    },
    /// An MLS commit, made in `epoch`; the group moves to the next epoch after it.
    Commit {
        /// The epoch it was made in.
        epoch: Epoch,
        /// The TLS-encoded commit.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// A change of membership recorded in a room's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberChange {
    /// Created the room (and is its first member).
    Created,
    /// Joined.
    Joined,
    /// Left by choice.
    Left,
    /// Was invited (by the entry's sender).
    Invited,
    /// Was removed by the entry's sender.
    Kicked,
    /// Was removed and banned by the entry's sender.
    Banned,
    /// Had a ban lifted by the entry's sender.
    Unbanned,
}

impl MemberChange {
    /// A lowercase word for this change, as used in logs and JSON output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MemberChange::Created => "created",
            MemberChange::Joined => "joined",
            MemberChange::Left => "left",
            MemberChange::Invited => "invited",
            MemberChange::Kicked => "kicked",
            MemberChange::Banned => "banned",
            MemberChange::Unbanned => "unbanned",
        }
    }
}

/// Something the server pushes without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A new entry in a room the user is in.
    Entry(LogEntry),
    /// A user came online or went offline (first connection opened, last one closed),
    /// sent for each room shared with them.
    Presence {
        /// The room.
        room: RoomId,
        /// Who.
        user: UserName,
        /// Online now or not.
        online: bool,
    },
    /// The user's relation to a room changed (joined, invited, removed, or a direct
    /// conversation was started with them). Sent before any entry of a new room.
    Room(RoomInfo),
    /// A Welcome for one of the user's devices (check the device; acknowledge it).
    Welcome {
        /// The device it is for.
        device: DeviceId,
        /// The Welcome.
        welcome: PendingWelcome,
    },
    /// A message that is relayed but not stored (typing indicators).
    Ephemeral {
        /// The room.
        room: RoomId,
        /// Who sent it.
        sender: UserName,
        /// Their device, when known.
        device: Option<DeviceId>,
        /// Opaque to the server.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A user who shares a room with the receiver published a new identity bundle
    /// (new identity key or device list): fetch it and check it.
    IdentityChanged {
        /// The user.
        user: UserName,
    },
    /// Live voice from a member, to a connection that listens in the room.
    Voice {
        /// The room.
        room: RoomId,
        /// Who is speaking.
        sender: UserName,
        /// Their device, when known.
        device: Option<DeviceId>,
        /// Opaque to the server.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

/// A failed request, or a connection-level error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people (never contains secrets or message content).
    pub message: String,
}

impl ProtoError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ProtoError {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

/// Why a request failed. Codes are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame could not be decoded.
    Malformed,
    /// The request type is not known to this server (sent by a newer client).
    UnknownRequest,
    /// The frame is longer than the server accepts.
    FrameTooLarge,
    /// The request needs a logged-in connection.
    NotLoggedIn,
    /// `Register`, `Login` or `Resume` on a connection that is already logged in.
    AlreadyLoggedIn,
    /// The username breaks the naming rules.
    InvalidUsername,
    /// The username is taken (ignoring case and normalization).
    UsernameTaken,
    /// The password breaks the password rules.
    WeakPassword,
    /// Unknown user or wrong password (deliberately the same error).
    InvalidCredentials,
    /// The session token is unknown or was logged out.
    InvalidSession,
    /// Too many requests or login attempts; try again later.
    RateLimited,
    /// No such room, or not visible to the caller.
    NoSuchRoom,
    /// No such user.
    NoSuchUser,
    /// A room with that name exists.
    RoomExists,
    /// The room name breaks the naming rules.
    InvalidRoomName,
    /// The caller is not a member of the room.
    NotMember,
    /// The user is already a member.
    AlreadyMember,
    /// The room is private and the caller was not invited.
    NotInvited,
    /// The caller is banned from the room.
    Banned,
    /// The caller may not do this (not the owner, or the lobby).
    Forbidden,
    /// The message body is larger than the server accepts.
    MessageTooLarge,
    /// The client sends faster than it reads, so its queue overflowed.
    TooSlow,
    /// The server is shutting down.
    ShuttingDown,
    /// The connection did not complete the handshake or log in in time.
    Timeout,
    /// Something failed inside the server; the request may be retried.
    Internal,
    /// A request argument is out of range.
    InvalidArgument,
    /// The commit or message was made in an epoch that is not the group's current one.
    StaleEpoch,
    /// The room's MLS group already exists.
    GroupExists,
    /// The room has no MLS group yet (or is a shared-key room).
    NoGroup,
    /// The handshake message or ciphertext is not a valid MLS message for this group.
    InvalidHandshake,
    /// The user has no KeyPackages (no device set up for end-to-end encryption).
    NoKeyPackages,
    /// No such pending Welcome.
    NoSuchWelcome,
    /// A file is larger than the server accepts, or the account's storage is full.
    FileTooLarge,
    /// No such blob, or not one the caller may read or write.
    NoSuchBlob,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorCode::Malformed => "malformed frame",
            ErrorCode::UnknownRequest => "unknown request",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::NotLoggedIn => "not logged in",
            ErrorCode::AlreadyLoggedIn => "already logged in",
            ErrorCode::InvalidUsername => "invalid username",
            ErrorCode::UsernameTaken => "username taken",
            ErrorCode::WeakPassword => "weak password",
            ErrorCode::InvalidCredentials => "invalid credentials",
            ErrorCode::InvalidSession => "invalid session",
            ErrorCode::RateLimited => "rate limited",
            ErrorCode::NoSuchRoom => "no such room",
            ErrorCode::NoSuchUser => "no such user",
            ErrorCode::RoomExists => "room exists",
            ErrorCode::InvalidRoomName => "invalid room name",
            ErrorCode::NotMember => "not a member",
            ErrorCode::AlreadyMember => "already a member",
            ErrorCode::NotInvited => "not invited",
            ErrorCode::Banned => "banned",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MessageTooLarge => "message too large",
            ErrorCode::TooSlow => "too slow",
            ErrorCode::ShuttingDown => "shutting down",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal error",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::StaleEpoch => "stale epoch",
            ErrorCode::GroupExists => "group exists",
            ErrorCode::NoGroup => "no group",
            ErrorCode::InvalidHandshake => "invalid handshake message",
            ErrorCode::NoKeyPackages => "no key packages",
            ErrorCode::NoSuchWelcome => "no such welcome",
            ErrorCode::FileTooLarge => "file too large",
            ErrorCode::NoSuchBlob => "no such blob",
        };
        f.write_str(text)
    }
}
