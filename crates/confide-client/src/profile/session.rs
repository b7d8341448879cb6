//! `session.json`: the account the profile is logged in as and its session token.
//!
//! The token is a bearer secret: the file is created with mode 0600, the token is never
//! logged, and in memory it lives in a zeroizing type. This module must not log in or
//! out; it only remembers the result.

use super::{Profile, ProfileError, corrupt, read_json, write_json};
use crate::address::ServerAddress;
use confide_proto::{SessionToken, UserId, UserName};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// A logged-in session, as stored in `session.json`.
///
/// `Debug` does not show the token (it is a [`SessionToken`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The server the session belongs to.
    pub server: ServerAddress,
    /// The account's name as registered.
    pub username: UserName,
    /// The account's id.
    pub user_id: UserId,
    /// The bearer token for `Resume`.
    pub token: SessionToken,
}

/// The on-disk form; the token as lowercase hex.
#[derive(Serialize, Deserialize)]
struct SessionFile {
    server: String,
    username: String,
    user_id: u64,
    token: String,
}

impl Drop for SessionFile {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

impl Profile {
    /// The stored session, if any.
    ///
    /// # Errors
    /// A [`ProfileError`] if `session.json` is unreadable or corrupt.
    pub fn session(&self) -> Result<Option<Session>, ProfileError> {
        let path = self.session_path();
        let Some(file) = read_json::<SessionFile>(&path)? else {
            return Ok(None);
        };
        let server = file
            .server
            .parse::<ServerAddress>()
            .map_err(|err| corrupt(&path, format!("server: {err}")))?;
        let username = UserName::parse(&file.username)
            .map_err(|err| corrupt(&path, format!("username: {err}")))?;
        // The hex error names a position or length, never the token's contents.
        let token =
            hex::decode(&file.token).map_err(|err| corrupt(&path, format!("token: {err}")))?;
        Ok(Some(Session {
            server,
            username,
            user_id: UserId(file.user_id),
            token: SessionToken(token),
        }))
    }

    /// Stores `session`, replacing any earlier one (file mode 0600).
    ///
    /// # Errors
    /// A [`ProfileError`] if the file cannot be written.
    pub fn save_session(&self, session: &Session) -> Result<(), ProfileError> {
        let file = SessionFile {
            server: session.server.to_string(),
            username: session.username.to_string(),
            user_id: session.user_id.0,
            token: hex::encode(&session.token.0),
        };
        write_json(&self.session_path(), &file, 0o600)
    }

    /// Deletes the stored session; returns whether there was one.
    ///
    /// # Errors
    /// A [`ProfileError`] if the file exists but cannot be removed.
    pub fn remove_session(&self) -> Result<bool, ProfileError> {
        let path = self.session_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ProfileError::Write { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Session {
        Session {
            server: "127.0.0.1:5555".parse().unwrap(),
            username: UserName::parse("Alice").unwrap(),
            user_id: UserId(42),
            token: SessionToken(vec![0xde, 0xad, 0xbe, 0xef]),
        }
    }

    #[test]
    fn session_round_trips_with_private_mode() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::open(temp.path()).unwrap();
        assert_eq!(profile.session().unwrap(), None);
        profile.save_session(&sample()).unwrap();
        assert_eq!(profile.session().unwrap(), Some(sample()));
        let text = std::fs::read_to_string(profile.session_path()).unwrap();
        assert!(text.contains("\"token\": \"deadbeef\""), "{text}");
        assert!(text.contains("\"username\": \"Alice\""), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(profile.session_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(profile.remove_session().unwrap());
        assert!(!profile.remove_session().unwrap());
        assert_eq!(profile.session().unwrap(), None);
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let text = format!("{:?}", sample());
        assert!(!text.to_lowercase().contains("deadbeef"), "{text}");
        assert!(!text.contains("222, 173"), "{text}");
        assert!(text.contains("SessionToken { .. }"), "{text}");
    }

    #[test]
    fn corrupt_session_is_named_without_leaking_the_token() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::open(temp.path()).unwrap();
        std::fs::write(
            profile.session_path(),
            r#"{"server":"127.0.0.1:5555","username":"alice","user_id":1,"token":"secretzz"}"#,
        )
        .unwrap();
        let text = profile.session().unwrap_err().to_string();
        assert!(text.contains("session.json"), "{text}");
        assert!(text.contains("token"), "{text}");
        assert!(!text.contains("secretzz"), "{text}");

        std::fs::write(profile.session_path(), "[]").unwrap();
        assert!(matches!(
            profile.session().unwrap_err(),
            ProfileError::Corrupt { .. }
        ));
        std::fs::write(
            profile.session_path(),
            r#"{"server":"nope","username":"alice","user_id":1,"token":"00"}"#,
        )
        .unwrap();
        assert!(
            profile
                .session()
                .unwrap_err()
                .to_string()
                .contains("server")
        );
    }
}
