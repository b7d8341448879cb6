//! The `confide` and `confide-server` binaries driven end to end, as a script would.

use confide_testkit::process::workspace_binary;
use confide_testkit::{ServerProcess, TestServer};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `confide` with a profile, a password in the environment and no standard input.
fn confide(profile: &Path, password: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(workspace_binary("confide").unwrap());
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("CONFIDE_HOME");
    match password {
        Some(password) => command.env("CONFIDE_PASSWORD", password),
        None => command.env_remove("CONFIDE_PASSWORD"),
    };
    command.env("RUST_LOG", "warn");
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    output
}

/// Asserts exit code 1 with exactly one line on stderr, and returns that line.
fn fails(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let text = stderr(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {text}");
    assert!(lines[0].starts_with("confide: "), "{text}");
    lines[0].to_owned()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn register_send_listen_and_history_through_the_binaries() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path()).unwrap();
    let addr = server.addr.to_string();
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    let out = ok(confide(
        alice.path(),
        Some("alice password"),
        &["register", "--server", &addr, "--user", "alice"],
    ));
    // First contact pins the certificate the server printed.
    let fingerprint = server.fingerprint.replace(':', "");
    assert!(
        stderr(&out).replace(':', "").contains(&fingerprint),
        "{}",
        stderr(&out)
    );
    ok(confide(
        bob.path(),
        Some("bob password"),
        &["register", "--server", &addr, "--user", "bob"],
    ));
    // Bob listens for three messages in JSON while alice sends them.
    let listener = Command::new(workspace_binary("confide").unwrap())
        .args([
            "--profile",
            bob.path().to_str().unwrap(),
            "listen",
            "--json",
            "--count",
            "3",
            "--timeout",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ok(confide(
        alice.path(),
        None,
        &["send", "--room", "lobby", "hello", "everyone"],
    ));
    ok(confide(
        alice.path(),
        None,
        &["send", "--to", "bob", "psst"],
    ));
    let sent = ok(confide(
        alice.path(),
        None,
        &["--json", "send", "--room", "lobby", "third"],
    ));
    let ack = &json_lines(&stdout(&sent))[0];
    assert_eq!(ack["type"], "sent");
    assert_eq!(ack["room"], "lobby");
    let listened = listener.wait_with_output().unwrap();
    assert!(listened.status.success(), "{}", stderr(&listened));
    let messages: Vec<Value> = json_lines(&stdout(&listened))
        .into_iter()
        .filter(|line| line["type"] == "message")
        .collect();
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["hello everyone", "psst", "third"]);
    assert_eq!(messages[0]["sender"], "alice");
    assert_eq!(messages[0]["room"], "lobby");
    assert_eq!(messages[1]["kind"], "direct");
    assert_eq!(messages[1]["room"], "@alice");
    assert_eq!(messages[2]["seq"], ack["seq"]);
    assert!(messages[0]["ts"].as_str().unwrap().ends_with('Z'));
    // History prints the originals' log format.
    let history = ok(confide(bob.path(), None, &["history", "--room", "lobby"]));
    let lines: Vec<String> = stdout(&history).lines().map(str::to_owned).collect();
    let message_lines: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("alice: "))
        .collect();
    assert_eq!(message_lines.len(), 2, "{lines:?}");
    for (line, text) in message_lines.iter().zip(["hello everyone", "third"]) {
        let (stamp, rest) = line.split_at(10);
        assert!(
            stamp.starts_with('[') && stamp.ends_with(']') && stamp.as_bytes()[3] == b':',
            "{line}"
        );
        assert_eq!(rest, format!(" alice: {text}"));
    }
    let history = ok(confide(
        bob.path(),
        None,
        &["--json", "history", "--to", "alice"],
    ));
    let entries = json_lines(&stdout(&history));
    assert!(entries.iter().any(|entry| entry["text"] == "psst"));
    // A second listen starts where the first stopped: nothing is shown twice.
    let again = ok(confide(
        bob.path(),
        None,
        &["listen", "--json", "--timeout", "1"],
    ));
    let _ = again; // exits 0 or 1 depending on --timeout semantics; checked below
}

