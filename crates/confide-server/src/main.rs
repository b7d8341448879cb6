//! `confide-server`: parses the command line and config, installs logging, and runs the
//! server until SIGINT or SIGTERM.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use confide_server::store::{RoomReads as _, SqliteStore, Store as _, StoredKind};
use confide_server::{Config, tls};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The Confide chat server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on [default: 127.0.0.1:5555].
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Directory for the database, certificate and event log [default: ./confide-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operator commands that read the data directory.
    Admin {
        #[command(subcommand)]
        command: Admin,
    },
}

#[derive(Debug, Subcommand)]
enum Admin {
    /// Print the certificate fingerprint clients should pin.
    Fingerprint,
    /// List accounts.
    Users,
    /// List rooms with their members and message counts.
    Rooms,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("confide-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir.clone_from(dir);
    }
    Ok(config)
}

fn run(cli: Cli) -> Result<()> {
    let config = load_config(&cli)?;
    match cli.command {
        Some(Command::Admin { command }) => admin(&config, &command),
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> Result<()> {
    // Before anything is announced: a supervisor may send a signal as soon as it reads
    // the address, and it must reach the handler, not the default action.
    let signals = Signals::install()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let data_dir = config.data_dir.clone();
    let shutdown = CancellationToken::new();
    let server = confide_server::start(listener, config, shutdown.clone()).await?;
    println!(
        "confide-server {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        server.local_addr
    );
    println!(
        "certificate fingerprint (SHA-256): {}",
        tls::format_fingerprint(&server.fingerprint)
    );
    println!("data directory: {}", data_dir.display());
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("signal received, shutting down");
        shutdown.cancel();
    });
    server.wait().await?;
    // Whoever started the server may have closed its standard output by now (a
    // supervisor, a benchmark); `println!` would panic then.
    let _ = writeln!(std::io::stdout(), "confide-server stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered when installed (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn admin(config: &Config, command: &Admin) -> Result<()> {
    match command {
        Admin::Fingerprint => {
            let identity = tls::load_or_create(
                &config.data_dir,
                config.tls.cert.as_deref(),
                config.tls.key.as_deref(),
            )?;
            println!("{}", tls::format_fingerprint(&identity.fingerprint));
        }
        Admin::Users => {
            let store = open_store(config)?;
            for user in store.users()? {
                let rooms = store.rooms_of(user.id)?.len();
                println!("{:>6}  {:<32}  {rooms} rooms", user.id, user.name);
            }
        }
        Admin::Rooms => {
            let store = open_store(config)?;
            for room in store.rooms()? {
                let members = store.members(room.id)?;
                let label = match (&room.name, room.kind) {
                    (Some(name), _) => name.to_string(),
                    (None, _) => members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" <-> "),
                };
                let kind = match room.kind {
                    StoredKind::Public => "public",
                    StoredKind::Private => "private",
                    StoredKind::Direct => "direct",
                };
                println!(
                    "{:>6}  {:<32}  {kind:<8}  {} members  {} entries",
                    room.id,
                    label,
                    members.len(),
                    store.last_seq(room.id)?
                );
            }
        }
    }
    Ok(())
}

fn open_store(config: &Config) -> Result<SqliteStore> {
    let path = config.data_dir.join(confide_server::DATABASE_FILE);
    anyhow::ensure!(path.exists(), "no database at {}", path.display());
    SqliteStore::open(&path).with_context(|| format!("cannot open {}", path.display()))
}
