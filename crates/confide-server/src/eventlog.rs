//! The server's event log: one line per connection, login and room event, in a file in
//! the data directory. It never records message content, passwords or tokens.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use tokio::sync::mpsc;

/// Lines waiting to be written before new ones are dropped (and counted).
const QUEUE: usize = 16_384;

/// Sends lines to the event log's writer task.
#[derive(Debug, Clone)]
pub struct EventLog {
    tx: mpsc::Sender<String>,
}

/// Owns the file; finishes when every [`EventLog`] handle is dropped.
#[derive(Debug)]
pub struct EventLogWriter {
    thread: std::thread::JoinHandle<()>,
}

impl EventLog {
    /// Opens (appending) `path` and starts the writer.
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<(EventLog, EventLogWriter)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("confide-eventlog".to_owned())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Some(line) = rx.blocking_recv() {
                    let mut ok = writeln!(out, "{line}").is_ok();
                    while let Ok(line) = rx.try_recv() {
                        ok &= writeln!(out, "{line}").is_ok();
                    }
                    if !(ok && out.flush().is_ok()) {
                        tracing::error!("cannot write the event log");
                    }
                }
                let _ = out.flush();
            })?;
        Ok((EventLog { tx }, EventLogWriter { thread }))
    }

    /// Records an event: a name and `key=value` fields, stamped with the time.
    pub fn record(&self, event: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        let mut line = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        line.push(' ');
        line.push_str(event);
        for (key, value) in fields {
            let _ = write!(line, " {key}={value}");
        }
        if self.tx.try_send(line).is_err() {
            tracing::warn!(event, "event log queue full, event dropped");
        }
    }
}

impl EventLogWriter {
    /// Waits until everything queued is written (all handles must be dropped first).
    pub fn finish(self) {
        if self.thread.join().is_err() {
            tracing::error!("event log writer panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_and_flushed_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let (log, writer) = EventLog::open(&path).unwrap();
        log.record("login", &[("user", &"alice"), ("conn", &7)]);
        log.record("logout", &[("user", &"alice")]);
        drop(log);
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].ends_with(" login user=alice conn=7"),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with(" logout user=alice"));
    }
}
