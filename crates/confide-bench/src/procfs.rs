//! What the kernel says about a process: CPU time and resident memory from `/proc`, and
//! the open-file limit.
//!
//! The parsers work on strings so they can be tested on fixtures; the readers are thin.
//! Linux only, which is where the bench runs. CPU times come in clock ticks (1/100 s on
//! Linux), so a measured phase of well under a second gives only a coarse CPU figure.

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// User plus system CPU seconds since the process started, all threads.
    pub cpu_seconds: f64,
    /// Resident memory now (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Highest resident memory so far (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
}

/// Reads a sample of process `pid`.
///
/// # Errors
/// If the process is gone or `/proc` cannot be read.
pub fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))?;
    let rss = status_kib(&status, "VmRSS").with_context(|| format!("no VmRSS for {pid}"))?;
    let peak = status_kib(&status, "VmHWM").unwrap_or(rss);
    Ok(Sample {
        cpu_seconds: ticks as f64 / clock_ticks_per_second() as f64,
        rss_bytes: rss * 1024,
        peak_rss_bytes: peak * 1024,
    })
}

/// CPU seconds used so far by each thread of process `pid`, summed by thread name
/// (`confide-persist`, `tokio-runtime-w`, ...). Threads that have exited are not
/// counted.
///
/// # Errors
/// If the process is gone.
pub fn thread_cpu(pid: u32) -> Result<BTreeMap<String, f64>> {
    let mut by_name = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("cannot list the threads of {pid}"))?;
    for task in tasks {
        let path = task?.path().join("stat");
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        if let (Some(name), Some(ticks)) = (command_name(&stat), cpu_ticks(&stat)) {
            *by_name.entry(name.to_owned()).or_insert(0.0) +=
                ticks as f64 / clock_ticks_per_second() as f64;
        }
    }
    Ok(by_name)
}

/// What each thread name used between two [`thread_cpu`] readings, largest first.
#[must_use]
pub fn thread_cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut delta: Vec<(String, f64)> = after
        .iter()
        .map(|(name, &seconds)| {
            let earlier = before.get(name).copied().unwrap_or(0.0);
            (name.clone(), (seconds - earlier).max(0.0))
        })
        .filter(|(_, seconds)| *seconds > 0.0)
        .collect();
    delta.sort_by(|a, b| b.1.total_cmp(&a.1));
    delta
}

/// The command name (field 2) of a `/proc/PID/stat` text: what is between the first
/// `(` and the last `)`.
#[must_use]
pub fn command_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// A sample of the bench process itself.
///
/// # Errors
/// As [`sample`].
pub fn sample_self() -> Result<Sample> {
    sample(std::process::id())
}

/// Clock ticks per second, the unit of CPU times in `/proc/PID/stat` (`getconf
/// CLK_TCK`, 100 on Linux), read from the auxiliary vector.
#[must_use]
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// `utime + stime` (fields 14 and 15) from the text of `/proc/PID/stat`, in clock
/// ticks. The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted from the last `)`.
#[must_use]
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // The first field after the name is field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `KEY:   1234 kB` value from the text of `/proc/PID/status`, in KiB.
#[must_use]
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(value)
    })
}

/// Raises this process's soft limit on open files to its hard limit (children inherit
/// it) and returns the new soft limit.
///
/// # Errors
/// If the limit cannot be changed.
pub fn raise_open_files_limit() -> Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .context("cannot raise the open-file limit to its hard limit")?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Fails with a clear message unless `needed` files can be open at once.
///
/// # Errors
/// If the soft limit is lower than `needed`.
pub fn require_open_files(needed: u64) -> Result<()> {
    let limit = raise_open_files_limit()?;
    if limit < needed {
        bail!(
            "this run needs about {needed} open files per process but the limit is {limit}; \
             raise it (ulimit -n {needed}, or the hard limit in /etc/security/limits.conf)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A real line, with a command name holding a space and a parenthesis.
        let stat = "4242 (confide (x) srv) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 2500 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 17926 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn thread_names_and_deltas() {
        assert_eq!(
            command_name("12 (confide-persist) S 1 2"),
            Some("confide-persist")
        );
        assert_eq!(command_name("12 (a (b)) S"), Some("a (b)"));
        assert_eq!(command_name("garbage"), None);
        let before = BTreeMap::from([("worker".to_owned(), 1.0), ("persist".to_owned(), 2.0)]);
        let after = BTreeMap::from([
            ("worker".to_owned(), 4.0),
            ("persist".to_owned(), 2.5),
            ("idle".to_owned(), 0.0),
        ]);
        assert_eq!(
            thread_cpu_delta(&before, &after),
            vec![("worker".to_owned(), 3.0), ("persist".to_owned(), 0.5)]
        );
        assert!(!thread_cpu(std::process::id()).unwrap().is_empty());
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tconfide-server\nVmPeak:\t  900000 kB\nVmHWM:\t   65536 kB\n\
                      VmRSS:\t   40960 kB\nThreads:\t4\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(40960));
        assert_eq!(status_kib(status, "VmHWM"), Some(65536));
        assert_eq!(status_kib(status, "Threads"), None);
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let own = sample_self().unwrap();
        assert!(own.rss_bytes > 0);
        assert!(own.peak_rss_bytes >= own.rss_bytes);
        assert!(clock_ticks_per_second() >= 1);
    }
}
