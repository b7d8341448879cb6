//! Server configuration: a TOML file whose every field has a default.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the database, certificate and event log.
    pub data_dir: PathBuf,
    /// A certificate and key to use instead of the self-signed one.
    pub tls: TlsFiles,
    /// Limits that protect the server from hostile or broken clients.
    pub limits: Limits,
    /// Password hashing cost.
    pub argon2: Argon2Params,
}

/// Paths to a PEM certificate chain and private key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
}

/// Limits on what one connection or account may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame payload accepted from a client.
    pub max_frame_bytes: u32,
    /// Largest message body.
    pub max_body_bytes: u32,
    /// Frames queued for one connection before it counts as too slow and is dropped.
    pub outbound_queue: usize,
    /// Messages per second one connection may send, sustained.
    pub messages_per_second: f64,
    /// Messages one connection may send in a burst.
    pub message_burst: f64,
    /// Messages per second one account may send over all its connections, sustained.
    pub account_messages_per_second: f64,
    /// Messages one account may send in a burst over all its connections.
    pub account_message_burst: f64,
    /// Requests of any kind per second one connection may make, sustained.
    pub requests_per_second: f64,
    /// Requests of any kind in a burst.
    pub request_burst: f64,
    /// Rate-limited requests tolerated in a row before the connection is dropped.
    pub max_rate_violations: u32,
    /// Messages of one connection waiting for their commit before it stops reading.
    pub max_inflight_sends: usize,
    /// Seconds allowed for TLS plus the version handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may stay open without logging in.
    pub login_timeout_secs: u64,
    /// Seconds without any frame from a client before it is dropped.
    pub idle_timeout_secs: u64,
    /// Failed logins per account within the window before more are refused.
    pub login_failures_per_account: u32,
    /// Login and register attempts per address within the window.
    pub login_attempts_per_address: u32,
    /// The window for login limits, in seconds.
    pub login_window_secs: u64,
    /// KeyPackage claims per minute one account may make, sustained (each claim takes
    /// a one-time package of every device of the user claimed).
    pub key_package_claims_per_minute: u32,
    /// KeyPackage claims one account may make in a burst.
    pub key_package_claim_burst: u32,
    /// One-time KeyPackages the server holds per device at most.
    pub key_packages_per_device: u32,
    /// Largest file accepted for upload, in bytes of plaintext: a blob's size less the
    /// 16-byte tag of each of its chunks.
    pub max_file_bytes: u64,
    /// Bytes of blobs (as uploaded, complete or not) one account may store in total.
    pub blob_quota_bytes: u64,
    /// Hours after which an upload that is still incomplete is deleted (at start and
    /// then every hour); 0 keeps incomplete uploads forever.
    pub incomplete_blob_hours: u64,
    /// Days after which a file (a complete blob) is deleted, counted from the start of
    /// its upload (checked at start and then every hour); 0 keeps files for ever.
    /// Downloading an expired file tells the user it is no longer on the server.
    pub blob_retention_days: u64,
    /// Chunk uploads and downloads (`PutChunk`, `GetChunk`) per second one connection
    /// may make, sustained. They have their own allowance so that file transfers are
    /// not held to the rate of other requests.
    pub chunk_requests_per_second: f64,
    /// Chunk uploads and downloads in a burst.
    pub chunk_request_burst: f64,
    /// Live voice frames (`SendVoice`) per second one connection may send, sustained.
    pub voice_frames_per_second: f64,
    /// Live voice frames in a burst.
    pub voice_frame_burst: f64,
    /// Seconds a room with nobody online in it stays in memory after its last use;
    /// it is read back from the store when next needed. 0 keeps every room used since
    /// the start in memory.
    pub room_idle_secs: u64,
}

/// The smallest blob chunk accepted, in bytes.
pub const MIN_CHUNK_BYTES: u32 = 1024;

/// The largest blob chunk accepted, in bytes: a `PutChunk` frame or a `Reply::Chunk`
/// frame carrying it stays under the 1 MiB frame limit.
pub const MAX_CHUNK_BYTES: u32 = (1 << 20) - CHUNK_FRAME_HEADROOM;

/// Bytes kept free in a frame beside a chunk's data, for the request or reply around
/// it (about 40 bytes are needed).
pub const CHUNK_FRAME_HEADROOM: u32 = 4096;

