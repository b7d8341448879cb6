//! The workloads, and what every run does around them: start the target process,
//! warm it up, bound the run in time, stop the target and read its logs.
//!
//! Each run gets a fresh target (a new `confide-server` with an empty data directory,
//! or a new relay), so runs never see each other's users, rooms or memory.

pub mod crowd;
pub mod files;
pub mod idle;
pub mod messages;
pub mod plan;
pub mod restart;
pub mod sync;

use crate::report::RunReport;
use crate::server::{self, TargetKind, TargetProcess};
use crate::{client, procfs, relay};
use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::time::Instant;

/// What the simulated users do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// All users in one room; S senders at full speed.
    Fanout,
    /// All users in one room; S senders at a chat rate (5 messages a second each).
    Paced,
    /// Users in rooms of 10; everyone sends into their room at full speed.
    Rooms,
    /// C connections logged in and idle; measures memory per connection.
    Idle,
    /// Half the users go away, miss K messages, come back and catch up with sync.
    Sync,
    /// Everyone sends direct messages to random other users.
    Direct,
    /// One file up and down through two real clients, against a plain TLS copy.
    Files,
    /// Users in C direct conversations each log in again after a server restart.
    Restart,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [Workload; 8] = [
        Workload::Fanout,
        Workload::Paced,
        Workload::Rooms,
        Workload::Idle,
        Workload::Sync,
        Workload::Direct,
        Workload::Files,
        Workload::Restart,
    ];

    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Fanout => "fanout",
            Workload::Paced => "paced",
            Workload::Rooms => "rooms",
            Workload::Idle => "idle",
            Workload::Sync => "sync",
            Workload::Direct => "direct",
            Workload::Files => "files",
            Workload::Restart => "restart",
        }
    }

    /// Whether the reference relay can run it (it has no history and no addressing).
    #[must_use]
    pub fn relay_applies(self) -> bool {
        matches!(
            self,
            Workload::Fanout | Workload::Paced | Workload::Rooms | Workload::Idle
        )
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Which workload.
    pub workload: Workload,
    /// Against what.
    pub target: TargetKind,
    /// Simulated users (for idle: connections).
    pub users: u32,
    /// Senders (fan-out and paced).
    pub senders: u32,
    /// Messages per sender; `None` for the workload's default or `duration`.
    pub messages: Option<u32>,
    /// Send for this long instead of a fixed count.
    pub duration: Option<Duration>,
    /// Messages per second per sender in the paced workload.
    pub rate: f64,
    /// Bytes per message body.
    pub body_bytes: usize,
    /// Messages the away users miss in the sync workload.
    pub missed: u32,
    /// Users per room in the rooms workload.
    pub room_size: u32,
    /// How long idle connections sit before memory is measured.
    pub idle_for: Duration,
    /// Direct workload: every message to a new random peer instead of a fixed partner.
    pub direct_random_peers: bool,
    /// Bytes of the file in the files workload.
    pub file_bytes: u64,
    /// Direct conversations per user in the restart workload.
    pub conversations: u32,
}

/// Settings shared by every run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `confide-server` binary.
    pub server_bin: PathBuf,
    /// This executable, to start the relay.
    pub bench_exe: PathBuf,
    /// Hard bound on one run, setup included.
    pub max_seconds: Duration,
    /// Sends a user may have unacknowledged at once.
    pub window: u32,
    /// Connections set up at once.
    pub connect_parallelism: usize,
    /// The server's per-connection outgoing queue.
    pub outbound_queue: usize,
}

/// Deliveries a run aims for when no message count is given.
const DEFAULT_DELIVERIES: u64 = 2_000_000;

impl Spec {
    /// Messages per sender: as given, or enough for about two million deliveries
    /// (between 20 and 10,000 per sender) when each message reaches `fan_out` users.
    #[must_use]
    pub fn messages_per_sender(&self, senders: u32, fan_out: u32) -> u32 {
        self.messages.unwrap_or_else(|| {
            let per_sender =
                DEFAULT_DELIVERIES / u64::from(senders.max(1)) / u64::from(fan_out.max(1));
            u32::try_from(per_sender.clamp(20, 10_000)).unwrap_or(10_000)
        })
    }
}

