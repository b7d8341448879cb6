//! Test helpers: a real Confide server on `127.0.0.1:0` with a temporary data
//! directory (in-process or as a child process), and a raw TLS client that speaks the
//! wire protocol frame by frame, for protocol and hostile-client tests.
//!
//! Nothing here mocks a Confide component: servers are the real server, connections
//! are real TLS over loopback, and the store is a real SQLite file.
#![allow(clippy::missing_errors_doc, clippy::missing_panics_doc)]

pub mod process;
pub mod proxy;
pub mod raw;

use anyhow::{Context as _, Result};
use confide_server::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use process::ServerProcess;
pub use raw::RawClient;

/// Every wait in tests is bounded by this unless it says otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A configuration for tests: cheap password hashing and generous rate limits so that
/// bursts are limited by the server's throughput, not by policy. Tests of the limits
/// set their own.
#[must_use]
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        // Port 0: each test server gets its own free port.
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    config.argon2.memory_kib = 256;
    config.argon2.iterations = 1;
    config.limits.messages_per_second = 100_000.0;
    config.limits.message_burst = 100_000.0;
    config.limits.account_messages_per_second = 100_000.0;
    config.limits.account_message_burst = 100_000.0;
    config.limits.requests_per_second = 100_000.0;
    config.limits.request_burst = 100_000.0;
    config.limits.login_attempts_per_address = 10_000;
    config.limits.room_idle_secs = 1;
    config
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server running inside the test process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate fingerprint.
    pub fingerprint: [u8; 32],
    /// The configuration it runs with.
    pub config: Config,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    shutdown: CancellationToken,
    server: Option<confide_server::Server>,
    /// A second handle on the listening socket, so that a restart takes the same socket
    /// over: the port is never free for another test to take, and clients reconnecting
    /// meanwhile wait in its backlog for the new server.
    held: Option<std::net::TcpListener>,
}

impl TestServer {
    /// Starts a server with [`test_config`] in a new temporary directory.
    pub async fn start() -> Result<TestServer> {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server with a new data directory (and so a new certificate) on `addr`,
    /// which must be a loopback address whose previous server has stopped.
    pub async fn start_at(addr: SocketAddr) -> Result<TestServer> {
        TestServer::start_with(|config| config.listen = addr).await
    }

    /// Starts a server after `adjust` has changed the test configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Result<TestServer> {
        init_tracing();
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let data_dir = config.data_dir.clone();
        let mut server = TestServer::start_in(config, data_dir, None).await?;
        server.dir = Some(dir);
        Ok(server)
    }

    /// Starts a server on `held` (a listening socket kept from the last run), or on a
    /// socket bound to `config.listen`.
    async fn start_in(
        mut config: Config,
        data_dir: PathBuf,
        held: Option<std::net::TcpListener>,
    ) -> Result<TestServer> {
        if !config.listen.ip().is_loopback() {
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        let socket = match held {
            Some(socket) => socket,
            None => bind(config.listen).await?.into_std()?,
        };
        let held = socket
            .try_clone()
            .context("cannot keep the listening socket")?;
        socket.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(socket)?;
        let shutdown = CancellationToken::new();
        let server = confide_server::start(listener, config.clone(), shutdown.clone()).await?;
        Ok(TestServer {
            addr: server.local_addr,
            fingerprint: server.fingerprint,
            config,
            dir: None,
            data_dir,
            shutdown,
            server: Some(server),
            held: Some(held),
        })
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The address as `host:port`.
    #[must_use]
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Shuts down gracefully and waits until everything is flushed.
    /// The port closes with it: clients are refused until a server listens again.
    pub async fn stop(&mut self) -> Result<()> {
        let result = self.stop_server().await;
        self.held = None;
        result
    }

    async fn stop_server(&mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(TIMEOUT, server.wait())
                .await
                .context("the server did not stop in time")??;
        }
        Ok(())
    }

    /// Stops, then starts again on the same data directory and the same listening
    /// socket, so that clients can reconnect to it. Every connection is cut; clients
    /// that reconnect before the new server is up wait in the socket's backlog.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop_server().await?;
        let mut config = self.config.clone();
        config.listen = self.addr;
        let held = self.held.take();
        let mut next = TestServer::start_in(config, self.data_dir.clone(), held).await?;
        next.dir = self.dir.take();
        *self = next;
        Ok(())
    }

    /// Connects a raw protocol client.
    pub async fn raw(&self) -> Result<RawClient> {
        RawClient::connect(self.addr).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Binds a listener, retrying briefly if the port is still held by a server that is
/// shutting down (restarts reuse their port).
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let mut last = None;
    // Up to 30 s: a port just freed can be taken meanwhile by another test's server or
    // an outgoing connection, which hold it until that test ends.
    for _ in 0..600 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                last = Some(err);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("cannot bind {addr}"), Into::into))
}

/// A real client of user `name` (password `"{name} password"`) with its profile in
/// `profile`, registering the account or logging in (a new profile is a new device),
/// syncing, with its device keys published.
pub async fn connect_user(
    addr: SocketAddr,
    profile: &Path,
    name: &str,
    register: bool,
) -> Result<(confide_client::ClientHandle, confide_client::EventStream)> {
    let username = confide_proto::UserName::parse(name)?;
    let password = confide_proto::Password(format!("{name} password"));
    let auth = if register {
        confide_client::Auth::Register { username, password }
    } else {
        confide_client::Auth::Login { username, password }
    };
    let config = confide_client::ClientConfig::new(
        addr.to_string().parse()?,
        confide_client::Profile::open(profile)?,
        auth,
    )
    .sync(true);
    let (client, events) = confide_client::Client::connect(config).await?;
    client.keys_published().await?;
    Ok((client, events))
}

/// What `pick` takes from the next entry in `room` it accepts, as a client's events
/// bring them (each wait bounded by [`TIMEOUT`]).
///
/// # Panics
/// If no such entry comes in time, or the events end.
pub async fn next_entry<T>(
    events: &mut confide_client::EventStream,
    room: confide_proto::RoomId,
    mut pick: impl FnMut(&confide_client::Entry) -> Option<T>,
) -> T {
    loop {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("timed out waiting for an entry")
            .expect("stream ended");
        if let confide_client::ClientEvent::Entry { entry, .. } = event
            && entry.room == room
            && let Some(found) = pick(&entry)
        {
            return found;
        }
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}
