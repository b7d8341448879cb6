//! What a run measured, as a human-readable table or one JSON object per run.
//!
//! Figures are measurements only: nothing here judges them against a target. When a
//! run has a relay counterpart, the Confide row carries its ratios to the relay.

use crate::server::TargetKind;
use crate::stats::LatencySummary;
use crate::workload::Workload;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Which workload.
    pub workload: Workload,
    /// Confide or the reference relay.
    pub target: TargetKind,
    /// Simulated users (for idle: connections).
    pub users: u32,
    /// Users that send in the measured phase.
    pub senders: u32,
    /// Messages sent in the measured phase, over all senders.
    pub messages: u64,
    /// Size of each message body.
    pub body_bytes: usize,
    /// Connections open in the measured phase.
    pub connections: u32,
    /// Seconds to connect, log in and join rooms (not measured further).
    pub setup_seconds: f64,
    /// Seconds from the first send to the last delivery (sync: to the last catch-up).
    pub measured_seconds: f64,
    /// Distinct messages received, summed over receivers.
    pub deliveries: u64,
    /// Deliveries there should have been.
    pub expected_deliveries: u64,
    /// Deliveries per second over the measured phase.
    pub deliveries_per_second: f64,
    /// Messages acknowledged by the server (durably stored); none for the relay.
    pub acked: Option<u64>,
    /// Acknowledged messages per second; none for the relay.
    pub acked_per_second: Option<f64>,
    /// What [`RunReport::latency`] measures: `end_to_end` (send to receive, from the
    /// send time in the message), `catch_up` (sync: reconnect to caught up), `login`
    /// (restart: connection to logged in) or `none`.
    pub latency_kind: &'static str,
    /// Latency percentiles.
    pub latency: LatencySummary,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Messages received more than once by the same receiver.
    pub duplicated: u64,
    /// Messages received by someone they were not meant for.
    pub misrouted: u64,
    /// Sends the server answered with an error.
    pub send_errors: u64,
    /// Connections the server closed during the run.
    pub connections_lost: u64,
    /// CPU seconds the server used during the measured phase.
    pub server_cpu_seconds: f64,
    /// Server CPU microseconds per delivery.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server resident memory at the end of the measured phase.
    pub server_rss_bytes: u64,
    /// Server peak resident memory over the whole run.
    pub server_peak_rss_bytes: u64,
    /// Server resident memory before the users connected (after a warm-up).
    pub server_baseline_rss_bytes: u64,
    /// Server memory per connection: growth over the baseline divided by connections.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU seconds the bench itself used during the measured phase.
    pub bench_cpu_seconds: f64,
    /// The bench's own resident memory at the end.
    pub bench_rss_bytes: u64,
    /// Whether the run hit its time bound before everything arrived.
    pub timed_out: bool,
    /// How the server's connections ended, by reason (from its event log).
    pub server_disconnects: BTreeMap<String, u64>,
    /// Warnings and errors the server logged, by message.
    pub server_problems: BTreeMap<String, u64>,
    /// Anything else worth knowing about this run.
    pub notes: Vec<String>,
    /// Confide divided by the relay on the same workload, when both ran.
    pub vs_relay: Option<Ratios>,
    /// The files workload's transfers, Confide's and the plain TLS reference's.
    pub files: Option<FilesReport>,
}

/// What the files workload measured: one file up and down through Confide, and the
/// same bytes copied up and down over plain TLS in the same run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesReport {
    /// Size of the file (pseudo-random bytes).
    pub file_bytes: u64,
    /// Plaintext bytes per chunk of Confide's transfer.
    pub chunk_bytes: u32,
    /// Through Confide: `send_file` until acknowledged, `download_file` of the pointer
    /// the receiver got.
    pub confide: Transfer,
    /// The same bytes over plain TLS 1.3 with the same stack.
    pub plain_tls: Transfer,
    /// Confide divided by plain TLS (throughputs: lower means slower).
    pub vs_plain_tls: TransferRatios,
}

