//! End-to-end smoke tests: the real `confide-bench` binary drives tiny workloads
//! against the real `confide-server` and against its reference relay, and must lose
//! and duplicate nothing. Timings are never asserted: this only checks that the tool
//! works and that its accounting adds up.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The runs bound themselves (`--max-seconds`); this bounds the test if they do not.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// `confide-server` next to the test executable, as built by `cargo test --workspace`
/// (or `cargo build -p confide-server`).
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("confide-server");
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` or build it with \
         `cargo build -p confide-server`",
        path.display()
    );
    path
}

/// Runs `confide-bench run ARGS --json` and returns one JSON object per run.
fn bench(args: &[&str]) -> Vec<Value> {
    let server = server_bin();
    let mut child = Command::new(env!("CARGO_BIN_EXE_confide-bench"))
        .arg("run")
        .args(args)
        .arg("--json")
        .arg("--max-seconds")
        .arg("30")
        .arg("--server-bin")
        .arg(&server)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > TEST_TIMEOUT {
            child.kill().unwrap();
            panic!("confide-bench did not finish within {TEST_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "confide-bench failed:\n{stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

fn assert_nothing_lost(run: &Value) {
    let label = format!("{} {}", run["workload"], run["target"]);
    assert_eq!(run["lost"], 0, "{label}: {run}");
    assert_eq!(run["duplicated"], 0, "{label}: {run}");
    assert_eq!(run["misrouted"], 0, "{label}: {run}");
    assert_eq!(run["send_errors"], 0, "{label}: {run}");
    assert_eq!(run["connections_lost"], 0, "{label}: {run}");
    assert_eq!(run["timed_out"], false, "{label}: {run}");
    assert_eq!(
        run["deliveries"], run["expected_deliveries"],
        "{label}: {run}"
    );
}

#[test]
fn tiny_fanout_against_confide_and_the_relay() {
    let runs = bench(&[
        "--workload",
        "fanout",
        "--users",
        "5",
        "--senders",
        "5",
        "--messages",
        "20",
        "--compare-relay",
    ]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["target"], "relay");
    assert_eq!(runs[1]["target"], "confide");
    for run in &runs {
        assert_nothing_lost(run);
        // 5 senders x 20 messages, each to all 5 users (the sender included).
        assert_eq!(run["deliveries"], 500, "{run}");
        assert_eq!(run["messages"], 100, "{run}");
    }
    assert_eq!(runs[0]["acked"], Value::Null);
    assert_eq!(runs[1]["acked"], 100);
    assert!(runs[1]["vs_relay"]["deliveries_per_second"].is_number());
}

#[test]
fn every_workload_at_toy_size() {
    let runs = bench(&[
        "--workload",
        "all",
        "--users",
        "6",
        "--senders",
        "2",
        "--messages",
        "10",
        "--rate",
        "40",
        "--missed",
        "30",
        "--idle",
        "12",
        "--idle-seconds",
        "0.2",
        "--file-mib",
        "1",
    ]);
    let workloads: Vec<&str> = runs
        .iter()
        .map(|run| run["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        workloads,
        [
            "fanout", "paced", "rooms", "idle", "sync", "direct", "files", "restart"
        ]
    );
    for run in &runs {
        assert_nothing_lost(run);
    }
    let by_name = |name: &str| {
        runs.iter()
            .find(|run| run["workload"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("fanout")["deliveries"], 2 * 10 * 6);
    assert_eq!(by_name("paced")["deliveries"], 2 * 10 * 6);
    // Rooms of 10 with 6 users: one room, everyone sends.
    assert_eq!(by_name("rooms")["deliveries"], 6 * 10 * 6);
    // Each direct message reaches its peer and comes back to its sender.
    assert_eq!(by_name("direct")["deliveries"], 6 * 10 * 2);
    // The 3 users who went away each catch up on the 30 messages they missed.
    assert_eq!(by_name("sync")["deliveries"], 3 * 30);
    assert_eq!(by_name("sync")["latency_kind"], "catch_up");
    // Every user logs in again after the server restarted.
    assert_eq!(by_name("restart")["deliveries"], 6);
    assert_eq!(by_name("restart")["latency_kind"], "login");
    assert_eq!(by_name("idle")["connections"], 12);
    assert!(by_name("idle")["rss_per_connection_bytes"].is_number());
}

#[test]
fn a_file_goes_up_and_down_through_confide_and_plain_tls() {
    let runs = bench(&["--workload", "files", "--file-mib", "3", "--users", "10,20"]);
    // Once, whatever `--users` says.
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_nothing_lost(run);
    assert_eq!(run["workload"], "files");
    assert_eq!(run["users"], 2);
    let files = &run["files"];
    assert_eq!(files["file_bytes"], 3 * 1024 * 1024, "{run}");
    assert_eq!(files["chunk_bytes"], 256 * 1024, "{run}");
    for side in ["confide", "plain_tls"] {
        let transfer = &files[side];
        assert_eq!(transfer["verified"], true, "{side}: {run}");
        for figure in [
            "upload_mib_per_second",
            "download_mib_per_second",
            "round_trip_mib_per_second",
        ] {
            assert!(
                transfer[figure].as_f64().unwrap() > 0.0,
                "{side} {figure}: {run}"
            );
        }
    }
    assert!(
        files["confide"]["server_peak_rss_bytes"].as_u64().unwrap() > 0,
        "{run}"
    );
    for ratio in ["upload", "download", "round_trip"] {
        assert!(files["vs_plain_tls"][ratio].is_number(), "{ratio}: {run}");
    }
}
