//! The client's error type.
//!
//! One enum covers what can go wrong between a front end and the server, with messages
//! written for people (lowercase, one line, no trailing period) and data for programs
//! (server errors keep their [`ErrorCode`]). Errors must never contain passwords,
//! tokens or message text.

use crate::address::{AddressError, ServerAddress};
use crate::fingerprint::Fingerprint;
use crate::profile::ProfileError;
use confide_proto::{EncodeError, ErrorCode, ProtoError};
use std::path::PathBuf;
use std::time::Duration;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server address could not be parsed.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The TCP connection could not be opened (unreachable, refused, unknown host).
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The server.
        server: ServerAddress,
        /// The cause.
        source: std::io::Error,
    },
    /// Connecting, the handshake or logging in took too long.
    #[error("connecting to {server} timed out after {}s", after.as_secs_f32())]
    ConnectTimeout {
        /// The server.
        server: ServerAddress,
        /// How long the client waited.
        after: Duration,
    },
    /// The TLS handshake failed for a reason other than the pinned fingerprint.
    #[error("TLS handshake with {server} failed: {source}")]
    Tls {
        /// The server.
        server: ServerAddress,
        /// The cause.
        source: std::io::Error,
    },
    /// The server presented a certificate other than the one pinned on first use.
    #[error(
        "the certificate of {server} has changed: pinned SHA256 {pinned}, presented SHA256 \
         {presented}; if you trust the new certificate, pass --fingerprint {presented} or \
         remove the entry for {server} from {}",
        known_servers.display()
    )]
    FingerprintChanged {
        /// The server.
        server: ServerAddress,
        /// The fingerprint in the profile.
        pinned: Fingerprint,
        /// The fingerprint the server presented.
        presented: Fingerprint,
        /// The file holding the pin.
        known_servers: PathBuf,
    },
    /// The server's certificate does not match the fingerprint given explicitly.
    #[error(
        "the certificate of {server} does not match the expected fingerprint: expected \
         SHA256 {expected}, presented SHA256 {presented}"
    )]
    FingerprintMismatch {
        /// The server.
        server: ServerAddress,
        /// The fingerprint the caller asked for.
        expected: Fingerprint,
        /// The fingerprint the server presented.
        presented: Fingerprint,
    },
    /// The server refused the version handshake (for example a version mismatch).
    #[error("server {server} refused this client: {message}")]
    Rejected {
        /// The server.
        server: ServerAddress,
        /// The server's explanation.
        message: String,
    },
    /// `Auth::Resume` without a stored session.
    #[error("not logged in, run `confide login`")]
    NotLoggedIn,
    /// `Auth::Resume` for a server other than the stored session's.
    #[error("not logged in on {server} (logged in on {session_server}), run `confide login`")]
    NotLoggedInOn {
        /// The server asked for.
        server: ServerAddress,
        /// The server of the stored session.
        session_server: ServerAddress,
    },
    /// The session token was refused and no password is available to log in again.
    #[error("session expired, log in again")]
    SessionExpired,
    /// The server answered the request with an error.
    #[error("{0}")]
    Server(ProtoError),
    /// The server broke the protocol (an unexpected or undecodable frame).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A request could not be encoded (for example a body over the frame limit).
    #[error("cannot send request: {0}")]
    Encode(#[from] EncodeError),
    /// No answer arrived in time, with or without a connection.
    #[error(
        "no answer to {request} after {}s; the server may be unreachable",
        after.as_secs_f32()
    )]
    Timeout {
        /// The request's kind, for example `send`.
        request: &'static str,
        /// How long the client waited.
        after: Duration,
    },
    /// The connection dropped while the request was in flight, too many times.
    #[error("gave up on {request} after the connection dropped {attempts} times")]
    RetriesExhausted {
        /// The request's kind.
        request: &'static str,
        /// How many times it was sent.
        attempts: u32,
    },
    /// The client gave up reconnecting.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// The client was closed (by [`crate::ClientHandle::close`] or after giving up).
    #[error("the client is closed")]
    Closed,
    /// The profile could not be read or written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// End-to-end encryption failed (keys, local history, a group operation).
    #[error(transparent)]
    E2e(Box<crate::secure::E2eError>),
    /// A file transfer failed on this side (reading, writing, checking the file).
    #[error(transparent)]
    Transfer(Box<crate::transfer::TransferError>),
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(err) => Some(err.code),
            _ => None,
        }
    }

    /// Whether retrying the connection later may succeed (the network or the server
    /// had a problem) rather than being refused for good (wrong fingerprint, password
    /// or version).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::Tls { .. }
            | ClientError::Protocol(_)
            | ClientError::Timeout { .. } => true,
            ClientError::Server(err) => matches!(
                err.code,
                ErrorCode::RateLimited
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Internal
                    | ErrorCode::Timeout
                    | ErrorCode::TooSlow
            ),
            _ => false,
        }
    }
}

impl From<ProtoError> for ClientError {
    fn from(err: ProtoError) -> ClientError {
        ClientError::Server(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_change_shows_both_and_the_fix_on_one_line() {
        let err = ClientError::FingerprintChanged {
            server: "127.0.0.1:5555".parse().unwrap(),
            pinned: Fingerprint([0xaa; 32]),
            presented: Fingerprint([0xbb; 32]),
            known_servers: PathBuf::from("/home/a/.local/share/confide/known_servers.json"),
        };
        let text = err.to_string();
        assert!(text.contains(&Fingerprint([0xaa; 32]).to_string()));
        assert!(text.contains(&format!("--fingerprint {}", Fingerprint([0xbb; 32]))));
        assert!(text.contains("known_servers.json"));
        assert!(!text.contains('\n'));
        assert!(!err.is_transient());
    }

    #[test]
    fn server_errors_keep_their_code() {
        let err = ClientError::from(ProtoError::new(ErrorCode::NoSuchRoom, "nope"));
        assert_eq!(err.code(), Some(ErrorCode::NoSuchRoom));
        assert_eq!(err.to_string(), "no such room: nope");
        assert!(!err.is_transient());
        assert!(
            ClientError::from(ProtoError::new(ErrorCode::RateLimited, "slow down")).is_transient()
        );
        assert_eq!(ClientError::Closed.code(), None);
    }
}