/// One file moved up to a server and back down again.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Transfer {
    /// Seconds from the start of the upload until the server said it had the file.
    pub upload_seconds: f64,
    /// Seconds from the start of the download until the copy was durable on disk.
    pub download_seconds: f64,
    /// File MiB per second of the upload.
    pub upload_mib_per_second: f64,
    /// File MiB per second of the download.
    pub download_mib_per_second: f64,
    /// File MiB divided by upload plus download seconds: how fast a file gets from the
    /// sender's disk to the receiver's.
    pub round_trip_mib_per_second: f64,
    /// Server CPU seconds during the upload.
    pub server_cpu_upload_seconds: f64,
    /// Server CPU seconds during the download.
    pub server_cpu_download_seconds: f64,
    /// Client CPU seconds (the bench's process less the reference server's threads)
    /// during the upload.
    pub client_cpu_upload_seconds: f64,
    /// Client CPU seconds during the download.
    pub client_cpu_download_seconds: f64,
    /// The server's highest resident memory sampled during the transfers (not known
    /// for the in-process reference).
    pub server_peak_rss_bytes: Option<u64>,
    /// Whether the downloaded bytes equal the original (a run where they do not fails).
    pub verified: bool,
}

impl Transfer {
    /// A transfer of `bytes` that took these times, with the rates worked out.
    #[must_use]
    pub fn timed(bytes: u64, upload_seconds: f64, download_seconds: f64) -> Transfer {
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let rate = |seconds: f64| if seconds > 0.0 { mib / seconds } else { 0.0 };
        Transfer {
            upload_seconds,
            download_seconds,
            upload_mib_per_second: rate(upload_seconds),
            download_mib_per_second: rate(download_seconds),
            round_trip_mib_per_second: rate(upload_seconds + download_seconds),
            ..Transfer::default()
        }
    }
}

/// Confide's throughputs divided by the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TransferRatios {
    /// Upload MiB/s.
    pub upload: Option<f64>,
    /// Download MiB/s.
    pub download: Option<f64>,
    /// Round trip MiB/s.
    pub round_trip: Option<f64>,
}

impl TransferRatios {
    /// `confide` divided by `reference`, figure by figure.
    #[must_use]
    pub fn of(confide: &Transfer, reference: &Transfer) -> TransferRatios {
        let ratio = |a: f64, b: f64| (a > 0.0 && b > 0.0).then(|| a / b);
        TransferRatios {
            upload: ratio(
                confide.upload_mib_per_second,
                reference.upload_mib_per_second,
            ),
            download: ratio(
                confide.download_mib_per_second,
                reference.download_mib_per_second,
            ),
            round_trip: ratio(
                confide.round_trip_mib_per_second,
                reference.round_trip_mib_per_second,
            ),
        }
    }
}

/// Confide's figures divided by the relay's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    /// Deliveries per second (higher is better for Confide).
    pub deliveries_per_second: Option<f64>,
    /// p99 latency (lower is better for Confide).
    pub p99: Option<f64>,
    /// Server memory per connection (lower is better for Confide).
    pub rss_per_connection: Option<f64>,
}

impl RunReport {
    /// An empty report for a run, to be filled in by the workload.
    #[must_use]
    pub fn new(workload: Workload, target: TargetKind, users: u32, body_bytes: usize) -> Self {
        RunReport {
            workload,
            target,
            users,
            senders: 0,
            messages: 0,
            body_bytes,
            connections: 0,
            setup_seconds: 0.0,
            measured_seconds: 0.0,
            deliveries: 0,
            expected_deliveries: 0,
            deliveries_per_second: 0.0,
            acked: None,
            acked_per_second: None,
            latency_kind: "none",
            latency: LatencySummary::default(),
            lost: 0,
            duplicated: 0,
            misrouted: 0,
            send_errors: 0,
            connections_lost: 0,
            server_cpu_seconds: 0.0,
            server_cpu_us_per_delivery: None,
            server_rss_bytes: 0,
            server_peak_rss_bytes: 0,
            server_baseline_rss_bytes: 0,
            rss_per_connection_bytes: None,
            bench_cpu_seconds: 0.0,
            bench_rss_bytes: 0,
            timed_out: false,
            server_disconnects: BTreeMap::new(),
            server_problems: BTreeMap::new(),
            notes: Vec::new(),
            vs_relay: None,
            files: None,
        }
    }

