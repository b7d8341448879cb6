//! The default store: one SQLite file in WAL mode.
//!
//! Writes go through one connection and commit with `synchronous = FULL`, so an
//! acknowledged append survives a crash or power loss; reads use a second connection
//! so that they never wait behind a commit's fsync. A third connection, on a thread of
//! its own, copies the write-ahead log back into the database (a passive checkpoint,
//! which never blocks the writer), so commits do not pay for that copy and its fsync;
//! the writer checkpoints itself only if the log grows very large.

use super::{
    Append, Effect, GroupRecord, KeyPackageStock, MemberRecord, NewRoom, RecentNonce, RoomReads,
    RoomRecord, RoomState, Store, StoreError, StoredAck, StoredKind, UserRecord, Write, room_state,
};
use confide_proto::{
    ClaimedKeyPackage, DeviceId, EntryKind, IdentityBundle, LogEntry, MessageNonce, PendingWelcome,
    RoomEncryption, RoomId, RoomName, Seq, Timestamp, UserId, UserName, WelcomeId,
};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

mod e2e;
mod schema;

#[cfg(test)]
pub(super) use schema::SCHEMA_V1;

/// A store in one SQLite file.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// Dropping it stops the checkpoint thread.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 64;

/// How often the checkpoint thread copies the log into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Log pages after which the writer checkpoints by itself (about 40 MiB): a backstop in
/// case the checkpoint thread cannot keep up.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Starts the thread that checkpoints the log of the database at `path`.
fn start_checkpoints(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = Connection::open(path).map_err(db)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(db)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("confide-checkpoint".to_owned())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(cause = %err, "checkpoint failed");
                }
            }
        })
        .map_err(|err| {
            StoreError::Database(format!("cannot start the checkpoint thread: {err}"))
        })?;
    Ok(stop)
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn db(err: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(code, _) = &err
        && code.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Conflict;
    }
    StoreError::Database(err.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a SQLite connection in a state that
    // is unsafe to reuse (transactions roll back on drop), so poisoning is ignored.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn id_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn id_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Device ids are random 64-bit numbers; SQLite integers are signed, so store the
/// same bits.
fn device_i64(device: DeviceId) -> i64 {
    i64::from_be_bytes(device.0.to_be_bytes())
}

fn device_u64(value: i64) -> DeviceId {
    DeviceId(u64::from_be_bytes(value.to_be_bytes()))
}

/// How `rooms.encryption` and `rooms.key_salt` encode a room's encryption.
fn encryption_columns(encryption: &RoomEncryption) -> (i64, Option<Vec<u8>>) {
    match encryption {
        RoomEncryption::Mls => (0, None),
        RoomEncryption::SharedKey { salt } => (1, salt.map(|salt| salt.to_vec())),
    }
}

fn to_encryption(code: i64, salt: Option<Vec<u8>>) -> Result<RoomEncryption, StoreError> {
    match code {
        0 => Ok(RoomEncryption::Mls),
        1 => {
            let salt = salt
                .map(<[u8; 16]>::try_from)
                .transpose()
                .map_err(|_| StoreError::Corrupt("key salt is not 16 bytes".to_owned()))?;
            Ok(RoomEncryption::SharedKey { salt })
        }
        other => Err(StoreError::Corrupt(format!("room encryption {other}"))),
    }
}

fn kind_code(kind: StoredKind) -> i64 {
    match kind {
        StoredKind::Public => 0,
        StoredKind::Private => 1,
        StoredKind::Direct => 2,
    }
}

fn parse_user_name(raw: String) -> Result<UserName, StoreError> {
    UserName::parse(&raw).map_err(|err| StoreError::Corrupt(format!("user name: {err}")))
}

fn row_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn to_user((id, name, hash): (i64, String, String)) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId(id_u64(id)),
        name: parse_user_name(name)?,
        password_hash: hash,
    })
}

type RoomRow = (
    i64,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    (i64, Option<Vec<u8>>),
);

fn row_room(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        (row.get(6)?, row.get(7)?),
    ))
}