/// What a workload works with.
pub struct Ctx {
    /// The run's parameters.
    pub spec: Spec,
    /// Shared settings.
    pub settings: Settings,
    /// The process under test.
    pub target: TargetProcess,
    /// TLS to the server (Confide only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Everything, setup included, must be done by then.
    pub deadline: Instant,
    /// Frames (or lines) received by all users, to tell when traffic has settled.
    pub frames: Arc<AtomicU64>,
}

/// Time kept after the measured phase to collect results and stop the target.
const RESERVE: Duration = Duration::from_secs(3);

impl Ctx {
    /// When the measured phase must end.
    #[must_use]
    pub fn measure_deadline(&self) -> Instant {
        self.deadline
            .checked_sub(RESERVE)
            .unwrap_or(self.deadline)
            .max(Instant::now())
    }

    /// Connects one throwaway user and disconnects it, so that the target has accepted
    /// and served a connection before its baseline memory is read.
    ///
    /// # Errors
    /// If the connection fails.
    pub async fn warm_up(&self) -> Result<()> {
        match &self.tls {
            Some(tls) => {
                let mut session = client::Session::connect(self.target.addr, tls).await?;
                session.register("bench-warmup").await?;
                session.close().await;
            }
            None => {
                relay::connect(self.target.addr, "warmup").await?;
            }
        }
        // Let the target notice the close and free what it can.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

/// Runs one workload against a fresh target and returns what it measured.
///
/// # Errors
/// If the target cannot be started or the workload cannot be set up.
pub async fn run(spec: Spec, settings: Settings) -> Result<RunReport> {
    let connections = u64::from(spec.users);
    procfs::require_open_files(connections + 256)?;
    let start_settings = settings.clone();
    let kind = spec.target;
    // The server's own limit unless the files workload moves a larger file.
    let file_limit = spec.file_bytes.max(server::DEFAULT_MAX_FILE_BYTES);
    let target = tokio::task::spawn_blocking(move || match kind {
        TargetKind::Confide => TargetProcess::start_confide(
            &start_settings.server_bin,
            &server::server_config(
                start_settings.outbound_queue,
                (start_settings.window as usize * 2).max(1024),
                file_limit,
            ),
        ),
        TargetKind::Relay => TargetProcess::start_relay(&start_settings.bench_exe),
    })
    .await
    .context("the start task failed")??;
    let tls = match target.fingerprint {
        Some(fingerprint) => Some(client::tls_config(fingerprint)?),
        None => None,
    };
    let deadline = Instant::now() + settings.max_seconds;
    let mut ctx = Ctx {
        spec,
        settings,
        target,
        tls,
        deadline,
        frames: Arc::default(),
    };
    // The workloads bound every wait by the deadline; this only catches a bug.
    let hard_stop = deadline + RESERVE;
    let outcome = tokio::time::timeout_at(hard_stop, async {
        match ctx.spec.workload {
            Workload::Fanout | Workload::Paced | Workload::Rooms | Workload::Direct => {
                messages::run(&mut ctx).await
            }
            Workload::Idle => idle::run(&mut ctx).await,
            Workload::Sync => sync::run(&mut ctx).await,
            Workload::Files => files::run(&mut ctx).await,
            Workload::Restart => restart::run(&mut ctx).await,
        }
    })
    .await
    .unwrap_or_else(|_| Err(anyhow!("the run overran its time bound")));
    let exited = ctx.target.has_exited();
    let problems = ctx.target.logged_problems();
    let tail = ctx.target.stderr_tail(10);
    let mut target = ctx.target;
    let stopped = tokio::task::spawn_blocking(move || target.stop()).await;
    let mut report = outcome.with_context(|| {
        if exited {
            format!("the target process exited; its stderr ends with:\n{tail}")
        } else {
            format!("{} run failed", ctx.spec.workload.as_str())
        }
    })?;
    report.server_problems = problems;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(err)) => report.notes.push(format!("stopping the target: {err:#}")),
        Err(err) => report.notes.push(format!("stopping the target: {err}")),
    }
    Ok(report)
}
