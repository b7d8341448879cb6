//! Files and voice messages through the `confide` binary, as a script would use them:
//! `send-file`, `get-file` and `send-voice`, with speech synthesized by espeak-ng.

use confide_testkit::ServerProcess;
use confide_testkit::process::workspace_binary;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn confide(profile: &Path, password: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(workspace_binary("confide").unwrap());
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("CONFIDE_HOME")
        .env("RUST_LOG", "warn");
    match password {
        Some(password) => command.env("CONFIDE_PASSWORD", password),
        None => command.env_remove("CONFIDE_PASSWORD"),
    };
    command.output().unwrap()
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Asserts exit code 1 with one line on stderr, and returns it.
fn fails(output: Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = String::from_utf8(output.stderr).unwrap();
    assert_eq!(text.lines().count(), 1, "one line on stderr: {text}");
    text.trim_end().to_owned()
}

/// Alice and Bob registered on a fresh server.
struct Two {
    _server: ServerProcess,
    data: tempfile::TempDir,
    alice: tempfile::TempDir,
    bob: tempfile::TempDir,
    work: tempfile::TempDir,
}

fn two() -> Two {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path()).unwrap();
    let addr = server.addr.to_string();
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    for (profile, name) in [(&alice, "alice"), (&bob, "bob")] {
        ok(confide(
            profile.path(),
            Some(&format!("{name} password")),
            &["register", "--server", &addr, "--user", name],
        ));
    }
    Two {
        _server: server,
        data,
        alice,
        bob,
        work: tempfile::tempdir().unwrap(),
    }
}

/// The file and voice messages of Bob's conversation with Alice, as JSON.
fn bobs_files(two: &Two) -> Vec<Value> {
    let out = ok(confide(
        two.bob.path(),
        None,
        &["--json", "history", "--to", "alice"],
    ));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|v| v["file"].is_object())
        .collect()
}

#[test]
fn send_file_and_get_file_through_the_binary() {
    let two = two();
    let original: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let path = two.work.path().join("photo.png");
    std::fs::write(&path, &original).unwrap();
    let sent = ok(confide(
        two.alice.path(),
        None,
        &["send-file", "--to", "bob", path.to_str().unwrap()],
    ));
    assert!(String::from_utf8_lossy(&sent.stdout).contains("sent photo.png"));

    let files = bobs_files(&two);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file["file"]["name"], "photo.png");
    assert_eq!(file["file"]["size"], 700_000);
    assert_eq!(file["file"]["mime"], "image/png");
    let id = file["message_id"].as_str().unwrap().to_owned();

    // Into a directory: saved under the sender's name for it.
    let downloads = two.work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let got = ok(confide(
        two.bob.path(),
        None,
        &["get-file", &id, "--out", downloads.to_str().unwrap()],
    ));
    assert!(String::from_utf8_lossy(&got.stdout).contains("saved photo.png"));
    assert_eq!(
        std::fs::read(downloads.join("photo.png")).unwrap(),
        original
    );

    // Not over an existing file, unless asked.
    let line = fails(confide(
        two.bob.path(),
        None,
        &["get-file", &id, "--out", downloads.to_str().unwrap()],
    ));
    assert!(line.contains("already exists"), "{line}");
    ok(confide(
        two.bob.path(),
        None,
        &[
            "get-file",
            &id,
            "--out",
            downloads.to_str().unwrap(),
            "--force",
        ],
    ));

    // Bad ids and missing files get one clear line.
    let line = fails(confide(two.bob.path(), None, &["get-file", "nothex"]));
    assert!(line.contains("not a message id"), "{line}");
    let line = fails(confide(
        two.bob.path(),
        None,
        &["get-file", &"0".repeat(32)],
    ));
    assert!(line.contains("no file or voice message"), "{line}");
    let line = fails(confide(
        two.alice.path(),
        None,
        &["send-file", "--to", "bob", "/definitely/not/here.txt"],
    ));
    assert!(line.contains("cannot read"), "{line}");

    // Only its sender deletes it: the message for everyone, the file from the server.
    let line = fails(confide(two.bob.path(), None, &["delete-file", &id]));
    assert!(line.contains("only its sender"), "{line}");
    let deleted = ok(confide(two.alice.path(), None, &["delete-file", &id]));
    assert!(
        String::from_utf8_lossy(&deleted.stdout)
            .contains("deleted photo.png for everyone, and its file from the server"),
        "{deleted:?}"
    );
    let gone = two.work.path().join("gone.png");
    let line = fails(confide(
        two.bob.path(),
        None,
        &["get-file", &id, "--out", gone.to_str().unwrap()],
    ));
    assert!(line.contains("no longer on the server"), "{line}");
    assert!(!gone.exists());
    let leftovers: Vec<_> = std::fs::read_dir(two.work.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let history = ok(confide(
        two.bob.path(),
        None,
        &["--json", "history", "--to", "alice"],
    ));
    let history = String::from_utf8(history.stdout).unwrap();
    assert!(
        history.lines().any(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            line["payload"] == "delete" && line["text"] == format!("(deleted {id})")
        }),
        "{history}"
    );
    // Twice: the message is deleted again, and the file is already gone.
    let again = ok(confide(
        two.alice.path(),
        Some("alice password"),
        &["--json", "delete-file", &id],
    ));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["type"], "file_deleted");
    assert_eq!(again["file_removed"], false);
}