    /// Sets `vs_relay` from the relay's report of the same workload.
    pub fn compare_with(&mut self, relay: &RunReport) {
        let ratio = |confide: f64, relay: f64| (relay > 0.0).then(|| confide / relay);
        let p99 = |report: &RunReport| {
            (report.latency_kind == "end_to_end" && report.latency.count > 0)
                .then_some(report.latency.p99_ns as f64)
        };
        self.vs_relay = Some(Ratios {
            deliveries_per_second: (self.deliveries > 0)
                .then(|| ratio(self.deliveries_per_second, relay.deliveries_per_second))
                .flatten(),
            p99: p99(self)
                .zip(p99(relay))
                .and_then(|(confide, relay)| ratio(confide, relay)),
            rss_per_connection: self
                .rss_per_connection_bytes
                .zip(relay.rss_per_connection_bytes)
                .and_then(|(confide, relay)| ratio(confide, relay)),
        });
    }

    /// One JSON object on one line.
    ///
    /// # Errors
    /// If serialisation fails (it does not for these types).
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

/// Formats nanoseconds for people: `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
#[must_use]
pub fn format_ns(ns: u64) -> String {
    let value = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", value / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", value / 1e6)
    } else {
        format!("{:.2} s", value / 1e9)
    }
}

/// Formats bytes for people: `512 B`, `7.9 KiB`, `45.3 MiB`, `1.20 GiB`.
#[must_use]
pub fn format_bytes(bytes: f64) -> String {
    const KIB: f64 = 1024.0;
    if bytes < KIB {
        format!("{bytes:.0} B")
    } else if bytes < KIB * KIB {
        format!("{:.1} KiB", bytes / KIB)
    } else if bytes < KIB * KIB * KIB {
        format!("{:.1} MiB", bytes / KIB / KIB)
    } else {
        format!("{:.2} GiB", bytes / KIB / KIB / KIB)
    }
}

/// Formats a rate with thousands separators: `1,234,567`.
#[must_use]
pub fn format_rate(rate: f64) -> String {
    let whole = rate.round().max(0.0) as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

const COLUMNS: [&str; 16] = [
    "workload",
    "target",
    "users",
    "senders",
    "messages",
    "deliveries/s",
    "acked msg/s",
    "p50",
    "p99",
    "max",
    "lost",
    "dup",
    "srv CPU/deliv",
    "srv RSS",
    "RSS/conn",
    "setup",
];

fn row(report: &RunReport) -> [String; 16] {
    let latency = |ns: u64| {
        if report.latency.count == 0 {
            "-".to_owned()
        } else {
            format_ns(ns)
        }
    };
    let kind = match report.latency_kind {
        "catch_up" => " (catch-up)",
        "login" => " (login)",
        _ => "",
    };
    [
        report.workload.as_str().to_owned(),
        report.target.as_str().to_owned(),
        report.users.to_string(),
        report.senders.to_string(),
        report.messages.to_string(),
        if report.deliveries == 0 {
            "-".to_owned()
        } else {
            format_rate(report.deliveries_per_second)
        },
        report
            .acked_per_second
            .map_or_else(|| "n/a".to_owned(), format_rate),
        latency(report.latency.p50_ns),
        format!("{}{kind}", latency(report.latency.p99_ns)),
        latency(report.latency.max_ns),
        report.lost.to_string(),
        report.duplicated.to_string(),
        report
            .server_cpu_us_per_delivery
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.2} µs")),
        format_bytes(report.server_rss_bytes as f64),
        report
            .rss_per_connection_bytes
            .map_or_else(|| "-".to_owned(), format_bytes),
        format!("{:.1} s", report.setup_seconds),
    ]
}