fn to_room(
    (id, name, kind, owner, a, b, (encryption, salt)): RoomRow,
) -> Result<RoomRecord, StoreError> {
    let name = name
        .map(|raw| RoomName::parse(&raw))
        .transpose()
        .map_err(|err| StoreError::Corrupt(format!("room name: {err}")))?;
    let kind = match kind {
        0 => StoredKind::Public,
        1 => StoredKind::Private,
        2 => StoredKind::Direct,
        other => return Err(StoreError::Corrupt(format!("room kind {other}"))),
    };
    Ok(RoomRecord {
        id: RoomId(id_u64(id)),
        name,
        kind,
        owner: owner.map(|id| UserId(id_u64(id))),
        direct: a
            .zip(b)
            .map(|(a, b)| (UserId(id_u64(a)), UserId(id_u64(b)))),
        encryption: to_encryption(encryption, salt)?,
    })
}

type EntryRow = (i64, i64, i64, String, Option<i64>, Vec<u8>);

fn row_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn to_entry((room, seq, ts, sender, device, kind): EntryRow) -> Result<LogEntry, StoreError> {
    let kind: EntryKind = postcard::from_bytes(&kind)
        .map_err(|err| StoreError::Corrupt(format!("log entry kind: {err}")))?;
    Ok(LogEntry {
        room: RoomId(id_u64(room)),
        seq: Seq(id_u64(seq)),
        timestamp: Timestamp(ts),
        sender: parse_user_name(sender)?,
        device: device.map(device_u64),
        kind,
    })
}

const ROOM_COLUMNS: &str = "id, name, kind, owner, direct_a, direct_b, encryption, key_salt";

const ENTRY_COLUMNS: &str = "room_id, seq, ts_ms, sender, device, kind";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// [`StoreError::Database`] if the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut writer = Connection::open(path).map_err(db)?;
        // The writer's page cache is 32 MiB, not SQLite's 2 MiB: message nonces are
        // random keys, so their index pages are touched all over, and a small cache
        // reads them back from the log file on every batch (9% more deliveries per
        // second with many rooms writing at once; see BENCHMARKS.md).
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA cache_size = -32768;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;
                 PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
            ))
            .map_err(db)?;
        schema::migrate(&mut writer).map_err(|err| match err {
            schema::MigrateError::Sqlite(err) => db(err),
            newer @ schema::MigrateError::Newer(_) => StoreError::Database(newer.to_string()),
        })?;
        let reader = Connection::open(path).map_err(db)?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(db)?;
        for conn in [&writer, &reader] {
            // Plans that do not depend on bound values. Without this SQLite looks at the
            // value bound to `LIMIT ?` when planning, and so prepares such a statement
            // again every time it is bound to a new value: every history page and every
            // room's start-up re-parsed its query.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
                .map_err(db)?;
            // Every statement a connection runs often stays prepared; rusqlite's
            // default keeps 16, fewer than the reader runs.
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        }
        let checkpoints = start_checkpoints(path)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            _checkpoints: checkpoints,
        })
    }
}

const DELETE_MEMBER: &str = "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2";
const DELETE_INVITE: &str = "DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2";
const INSERT_INVITE: &str = "INSERT OR IGNORE INTO invites (room_id, user_id) VALUES (?1, ?2)";
const INSERT_BAN: &str = "INSERT OR IGNORE INTO bans (room_id, user_id) VALUES (?1, ?2)";
const DELETE_BAN: &str = "DELETE FROM bans WHERE room_id = ?1 AND user_id = ?2";

fn apply_effect(
    tx: &rusqlite::Transaction<'_>,
    room: i64,
    seq: i64,
    effect: Effect,
) -> rusqlite::Result<()> {
    let for_user = |statements: &[&str], user: confide_proto::UserId| {
        for sql in statements {
            tx.execute(sql, params![room, id_i64(user.0)])?;
        }
        Ok(())
    };
    match effect {
        Effect::AddMember(user) => {
            tx.execute(
                "INSERT OR IGNORE INTO members (room_id, user_id, joined_seq) VALUES (?1, ?2, ?3)",
                params![room, id_i64(user.0), seq],
            )?;
            for_user(&[DELETE_INVITE], user)
        }
        Effect::RemoveMember(user) => for_user(&[DELETE_MEMBER], user),
        Effect::Invite(user) => for_user(&[INSERT_INVITE], user),
        Effect::Ban(user) => for_user(&[DELETE_MEMBER, DELETE_INVITE, INSERT_BAN], user),
        Effect::Unban(user) => for_user(&[DELETE_BAN], user),
    }
}

