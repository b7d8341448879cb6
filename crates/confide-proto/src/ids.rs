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

/// The server's id for an uploaded blob (an encrypted file): 16 random bytes chosen by
/// the server, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(pub [u8; 16]);

impl BlobId {
    /// The id as 32 lowercase hex digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(32);
        for byte in self.0 {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    /// Parses 32 hex digits (either case).
    ///
    /// # Errors
    /// If `text` is not exactly 32 hex digits.
    pub fn from_hex(text: &str) -> Result<BlobId, BlobIdError> {
        let bytes = text.as_bytes();
        if bytes.len() != 32 {
            return Err(BlobIdError);
        }
        let mut out = [0u8; 16];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = hex_digit(pair[0]).ok_or(BlobIdError)?;
            let low = hex_digit(pair[1]).ok_or(BlobIdError)?;
            *slot = (high << 4) | low;
        }
        Ok(BlobId(out))
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Text that is not a [`BlobId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a blob id is 32 hex digits")]
pub struct BlobIdError;

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.to_hex())
    }
}

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
    fn blob_ids_round_trip_through_hex() {
        let id = BlobId([0xab; 16]);
        assert_eq!(id.to_hex(), "ab".repeat(16));
        assert_eq!(BlobId::from_hex(&id.to_hex()), Ok(id));
        assert_eq!(BlobId::from_hex(&"AB".repeat(16)), Ok(id));
        assert_eq!(BlobId::from_hex("ab"), Err(BlobIdError));
        assert_eq!(BlobId::from_hex(&"zz".repeat(16)), Err(BlobIdError));
        assert_eq!(BlobId::from_hex(&"é".repeat(16)), Err(BlobIdError));
    }

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
