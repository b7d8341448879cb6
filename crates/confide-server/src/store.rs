//! Persistent state behind one trait: accounts, sessions, rooms, membership and each
//! room's ordered log.
//!
//! Two implementations share one test suite: [`SqliteStore`] (the default, a WAL-mode
//! SQLite file with full fsync on commit) and [`MemoryStore`] (for tests and benchmarks).
//! The store never interprets message bodies. Methods are blocking; async code calls
//! them through `spawn_blocking`, and the log is written only by the persister thread.

use confide_proto::{LogEntry, MessageNonce, RoomId, RoomName, Seq, Timestamp, UserId, UserName};

mod memory;
mod sqlite;
#[cfg(test)]
mod tests;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique name or pair is already taken.
    #[error("already exists")]
    Conflict,
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its id.
    pub id: UserId,
    /// Its name as registered.
    pub name: UserName,
    /// Argon2id hash in PHC string form.
    pub password_hash: String,
}

/// What kind of room a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredKind {
    /// Anyone may join.
    Public,
    /// Invitation only.
    Private,
    /// Two users' direct conversation.
    Direct,
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Its id.
    pub id: RoomId,
    /// Its name (`None` for direct conversations).
    pub name: Option<RoomName>,
    /// Public, private or direct.
    pub kind: StoredKind,
    /// The owner, if any (the lobby and direct conversations have none).
    pub owner: Option<UserId>,
    /// For direct conversations, the two users, lower id first.
    pub direct: Option<(UserId, UserId)>,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member.
    pub user: UserId,
    /// Their name.
    pub name: UserName,
    /// The sequence number of the entry that made them a member (0 from the start).
    pub joined_seq: Seq,
}

/// A change to membership stored atomically with the log entry that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Make the user a member (clearing any invitation).
    AddMember(UserId),
    /// Remove the user.
    RemoveMember(UserId),
    /// Record an invitation.
    Invite(UserId),
    /// Remove the user and ban them.
    Ban(UserId),
    /// Lift a ban.
    Unban(UserId),
}

/// One entry to append to a room's log.
#[derive(Debug, Clone)]
pub struct Append {
    /// The entry, with its sequence number already assigned.
    pub entry: LogEntry,
    /// For messages, the sender and nonce, so a retry is recognised.
    pub nonce: Option<(UserId, MessageNonce)>,
    /// For membership changes, what to change.
    pub effect: Option<Effect>,
}

/// Where an earlier message with a given nonce was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAck {
    /// Its room.
    pub room: RoomId,
    /// Its sequence number.
    pub seq: Seq,
    /// When it was stored.
    pub timestamp: Timestamp,
}

/// Everything a new room needs.
#[derive(Debug, Clone)]
pub struct NewRoom {
    /// Its name (`None` for direct conversations).
    pub name: Option<RoomName>,
    /// Public, private or direct.
    pub kind: StoredKind,
    /// Its owner.
    pub owner: Option<UserId>,
    /// For direct conversations, the two users; both become members from the start.
    pub direct: Option<(UserId, UserId)>,
}

/// A remembered message nonce: who sent it with which nonce, and where it was stored.
pub type RecentNonce = ((UserId, MessageNonce), (Seq, Timestamp));

/// The persistent state of a server.
pub trait Store: Send + Sync + 'static {
    /// Creates an account.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the name is taken ignoring case and normalization.
    fn create_user(
        &self,
        name: &UserName,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<UserRecord, StoreError>;
    /// Finds an account by name (ignoring case and normalization).
    fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError>;
    /// Finds an account by id.
    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;
    /// Every account, by id.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Records a session by the SHA-256 of its token.
    fn create_session(
        &self,
        token_hash: &[u8; 32],
        user: UserId,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// The user a session belongs to.
    fn session_user(&self, token_hash: &[u8; 32]) -> Result<Option<UserId>, StoreError>;
    /// Ends a session.
    fn delete_session(&self, token_hash: &[u8; 32]) -> Result<(), StoreError>;

    /// Creates a room (for a direct room, with both users as members).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the name, or the direct pair, exists.
    fn create_room(&self, room: &NewRoom, now: Timestamp) -> Result<RoomRecord, StoreError>;
    /// Every room, by id.
    fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError>;
    /// Finds a room by name (ignoring case and normalization).
    fn room_by_name(&self, name: &RoomName) -> Result<Option<RoomRecord>, StoreError>;
    /// The direct room of two users, in either order.
    fn direct_room(&self, a: UserId, b: UserId) -> Result<Option<RoomRecord>, StoreError>;

    /// Members of a room.
    fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StoreError>;
    /// Rooms a user is a member of, with the sequence number they joined at.
    fn rooms_of(&self, user: UserId) -> Result<Vec<(RoomId, Seq)>, StoreError>;
    /// Users invited to a room and not yet joined.
    fn invites(&self, room: RoomId) -> Result<Vec<UserId>, StoreError>;
    /// Rooms a user is invited to.
    fn invites_of(&self, user: UserId) -> Result<Vec<RoomId>, StoreError>;
    /// Users banned from a room.
    fn bans(&self, room: RoomId) -> Result<Vec<UserId>, StoreError>;

    /// Appends entries to their rooms' logs and applies their effects, all in one
    /// durable transaction: when this returns `Ok`, everything is on disk.
    fn append(&self, batch: &[Append]) -> Result<(), StoreError>;
    /// Up to `limit` entries of a room with sequence numbers above `after`, oldest first.
    fn entries_after(
        &self,
        room: RoomId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// Up to `limit` entries below `before` (or the newest), returned oldest first.
    fn entries_before(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// The newest sequence number of a room (0 if empty).
    fn last_seq(&self, room: RoomId) -> Result<Seq, StoreError>;
    /// Where the message a sender sent with this nonce was stored, if it was.
    fn find_nonce(
        &self,
        sender: UserId,
        nonce: &MessageNonce,
    ) -> Result<Option<StoredAck>, StoreError>;

    /// The newest message nonces of a room (up to `limit`), newest first, so a restarted
    /// server still recognises a resent message.
    fn recent_nonces(&self, room: RoomId, limit: usize) -> Result<Vec<RecentNonce>, StoreError>;

    /// Flushes whatever can be flushed before the process exits.
    fn close(&self) -> Result<(), StoreError>;
}