impl RoomReads for SqliteStore {
    fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StoreError> {
        Reader(&lock(&self.reader)).room(id)
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        Reader(&lock(&self.reader)).user_by_id(id)
    }

    fn entries_before(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        Reader(&lock(&self.reader)).entries_before(room, before, limit)
    }

    fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StoreError> {
        Reader(&lock(&self.reader)).members(room)
    }

    fn invites(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        Reader(&lock(&self.reader)).invites(room)
    }

    fn bans(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        Reader(&lock(&self.reader)).bans(room)
    }

    fn recent_nonces(&self, room: RoomId, limit: usize) -> Result<Vec<RecentNonce>, StoreError> {
        Reader(&lock(&self.reader)).recent_nonces(room, limit)
    }

    fn group(&self, room: RoomId) -> Result<Option<GroupRecord>, StoreError> {
        Reader(&lock(&self.reader)).group(room)
    }
}

impl Store for SqliteStore {
    fn create_user(
        &self,
        name: &UserName,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<UserRecord, StoreError> {
        let conn = lock(&self.writer);
        conn.execute(
            "INSERT INTO users (name, canonical, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name.as_str(), name.canonical(), password_hash, now.0],
        )
        .map_err(db)?;
        Ok(UserRecord {
            id: UserId(id_u64(conn.last_insert_rowid())),
            name: name.clone(),
            password_hash: password_hash.to_owned(),
        })
    }

    fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        let conn = lock(&self.reader);
        conn.prepare_cached("SELECT id, name, password_hash FROM users WHERE canonical = ?1")
            .and_then(|mut statement| statement.query_row(params![name.canonical()], row_user))
            .optional()
            .map_err(db)?
            .map(to_user)
            .transpose()
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare("SELECT id, name, password_hash FROM users ORDER BY id")
            .map_err(db)?;
        let rows = statement.query_map([], row_user).map_err(db)?;
        rows.map(|row| row.map_err(db).and_then(to_user)).collect()
    }