#[test]
fn listen_resumes_exactly_where_it_stopped() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path()).unwrap();
    let addr = server.addr.to_string();
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    ok(confide(
        alice.path(),
        Some("alice password"),
        &["register", "--server", &addr, "--user", "alice"],
    ));
    ok(confide(
        bob.path(),
        Some("bob password"),
        &["register", "--server", &addr, "--user", "bob"],
    ));
    for n in 0..5 {
        ok(confide(
            alice.path(),
            None,
            &["send", "--room", "lobby", &format!("m{n}")],
        ));
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let out = ok(confide(
            bob.path(),
            None,
            &[
                "--json",
                "listen",
                "--room",
                "lobby",
                "--count",
                "1",
                "--timeout",
                "20",
            ],
        ));
        for line in json_lines(&stdout(&out)) {
            if line["type"] == "message" {
                seen.push(line["text"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(seen, vec!["m0", "m1", "m2", "m3", "m4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_moderation_from_the_command_line() {
    let server = TestServer::start().await.unwrap();
    let addr = server.address();
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    let run = |profile: std::path::PathBuf, password: Option<&'static str>, args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            confide(&profile, password, &args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    let a = alice.path().to_path_buf();
    let b = bob.path().to_path_buf();
    ok(run(
        a.clone(),
        Some("alice password"),
        args(&["register", "--server", &addr, "--user", "alice"]),
    )
    .await
    .unwrap());
    ok(run(
        b.clone(),
        Some("bob password"),
        args(&["register", "--server", &addr, "--user", "bob"]),
    )
    .await
    .unwrap());
    ok(run(
        a.clone(),
        None,
        args(&["room", "create", "club", "--private"]),
    )
    .await
    .unwrap());
    let line = fails(
        run(b.clone(), None, args(&["room", "join", "club"]))
            .await
            .unwrap(),
    );
    assert!(line.contains("private"), "{line}");
    ok(
        run(a.clone(), None, args(&["room", "invite", "club", "bob"]))
            .await
            .unwrap(),
    );
    ok(run(b.clone(), None, args(&["room", "join", "club"]))
        .await
        .unwrap());
    let users = ok(run(
        a.clone(),
        None,
        args(&["--json", "users", "--room", "club"]),
    )
    .await
    .unwrap());
    let names: Vec<String> = json_lines(&stdout(&users))
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["alice", "bob"]);
    let line = fails(
        run(b.clone(), None, args(&["room", "kick", "club", "alice"]))
            .await
            .unwrap(),
    );
    assert!(line.contains("owner"), "{line}");
    ok(run(a.clone(), None, args(&["room", "ban", "club", "bob"]))
        .await
        .unwrap());
    let line = fails(
        run(b.clone(), None, args(&["room", "join", "club"]))
            .await
            .unwrap(),
    );
    assert!(line.contains("banned"), "{line}");
    let rooms = ok(run(b.clone(), None, args(&["--json", "rooms"]))
        .await
        .unwrap());
    let listed = json_lines(&stdout(&rooms));
    assert!(
        listed
            .iter()
            .any(|room| room["name"] == "lobby" && room["membership"] == "joined")
    );
    assert!(
        listed
            .iter()
            .all(|room| room["name"] != "club" || room["membership"] == "none")
    );
    let line = fails(
        run(b.clone(), None, args(&["send", "--room", "nowhere", "hi"]))
            .await
            .unwrap(),
    );
    assert!(line.contains("nowhere"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_fails_clearly() {
    let server = TestServer::start().await.unwrap();
    let addr = server.address();
    let profile = tempfile::tempdir().unwrap();
    let p = profile.path().to_path_buf();
    let run = move |password: Option<&'static str>, args: Vec<String>| {
        let p = p.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            confide(&p, password, &args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    // Not logged in yet.
    let line = fails(run(None, args(&["rooms"])).await.unwrap());
    assert!(line.contains("login"), "{line}");
    // No password and no terminal.
    let line = fails(
        run(
            None,
            args(&["register", "--server", &addr, "--user", "alice"]),
        )
        .await
        .unwrap(),
    );
    assert!(line.contains("CONFIDE_PASSWORD"), "{line}");
    ok(run(
        Some("alice password"),
        args(&["register", "--server", &addr, "--user", "alice"]),
    )
    .await
    .unwrap());
    let line = fails(
        run(
            Some("wrong password"),
            args(&["login", "--server", &addr, "--user", "alice"]),
        )
        .await
        .unwrap(),
    );
    assert!(line.contains("wrong password"), "{line}");
    let line = fails(
        run(
            Some("alice password"),
            args(&["register", "--server", &addr, "--user", "ALICE"]),
        )
        .await
        .unwrap(),
    );
    assert!(line.contains("taken"), "{line}");
    // A usage error exits 2.
    let out = run(None, args(&["send", "no target"])).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A wrong explicit fingerprint is refused.
    let wrong = "00".repeat(32);
    let line = fails(
        run(None, args(&["--fingerprint", &wrong, "rooms"]))
            .await
            .unwrap(),
    );
    assert!(
        line.to_lowercase().contains("fingerprint") || line.contains("certificate"),
        "{line}"
    );
    // An unreachable server.
    let fresh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        confide(
            fresh.path(),
            Some("whatever1"),
            &["login", "--server", "127.0.0.1:1", "--user", "alice"],
        )
    })
    .await
    .unwrap();
    let line = fails(out);
    assert!(line.contains("127.0.0.1:1"), "{line}");
}

#[test]
fn operator_commands_read_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path()).unwrap();
    let addr = server.addr.to_string();
    let alice = tempfile::tempdir().unwrap();
    ok(confide(
        alice.path(),
        Some("alice password"),
        &["register", "--server", &addr, "--user", "alice"],
    ));
    ok(confide(alice.path(), None, &["room", "create", "garden"]));
    ok(confide(
        alice.path(),
        None,
        &["send", "--room", "garden", "hello"],
    ));
    assert!(server.terminate().unwrap().success());
    let admin = |args: &[&str]| {
        let output = Command::new(workspace_binary("confide-server").unwrap())
            .args(["--data-dir", data.path().to_str().unwrap(), "admin"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let fingerprint = admin(&["fingerprint"]);
    assert_eq!(fingerprint.trim(), server.fingerprint);
    let users = admin(&["users"]);
    assert!(users.contains("alice"), "{users}");
    let rooms = admin(&["rooms"]);
    let garden = rooms.lines().find(|line| line.contains("garden")).unwrap();
    // Created, then one message: two entries, one member.
    assert!(
        garden.contains("1 members") && garden.contains("2 entries"),
        "{garden}"
    );
    // Without a database, a clear error.
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(workspace_binary("confide-server").unwrap())
        .args([
            "--data-dir",
            empty.path().to_str().unwrap(),
            "admin",
            "users",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no database"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn verify_shows_the_same_safety_number_on_both_sides_and_records_it() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path()).unwrap();
    let addr = server.addr.to_string();
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    for (profile, user) in [(&alice, "alice"), (&bob, "bob")] {
        ok(confide(
            profile.path(),
            Some("long enough password"),
            &["register", "--server", &addr, "--user", user],
        ));
    }
    let a = json_lines(&stdout(&ok(confide(
        alice.path(),
        None,
        &["--json", "verify", "bob"],
    ))));
    let b = json_lines(&stdout(&ok(confide(
        bob.path(),
        None,
        &["--json", "verify", "alice"],
    ))));
    assert_eq!(a[0]["safety_number"], b[0]["safety_number"]);
    assert_eq!(a[0]["emoji"], b[0]["emoji"]);
    let digits = a[0]["safety_number"].as_str().unwrap();
    assert_eq!(digits.split(' ').count(), 12, "{digits}");
    assert_eq!(a[0]["verified"], false);
    assert_eq!(a[0]["emoji"].as_array().unwrap().len(), 7);

    // Recording the comparison sticks across runs.
    ok(confide(alice.path(), None, &["verify", "bob", "--confirm"]));
    let again = json_lines(&stdout(&ok(confide(
        alice.path(),
        None,
        &["--json", "verify", "bob"],
    ))));
    assert_eq!(again[0]["verified"], true);
    assert_eq!(again[0]["key_changed"], false);

    // Bob reinstalls (a new profile, so a new identity key): alice is warned loudly and
    // the verification is gone.
    let bob2 = tempfile::tempdir().unwrap();
    ok(confide(
        bob2.path(),
        Some("long enough password"),
        &["login", "--server", &addr, "--user", "bob"],
    ));
    let text = stdout(&ok(confide(alice.path(), None, &["verify", "bob"])));
    assert!(
        text.contains("WARNING: bob's identity key changed"),
        "{text}"
    );
    assert!(text.contains("bob is not verified"), "{text}");

    // Nobody by that name, or nobody with keys yet.
    let line = fails(confide(alice.path(), None, &["verify", "nobody"]));
    assert!(line.contains("no such user"), "{line}");

    // No key material in the server's data directory or in what the profile stores in
    // the clear.
    for entry in std::fs::read_dir(alice.path().join("keys")).unwrap() {
        let folder = entry.unwrap().path();
        let sealed = std::fs::read(folder.join("device.sealed")).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"alice"));
    }
}

#[test]
fn keygen_writes_a_private_fernet_key_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.key");
    let out = ok(confide(
        profile.path(),
        None,
        &["keygen", "--out", path.to_str().unwrap()],
    ));
    assert!(stderr(&out).contains("weaker"), "{}", stderr(&out));
    let text = std::fs::read_to_string(&path).unwrap();
    let key = confide_crypto::shared_key::SharedKey::from_key_file(&text).unwrap();
    assert_eq!(text.trim().len(), 44);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let line = fails(confide(
        profile.path(),
        None,
        &["keygen", "--out", path.to_str().unwrap()],
    ));
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    ok(confide(
        profile.path(),
        None,
        &["keygen", "--out", path.to_str().unwrap(), "--force"],
    ));
    let replaced = std::fs::read_to_string(&path).unwrap();
    assert_ne!(replaced, text);
    drop(key);
}
