//! `cursors.json`: per account, the last sequence number processed in each room.
//!
//! The next run syncs from these positions, so nothing is missed and nothing is shown
//! twice across runs. Accounts are keyed by canonical username and server address.
//! This module must not decide when positions advance; the event stream does.

use super::{Profile, ProfileError, read_json, write_json};
use crate::address::ServerAddress;
use confide_proto::{RoomId, Seq, UserName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize, Deserialize)]
struct CursorsFile {
    /// `username@server` → room id → last processed sequence number.
    accounts: BTreeMap<String, BTreeMap<u64, u64>>,
}

fn account_key(server: &ServerAddress, username: &UserName) -> String {
    format!("{}@{server}", username.canonical())
}

impl Profile {
    /// The saved positions of `username` on `server` (empty if none).
    ///
    /// # Errors
    /// A [`ProfileError`] if `cursors.json` is unreadable or corrupt.
    pub fn load_cursors(
        &self,
        server: &ServerAddress,
        username: &UserName,
    ) -> Result<BTreeMap<RoomId, Seq>, ProfileError> {
        let file = read_json::<CursorsFile>(&self.cursors_path())?.unwrap_or_default();
        Ok(file
            .accounts
            .get(&account_key(server, username))
            .map(|rooms| {
                rooms
                    .iter()
                    .map(|(room, seq)| (RoomId(*room), Seq(*seq)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Replaces the saved positions of `username` on `server`; an empty map removes
    /// the account's entry. Other accounts' positions are kept.
    ///
    /// # Errors
    /// A [`ProfileError`] if the file is corrupt or cannot be written.
    pub fn save_cursors(
        &self,
        server: &ServerAddress,
        username: &UserName,
        positions: &BTreeMap<RoomId, Seq>,
    ) -> Result<(), ProfileError> {
        let path = self.cursors_path();
        let mut file = read_json::<CursorsFile>(&path)?.unwrap_or_default();
        let key = account_key(server, username);
        if positions.is_empty() {
            if file.accounts.remove(&key).is_none() {
                return Ok(());
            }
        } else {
            file.accounts.insert(
                key,
                positions
                    .iter()
                    .map(|(room, seq)| (room.0, seq.0))
                    .collect(),
            );
        }
        write_json(&path, &file, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_kept_per_account() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::open(temp.path()).unwrap();
        let server: ServerAddress = "127.0.0.1:5555".parse().unwrap();
        let other: ServerAddress = "127.0.0.1:6666".parse().unwrap();
        let alice = UserName::parse("Alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        assert!(profile.load_cursors(&server, &alice).unwrap().is_empty());

        let alice_positions = BTreeMap::from([(RoomId(1), Seq(10)), (RoomId(7), Seq(3))]);
        profile
            .save_cursors(&server, &alice, &alice_positions)
            .unwrap();
        profile
            .save_cursors(&server, &bob, &BTreeMap::from([(RoomId(1), Seq(2))]))
            .unwrap();
        let alice_lower = UserName::parse("alice").unwrap();
        assert_eq!(
            profile.load_cursors(&server, &alice_lower).unwrap(),
            alice_positions
        );
        assert!(profile.load_cursors(&other, &alice).unwrap().is_empty());
        assert_eq!(
            profile.load_cursors(&server, &bob).unwrap(),
            BTreeMap::from([(RoomId(1), Seq(2))])
        );

        profile
            .save_cursors(&server, &alice, &BTreeMap::new())
            .unwrap();
        assert!(profile.load_cursors(&server, &alice).unwrap().is_empty());
        assert_eq!(profile.load_cursors(&server, &bob).unwrap().len(), 1);
    }

    #[test]
    fn corrupt_cursors_file_is_named() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::open(temp.path()).unwrap();
        let server: ServerAddress = "127.0.0.1:5555".parse().unwrap();
        let alice = UserName::parse("alice").unwrap();
        std::fs::write(profile.cursors_path(), r#"{"accounts":{"a":{"x":1}}}"#).unwrap();
        let err = profile.load_cursors(&server, &alice).unwrap_err();
        assert!(matches!(err, ProfileError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("cursors.json"));
        // Saving refuses to overwrite a corrupt file (it would lose other accounts).
        assert!(
            profile
                .save_cursors(&server, &alice, &BTreeMap::from([(RoomId(1), Seq(1))]))
                .is_err()
        );
    }
}
