//! The process under test, as a child of the bench: the real `confide-server` binary or
//! the reference relay (this same executable's `relay` subcommand).
//!
//! Both listen on `127.0.0.1:0` and print their address on stdout; the bench reads it,
//! samples the child's CPU time and memory from `/proc`, and stops it with SIGTERM (then
//! SIGKILL) at the end of the run. Each Confide server gets a fresh temporary data
//! directory and a generated configuration that lifts the abuse limits far above the
//! load and makes password hashing cheap, so that neither shapes the measurement.

use crate::procfs;
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a child may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which program a [`TargetProcess`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The real `confide-server`, over TLS.
    Confide,
    /// The reference plaintext relay.
    Relay,
}

impl TargetKind {
    /// Lowercase name for reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Confide => "confide",
            TargetKind::Relay => "relay",
        }
    }
}

/// A running server or relay.
#[derive(Debug)]
pub struct TargetProcess {
    /// Which program.
    pub kind: TargetKind,
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// SHA-256 of the server's certificate (Confide only).
    pub fingerprint: Option<[u8; 32]>,
    dir: tempfile::TempDir,
}

/// The server's default limit on the size of a file (100 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// The configuration for a Confide server under load: real TLS, real durable storage,
/// but abuse limits far above anything the bench does and cheap password hashing.
/// Files of up to `max_file_bytes` are accepted, and an account may store ten of them.
#[must_use]
pub fn server_config(
    outbound_queue: usize,
    max_inflight_sends: usize,
    max_file_bytes: u64,
) -> String {
    let blob_quota_bytes = max_file_bytes.saturating_mul(10);
    format!(
        "# Written by confide-bench.\n\
         [argon2]\n\
         memory_kib = 64\n\
         iterations = 1\n\
         \n\
         [limits]\n\
         outbound_queue = {outbound_queue}\n\
         max_inflight_sends = {max_inflight_sends}\n\
         messages_per_second = 1e9\n\
         message_burst = 1e9\n\
         account_messages_per_second = 1e9\n\
         account_message_burst = 1e9\n\
         requests_per_second = 1e9\n\
         request_burst = 1e9\n\
         login_attempts_per_address = 4000000000\n\
         login_failures_per_account = 4000000000\n\
         max_file_bytes = {max_file_bytes}\n\
         blob_quota_bytes = {blob_quota_bytes}\n\
         chunk_requests_per_second = 1e9\n\
         chunk_request_burst = 1e9\n"
    )
}

