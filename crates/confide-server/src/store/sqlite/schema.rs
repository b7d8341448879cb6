//! The database schema and its migrations.
//!
//! The version lives in SQLite's `PRAGMA user_version` (and, for the tools and the
//! first version that only knew it, in `meta`). Opening a database runs every step
//! after its version in one transaction, so a data directory made by any earlier
//! version opens, and a failed migration leaves it as it was. Steps are only ever
//! appended; a database from a newer server is refused rather than guessed at.

use rusqlite::{Connection, OptionalExtension as _, params};

/// The version this server writes.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// Version 1: accounts, sessions, rooms, membership and logs. Kept exactly as the
/// first version created it.
pub(crate) const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    canonical TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rooms (
    id INTEGER PRIMARY KEY,
    name TEXT,
    canonical TEXT UNIQUE,
    kind INTEGER NOT NULL,
    owner INTEGER,
    direct_a INTEGER,
    direct_b INTEGER,
    created_ms INTEGER NOT NULL,
    UNIQUE (direct_a, direct_b)
);
CREATE TABLE IF NOT EXISTS members (
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    joined_seq INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id);
CREATE TABLE IF NOT EXISTS invites (
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bans (
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    room_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL,
    kind BLOB NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces (
    sender INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    room_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    PRIMARY KEY (sender, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_by_room ON nonces (room_id, seq);
";

/// Version 2: the MLS delivery service. Existing rooms become MLS rooms without a
/// group (their old entries stay readable: `log.kind` only gained a variant).
const MIGRATE_V2: &str = "
ALTER TABLE rooms ADD COLUMN encryption INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN key_salt BLOB;
ALTER TABLE log ADD COLUMN device INTEGER;
CREATE TABLE groups (
    room_id INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    group_info BLOB NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE identities (
    user_id INTEGER PRIMARY KEY,
    identity_key BLOB NOT NULL,
    device_list BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    device INTEGER NOT NULL,
    last_resort INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (user_id, device, last_resort, id);
CREATE TABLE welcome_data (
    id INTEGER PRIMARY KEY,
    room_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE welcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data_id INTEGER NOT NULL REFERENCES welcome_data(id),
    user_id INTEGER NOT NULL,
    device INTEGER NOT NULL
);
CREATE INDEX welcomes_by_device ON welcomes (user_id, device, id);
CREATE INDEX welcomes_by_data ON welcomes (data_id);
";

/// The steps after each version, in order: step `i` takes a database from version `i`
/// to `i + 1`.
const STEPS: [&str; 2] = [SCHEMA_V1, MIGRATE_V2];

/// The version of an open database: `user_version`, or for a database made by the
/// first version (which only wrote `meta`), what `meta` says; 0 if it is empty.
fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version != 0 {
        return Ok(version);
    }
    let has_meta: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if !has_meta {
        return Ok(0);
    }
    let recorded: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(recorded.and_then(|value| value.parse().ok()).unwrap_or(0))
}

/// Why a database cannot be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// Made by a newer server.
    #[error("database schema version {0} is newer than this server supports ({SCHEMA_VERSION})")]
    Newer(i64),
}

/// Brings the database up to [`SCHEMA_VERSION`], all steps in one transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let tx = conn.transaction()?;
    let found = current_version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::Newer(found));
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let first = usize::try_from(found).unwrap_or(0);
    for step in STEPS.iter().skip(first) {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_cover_every_version() {
        assert_eq!(STEPS.len(), usize::try_from(SCHEMA_VERSION).unwrap());
    }

    #[test]
    fn a_fresh_database_gets_the_current_version_and_reopens() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
        migrate(&mut conn).unwrap();
        let meta: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(meta, SCHEMA_VERSION.to_string());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrateError::Newer(_))));
    }
}
