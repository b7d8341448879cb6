//! The real `confide-server` binary as a child process, for tests that kill it with
//! SIGKILL or drive it from the command line.

use crate::TIMEOUT;
use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Finds a binary of this workspace next to the running test executable
/// (`target/<profile>/NAME`), as built by `cargo test --workspace`.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("test executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built; run the tests with `cargo test --workspace`",
            path.display()
        );
    }
    Ok(path)
}

/// A `confide-server` child process.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its fingerprint as printed.
    pub fingerprint: String,
    data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` with `data_dir`, and waits for it to print
    /// its address and fingerprint.
    pub fn start(data_dir: &Path) -> Result<ServerProcess> {
        ServerProcess::start_logging(data_dir, "warn", None)
    }

    /// As [`ServerProcess::start`], with `RUST_LOG=rust_log`, and everything the
    /// process writes (standard output and error) appended to `log` when given.
    pub fn start_logging(
        data_dir: &Path,
        rust_log: &str,
        log: Option<&Path>,
    ) -> Result<ServerProcess> {
        let config = data_dir.join("test-config.toml");
        if !config.exists() {
            std::fs::create_dir_all(data_dir)?;
            std::fs::write(
                &config,
                "[argon2]\nmemory_kib = 256\niterations = 1\n\n[limits]\nmessages_per_second = 100000.0\nmessage_burst = 100000.0\naccount_messages_per_second = 100000.0\naccount_message_burst = 100000.0\nrequests_per_second = 100000.0\nrequest_burst = 100000.0\n",
            )?;
        }
        let mut child = Command::new(workspace_binary("confide-server")?)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .context("cannot start confide-server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut copy = match log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut addr = None;
            let mut fingerprint = None;
            let mut reported = false;
            // Keep reading after reporting so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = copy.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    addr = rest.trim().parse::<SocketAddr>().ok();
                }
                if let Some(rest) = line.strip_prefix("certificate fingerprint (SHA-256): ") {
                    fingerprint = Some(rest.trim().to_owned());
                }
                if !reported && let (Some(addr), Some(fingerprint)) = (addr, fingerprint.clone()) {
                    let _ = tx.send((addr, fingerprint));
                    reported = true;
                }
            }
        });
        match rx.recv_timeout(TIMEOUT) {
            Ok((addr, fingerprint)) => Ok(ServerProcess {
                child,
                addr,
                fingerprint,
                data_dir: data_dir.to_path_buf(),
            }),
            Err(_) => {
                let _ = child.kill();
                bail!("confide-server did not print its address in time")
            }
        }
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("confide-server did not exit after SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