impl TargetProcess {
    /// Starts `confide-server` with a new data directory.
    ///
    /// # Errors
    /// If it cannot be started or does not print its address and fingerprint in time.
    pub fn start_confide(server_bin: &Path, config: &str) -> Result<TargetProcess> {
        let dir = tempfile::Builder::new()
            .prefix("confide-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        std::fs::write(dir.path().join("bench.toml"), config)
            .context("cannot write the server config")?;
        let command = confide_command(server_bin, dir.path());
        TargetProcess::spawn(TargetKind::Confide, command, dir)
            .with_context(|| format!("cannot run {}", server_bin.display()))
    }

    /// Stops `confide-server` and starts it again on the same data directory and
    /// configuration (on a new port: see [`TargetProcess::addr`]).
    ///
    /// # Errors
    /// If it is not Confide, does not stop, or does not start again.
    pub fn restart(&mut self, server_bin: &Path) -> Result<()> {
        if self.kind != TargetKind::Confide {
            bail!("only confide-server restarts");
        }
        self.stop()?;
        let command = confide_command(server_bin, self.dir.path());
        let (child, announced) = TargetProcess::launch(self.kind, command, self.dir.path())
            .with_context(|| format!("cannot run {} again", server_bin.display()))?;
        self.child = child;
        self.take(announced)
    }

    /// Starts the reference relay (`BENCH_EXE relay --listen 127.0.0.1:0`).
    ///
    /// # Errors
    /// If it cannot be started or does not print its address in time.
    pub fn start_relay(bench_exe: &Path) -> Result<TargetProcess> {
        let dir = tempfile::Builder::new()
            .prefix("confide-bench-relay-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let mut command = Command::new(bench_exe);
        command.arg("relay").arg("--listen").arg("127.0.0.1:0");
        TargetProcess::spawn(TargetKind::Relay, command, dir)
            .context("cannot run the reference relay")
    }

    fn spawn(kind: TargetKind, command: Command, dir: tempfile::TempDir) -> Result<Self> {
        let (child, announced) = TargetProcess::launch(kind, command, dir.path())?;
        let mut target = TargetProcess {
            kind,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fingerprint: None,
            dir,
        };
        target.take(announced)?;
        Ok(target)
    }

    /// Takes the address and fingerprint the child printed.
    fn take(&mut self, announced: Option<Announced>) -> Result<()> {
        let Some(announced) = announced else {
            let log = self.stderr_tail(20);
            bail!("it did not print its address in time; its stderr ends with:\n{log}")
        };
        self.addr = announced.addr.context("no address")?;
        self.fingerprint = announced.fingerprint;
        if !self.addr.ip().is_loopback() {
            bail!("the child listens on {}, not on loopback", self.addr);
        }
        Ok(())
    }

    /// Starts the child, its stderr appended to `dir/stderr.log`, and waits for it to
    /// print its address (`None` if it did not in time).
    fn launch(
        kind: TargetKind,
        mut command: Command,
        dir: &Path,
    ) -> Result<(Child, Option<Announced>)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .context("cannot create the child's log file")?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut announced = Announced::default();
            let mut reported = false;
            // Keep reading after the announcement so the child never blocks on a full
            // pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                announced.read_line(&line);
                if !reported && announced.is_complete(kind) {
                    let _ = tx.send(announced.clone());
                    reported = true;
                }
            }
        });
        Ok((child, rx.recv_timeout(START_TIMEOUT).ok()))
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and memory of the child now.
    ///
    /// # Errors
    /// If the child is gone.
    pub fn sample(&self) -> Result<procfs::Sample> {
        procfs::sample(self.pid())
    }

    /// Whether the child has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines the child wrote to stderr.
    #[must_use]
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Warnings and errors the child logged, counted by message (Confide logs with
    /// `tracing`; the relay logs nothing).
    #[must_use]
    pub fn logged_problems(&self) -> BTreeMap<String, u64> {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        count_problems(&text)
    }

    /// How the server's connections ended, counted by reason, from its event log.
    #[must_use]
    pub fn disconnect_reasons(&self) -> BTreeMap<String, u64> {
        let path = self.dir.path().join("data").join("events.log");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        count_disconnects(&text)
    }

    /// Stops the child: SIGTERM, then SIGKILL if it has not exited in time.
    ///
    /// # Errors
    /// If it cannot be signalled or waited for.
    pub fn stop(&mut self) -> Result<()> {
        if self.has_exited() {
            return Ok(());
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        // The child may exit between the check and the signal; that is fine.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!(
            "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed",
            self.kind.as_str()
        )
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The command that runs `confide-server` on the data directory and configuration in
/// `dir`, on a free loopback port.
fn confide_command(server_bin: &Path, dir: &Path) -> Command {
    let mut command = Command::new(server_bin);
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("bench.toml"))
        .env("RUST_LOG", "warn");
    command
}

/// What a child printed about itself.
#[derive(Debug, Clone, Default)]
struct Announced {
    addr: Option<SocketAddr>,
    fingerprint: Option<[u8; 32]>,
}

impl Announced {
    fn read_line(&mut self, line: &str) {
        if let Some(rest) = line.split(" listening on ").nth(1) {
            self.addr = rest.trim().parse().ok();
        }
        if let Some(rest) = line.strip_prefix("certificate fingerprint (SHA-256): ") {
            self.fingerprint = parse_fingerprint(rest.trim());
        }
    }

    fn is_complete(&self, kind: TargetKind) -> bool {
        self.addr.is_some() && (kind == TargetKind::Relay || self.fingerprint.is_some())
    }
}

/// Parses a fingerprint printed as 32 colon-separated hex pairs.
#[must_use]
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut pairs = text.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(pairs.next()?, 16).ok()?;
    }
    pairs.next().is_none().then_some(out)
}

