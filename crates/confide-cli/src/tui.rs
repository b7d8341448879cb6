//! The interactive terminal UI behind `confide chat`, in pure parts.
//!
//! [`state::AppState`] holds what the screen shows (over the client core's view
//! models) and changes through one method per kind of input, returning the requests
//! to make; [`view::draw`] renders it; [`input`] maps keys to actions and edits the
//! input line; [`command`] parses slash commands; [`terminal`] sets up and restores
//! the real terminal. The event loop that connects these to the network and the
//! terminal is `commands::chat`. Nothing here touches the network, and nothing but
//! [`terminal`] touches the terminal, so everything else is tested with ratatui's
//! `TestBackend`.

pub mod command;
pub mod input;
pub mod state;
pub mod terminal;
pub mod view;

use std::fs::{File, OpenOptions};
use std::path::Path;

/// The chat's log file in the profile directory; the screen belongs to the UI, so log
/// lines cannot go to standard error.
pub const LOG_FILE: &str = "chat.log";

/// Above this size the log file is started afresh (the old one kept as `.old`).
const MAX_LOG_BYTES: u64 = 1 << 20;

/// Opens the chat's log file in `profile_dir` for appending, or `None` if the
/// directory does not exist yet or the file cannot be opened (logging is then off).
#[must_use]
pub fn log_file(profile_dir: &Path) -> Option<File> {
    if !profile_dir.is_dir() {
        return None;
    }
    let path = profile_dir.join(LOG_FILE);
    if std::fs::metadata(&path).is_ok_and(|meta| meta.len() > MAX_LOG_BYTES) {
        let _ = std::fs::rename(&path, profile_dir.join(format!("{LOG_FILE}.old")));
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).ok()
}

#[cfg(test)]
pub(crate) mod fixtures {
    pub use crate::output::fixtures::*;
    use crate::tui::state::AppState;
    use chrono::NaiveDateTime;
    use confide_client::{ClientEvent, Entry};
    use confide_proto::{Membership, RoomId, RoomInfo, RoomKind, RoomName, Timestamp};

    pub fn utc_time(timestamp: Timestamp) -> NaiveDateTime {
        crate::output::utc(timestamp).naive_utc()
    }

    /// Alice on 127.0.0.1:5555 in a 100x20 terminal, times in UTC, no rooms.
    pub fn state() -> AppState {
        let mut state = AppState::new(user("alice"), "127.0.0.1:5555".to_owned(), utc_time);
        state.on_resize(100, 20);
        state
    }

    pub fn named(id: u64, name: &str, kind: RoomKind, membership: Membership) -> RoomInfo {
        RoomInfo {
            id: RoomId(id),
            name: Some(RoomName::parse(name).unwrap()),
            kind,
            owner: Some(user("alice")),
            membership,
            last_seq: confide_proto::Seq(0),
            member_count: 2,
            encryption: confide_proto::RoomEncryption::Mls,
            epoch: None,
        }
    }

    /// `#dev` (4), joined.
    pub fn dev() -> RoomInfo {
        named(4, "dev", RoomKind::Public, Membership::Joined)
    }

    /// `#secret` (5), an invitation.
    pub fn secret() -> RoomInfo {
        named(5, "secret", RoomKind::Private, Membership::Invited)
    }

    pub fn live(entry: Entry) -> ClientEvent {
        ClientEvent::Entry { entry, live: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_only_in_an_existing_profile() {
        let temp = tempfile::tempdir().unwrap();
        assert!(log_file(&temp.path().join("missing")).is_none());
        assert!(log_file(temp.path()).is_some());
        assert!(temp.path().join(LOG_FILE).exists());
        std::fs::write(
            temp.path().join(LOG_FILE),
            vec![b'x'; usize::try_from(MAX_LOG_BYTES).unwrap() + 1],
        )
        .unwrap();
        assert!(log_file(temp.path()).is_some());
        assert!(temp.path().join("chat.log.old").exists());
        assert_eq!(
            std::fs::metadata(temp.path().join(LOG_FILE)).unwrap().len(),
            0
        );
    }
}
