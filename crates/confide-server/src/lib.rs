//! The Confide server: a TLS listener, one task per connection, an actor per room, a
//! persister that commits batches durably, and stores behind traits (messages and
//! accounts in SQLite, uploaded files as files).
//!
//! It routes message bodies, files and live voice as opaque bytes and never logs them.
//! Entry point: [`start`] (or [`run`]) with a bound listener, a [`Config`] and a
//! shutdown token.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod accounts;
pub mod blobs;
pub mod config;
pub mod connection;
pub mod eventlog;
pub mod fanout;
pub mod limits;
pub mod outbound;
pub mod persist;
pub mod room;
pub mod sessions;
pub mod state;
pub mod store;
pub mod tls;

pub use config::Config;

use anyhow::Context as _;
use blobs::BlobStore;
use room::RoomContext;
use state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "confide.db";
/// The event log inside the data directory.
pub const EVENT_LOG_FILE: &str = "events.log";

/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// SHA-256 of its certificate, for clients to pin.
    pub fingerprint: [u8; 32],
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Waits until the server has shut down and flushed everything.
    ///
    /// # Errors
    /// If shutting down failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }
}

/// Opens the data directory, loads state, and starts serving on `listener` until
/// `shutdown` is cancelled.
///
/// # Errors
/// If the data directory, certificate, database or event log cannot be set up.
pub async fn start(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<Server> {
    create_private_dir(&config.data_dir)?;
    let tls = tls::load_or_create(
        &config.data_dir,
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
    )?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&config.data_dir.join(DATABASE_FILE))
            .context("cannot open the database")?,
    );
    let (events, event_writer) = eventlog::EventLog::open(&config.data_dir.join(EVENT_LOG_FILE))
        .context("cannot open the event log")?;
    let blob_dir = config.data_dir.join(blobs::BLOB_DIR);
    let blob_store: Arc<dyn BlobStore> = tokio::task::spawn_blocking(move || {
        blobs::FsBlobStore::open(&blob_dir).map(|store| Arc::new(store) as Arc<dyn BlobStore>)
    })
    .await
    .context("cannot open the blob store")?
    .context("cannot open the blob store")?;
    let retention = config.limits.blob_retention();
    if retention.expires() {
        blobs::expire(&blob_store, retention, &events).await;
    }
    let (persister, persist_thread) =
        persist::start(Arc::clone(&store)).context("cannot start the persister")?;
    let last_welcome = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.last_welcome_id())
            .await
            .context("cannot read the store")?
            .context("cannot read the store")?
    };
    let room_tracker = TaskTracker::new();
    let context = RoomContext {
        store: Arc::clone(&store),
        sessions: Arc::default(),
        persister,
        shutdown: shutdown.child_token(),
        welcome_ids: Arc::new(std::sync::atomic::AtomicU64::new(last_welcome.0)),
        residents: Arc::default(),
        idle: config.limits.room_idle(),
        events: events.clone(),
    };
    let room_shutdown = context.shutdown.clone();
    let shared = Arc::new(
        Shared::new(
            config,
            Arc::clone(&store),
            Arc::clone(&blob_store),
            context,
            events.clone(),
            room_tracker.clone(),
        )
        .await?,
    );
    let local_addr = listener.local_addr()?;
    events.record("start", &[("listen", &local_addr)]);
    let tls_config = Arc::clone(&tls.config);
    let blob_expiry = retention.expires().then(|| {
        tokio::spawn(blobs::expire_periodically(
            blob_store,
            retention,
            events.clone(),
            shutdown.child_token(),
        ))
    });
    let task = tokio::spawn(async move {
        let connections = TaskTracker::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(connection::serve(
                            Arc::clone(&shared),
                            Arc::clone(&tls_config),
                            stream,
                            peer,
                            shutdown.clone(),
                        ));
                    }
                    Err(err) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::error!(cause = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        tracing::info!("shutting down");
        drop(listener);
        connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        // Rooms stop after connections, so nothing is posted to a stopped room.
        room_shutdown.cancel();
        room_tracker.close();
        room_tracker.wait().await;
        if let Some(task) = blob_expiry
            && task.await.is_err()
        {
            tracing::error!("the blob expiry task panicked");
        }
        events.record("stop", &[]);
        // Dropping the last handles lets the persister drain its queue and exit.
        drop(shared);
        drop(events);
        tokio::task::spawn_blocking(move || {
            if persist_thread.join().is_err() {
                tracing::error!("the persister panicked");
            }
            if let Err(err) = store.close() {
                tracing::error!(cause = %err, "cannot close the database cleanly");
            }
            event_writer.finish();
        })
        .await
        .context("shutdown task failed")?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Server {
        local_addr,
        fingerprint: tls.fingerprint,
        task,
    })
}

/// Creates the data directory readable by its owner only (it holds the private key).
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// [`start`], then wait for shutdown.
///
/// # Errors
/// As [`start`] and [`Server::wait`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(listener, config, shutdown).await?.wait().await
}
