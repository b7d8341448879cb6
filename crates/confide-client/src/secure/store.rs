//! The device's decrypted history: one SQLite file beside the sealed keys.
//!
//! MLS decrypts each message once, so what was decrypted is kept here before the
//! client moves past it: per (room, seq) the decrypted envelope (or why it could not be
//! read), the messages this device sent (MLS cannot decrypt one's own), the position up
//! to which each room's log was processed, and the keys of shared-key rooms. Every
//! record is sealed with the profile's state key (ChaCha20-Poly1305) and names its own
//! room and seq, so rows cannot be swapped; the database itself shows only room ids,
//! sequence numbers and sizes, which the server knows anyway.

use crate::entry::{Protection, Unreadable};
use confide_crypto::at_rest::{self, StateKey};
use confide_crypto::payload::Envelope;
use confide_crypto::shared_key::SharedKey;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

/// Why the local history failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("local history: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A record did not open (altered, or another profile's key).
    #[error("local history: a sealed record does not open")]
    Sealed,
    /// A record does not belong where it was found.
    #[error("local history: a record is out of place")]
    Misplaced,
}

/// What is kept of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stored {
    /// Decrypted.
    Message {
        /// The envelope.
        envelope: Envelope,
        /// How it was protected.
        protection: Protection,
    },
    /// Not readable, and why.
    Unreadable(Unreadable),
}

#[derive(Serialize, Deserialize)]
struct Record {
    room: u64,
    seq: u64,
    stored: Stored,
}

#[derive(Serialize, Deserialize)]
struct Outgoing {
    room: u64,
    envelope: Envelope,
}

/// An upload in progress: enough to resume it after the client was stopped. Holds the
/// file's key, so it is kept sealed like everything else here.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The room the file goes to.
    pub room: u64,
    /// The server's blob.
    pub blob: confide_proto::BlobId,
    /// The file's key.
    pub key: confide_crypto::payload::FileKey,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
}

impl std::fmt::Debug for UploadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadRecord")
            .field("room", &self.room)
            .field("blob", &self.blob)
            .finish_non_exhaustive()
    }
}