/// Lines of `cells` under `header`, columns padded to their widest cell: the first
/// `names` columns left-aligned, the figures right-aligned.
fn grid(header: &[String], rows: &[Vec<String>], names: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for cells in rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            if index < names {
                text.push_str(cell);
                text.push_str(&pad);
            } else {
                text.push_str(&pad);
                text.push_str(cell);
            }
            text.push_str("  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

const FILE_COLUMNS: [&str; 12] = [
    "target",
    "upload MiB/s",
    "download MiB/s",
    "round trip MiB/s",
    "upload",
    "download",
    "srv CPU up",
    "srv CPU down",
    "client CPU up",
    "client CPU down",
    "srv peak RSS",
    "verified",
];

fn file_row(target: &str, transfer: &Transfer) -> Vec<String> {
    let seconds = |value: f64| format!("{value:.2} s");
    vec![
        target.to_owned(),
        format!("{:.1}", transfer.upload_mib_per_second),
        format!("{:.1}", transfer.download_mib_per_second),
        format!("{:.1}", transfer.round_trip_mib_per_second),
        seconds(transfer.upload_seconds),
        seconds(transfer.download_seconds),
        seconds(transfer.server_cpu_upload_seconds),
        seconds(transfer.server_cpu_download_seconds),
        seconds(transfer.client_cpu_upload_seconds),
        seconds(transfer.client_cpu_download_seconds),
        transfer
            .server_peak_rss_bytes
            .map_or_else(|| "-".to_owned(), |bytes| format_bytes(bytes as f64)),
        if transfer.verified { "yes" } else { "NO" }.to_owned(),
    ]
}

/// The files workload's runs: Confide and plain TLS side by side, then the ratios.
fn files_table(runs: &[&RunReport]) -> String {
    let mut out = String::new();
    let header = FILE_COLUMNS.map(str::to_owned);
    for report in runs {
        let Some(files) = &report.files else {
            continue;
        };
        let _ = writeln!(
            out,
            "files: {} of pseudo-random bytes up and down ({} chunks); round trip = size / \
             (upload + download time)",
            format_bytes(files.file_bytes as f64),
            format_bytes(f64::from(files.chunk_bytes)),
        );
        let rows = [
            file_row(report.target.as_str(), &files.confide),
            file_row("plain TLS", &files.plain_tls),
        ];
        out.push_str(&grid(&header, &rows, 1));
        let show =
            |ratio: Option<f64>| ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "confide / plain TLS: upload {}, download {}, round trip {}",
            show(files.vs_plain_tls.upload),
            show(files.vs_plain_tls.download),
            show(files.vs_plain_tls.round_trip),
        );
    }
    out
}

/// The human-readable table of `reports` (the files workload's in a table of its own),
/// then ratios to the relay, then notes.
#[must_use]
pub fn table(reports: &[RunReport]) -> String {
    let (file_runs, message_runs): (Vec<&RunReport>, Vec<&RunReport>) =
        reports.iter().partition(|report| report.files.is_some());
    let mut out = String::new();
    if !message_runs.is_empty() || file_runs.is_empty() {
        let rows: Vec<Vec<String>> = message_runs
            .iter()
            .map(|report| row(report).to_vec())
            .collect();
        out.push_str(&grid(&COLUMNS.map(str::to_owned), &rows, 2));
    }
    if !file_runs.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&files_table(&file_runs));
    }
    let comparisons: Vec<&RunReport> = reports
        .iter()
        .filter(|report| report.vs_relay.is_some())
        .collect();
    if !comparisons.is_empty() {
        out.push_str("\nconfide / relay on the same workload:\n");
        for report in comparisons {
            let Some(ratios) = report.vs_relay else {
                continue;
            };
            let show =
                |ratio: Option<f64>| ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
            let _ = writeln!(
                out,
                "  {} {} users: deliveries/s {}, p99 {}, RSS/conn {}",
                report.workload.as_str(),
                report.users,
                show(ratios.deliveries_per_second),
                show(ratios.p99),
                show(ratios.rss_per_connection),
            );
        }
    }
    let mut notes = String::new();
    for report in reports {
        let mut lines = report.notes.clone();
        if report.timed_out {
            lines.push("hit its time bound before everything arrived".to_owned());
        }
        if report.misrouted > 0 {
            lines.push(format!(
                "{} messages reached the wrong user",
                report.misrouted
            ));
        }
        if report.send_errors > 0 {
            lines.push(format!("{} sends were refused", report.send_errors));
        }
        if report.connections_lost > 0 {
            lines.push(format!(
                "{} connections were closed by the server",
                report.connections_lost
            ));
        }
        for (reason, count) in &report.server_disconnects {
            if !matches!(
                reason.as_str(),
                "closed" | "shutdown" | "io_error:UnexpectedEof"
            ) {
                lines.push(format!("server disconnects ({reason}): {count}"));
            }
        }
        for (problem, count) in &report.server_problems {
            lines.push(format!("server logged {count}x: {problem}"));
        }
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(
            notes,
            "  {} {} {} users:",
            report.workload.as_str(),
            report.target.as_str(),
            report.users
        );
        for text in lines {
            let _ = writeln!(notes, "    - {text}");
        }
    }
    if !notes.is_empty() {
        out.push_str("\nnotes:\n");
        out.push_str(&notes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(target: TargetKind, rate: f64, p99: u64) -> RunReport {
        let mut report = RunReport::new(Workload::Fanout, target, 1000, 256);
        report.senders = 10;
        report.messages = 2000;
        report.deliveries = 2_000_000;
        report.expected_deliveries = 2_000_000;
        report.deliveries_per_second = rate;
        report.latency_kind = "end_to_end";
        report.latency = LatencySummary {
            count: 2_000_000,
            p50_ns: 1_500_000,
            p90_ns: 2_000_000,
            p99_ns: p99,
            p999_ns: 9_000_000,
            max_ns: 90_000_000,
        };
        report.server_rss_bytes = 50 * 1024 * 1024;
        report.rss_per_connection_bytes = Some(8192.0);
        report.setup_seconds = 2.5;
        if target == TargetKind::Confide {
            report.acked = Some(2000);
            report.acked_per_second = Some(1000.0);
            report.server_cpu_us_per_delivery = Some(1.25);
        }
        report
    }

    #[test]
    fn units_for_people() {
        assert_eq!(format_ns(850), "850 ns");
        assert_eq!(format_ns(12_345), "12.3 µs");
        assert_eq!(format_ns(4_560_000), "4.56 ms");
        assert_eq!(format_ns(1_230_000_000), "1.23 s");
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(8090.0), "7.9 KiB");
        assert_eq!(format_bytes(47_500_000.0), "45.3 MiB");
        assert_eq!(format_rate(1_234_567.4), "1,234,567");
        assert_eq!(format_rate(999.0), "999");
        assert_eq!(format_rate(0.0), "0");
    }

    #[test]
    fn ratios_to_the_relay() {
        let relay = sample(TargetKind::Relay, 1_000_000.0, 2_000_000);
        let mut confide = sample(TargetKind::Confide, 600_000.0, 3_000_000);
        confide.compare_with(&relay);
        let ratios = confide.vs_relay.unwrap();
        assert!((ratios.deliveries_per_second.unwrap() - 0.6).abs() < 1e-9);
        assert!((ratios.p99.unwrap() - 1.5).abs() < 1e-9);
        assert!((ratios.rss_per_connection.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn table_has_a_row_per_run_and_the_ratios() {
        let relay = sample(TargetKind::Relay, 1_000_000.0, 2_000_000);
        let mut confide = sample(TargetKind::Confide, 600_000.0, 3_000_000);
        confide.compare_with(&relay);
        confide.server_disconnects.insert("too_slow".to_owned(), 3);
        confide.server_disconnects.insert("closed".to_owned(), 1000);
        let text = table(&[relay, confide]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("workload  target"), "{text}");
        assert!(lines[1].starts_with("fanout    relay "), "{text}");
        assert!(lines[1].contains("1,000,000"), "{text}");
        assert!(lines[1].contains("n/a"), "{text}");
        assert!(lines[2].contains("600,000"), "{text}");
        assert!(lines[2].contains("3.00 ms"), "{text}");
        assert!(lines[2].contains("1.25 µs"), "{text}");
        assert!(
            text.contains("fanout 1000 users: deliveries/s 0.60x, p99 1.50x"),
            "{text}"
        );
        assert!(text.contains("server disconnects (too_slow): 3"), "{text}");
        assert!(!text.contains("(closed)"), "{text}");
        // Every row has the same width up to its last column.
        let header_width = lines[0].find("setup").unwrap();
        assert!(lines[1].len() >= header_width && lines[2].len() >= header_width);
    }

    #[test]
    fn files_get_a_table_of_their_own_with_ratios_to_plain_tls() {
        let mut report = RunReport::new(Workload::Files, TargetKind::Confide, 2, 0);
        let mut confide = Transfer::timed(100 * 1024 * 1024, 2.0, 1.0);
        confide.server_peak_rss_bytes = Some(60 * 1024 * 1024);
        confide.verified = true;
        let mut plain = Transfer::timed(100 * 1024 * 1024, 0.5, 0.5);
        plain.verified = true;
        assert!((confide.upload_mib_per_second - 50.0).abs() < 1e-9);
        assert!((confide.round_trip_mib_per_second - 100.0 / 3.0).abs() < 1e-9);
        let ratios = TransferRatios::of(&confide, &plain);
        assert!((ratios.upload.unwrap() - 0.25).abs() < 1e-9);
        assert!((ratios.download.unwrap() - 0.5).abs() < 1e-9);
        assert!((ratios.round_trip.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            TransferRatios::of(&Transfer::default(), &plain).upload,
            None
        );
        report.files = Some(FilesReport {
            file_bytes: 100 * 1024 * 1024,
            chunk_bytes: 256 * 1024,
            confide,
            plain_tls: plain,
            vs_plain_tls: ratios,
        });
        report.notes.push("a note".to_owned());
        let fanout = sample(TargetKind::Confide, 600_000.0, 3_000_000);
        let text = table(&[fanout, report.clone()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("workload  target"), "{text}");
        assert!(lines[1].starts_with("fanout"), "{text}");
        assert!(lines.len() > 6, "{text}");
        assert!(text.contains("files: 100.0 MiB"), "{text}");
        let confide_line = lines
            .iter()
            .find(|line| line.starts_with("confide "))
            .unwrap();
        assert!(confide_line.contains("50.0"), "{text}");
        assert!(confide_line.contains("100.0"), "{text}");
        assert!(confide_line.contains("60.0 MiB"), "{text}");
        assert!(confide_line.ends_with("yes"), "{text}");
        let plain_line = lines
            .iter()
            .find(|line| line.starts_with("plain TLS"))
            .unwrap();
        assert!(plain_line.contains("200.0"), "{text}");
        assert!(
            text.contains("confide / plain TLS: upload 0.25x, download 0.50x, round trip 0.33x"),
            "{text}"
        );
        assert!(
            text.contains("files confide 2 users:\n    - a note"),
            "{text}"
        );
        // Alone, the files run has no empty message table above it.
        let alone = table(&[report.clone()]);
        assert!(alone.starts_with("files: "), "{alone}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["workload"], "files");
        assert_eq!(json["files"]["confide"]["verified"], true);
        assert_eq!(
            json["files"]["plain_tls"]["server_peak_rss_bytes"],
            serde_json::Value::Null
        );
        assert!(json["files"]["vs_plain_tls"]["round_trip"].is_number());
    }

    #[test]
    fn json_is_one_line_with_the_fields() {
        let report = sample(TargetKind::Confide, 600_000.0, 3_000_000);
        let json = report.to_json().unwrap();
        assert!(!json.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["workload"], "fanout");
        assert_eq!(value["target"], "confide");
        assert_eq!(value["latency"]["p99_ns"], 3_000_000);
        assert_eq!(value["lost"], 0);
        assert_eq!(value["acked"], 2000);
        assert!(value["vs_relay"].is_null());
        assert!(value["files"].is_null());
    }
}
