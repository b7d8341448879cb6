//! Persistent state behind one trait: accounts, sessions, rooms, membership, each
//! room's ordered log, and what the server keeps as the MLS delivery service (identity
//! bundles, KeyPackages, each room's group epoch and GroupInfo, pending Welcomes).
//!
//! Two implementations share one test suite: [`SqliteStore`] (the default, a WAL-mode
//! SQLite file with full fsync on commit) and [`MemoryStore`] (for tests and benchmarks).
//! The store never interprets message bodies or MLS bytes. Methods are blocking; async code calls
//! them through `spawn_blocking`, and the log is written only by the persister thread.

use confide_proto::{
    ClaimedKeyPackage, DeviceId, Epoch, IdentityBundle, LogEntry, MessageNonce, PendingWelcome,
    RoomEncryption, RoomId, RoomName, Seq, Timestamp, UserId, UserName, WelcomeId,
};

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
    /// Storing this would exceed a limit (nothing was stored).
    #[error("limit of {0} reached")]
    Limit(usize),
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
    /// How its messages are protected (never changes).
    pub encryption: RoomEncryption,
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
    /// For MLS commits, the group's new state and the Welcomes the commit sends.
    pub group: Option<GroupUpdate>,
}

/// What an MLS commit changes, stored with its log entry.
#[derive(Debug, Clone)]
pub struct GroupUpdate {
    /// The epoch the group moves to.
    pub epoch: Epoch,
    /// The GroupInfo of that epoch.
    pub group_info: Vec<u8>,
    /// The Welcome for the devices the commit adds.
    pub welcome: Option<WelcomeBatch>,
}

/// One Welcome and the devices it waits for, each under its own id.
#[derive(Debug, Clone)]
pub struct WelcomeBatch {
    /// The TLS-encoded MLS Welcome, the same for every recipient.
    pub data: Vec<u8>,
    /// Who receives it.
    pub recipients: Vec<WelcomeFor>,
}

/// One recipient device of a Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WelcomeFor {
    /// The id it is acknowledged with (assigned by the room actor).
    pub id: WelcomeId,
    /// The user.
    pub user: UserId,
    /// Their device.
    pub device: DeviceId,
}

/// One durable change, applied by [`Store::write`] in order.
#[derive(Debug, Clone)]
pub enum Write {
    /// Append an entry to a room's log, with what it changes.
    Append(Append),
    /// Record that a room's MLS group exists at epoch 0.
    InitGroup {
        /// The room.
        room: RoomId,
        /// The GroupInfo at epoch 0.
        group_info: Vec<u8>,
    },
}

/// A room's MLS group as the delivery service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The current epoch.
    pub epoch: Epoch,
    /// The latest GroupInfo.
    pub group_info: Vec<u8>,
    /// The log position of the commit that started the epoch (0 for epoch 0).
    pub seq: Seq,
}

/// How many KeyPackages the server holds for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPackageStock {
    /// One-time packages not yet handed out.
    pub one_time: usize,
    /// Whether a last-resort package is stored.
    pub last_resort: bool,
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
    /// How its messages are protected.
    pub encryption: RoomEncryption,
}

impl NewRoom {
    /// The direct conversation of `a` and `b`.
    #[must_use]
    pub fn direct(a: UserId, b: UserId, encryption: RoomEncryption) -> NewRoom {
        NewRoom {
            name: None,
            kind: StoredKind::Direct,
            owner: None,
            direct: Some((a, b)),
            encryption,
        }
    }
}

/// A remembered message nonce: who sent it with which nonce, and where it was stored.
pub type RecentNonce = ((UserId, MessageNonce), (Seq, Timestamp));

/// Everything about a room that its actor starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    /// The room.
    pub record: RoomRecord,
    /// Its owner's name, if it has an owner.
    pub owner_name: Option<UserName>,
    /// Sequence number and time of its newest entry, if any.
    pub last: Option<(Seq, Timestamp)>,
    /// Its members.
    pub members: Vec<MemberRecord>,
    /// Who is invited.
    pub invited: Vec<UserId>,
    /// Who is banned.
    pub banned: Vec<UserId>,
    /// Its newest message nonces, newest first.
    pub nonces: Vec<RecentNonce>,
    /// Its MLS group, if created.
    pub group: Option<GroupRecord>,
}

/// The reads of a room's state, a part of every [`Store`]: a [`RoomState`] is made of
/// them, and a store may run them on one connection inside one transaction.
pub trait RoomReads {
    /// A room by id.
    fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StoreError>;

