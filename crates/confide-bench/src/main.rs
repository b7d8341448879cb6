//! `confide-bench`: drives simulated users against a real `confide-server` over
//! loopback TLS and reports throughput, latency, losses, CPU and memory; and, with
//! `--compare-relay`, runs the same workload against a bare plaintext relay so every
//! figure can be read as a ratio to what the machine can do at all.
//!
//! ```sh
//! cargo build --release -p confide-bench -p confide-server
//! target/release/confide-bench run --workload fanout --users 10,100,1000 --compare-relay
//! target/release/confide-bench run --workload paced --users 1000 --compare-relay
//! target/release/confide-bench run --workload idle --idle 10000 --compare-relay --json
//! target/release/confide-bench run --workload all --users 100 --compare-relay
//! target/release/confide-bench run --workload files --file-mib 100
//! target/release/confide-bench run --workload restart --users 1000 --conversations 20
//! ```
//!
//! Every run starts its own server (or relay) on `127.0.0.1:0` with a fresh temporary
//! data directory, sets up its users (timed apart), measures, and stops the server;
//! `--max-seconds` bounds each run. Figures are measurements, never pass/fail checks.
//!
//! This file only parses the command line, builds the runtime and maps errors to exit
//! codes (0 success, 1 runtime failure, 2 usage error); the work is in the modules.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod body;
mod client;
mod entry_view;
mod procfs;
mod relay;
mod report;
mod server;
mod stats;
mod tls;
mod tls_copy;
mod workload;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use workload::{Settings, Spec, Workload};

/// Load tool for Confide: simulated users over loopback, with a reference relay.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run workloads against a fresh confide-server (and the relay) and report.
    Run(RunArgs),
    /// Run the reference relay (plaintext; the bench starts it itself).
    Relay {
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Workloads to run (comma-separated), or `all`.
    #[arg(long, value_delimiter = ',', default_value = "fanout")]
    workload: Vec<WorkloadArg>,
    /// Simulated users; several values (comma-separated) run the workload once each.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    users: Vec<u32>,
    /// Senders in the fan-out and paced workloads.
    #[arg(long, default_value_t = 10)]
    senders: u32,
    /// Messages per sender [default: about two million deliveries per run, 20 to
    /// 10,000 per sender; paced: rate x duration].
    #[arg(long)]
    messages: Option<u32>,
    /// Send for this many seconds instead of a fixed count [paced default: 10].
    #[arg(long)]
    duration: Option<f64>,
    /// Messages per second per sender in the paced workload.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Bytes per message body (an MLS ciphertext of a short message is a few hundred).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    body_bytes: u32,
    /// Connections in the idle workload (comma-separated for several runs).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    idle: Vec<u32>,
    /// Seconds the idle connections sit before memory is read.
    #[arg(long, default_value_t = 3.0)]
    idle_seconds: f64,
    /// Messages the away users miss in the sync workload.
    #[arg(long, default_value_t = 1000)]
    missed: u32,
    /// Users per room in the rooms workload.
    #[arg(long, default_value_t = 10)]
    room_size: u32,
    /// Direct workload: send every message to a new random user (so almost every
    /// message opens a conversation) instead of to one partner from a random pairing.
    #[arg(long)]
    direct_random_peers: bool,
    /// MiB of the file the files workload moves up and down (run once, whatever
    /// `--users` says).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4096))]
    file_mib: u32,
    /// Direct conversations each user is in, in the restart workload.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    conversations: u32,
    /// Also run each workload against the reference relay, where it applies.
    #[arg(long)]
    compare_relay: bool,
    /// The confide-server binary [default: next to this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Print one JSON object per run instead of the table.
    #[arg(long)]
    json: bool,
    /// Hard bound on each run, setup included, in seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Unacknowledged sends a user may have at once.
    #[arg(long, default_value_t = 256)]
    window: u32,
    /// Connections set up at once.
    #[arg(long, default_value_t = 64)]
    connect_parallelism: usize,
    /// The server's per-connection outgoing queue (frames).
    #[arg(long, default_value_t = 65_536)]
    outbound_queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadArg {
    Fanout,
    Paced,
    Rooms,
    Idle,
    Sync,
    Direct,
    Files,
    Restart,
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("confide-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Relay { listen } => runtime.block_on(relay::serve(listen)),
        Command::Run(args) => runtime.block_on(run(args)),
    };
    // Readers of connections still open must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("confide-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn workloads(args: &[WorkloadArg]) -> Vec<Workload> {
    let mut chosen = Vec::new();
    for arg in args {
        let more: &[Workload] = match arg {
            WorkloadArg::All => &Workload::ALL,
            WorkloadArg::Fanout => &[Workload::Fanout],
            WorkloadArg::Paced => &[Workload::Paced],
            WorkloadArg::Rooms => &[Workload::Rooms],
            WorkloadArg::Idle => &[Workload::Idle],
            WorkloadArg::Sync => &[Workload::Sync],
            WorkloadArg::Direct => &[Workload::Direct],
            WorkloadArg::Files => &[Workload::Files],
            WorkloadArg::Restart => &[Workload::Restart],
        };
        for workload in more {
            if !chosen.contains(workload) {
                chosen.push(*workload);
            }
        }
    }
    chosen
}

async fn run(args: RunArgs) -> Result<()> {
    // Fix the clock's epoch before anything is timed.
    let _ = body::now_ns();
    let bench_exe = std::env::current_exe().context("cannot find the bench's own executable")?;
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => server::default_server_bin()?,
    };
    if !server_bin.exists() {
        bail!(
            "{} does not exist; build it (cargo build --release -p confide-server) or pass \
             --server-bin",
            server_bin.display()
        );
    }
    let settings = Settings {
        server_bin,
        bench_exe,
        max_seconds: Duration::from_secs(args.max_seconds.max(5)),
        window: args.window.max(1),
        connect_parallelism: args.connect_parallelism.max(1),
        outbound_queue: args.outbound_queue.max(16),
    };
    let mut reports = Vec::new();
    let mut failures = 0;
    for workload in workloads(&args.workload) {
        // The files workload has two users whatever `--users` says: it runs once.
        let sizes: &[u32] = match workload {
            Workload::Idle => &args.idle,
            Workload::Files => &[2],
            _ => &args.users,
        };
        for &users in sizes {
            let spec = Spec {
                workload,
                target: server::TargetKind::Confide,
                users,
                senders: args.senders,
                messages: args.messages,
                duration: args.duration.map(Duration::from_secs_f64),
                rate: args.rate,
                body_bytes: args.body_bytes as usize,
                missed: args.missed,
                room_size: args.room_size,
                idle_for: Duration::from_secs_f64(args.idle_seconds.max(0.0)),
                direct_random_peers: args.direct_random_peers,
                file_bytes: u64::from(args.file_mib) * 1024 * 1024,
                conversations: args.conversations,
            };
            let relay = if args.compare_relay && workload.relay_applies() {
                let spec = Spec {
                    target: server::TargetKind::Relay,
                    ..spec.clone()
                };
                run_one(spec, &settings, &args, &mut failures).await
            } else {
                None
            };
            if let Some(mut confide) = run_one(spec, &settings, &args, &mut failures).await {
                if let Some(relay) = &relay {
                    confide.compare_with(relay);
                }
                reports.extend(relay);
                if args.json {
                    print_json(&confide)?;
                }
                reports.push(confide);
            } else {
                reports.extend(relay);
            }
        }
    }
    if !args.json {
        println!("{}", report::table(&reports));
    }
    if failures > 0 {
        bail!("{failures} runs failed");
    }
    Ok(())
}