    fn create_session(
        &self,
        token_hash: &[u8; 32],
        user: UserId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let conn = lock(&self.writer);
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created_ms) VALUES (?1, ?2, ?3)",
            params![&token_hash[..], id_i64(user.0), now.0],
        )
        .map_err(db)?;
        Ok(())
    }

    fn session_user(&self, token_hash: &[u8; 32]) -> Result<Option<UserId>, StoreError> {
        let conn = lock(&self.reader);
        let user: Option<i64> = conn
            .query_row(
                "SELECT user_id FROM sessions WHERE token_hash = ?1",
                params![&token_hash[..]],
                |row| row.get(0),
            )
            .optional()
            .map_err(db)?;
        Ok(user.map(|id| UserId(id_u64(id))))
    }

    fn delete_session(&self, token_hash: &[u8; 32]) -> Result<(), StoreError> {
        let conn = lock(&self.writer);
        conn.execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            params![&token_hash[..]],
        )
        .map_err(db)?;
        Ok(())
    }

    fn create_room(&self, room: &NewRoom, now: Timestamp) -> Result<RoomRecord, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(db)?;
        let record = insert_room(&tx, room, now)?;
        tx.commit().map_err(db)?;
        Ok(record)
    }

    fn direct_rooms(
        &self,
        pairs: &[(UserId, UserId)],
        encryption: &RoomEncryption,
        now: Timestamp,
    ) -> Result<Vec<(RoomRecord, bool)>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(db)?;
        let mut records = Vec::with_capacity(pairs.len());
        for &(a, b) in pairs {
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            let found = tx
                .prepare_cached(&format!(
                    "SELECT {ROOM_COLUMNS} FROM rooms WHERE direct_a = ?1 AND direct_b = ?2"
                ))
                .and_then(|mut select| {
                    select
                        .query_row(params![id_i64(a.0), id_i64(b.0)], row_room)
                        .optional()
                })
                .map_err(db)?;
            records.push(match found {
                Some(row) => (to_room(row)?, false),
                None => (
                    insert_room(&tx, &NewRoom::direct(a, b, encryption.clone()), now)?,
                    true,
                ),
            });
        }
        // One commit (one fsync) for every room of the batch.
        tx.commit().map_err(db)?;
        Ok(records)
    }

    fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare(&format!("SELECT {ROOM_COLUMNS} FROM rooms ORDER BY id"))
            .map_err(db)?;
        let rows = statement.query_map([], row_room).map_err(db)?;
        rows.map(|row| row.map_err(db).and_then(to_room)).collect()
    }

    fn room_by_name(&self, name: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        let conn = lock(&self.reader);
        conn.prepare_cached(&format!(
            "SELECT {ROOM_COLUMNS} FROM rooms WHERE canonical = ?1"
        ))
        .and_then(|mut statement| statement.query_row(params![name.canonical()], row_room))
        .optional()
        .map_err(db)?
        .map(to_room)
        .transpose()
    }

    fn direct_room(&self, a: UserId, b: UserId) -> Result<Option<RoomRecord>, StoreError> {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        let conn = lock(&self.reader);
        conn.prepare_cached(&format!(
            "SELECT {ROOM_COLUMNS} FROM rooms WHERE direct_a = ?1 AND direct_b = ?2"
        ))
        .and_then(|mut statement| statement.query_row(params![id_i64(a.0), id_i64(b.0)], row_room))
        .optional()
        .map_err(db)?
        .map(to_room)
        .transpose()
    }

    fn rooms_of(&self, user: UserId) -> Result<Vec<(RoomId, Seq)>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(
                "SELECT room_id, joined_seq FROM members WHERE user_id = ?1 ORDER BY room_id",
            )
            .map_err(db)?;
        let rows = statement
            .query_map(params![id_i64(user.0)], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (room, seq) = row.map_err(db)?;
            Ok((RoomId(id_u64(room)), Seq(id_u64(seq))))
        })
        .collect()
    }

    fn invites_of(&self, user: UserId) -> Result<Vec<RoomId>, StoreError> {
        self.ids(
            "SELECT room_id FROM invites WHERE user_id = ?1 ORDER BY room_id",
            user.0,
        )
        .map(|ids| ids.into_iter().map(RoomId).collect())
    }

    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(db)?;
        for write in batch {
            match write {
                Write::Append(append) => insert_append(&tx, append)?,
                Write::InitGroup { room, group_info } => {
                    e2e::init_group(&tx, *room, group_info).map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)
    }

    fn entries_after(
        &self,
        room: RoomId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM log
                     WHERE room_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))
            .map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![id_i64(room.0), id_i64(after.0), limit], row_entry)
            .map_err(db)?;
        rows.map(|row| row.map_err(db).and_then(to_entry)).collect()
    }

    fn last_seq(&self, room: RoomId) -> Result<Seq, StoreError> {
        let conn = lock(&self.reader);
        let seq: Option<i64> = conn
            .query_row(
                "SELECT MAX(seq) FROM log WHERE room_id = ?1",
                params![id_i64(room.0)],
                |row| row.get(0),
            )
            .map_err(db)?;
        Ok(Seq(seq.map_or(0, id_u64)))
    }

    fn find_nonce(
        &self,
        sender: UserId,
        nonce: &MessageNonce,
    ) -> Result<Option<StoredAck>, StoreError> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT room_id, seq, ts_ms FROM nonces WHERE sender = ?1 AND nonce = ?2",
            params![id_i64(sender.0), &nonce.0[..]],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()
        .map_err(db)
        .map(|found| {
            found.map(|(room, seq, ts)| StoredAck {
                room: RoomId(id_u64(room)),
                seq: Seq(id_u64(seq)),
                timestamp: Timestamp(ts),
            })
        })
    }

    fn room_states(
        &self,
        rooms: &[RoomId],
        nonces: usize,
    ) -> Result<Vec<Option<RoomState>>, StoreError> {
        let conn = lock(&self.reader);
        // One read transaction for all: one snapshot, and one read lock of the log
        // instead of one per statement.
        conn.execute_batch("BEGIN").map_err(db)?;
        let reader = Reader(&conn);
        let states = rooms
            .iter()
            .map(|&id| room_state(&reader, id, nonces))
            .collect();
        // Ending a transaction that wrote nothing cannot lose anything.
        if let Err(err) = conn.execute_batch("COMMIT") {
            tracing::warn!(cause = %err, "ending a read transaction failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        states
    }

    fn set_identity(&self, user: UserId, bundle: &IdentityBundle) -> Result<(), StoreError> {
        e2e::set_identity(&lock(&self.writer), user, bundle).map_err(db)
    }

    fn identity(&self, user: UserId) -> Result<Option<IdentityBundle>, StoreError> {
        e2e::identity(&lock(&self.reader), user).map_err(db)
    }

    fn add_key_packages(
        &self,
        user: UserId,
        device: DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_one_time: usize,
    ) -> Result<KeyPackageStock, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(db)?;
        let stock = e2e::add_key_packages(&tx, user, device, one_time, last_resort, max_one_time)?;
        tx.commit().map_err(db)?;
        Ok(stock)
    }

    fn key_package_stock(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> Result<KeyPackageStock, StoreError> {
        e2e::key_package_stock(&lock(&self.reader), user, device).map_err(db)
    }

    fn claim_key_packages(&self, user: UserId) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(db)?;
        let claimed = e2e::claim_key_packages(&tx, user).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(claimed)
    }

    fn last_welcome_id(&self) -> Result<WelcomeId, StoreError> {
        e2e::last_welcome_id(&lock(&self.reader)).map_err(db)
    }

    fn welcomes(&self, user: UserId, device: DeviceId) -> Result<Vec<PendingWelcome>, StoreError> {
        e2e::welcomes(&lock(&self.reader), user, device)
    }

    fn delete_welcome(
        &self,
        user: UserId,
        device: DeviceId,
        id: WelcomeId,
    ) -> Result<bool, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(db)?;
        let deleted = e2e::delete_welcome(&tx, user, device, id).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(deleted)
    }

    fn close(&self) -> Result<(), StoreError> {
        let conn = lock(&self.writer);
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db)
    }
}