/// Argon2id cost parameters (see the argon2 crate).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5555)),
            data_dir: PathBuf::from("./confide-data"),
            tls: TlsFiles::default(),
            limits: Limits::default(),
            argon2: Argon2Params::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 1 << 20,
            max_body_bytes: 64 * 1024,
            outbound_queue: 4096,
            messages_per_second: 50.0,
            message_burst: 200.0,
            account_messages_per_second: 100.0,
            account_message_burst: 400.0,
            requests_per_second: 200.0,
            request_burst: 400.0,
            max_rate_violations: 500,
            max_inflight_sends: 1024,
            handshake_timeout_secs: 10,
            login_timeout_secs: 60,
            idle_timeout_secs: 300,
            login_failures_per_account: 5,
            login_attempts_per_address: 30,
            login_window_secs: 60,
            key_package_claims_per_minute: 60,
            key_package_claim_burst: 20,
            key_packages_per_device: 200,
            max_file_bytes: 100 * 1024 * 1024,
            blob_quota_bytes: 10 * 1024 * 1024 * 1024,
            incomplete_blob_hours: 24,
            blob_retention_days: 0,
            chunk_requests_per_second: 4000.0,
            chunk_request_burst: 4000.0,
            voice_frames_per_second: 100.0,
            voice_frame_burst: 200.0,
            room_idle_secs: 600,
        }
    }
}

impl Default for Argon2Params {
    fn default() -> Argon2Params {
        // OWASP's recommended minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
        Argon2Params {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Limits {
    /// The handshake deadline.
    #[must_use]
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// The login deadline.
    #[must_use]
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs)
    }

    /// The idle deadline.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The chunk sizes accepted for blobs: from [`MIN_CHUNK_BYTES`] to
    /// [`MAX_CHUNK_BYTES`], or less if `max_frame_bytes` is set so low that a larger
    /// chunk would not fit in a frame.
    #[must_use]
    pub fn chunk_bytes(&self) -> std::ops::RangeInclusive<u32> {
        let fits = self.max_frame_bytes.saturating_sub(CHUNK_FRAME_HEADROOM);
        MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES.min(fits)
    }

    /// How long an unused room with nobody online stays in memory, or `None` for ever.
    #[must_use]
    pub fn room_idle(&self) -> Option<Duration> {
        (self.room_idle_secs > 0).then(|| Duration::from_secs(self.room_idle_secs))
    }

    /// How long an incomplete upload is kept, or `None` for ever.
    #[must_use]
    pub fn incomplete_blob_age(&self) -> Option<Duration> {
        (self.incomplete_blob_hours > 0)
            .then(|| Duration::from_secs(self.incomplete_blob_hours.saturating_mul(3600)))
    }

    /// How long blobs are kept, complete or not.
    #[must_use]
    pub fn blob_retention(&self) -> crate::blobs::Retention {
        crate::blobs::Retention {
            incomplete: self.incomplete_blob_age(),
            complete: (self.blob_retention_days > 0)
                .then(|| Duration::from_secs(self.blob_retention_days.saturating_mul(24 * 3600))),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// If the file cannot be read or has unknown or malformed fields.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_keeps_defaults() {
        let config: Config =
            toml::from_str("listen = \"127.0.0.1:6000\"\n[limits]\nmessages_per_second = 5.0\n")
                .unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.limits.messages_per_second, 5.0);
        assert_eq!(config.limits.max_frame_bytes, 1 << 20);
        assert_eq!(config.argon2.iterations, 2);
    }

    #[test]
    fn blob_limits_have_defaults_and_can_be_set() {
        let limits = Limits::default();
        assert_eq!(limits.max_file_bytes, 104_857_600);
        assert_eq!(limits.blob_quota_bytes, 10 << 30);
        assert_eq!(
            limits.incomplete_blob_age(),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(limits.blob_retention().complete, None);
        assert_eq!(limits.chunk_bytes(), 1024..=(1 << 20) - 4096);
        let config: Config = toml::from_str(
            "[limits]\nmax_file_bytes = 4096\nincomplete_blob_hours = 0\nmax_frame_bytes = 65536\n\
             blob_retention_days = 30\n",
        )
        .unwrap();
        assert_eq!(config.limits.max_file_bytes, 4096);
        assert_eq!(config.limits.incomplete_blob_age(), None);
        assert_eq!(
            config.limits.blob_retention(),
            crate::blobs::Retention {
                incomplete: None,
                complete: Some(Duration::from_secs(30 * 24 * 3600)),
            }
        );
        assert_eq!(config.limits.chunk_bytes(), 1024..=65536 - 4096);
    }

    #[test]
    fn unknown_fields_are_errors() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}