/// Files under `dir` whose names end with `suffix`, with their sizes.
fn sizes(dir: &Path, suffix: &str) -> Vec<(PathBuf, u64)> {
    confide_testkit::files_under(dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .map(|path| {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            (path, len)
        })
        .collect()
}

/// Starts `confide` in the background and kills it (SIGKILL) once `progressed` holds,
/// polled every 10 ms for at most 30 s; returns whether it was still running then.
fn kill_when(profile: &Path, args: &[&str], mut progressed: impl FnMut() -> bool) -> bool {
    let mut child = Command::new(workspace_binary("confide").unwrap())
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("CONFIDE_HOME")
        .env_remove("CONFIDE_PASSWORD")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if progressed() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

#[test]
fn killed_send_file_and_get_file_resume_where_they_stopped() {
    let two = two();
    let original: Vec<u8> = (0..40_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = two.work.path().join("film.bin");
    std::fs::write(&path, &original).unwrap();
    let path_arg = path.to_str().unwrap().to_owned();
    let blobs = two.data.path().join("blobs");

    // Killed (SIGKILL) once the server holds part of the upload.
    let killed = kill_when(
        two.alice.path(),
        &["send-file", "--to", "bob", &path_arg],
        || {
            sizes(&blobs, ".part")
                .iter()
                .any(|(_, len)| *len > 4_000_000)
        },
    );
    assert!(killed, "the upload finished before it could be killed");
    let partial = sizes(&blobs, ".part");
    assert_eq!(partial.len(), 1, "{partial:?}");
    // Run again: it finishes the same blob instead of starting another.
    ok(confide(
        two.alice.path(),
        None,
        &["send-file", "--to", "bob", &path_arg],
    ));
    assert!(sizes(&blobs, ".part").is_empty());
    assert_eq!(
        sizes(&blobs, ".blob").len(),
        1,
        "one blob: the upload resumed"
    );

    let files = bobs_files(&two);
    let id = files[0]["message_id"].as_str().unwrap().to_owned();
    let downloads = two.work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let killed = kill_when(
        two.bob.path(),
        &["get-file", &id, "--out", downloads.to_str().unwrap()],
        || {
            sizes(&downloads, ".part")
                .iter()
                .any(|(_, len)| *len > 4_000_000)
        },
    );
    assert!(killed, "the download finished before it could be killed");
    assert!(
        !downloads.join("film.bin").exists(),
        "no file under its name yet"
    );
    let (_, kept) = sizes(&downloads, ".part")[0].clone();
    ok(confide(
        two.bob.path(),
        None,
        &["get-file", &id, "--out", downloads.to_str().unwrap()],
    ));
    assert!(std::fs::read(downloads.join("film.bin")).unwrap() == original);
    assert!(sizes(&downloads, ".part").is_empty());
    eprintln!("the download resumed from a part file of {kept} bytes");
}

/// Whether a program is on PATH; on CI (where the setup script installs it) its
/// absence fails the test instead of skipping it.
fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is missing on CI: scripts/setup.sh should install it"
        );
        eprintln!("SKIPPED: {program} is not installed (run scripts/setup.sh)");
    }
    found
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

/// Speech from espeak-ng, made 48 kHz mono by sox.
fn speech(dir: &Path, text: &str) -> PathBuf {
    let raw = dir.join("espeak.wav");
    let wav = dir.join("speech.wav");
    run("espeak-ng", &["-w", raw.to_str().unwrap(), text]);
    run(
        "sox",
        &[
            raw.to_str().unwrap(),
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            wav.to_str().unwrap(),
        ],
    );
    wav
}

#[test]
fn a_spoken_voice_message_arrives_and_sounds_like_the_original() {
    if !have("espeak-ng") || !have("sox") {
        return;
    }
    let two = two();
    let wav = speech(
        two.work.path(),
        "Confide keeps voice messages end to end encrypted. Nobody else can listen.",
    );
    let original = confide_audio::read_wav_file(&wav).unwrap();
    ok(confide(
        two.alice.path(),
        None,
        &["send-voice", "--to", "bob", wav.to_str().unwrap()],
    ));

    let files = bobs_files(&two);
    assert_eq!(files.len(), 1, "{files:?}");
    let voice = &files[0];
    assert_eq!(voice["payload"], "voice");
    assert_eq!(voice["file"]["mime"], "audio/ogg");
    let duration = voice["file"]["duration_ms"].as_u64().unwrap();
    let expected = original.duration_ms();
    assert!(
        duration.abs_diff(expected) <= 40,
        "{duration} ms vs {expected} ms"
    );
    let id = voice["message_id"].as_str().unwrap();
    let out = two.work.path().join("received.ogg");
    ok(confide(
        two.bob.path(),
        None,
        &["get-file", id, "--out", out.to_str().unwrap()],
    ));
    let decoded = confide_audio::decode_ogg_opus(&std::fs::read(&out).unwrap()).unwrap();
    let similarity = confide_audio::correlation(original.samples(), decoded.samples(), 4800);
    eprintln!("voice message correlation with the original: {similarity:.3}");
    assert!(similarity > 0.8, "correlation {similarity}");

    // An Ogg Opus file made by opusenc goes out as it is.
    if have("opusenc") {
        let ogg = two.work.path().join("speech.ogg");
        run(
            "opusenc",
            &["--quiet", wav.to_str().unwrap(), ogg.to_str().unwrap()],
        );
        ok(confide(
            two.alice.path(),
            None,
            &["send-voice", "--to", "bob", ogg.to_str().unwrap()],
        ));
        assert_eq!(bobs_files(&two).len(), 2);
    }

    // Anything else is refused with one line.
    let text = two.work.path().join("notes.txt");
    std::fs::write(&text, "not audio").unwrap();
    let line = fails(confide(
        two.alice.path(),
        None,
        &["send-voice", "--to", "bob", text.to_str().unwrap()],
    ));
    assert!(line.contains("not a WAV or Ogg Opus file"), "{line}");
}