/// Inserts a room (for a direct room, with both users as members) in `tx`.
fn insert_room(
    tx: &rusqlite::Transaction<'_>,
    room: &NewRoom,
    now: Timestamp,
) -> Result<RoomRecord, StoreError> {
    let direct = room
        .direct
        .map(|(a, b)| if a <= b { (a, b) } else { (b, a) });
    let (encryption, salt) = encryption_columns(&room.encryption);
    tx.prepare_cached(
        "INSERT INTO rooms (name, canonical, kind, owner, direct_a, direct_b, created_ms,
                            encryption, key_salt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            room.name.as_ref().map(RoomName::as_str),
            room.name.as_ref().map(RoomName::canonical),
            kind_code(room.kind),
            room.owner.map(|id| id_i64(id.0)),
            direct.map(|(a, _)| id_i64(a.0)),
            direct.map(|(_, b)| id_i64(b.0)),
            now.0,
            encryption,
            salt
        ])
    })
    .map_err(db)?;
    let id = tx.last_insert_rowid();
    if let Some((a, b)) = direct {
        for user in [a, b] {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO members (room_id, user_id, joined_seq) VALUES (?1, ?2, 0)",
            )
            .and_then(|mut insert| insert.execute(params![id, id_i64(user.0)]))
            .map_err(db)?;
        }
    }
    Ok(RoomRecord {
        id: RoomId(id_u64(id)),
        name: room.name.clone(),
        kind: room.kind,
        owner: room.owner,
        direct,
        encryption: room.encryption.clone(),
    })
}

/// Inserts one log entry with its nonce, membership effect and group update.
fn insert_append(tx: &rusqlite::Transaction<'_>, append: &Append) -> Result<(), StoreError> {
    let entry = &append.entry;
    let room = id_i64(entry.room.0);
    let seq = id_i64(entry.seq.0);
    let kind =
        postcard::to_allocvec(&entry.kind).map_err(|err| StoreError::Database(err.to_string()))?;
    tx.prepare_cached(
        "INSERT INTO log (room_id, seq, ts_ms, sender, device, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            room,
            seq,
            entry.timestamp.0,
            entry.sender.as_str(),
            entry.device.map(device_i64),
            kind
        ])
    })
    .map_err(db)?;
    if let Some((sender, nonce)) = &append.nonce {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO nonces (sender, nonce, room_id, seq, ts_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                id_i64(sender.0),
                &nonce.0[..],
                room,
                seq,
                entry.timestamp.0
            ])
        })
        .map_err(db)?;
    }
    if let Some(effect) = append.effect {
        apply_effect(tx, room, seq, effect).map_err(db)?;
    }
    if let Some(update) = &append.group {
        e2e::apply_group_update(tx, entry, update).map_err(db)?;
    }
    Ok(())
}

