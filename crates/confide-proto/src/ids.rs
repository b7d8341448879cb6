//! Typed identifiers and small value types shared by every frame.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A client-chosen identifier carried by every request and echoed in its response.
///
/// The server never interprets it; clients usually count up from 1 per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A server-assigned account identifier. Stable for the life of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub u64);

/// A server-assigned room identifier. Direct conversations are rooms too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoomId(pub u64);

/// A per-room sequence number. The first entry of a room's log has sequence 1;
/// sequence 0 means "nothing seen yet".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number that follows this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

/// Milliseconds since the Unix epoch, UTC, as measured by the server.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A random value the client attaches to each message it sends so that a retry after a
/// lost acknowledgement is recognised by the server and not stored twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageNonce(pub [u8; 16]);

/// A bearer token that resumes a logged-in session without the password.
///
/// It is a secret: its `Debug` output is redacted and its bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SessionToken(pub Vec<u8>);

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionToken").finish_non_exhaustive()
    }
}

/// A password in transit from client to server (inside TLS, never anywhere else).
///
/// It is a secret: its `Debug` output is redacted and its bytes are wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Password").finish_non_exhaustive()
    }
}

impl Password {
    /// Fewest characters a new password may have.
    pub const MIN_CHARS: usize = 8;
    /// Most bytes a password may have.
    pub const MAX_BYTES: usize = 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_token_debug_is_redacted() {
        let token = SessionToken(b"very secret".to_vec());
        assert_eq!(format!("{token:?}"), "SessionToken { .. }");
        let password = Password("hunter22".to_owned());
        assert_eq!(format!("{password:?}"), "Password { .. }");
    }

    #[test]
    fn seq_next_saturates() {
        assert_eq!(Seq(1).next(), Seq(2));
        assert_eq!(Seq(u64::MAX).next(), Seq(u64::MAX));
    }
}
