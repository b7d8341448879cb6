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
    /// send time in the message), `catch_up` (sync: reconnect to caught up) or `none`.
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
    let kind = if report.latency_kind == "catch_up" {
        " (catch-up)"
    } else {
        ""
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

/// The human-readable table of `reports`, then ratios to the relay, then notes.
#[must_use]
pub fn table(reports: &[RunReport]) -> String {
    let rows: Vec<[String; 16]> = reports.iter().map(row).collect();
    let mut widths = COLUMNS.map(|title| title.chars().count());
    for cells in &rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = width - cell.chars().count();
            // Names left-aligned, figures right-aligned.
            if index < 2 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
            text.push_str("  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&COLUMNS.map(str::to_owned));
    for cells in &rows {
        line(cells);
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
            p99_ns: p99,
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
    }
}