impl SqliteStore {
    fn ids(&self, sql: &str, key: u64) -> Result<Vec<u64>, StoreError> {
        ids_on(&lock(&self.reader), sql, key)
    }
}

/// Reads on a connection its caller holds (see [`RoomReads`]).
struct Reader<'a>(&'a Connection);

impl RoomReads for Reader<'_> {
    fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StoreError> {
        let conn = self.0;
        let mut statement = conn
            .prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = ?1"))
            .map_err(db)?;
        statement
            .query_row(params![id_i64(id.0)], row_room)
            .optional()
            .map_err(db)?
            .map(to_room)
            .transpose()
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let conn = self.0;
        conn.prepare_cached("SELECT id, name, password_hash FROM users WHERE id = ?1")
            .and_then(|mut statement| statement.query_row(params![id_i64(id.0)], row_user))
            .optional()
            .map_err(db)?
            .map(to_user)
            .transpose()
    }

    fn entries_before(
        &self,
        room: RoomId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let conn = self.0;
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM log
                     WHERE room_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))
            .map_err(db)?;
        let before = before.map_or(i64::MAX, |seq| id_i64(seq.0));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![id_i64(room.0), before, limit], row_entry)
            .map_err(db)?;
        let mut entries = rows
            .map(|row| row.map_err(db).and_then(to_entry))
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }

    fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StoreError> {
        let conn = self.0;
        let mut statement = conn
            .prepare_cached(
                "SELECT m.user_id, u.name, m.joined_seq FROM members m
                 JOIN users u ON u.id = m.user_id WHERE m.room_id = ?1 ORDER BY m.user_id",
            )
            .map_err(db)?;
        let rows = statement
            .query_map(params![id_i64(room.0)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (user, name, joined) = row.map_err(db)?;
            Ok(MemberRecord {
                user: UserId(id_u64(user)),
                name: parse_user_name(name)?,
                joined_seq: Seq(id_u64(joined)),
            })
        })
        .collect()
    }

    fn invites(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        ids_on(
            self.0,
            "SELECT user_id FROM invites WHERE room_id = ?1 ORDER BY user_id",
            room.0,
        )
        .map(|ids| ids.into_iter().map(UserId).collect())
    }

    fn bans(&self, room: RoomId) -> Result<Vec<UserId>, StoreError> {
        ids_on(
            self.0,
            "SELECT user_id FROM bans WHERE room_id = ?1 ORDER BY user_id",
            room.0,
        )
        .map(|ids| ids.into_iter().map(UserId).collect())
    }

    fn recent_nonces(&self, room: RoomId, limit: usize) -> Result<Vec<RecentNonce>, StoreError> {
        let conn = self.0;
        let mut statement = conn
            .prepare_cached(
                "SELECT sender, nonce, seq, ts_ms FROM nonces WHERE room_id = ?1
                 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(db)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![id_i64(room.0), limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (sender, nonce, seq, ts) = row.map_err(db)?;
            let nonce: [u8; 16] = nonce
                .try_into()
                .map_err(|_| StoreError::Corrupt("nonce is not 16 bytes".to_owned()))?;
            Ok((
                (UserId(id_u64(sender)), MessageNonce(nonce)),
                (Seq(id_u64(seq)), Timestamp(ts)),
            ))
        })
        .collect()
    }

    fn group(&self, room: RoomId) -> Result<Option<GroupRecord>, StoreError> {
        e2e::group(self.0, room)
    }
}

/// The ids a query for one key returns, on `conn`.
fn ids_on(conn: &Connection, sql: &str, key: u64) -> Result<Vec<u64>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(db)?;
    let rows = statement
        .query_map(params![id_i64(key)], |row| row.get::<_, i64>(0))
        .map_err(db)?;
    rows.map(|row| row.map(id_u64).map_err(db)).collect()
}