/// Runs one spec, printing progress on stderr (and the relay's JSON at once); a failed
/// run is reported and counted, and the next one goes on.
async fn run_one(
    spec: Spec,
    settings: &Settings,
    args: &RunArgs,
    failures: &mut u32,
) -> Option<report::RunReport> {
    let label = if spec.workload == Workload::Files {
        format!(
            "files {} {} MiB",
            spec.target.as_str(),
            spec.file_bytes / (1024 * 1024)
        )
    } else {
        format!(
            "{} {} {} users",
            spec.workload.as_str(),
            spec.target.as_str(),
            spec.users
        )
    };
    eprintln!("confide-bench: running {label}");
    let target = spec.target;
    match workload::run(spec, settings.clone()).await {
        Ok(report) => {
            if let Some(files) = &report.files {
                eprintln!(
                    "confide-bench: {label}: up {:.1} MiB/s, down {:.1} MiB/s (plain TLS: up \
                     {:.1}, down {:.1})",
                    files.confide.upload_mib_per_second,
                    files.confide.download_mib_per_second,
                    files.plain_tls.upload_mib_per_second,
                    files.plain_tls.download_mib_per_second,
                );
            } else {
                eprintln!(
                    "confide-bench: {label}: {} deliveries in {:.2} s, {} lost",
                    report.deliveries, report.measured_seconds, report.lost
                );
            }
            if args.json && target == server::TargetKind::Relay {
                // The Confide run that follows carries the ratios; the relay's own line
                // goes out first.
                if let Err(err) = print_json(&report) {
                    eprintln!("confide-bench: {err:#}");
                }
            }
            Some(report)
        }
        Err(err) => {
            eprintln!("confide-bench: {label} failed: {err:#}");
            *failures += 1;
            None
        }
    }
}

fn print_json(report: &report::RunReport) -> Result<()> {
    let line = report.to_json().context("cannot encode the report")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_once() {
        let chosen = workloads(&[WorkloadArg::Fanout, WorkloadArg::All]);
        assert_eq!(chosen.len(), Workload::ALL.len());
        assert_eq!(chosen[0], Workload::Fanout);
    }

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from([
            "confide-bench",
            "run",
            "--workload",
            "fanout,idle",
            "--users",
            "10,100",
            "--compare-relay",
            "--json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.users, vec![10, 100]);
        assert_eq!(args.body_bytes, 256);
        assert_eq!(args.file_mib, 100);
        assert!(args.compare_relay && args.json);
        assert!(
            Cli::try_parse_from(["confide-bench", "run", "--body-bytes", "8"]).is_err(),
            "bodies smaller than the stamp are refused"
        );
        let cli = Cli::try_parse_from([
            "confide-bench",
            "run",
            "--workload",
            "files",
            "--file-mib",
            "3",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(workloads(&args.workload), vec![Workload::Files]);
        assert_eq!(args.file_mib, 3);
        assert!(Cli::try_parse_from(["confide-bench", "run", "--file-mib", "0"]).is_err());
    }
}