/// The open database.
pub struct LocalStore {
    db: Connection,
    key: StateKey,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    room INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    digest BLOB PRIMARY KEY,
    sealed BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    digest BLOB PRIMARY KEY,
    sealed BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
    room INTEGER PRIMARY KEY,
    processed INTEGER NOT NULL DEFAULT 0,
    shared_key BLOB
);
";

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl LocalStore {
    /// Opens (creating) the database at `path`.
    ///
    /// # Errors
    /// If SQLite cannot open or set it up.
    pub fn open(path: &Path, key: StateKey) -> Result<LocalStore, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(LocalStore { db, key })
    }

    fn seal<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        let plain = Zeroizing::new(serde_json::to_vec(value).map_err(|_| StoreError::Sealed)?);
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        Ok(at_rest::seal(&self.key, &plain, nonce))
    }

    fn open_sealed<T: for<'de> Deserialize<'de>>(&self, sealed: &[u8]) -> Result<T, StoreError> {
        let plain = at_rest::open(&self.key, sealed).map_err(|_| StoreError::Sealed)?;
        serde_json::from_slice(&plain).map_err(|_| StoreError::Sealed)
    }

    /// What is kept of message `seq` of `room`.
    ///
    /// # Errors
    /// On SQLite failure or a record that does not open.
    pub fn message(&self, room: u64, seq: u64) -> Result<Option<Stored>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT sealed FROM messages WHERE room = ?1 AND seq = ?2",
                params![to_i64(room), to_i64(seq)],
                |row| row.get(0),
            )
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let record: Record = self.open_sealed(&sealed)?;
        if record.room != room || record.seq != seq {
            return Err(StoreError::Misplaced);
        }
        Ok(Some(record.stored))
    }

    /// Keeps message `seq` of `room` (replacing what was there).
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn put_message(&self, room: u64, seq: u64, stored: Stored) -> Result<(), StoreError> {
        let sealed = self.seal(&Record { room, seq, stored })?;
        self.db.execute(
            "INSERT OR REPLACE INTO messages (room, seq, sealed) VALUES (?1, ?2, ?3)",
            params![to_i64(room), to_i64(seq), sealed],
        )?;
        Ok(())
    }

    /// Keeps the plaintext of a message this device is about to send, under the digest
    /// of its ciphertext.
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn put_outgoing(
        &self,
        digest: &[u8; 32],
        room: u64,
        envelope: &Envelope,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(&Outgoing {
            room,
            envelope: envelope.clone(),
        })?;
        self.db.execute(
            "INSERT OR REPLACE INTO outbox (digest, sealed) VALUES (?1, ?2)",
            params![digest.as_slice(), sealed],
        )?;
        Ok(())
    }

    /// The plaintext this device kept for the ciphertext with `digest` in `room`.
    ///
    /// # Errors
    /// On SQLite failure or a record that does not open.
    pub fn outgoing(&self, digest: &[u8; 32], room: u64) -> Result<Option<Envelope>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT sealed FROM outbox WHERE digest = ?1",
                params![digest.as_slice()],
                |row| row.get(0),
            )
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let outgoing: Outgoing = self.open_sealed(&sealed)?;
        if outgoing.room != room {
            return Err(StoreError::Misplaced);
        }
        Ok(Some(outgoing.envelope))
    }

    /// Forgets a kept outgoing plaintext (it is in `messages` now, or was never sent).
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn remove_outgoing(&self, digest: &[u8; 32]) -> Result<(), StoreError> {
        self.db.execute(
            "DELETE FROM outbox WHERE digest = ?1",
            params![digest.as_slice()],
        )?;
        Ok(())
    }

    /// Forgets the kept plaintexts of `room` sent before `sent_before_ms`: called once
    /// the device has read the room up to its end, when anything of those the server
    /// stored has been read back (and taken out of here), so the rest was never stored.
    /// Returns how many were forgotten. A record that does not open is left alone.
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn purge_outgoing(&self, room: u64, sent_before_ms: u64) -> Result<usize, StoreError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut statement = self.db.prepare("SELECT digest, sealed FROM outbox")?;
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut forgotten = 0;
        for (digest, sealed) in rows {
            let Ok(outgoing) = self.open_sealed::<Outgoing>(&sealed) else {
                continue;
            };
            if outgoing.room == room && outgoing.envelope.sent_at_ms < sent_before_ms {
                forgotten += self
                    .db
                    .execute("DELETE FROM outbox WHERE digest = ?1", params![digest])?;
            }
        }
        Ok(forgotten)
    }

    /// Remembers an upload in progress under `digest` (which names the file and room).
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn put_upload(&self, digest: &[u8; 32], record: &UploadRecord) -> Result<(), StoreError> {
        let sealed = self.seal(record)?;
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (digest, sealed) VALUES (?1, ?2)",
            params![digest.as_slice(), sealed],
        )?;
        Ok(())
    }

    /// The upload in progress under `digest`, if any.
    ///
    /// # Errors
    /// On SQLite failure or a record that does not open.
    pub fn upload(&self, digest: &[u8; 32]) -> Result<Option<UploadRecord>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT sealed FROM uploads WHERE digest = ?1",
                params![digest.as_slice()],
                |row| row.get(0),
            )
            .optional()?;
        sealed.map(|sealed| self.open_sealed(&sealed)).transpose()
    }

    /// Forgets an upload (finished, or abandoned).
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn remove_upload(&self, digest: &[u8; 32]) -> Result<(), StoreError> {
        self.db.execute(
            "DELETE FROM uploads WHERE digest = ?1",
            params![digest.as_slice()],
        )?;
        Ok(())
    }

    /// Every room's processed position.
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn processed(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut statement = self.db.prepare("SELECT room, processed FROM rooms")?;
        let rows = statement.query_map([], |row| {
            let room: i64 = row.get(0)?;
            let seq: i64 = row.get(1)?;
            Ok((
                u64::try_from(room).unwrap_or(0),
                u64::try_from(seq).unwrap_or(0),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Records that `room`'s log was processed up to `seq`.
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn set_processed(&self, room: u64, seq: u64) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO rooms (room, processed) VALUES (?1, ?2)
             ON CONFLICT (room) DO UPDATE SET processed = MAX(processed, excluded.processed)",
            params![to_i64(room), to_i64(seq)],
        )?;
        Ok(())
    }

    /// The key of a shared-key room, if this profile has it.
    ///
    /// # Errors
    /// On SQLite failure or a record that does not open.
    pub fn shared_key(&self, room: u64) -> Result<Option<SharedKey>, StoreError> {
        let sealed: Option<Option<Vec<u8>>> = self
            .db
            .query_row(
                "SELECT shared_key FROM rooms WHERE room = ?1",
                params![to_i64(room)],
                |row| row.get(0),
            )
            .optional()?;
        let Some(Some(sealed)) = sealed else {
            return Ok(None);
        };
        let text: Zeroizing<String> = Zeroizing::new(self.open_sealed(&sealed)?);
        SharedKey::from_key_file(&text)
            .map(Some)
            .map_err(|_| StoreError::Sealed)
    }

    /// Keeps the key of a shared-key room.
    ///
    /// # Errors
    /// On SQLite failure.
    pub fn set_shared_key(&self, room: u64, key: &SharedKey) -> Result<(), StoreError> {
        let text = key.to_key_file();
        let sealed = self.seal(&*text)?;
        self.db.execute(
            "INSERT INTO rooms (room, shared_key) VALUES (?1, ?2)
             ON CONFLICT (room) DO UPDATE SET shared_key = excluded.shared_key",
            params![to_i64(room), sealed],
        )?;
        Ok(())
    }

    /// Runs `f` in one transaction (a batch of processed entries lands together).
    ///
    /// # Errors
    /// What `f` returns, or SQLite failing to begin or commit.
    pub fn batch<T>(
        &mut self,
        f: impl FnOnce(&LocalStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(value) => {
                self.db.execute_batch("COMMIT")?;
                Ok(value)
            }
            Err(err) => {
                let _ = self.db.execute_batch("ROLLBACK");
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confide_crypto::payload::{MessageId, Payload};

    fn envelope(text: &str) -> Envelope {
        Envelope {
            id: MessageId::from_bytes([7; 16]),
            sent_at_ms: 1,
            body: Payload::Text {
                text: text.to_owned(),
            },
        }
    }

    #[test]
    fn records_are_sealed_and_stay_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = LocalStore::open(&path, StateKey::from_bytes([1; 32])).unwrap();
        let stored = Stored::Message {
            envelope: envelope("canary-4f1d"),
            protection: Protection::Mls,
        };
        store.put_message(3, 9, stored.clone()).unwrap();
        assert_eq!(store.message(3, 9).unwrap(), Some(stored));
        assert_eq!(store.message(3, 10).unwrap(), None);
        store.set_processed(3, 9).unwrap();
        store.set_processed(3, 4).unwrap();
        assert_eq!(store.processed().unwrap(), vec![(3, 9)], "never moves back");
        let digest = [5u8; 32];
        store.put_outgoing(&digest, 3, &envelope("mine")).unwrap();
        assert_eq!(store.outgoing(&digest, 3).unwrap(), Some(envelope("mine")));
        assert!(matches!(
            store.outgoing(&digest, 4),
            Err(StoreError::Misplaced)
        ));
        store.remove_outgoing(&digest).unwrap();
        assert_eq!(store.outgoing(&digest, 3).unwrap(), None);
        // Purging forgets only the room's texts sent before the given time.
        let at = |text: &str, sent_at_ms| Envelope {
            sent_at_ms,
            ..envelope(text)
        };
        store.put_outgoing(&[1; 32], 3, &at("old", 100)).unwrap();
        store.put_outgoing(&[2; 32], 3, &at("new", 200)).unwrap();
        store
            .put_outgoing(&[3; 32], 4, &at("elsewhere", 100))
            .unwrap();
        assert_eq!(store.purge_outgoing(3, 150).unwrap(), 1);
        assert_eq!(store.outgoing(&[1; 32], 3).unwrap(), None);
        assert_eq!(store.outgoing(&[2; 32], 3).unwrap(), Some(at("new", 200)));
        assert_eq!(
            store.outgoing(&[3; 32], 4).unwrap(),
            Some(at("elsewhere", 100))
        );
        assert_eq!(store.purge_outgoing(3, 150).unwrap(), 0);
        let key = SharedKey::generate([9; 32]);
        store.set_shared_key(3, &key).unwrap();
        assert_eq!(
            store.shared_key(3).unwrap().map(|k| k.fingerprint()),
            Some(key.fingerprint())
        );
        // A row moved to another place is refused.
        store
            .db
            .execute("UPDATE messages SET seq = 11 WHERE seq = 9", [])
            .unwrap();
        assert!(matches!(store.message(3, 11), Err(StoreError::Misplaced)));
        drop(store);
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"canary-4f1d"));
        let other = LocalStore::open(&path, StateKey::from_bytes([2; 32])).unwrap();
        assert!(matches!(other.message(3, 11), Err(StoreError::Sealed)));
    }
}
