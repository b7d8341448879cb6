//! How to connect: server, profile, pinning, credentials, sync and timing knobs.
//!
//! Plain data with public fields and defaults from [`ClientConfig::new`], so front ends
//! and tests can adjust any knob. This module must not perform I/O.

use crate::address::ServerAddress;
use crate::backoff::Backoff;
use crate::fingerprint::Fingerprint;
use crate::profile::Profile;
use crate::sequencer::DEFAULT_MAX_BUFFERED;
use confide_proto::{Password, UserName};
use std::time::Duration;

/// How the client logs in. Passwords are redacted in `Debug` and wiped on drop.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Create an account, then log in; the session is stored in the profile.
    Register {
        /// The new account's name.
        username: UserName,
        /// Its password.
        password: Password,
    },
    /// Log in with a password; the session is stored in the profile.
    Login {
        /// The account's name.
        username: UserName,
        /// Its password.
        password: Password,
    },
    /// Resume the session stored in the profile (`session.json`).
    Resume,
}

/// Everything [`crate::Client::connect`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server.
    pub server: ServerAddress,
    /// Where pins, the session and cursors are kept.
    pub profile: Profile,
    /// Pin this fingerprint (and record it) instead of trusting on first use.
    pub fingerprint: Option<Fingerprint>,
    /// How to log in.
    pub auth: Auth,
    /// Whether to catch up on missed entries (and after each reconnection) and keep
    /// per-room positions in the profile. A client that only sends turns this off.
    pub sync: bool,
    /// Names the client software in the handshake, for server logs.
    pub software: String,
    /// Limit for opening a connection, the TLS and version handshakes and logging in.
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer, including time spent reconnecting.
    pub request_timeout: Duration,
    /// How many connections a request may be sent on before the client gives up on it.
    pub request_attempts: u32,
    /// Send a ping after this long without traffic.
    pub keepalive_idle: Duration,
    /// Treat the connection as dead after this long without hearing from the server.
    pub dead_after: Duration,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Give up after this many failed reconnection attempts in a row (`None`: never).
    pub max_reconnect_attempts: Option<u32>,
    /// Entries requested per sync page.
    pub sync_page: u32,
    /// Live entries buffered per room while a gap is being filled.
    pub max_buffered: usize,
}

impl ClientConfig {
    /// A configuration with the defaults: sync on, trust on first use, 15 s to
    /// connect, 60 s and 3 connections per request, ping after 30 s idle, dead after
    /// 90 s of silence, backoff from 200 ms to 30 s, reconnect forever.
    #[must_use]
    pub fn new(server: ServerAddress, profile: Profile, auth: Auth) -> ClientConfig {
        ClientConfig {
            server,
            profile,
            fingerprint: None,
            auth,
            sync: true,
            software: format!("confide-client {}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
            request_attempts: 3,
            keepalive_idle: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            backoff: Backoff::default(),
            max_reconnect_attempts: None,
            sync_page: 500,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }

    /// Sets [`ClientConfig::fingerprint`].
    #[must_use]
    pub fn fingerprint(mut self, fingerprint: Option<Fingerprint>) -> ClientConfig {
        self.fingerprint = fingerprint;
        self
    }

    /// Sets [`ClientConfig::sync`].
    #[must_use]
    pub fn sync(mut self, sync: bool) -> ClientConfig {
        self.sync = sync;
        self
    }

    /// Sets [`ClientConfig::software`].
    #[must_use]
    pub fn software(mut self, software: impl Into<String>) -> ClientConfig {
        self.software = software.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let temp = tempfile::tempdir().unwrap();
        let config = ClientConfig::new(
            "127.0.0.1:5555".parse().unwrap(),
            Profile::open(temp.path()).unwrap(),
            Auth::Login {
                username: UserName::parse("alice").unwrap(),
                password: Password("correct horse".to_owned()),
            },
        );
        let text = format!("{config:?}");
        assert!(!text.contains("correct horse"), "{text}");
        assert!(text.contains("Password { .. }"), "{text}");
    }
}