    /// Finds an account by id.
    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Up to `limit` entries below `before` (or the newest), returned oldest first.
    fn entries_before(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Members of a room.
    fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StoreError>;

    /// Users invited to a room and not yet joined.
    fn invites(&self, room: RoomId) -> Result<Vec<UserId>, StoreError>;

    /// Users banned from a room.
    fn bans(&self, room: RoomId) -> Result<Vec<UserId>, StoreError>;

    /// The newest message nonces of a room (up to `limit`), newest first, so a restarted
    /// server still recognises a resent message.
    fn recent_nonces(&self, room: RoomId, limit: usize) -> Result<Vec<RecentNonce>, StoreError>;

    /// A room's MLS group, if it was created.
    fn group(&self, room: RoomId) -> Result<Option<GroupRecord>, StoreError>;
}

/// Reads one room's [`RoomState`].
///
/// # Errors
/// If the store cannot be read.
pub fn room_state<R: RoomReads + ?Sized>(
    store: &R,
    id: RoomId,
    nonces: usize,
) -> Result<Option<RoomState>, StoreError> {
    let Some(record) = store.room(id)? else {
        return Ok(None);
    };
    let owner_name = match record.owner {
        Some(owner) => store.user_by_id(owner)?.map(|user| user.name),
        None => None,
    };
    let last = store
        .entries_before(id, None, 1)?
        .first()
        .map(|entry| (entry.seq, entry.timestamp));
    Ok(Some(RoomState {
        owner_name,
        last,
        members: store.members(id)?,
        invited: store.invites(id)?,
        banned: store.bans(id)?,
        nonces: store.recent_nonces(id, nonces)?,
        group: store.group(id)?,
        record,
    }))
}

/// The persistent state of a server.
pub trait Store: RoomReads + Send + Sync + 'static {
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
    /// The direct room of each pair of users, in order, with whether this call created
    /// it (with `encryption` and both users as members, nothing else) or found it. Every
    /// room created is stored by the time this returns; a store that commits durably
    /// commits them all at once.
    ///
    /// # Errors
    /// If the store fails; then none of the rooms it would have created exists.
    fn direct_rooms(
        &self,
        pairs: &[(UserId, UserId)],
        encryption: &RoomEncryption,
        now: Timestamp,
    ) -> Result<Vec<(RoomRecord, bool)>, StoreError> {
        pairs
            .iter()
            .map(|&(a, b)| match self.direct_room(a, b)? {
                Some(record) => Ok((record, false)),
                None => self
                    .create_room(&NewRoom::direct(a, b, encryption.clone()), now)
                    .map(|record| (record, true)),
            })
            .collect()
    }

    /// Rooms a user is a member of, with the sequence number they joined at.
    fn rooms_of(&self, user: UserId) -> Result<Vec<(RoomId, Seq)>, StoreError>;
    /// Rooms a user is invited to.
    fn invites_of(&self, user: UserId) -> Result<Vec<RoomId>, StoreError>;

    /// Applies writes in order (appending entries to their rooms' logs with their
    /// effects, creating groups), all in one durable transaction: when this returns
    /// `Ok`, everything is on disk; on an error, nothing changed.
    fn write(&self, batch: &[Write]) -> Result<(), StoreError>;
    /// Up to `limit` entries of a room with sequence numbers above `after`, oldest first.
    fn entries_after(
        &self,
        room: RoomId,
        after: Seq,
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

    /// The [`RoomState`] of each of `rooms` (`None` for one that does not exist), with
    /// up to `nonces` recent nonces each: what starting their actors needs, read in
    /// one go (the SQLite store reads them in one transaction).
    ///
    /// # Errors
    /// If the store cannot be read.
    fn room_states(
        &self,
        rooms: &[RoomId],
        nonces: usize,
    ) -> Result<Vec<Option<RoomState>>, StoreError> {
        rooms
            .iter()
            .map(|&id| room_state(self, id, nonces))
            .collect()
    }

    /// Stores a user's identity bundle, replacing the previous one.
    fn set_identity(&self, user: UserId, bundle: &IdentityBundle) -> Result<(), StoreError>;
    /// A user's identity bundle, if they published one.
    fn identity(&self, user: UserId) -> Result<Option<IdentityBundle>, StoreError>;

    /// Adds one-time KeyPackages to a device's stock and, if given, replaces its
    /// last-resort package; returns the new stock.
    ///
    /// # Errors
    /// [`StoreError::Limit`] if the device would hold more than `max_one_time` one-time
    /// packages; nothing is stored then.
    fn add_key_packages(
        &self,
        user: UserId,
        device: DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_one_time: usize,
    ) -> Result<KeyPackageStock, StoreError>;
    /// How many KeyPackages a device has.
    fn key_package_stock(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> Result<KeyPackageStock, StoreError>;
    /// Takes one KeyPackage of each device of a user, in one transaction: the oldest
    /// one-time package, which is deleted so it is never handed out again, or else the
    /// last-resort package, which is kept. Devices without any are left out.
    fn claim_key_packages(&self, user: UserId) -> Result<Vec<ClaimedKeyPackage>, StoreError>;

    /// The highest Welcome id ever assigned (0 if none), so new ids continue after it.
    fn last_welcome_id(&self) -> Result<WelcomeId, StoreError>;
    /// Welcomes waiting for a user's device, oldest first.
    fn welcomes(&self, user: UserId, device: DeviceId) -> Result<Vec<PendingWelcome>, StoreError>;
    /// Forgets a Welcome of a user's device; false if there was no such Welcome.
    fn delete_welcome(
        &self,
        user: UserId,
        device: DeviceId,
        id: WelcomeId,
    ) -> Result<bool, StoreError>;

    /// Flushes whatever can be flushed before the process exits.
    fn close(&self) -> Result<(), StoreError>;
}