fn count_problems(log: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        let Some(level) = ["ERROR", "WARN"]
            .into_iter()
            .find(|level| line.contains(level))
        else {
            continue;
        };
        // tracing's format: TIME LEVEL span: target: message fields. Keep the message
        // and drop the time and the per-connection fields, so that equal problems count
        // together.
        let message = line
            .split_once(level)
            .map_or(line, |(_, rest)| rest)
            .rsplit(": ")
            .next()
            .unwrap_or(line);
        let mut words: Vec<&str> = message.split_whitespace().collect();
        while words.last().is_some_and(|word| word.contains('=')) {
            words.pop();
        }
        *counts
            .entry(format!("{level} {}", words.join(" ")))
            .or_insert(0) += 1;
    }
    counts
}

fn count_disconnects(events: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in events.lines() {
        let mut words = line.split_whitespace();
        if words.nth(1) != Some("disconnect") {
            continue;
        }
        if let Some(reason) = words.find_map(|word| word.strip_prefix("reason=")) {
            *counts.entry(reason.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// `confide-server` next to this executable (as `cargo build` lays them out), or in the
/// parent directory when running from `target/<profile>/deps` (tests).
///
/// # Errors
/// If the bench's own path cannot be found.
pub fn default_server_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
    let mut dir = exe
        .parent()
        .context("the executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir.join("confide-server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_parsed() {
        let mut announced = Announced::default();
        announced.read_line("confide-server 0.1.0 listening on 127.0.0.1:40123");
        assert!(!announced.is_complete(TargetKind::Confide));
        assert!(announced.is_complete(TargetKind::Relay));
        let fingerprint = ["AB"; 32].join(":");
        announced.read_line(&format!("certificate fingerprint (SHA-256): {fingerprint}"));
        assert!(announced.is_complete(TargetKind::Confide));
        assert_eq!(announced.addr, Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(announced.fingerprint, Some([0xAB; 32]));
    }

    #[test]
    fn fingerprints_need_exactly_32_pairs() {
        assert_eq!(parse_fingerprint(&["00"; 31].join(":")), None);
        assert_eq!(parse_fingerprint(&["00"; 33].join(":")), None);
        assert_eq!(parse_fingerprint(&["zz"; 32].join(":")), None);
        assert_eq!(parse_fingerprint(&["0f"; 32].join(":")), Some([15; 32]));
    }

    #[test]
    fn config_lifts_the_limits() {
        let config = server_config(65536, 4096, DEFAULT_MAX_FILE_BYTES);
        assert!(config.contains("outbound_queue = 65536"));
        assert!(config.contains("max_file_bytes = 104857600"));
        assert!(config.contains("chunk_requests_per_second = 1e9"));
        assert!(config.contains("max_inflight_sends = 4096"));
        assert!(config.contains("memory_kib = 64"));
    }

    #[test]
    fn disconnects_are_counted_by_reason() {
        let events = "2026-01-01T00:00:00.000Z connect conn=1 peer=127.0.0.1:5\n\
                      2026-01-01T00:00:00.001Z disconnect conn=1 reason=closed\n\
                      2026-01-01T00:00:00.002Z disconnect conn=2 reason=too_slow\n\
                      2026-01-01T00:00:00.003Z disconnect conn=3 reason=closed\n";
        let counts = count_disconnects(events);
        assert_eq!(counts.get("closed"), Some(&2));
        assert_eq!(counts.get("too_slow"), Some(&1));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn problems_are_counted_by_message() {
        let log = "2026-01-01T00:00:00Z  WARN conn{conn=7 peer=127.0.0.1:1}: confide_server::outbound: outgoing queue full, disconnecting slow client conn=7\n\
                   2026-01-01T00:00:01Z  WARN conn{conn=8 peer=127.0.0.1:2}: confide_server::outbound: outgoing queue full, disconnecting slow client conn=8\n\
                   2026-01-01T00:00:02Z  INFO confide_server: started\n";
        let counts = count_problems(log);
        assert_eq!(
            counts.get("WARN outgoing queue full, disconnecting slow client"),
            Some(&2),
            "{counts:?}"
        );
        assert_eq!(counts.len(), 1);
    }
}
