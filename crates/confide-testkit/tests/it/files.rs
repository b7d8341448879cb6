//! Files end to end through the client core: encrypted uploads to the server's blob
//! store, downloads checked against the sender's hash, the limit, resuming after a cut
//! connection or a stopped client, and what the server's disk holds.

use confide_client::{
    ClientError, ClientHandle, Content, EventStream, Progress, TransferError, TransferProgress,
    no_progress,
};
use confide_crypto::payload::{FilePointer, MessageId, Payload};
use confide_proto::{ErrorCode, RoomId, Target, UserName};
use confide_testkit::next_entry;
use confide_testkit::{TIMEOUT, TestServer, connect_user, files_under};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

async fn connect(
    addr: SocketAddr,
    profile: &Path,
    name: &str,
    register: bool,
) -> (ClientHandle, EventStream) {
    connect_user(addr, profile, name, register).await.unwrap()
}

/// Alice and Bob, with a private room both are in.
struct Pair {
    alice: ClientHandle,
    bob: ClientHandle,
    bob_events: EventStream,
    room: RoomId,
    alice_profile: tempfile::TempDir,
    _bob_profile: tempfile::TempDir,
    files: tempfile::TempDir,
}

async fn pair(server: &TestServer) -> Pair {
    let alice_profile = tempfile::tempdir().unwrap();
    let bob_profile = tempfile::tempdir().unwrap();
    let (alice, _alice_events) = connect(server.addr, alice_profile.path(), "alice", true).await;
    let (bob, bob_events) = connect(server.addr, bob_profile.path(), "bob", true).await;
    let room = alice
        .create_room(confide_proto::RoomName::parse("files").unwrap(), true)
        .await
        .unwrap()
        .id;
    alice
        .invite(room, UserName::parse("bob").unwrap())
        .await
        .unwrap();
    bob.join(confide_proto::RoomName::parse("files").unwrap())
        .await
        .unwrap();
    Pair {
        alice,
        bob,
        bob_events,
        room,
        alice_profile,
        _bob_profile: bob_profile,
        files: tempfile::tempdir().unwrap(),
    }
}

/// Deterministic, incompressible-looking bytes.
fn content(size: u64, seed: u8) -> Vec<u8> {
    let mut state = u64::from(seed) | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The next file or voice message in `room` from someone else.
async fn next_file(events: &mut EventStream, room: RoomId) -> FilePointer {
    next_file_message(events, room).await.1
}

/// The next file or voice message in `room` from someone else, with its message id.
async fn next_file_message(events: &mut EventStream, room: RoomId) -> (MessageId, FilePointer) {
    next_entry(events, room, |entry| match &entry.content {
        Content::Message { envelope, .. } => match &envelope.body {
            Payload::File(pointer) => Some((envelope.id, pointer.clone())),
            Payload::Voice(voice) => Some((envelope.id, voice.file.clone())),
            _ => None,
        },
        _ => None,
    })
    .await
}

/// The next message in `room` whose payload `wanted` picks.
async fn next_payload(
    events: &mut EventStream,
    room: RoomId,
    wanted: impl Fn(&Payload) -> bool,
) -> Payload {
    next_entry(events, room, |entry| match &entry.content {
        Content::Message { envelope, .. } if wanted(&envelope.body) => Some(envelope.body.clone()),
        _ => None,
    })
    .await
}

/// A progress callback that records the first and the largest `done` it saw.
fn recording() -> (Progress, Arc<AtomicU64>, Arc<AtomicU64>) {
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let most = Arc::new(AtomicU64::new(0));
    let (f, m) = (Arc::clone(&first), Arc::clone(&most));
    let progress: Progress = Arc::new(move |step: TransferProgress| {
        let _ = f.compare_exchange(u64::MAX, step.done, Ordering::SeqCst, Ordering::SeqCst);
        m.fetch_max(step.done, Ordering::SeqCst);
    });
    (progress, first, most)
}

/// Waits until `counter` passes `at` (bounded by TIMEOUT).
async fn wait_past(counter: &AtomicU64, at: u64) {
    tokio::time::timeout(TIMEOUT, async {
        while counter.load(Ordering::SeqCst) <= at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the transfer did not get going");
}

/// Bob saves `pointer` as `name` in the files directory and finds `expected` in it.
async fn bob_saves(pair: &Pair, pointer: &FilePointer, name: &str, expected: &[u8]) {
    let out = pair.files.path().join(name);
    let written = pair
        .bob
        .download_file(pointer, &out, false, no_progress())
        .await
        .unwrap();
    assert_eq!(written, expected.len() as u64);
    assert!(std::fs::read(&out).unwrap() == expected, "{name} differs");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_every_size_arrive_intact_in_a_room_and_a_direct_conversation() {
    let server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    for (size, name) in [(0, "empty.txt"), (1, "one.bin"), (10 * MIB, "ten.bin")] {
        let bytes = content(size, 3);
        let path = write_file(pair.files.path(), name, &bytes);
        let sent = pair
            .alice
            .send_file(Target::Room(pair.room), &path, no_progress())
            .await
            .unwrap();
        assert_eq!(sent.pointer.size, size);
        assert_eq!(sent.pointer.name, name);
        let pointer = next_file(&mut pair.bob_events, pair.room).await;
        assert_eq!(pointer.name, name);
        assert_eq!(pointer.size, size);
        let out = pair.files.path().join(format!("got-{name}"));
        let written = pair
            .bob
            .download_file(&pointer, &out, false, no_progress())
            .await
            .unwrap();
        assert_eq!(written, size);
        assert!(std::fs::read(&out).unwrap() == bytes, "{name} differs");
        // Saving again over it needs `overwrite`.
        let again = pair
            .bob
            .download_file(&pointer, &out, false, no_progress())
            .await
            .unwrap_err();
        assert!(
            matches!(again, ClientError::Transfer(ref e) if matches!(**e, TransferError::Exists { .. })),
            "{again}"
        );
    }

    // To one person: the direct conversation.
    let bytes = content(5000, 9);
    let path = write_file(pair.files.path(), "direct.pdf", &bytes);
    let sent = pair
        .alice
        .send_file(Target::User("bob".to_owned()), &path, no_progress())
        .await
        .unwrap();
    assert_eq!(sent.pointer.mime, "application/pdf");
    let pointer = next_file(&mut pair.bob_events, sent.room).await;
    bob_saves(&pair, &pointer, "direct-copy.pdf", &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_holds_a_plaintext_byte_of_a_file() {
    let server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    let canary = b"CANARY-7f3a9c-the-server-must-never-see-this";
    let mut bytes = Vec::new();
    for _ in 0..20_000 {
        bytes.extend_from_slice(canary);
    }
    let path = write_file(pair.files.path(), "secret-canary-name.txt", &bytes);
    pair.alice
        .send_file(Target::Room(pair.room), &path, no_progress())
        .await
        .unwrap();
    let pointer = next_file(&mut pair.bob_events, pair.room).await;
    bob_saves(&pair, &pointer, "copy.txt", &bytes).await;

    let files = files_under(server.data_dir());
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("blob")),
        "no blob files under the data directory: {files:?}"
    );
    for file in files {
        let stored = std::fs::read(&file).unwrap();
        assert!(
            !contains(&stored, canary),
            "{} holds the canary",
            file.display()
        );
        assert!(
            !contains(&stored, b"secret-canary-name"),
            "{} holds the file's name",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_limit_is_refused_before_any_byte_is_uploaded() {
    let server = TestServer::start_with(|config| config.limits.max_file_bytes = MIB)
        .await
        .unwrap();
    let pair = pair(&server).await;
    let fits = write_file(pair.files.path(), "fits.bin", &content(MIB, 1));
    pair.alice
        .send_file(Target::Room(pair.room), &fits, no_progress())
        .await
        .unwrap();
    let blobs_before = files_under(server.data_dir()).len();

    let big = write_file(pair.files.path(), "big.bin", &content(MIB + 1, 1));
    let (progress, _, most) = recording();
    let err = pair
        .alice
        .send_file(Target::Room(pair.room), &big, progress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FileTooLarge), "{err}");
    let text = err.to_string();
    assert!(text.contains("1.0 MiB"), "{text}");
    assert_eq!(most.load(Ordering::SeqCst), 0, "bytes were uploaded");
    assert_eq!(files_under(server.data_dir()).len(), blobs_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_a_cut_connection_and_a_stopped_client() {
    let mut server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    let bytes = content(12 * MIB, 5);
    let path = write_file(pair.files.path(), "long.bin", &bytes);

    // The connection is cut (the server restarts) mid-upload: it carries on by itself.
    let (progress, _, most) = recording();
    let alice = pair.alice.clone();
    let (room, upload_path) = (pair.room, path.clone());
    let upload = tokio::spawn(async move {
        alice
            .send_file(Target::Room(room), &upload_path, progress)
            .await
    });
    wait_past(&most, 2 * MIB).await;
    server.restart().await.unwrap();
    let sent = tokio::time::timeout(TIMEOUT * 2, upload)
        .await
        .expect("the upload did not finish")
        .unwrap()
        .unwrap();
    assert_eq!(sent.pointer.size, 12 * MIB);
    let pointer = next_file(&mut pair.bob_events, pair.room).await;
    bob_saves(&pair, &pointer, "long-copy.bin", &bytes).await;

    // The client stops mid-upload; sending the same file again resumes where the
    // server's copy ends.
    let other = content(12 * MIB, 6);
    let path = write_file(pair.files.path(), "second.bin", &other);
    let (progress, _, most) = recording();
    let alice = pair.alice.clone();
    let (room, upload_path) = (pair.room, path.clone());
    let upload = tokio::spawn(async move {
        alice
            .send_file(Target::Room(room), &upload_path, progress)
            .await
    });
    wait_past(&most, 4 * MIB).await;
    upload.abort();
    let _ = upload.await;
    pair.alice.close().await;
    let (alice, _events) = connect(server.addr, pair.alice_profile.path(), "alice", false).await;
    let (progress, first, _) = recording();
    alice
        .send_file(Target::Room(pair.room), &path, progress)
        .await
        .unwrap();
    let resumed_at = first.load(Ordering::SeqCst);
    assert!(
        resumed_at >= 2 * MIB,
        "resumed at {resumed_at}, not where it stopped"
    );
    let pointer = next_file(&mut pair.bob_events, pair.room).await;
    bob_saves(&pair, &pointer, "second-copy.bin", &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_survives_a_cut_connection_and_resumes_from_its_part_file() {
    let mut server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    let bytes = content(12 * MIB, 7);
    let path = write_file(pair.files.path(), "big.bin", &bytes);
    pair.alice
        .send_file(Target::Room(pair.room), &path, no_progress())
        .await
        .unwrap();
    let pointer = next_file(&mut pair.bob_events, pair.room).await;

    // Cut mid-download: the download carries on.
    let out = pair.files.path().join("first.bin");
    let (progress, _, most) = recording();
    let bob = pair.bob.clone();
    let (p, o) = (pointer.clone(), out.clone());
    let download = tokio::spawn(async move { bob.download_file(&p, &o, false, progress).await });
    wait_past(&most, 2 * MIB).await;
    server.restart().await.unwrap();
    tokio::time::timeout(TIMEOUT * 2, download)
        .await
        .expect("the download did not finish")
        .unwrap()
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);

    // Stopped mid-download: the next attempt starts from the part file.
    let out = pair.files.path().join("second.bin");
    let (progress, _, most) = recording();
    let bob = pair.bob.clone();
    let (p, o) = (pointer.clone(), out.clone());
    let download = tokio::spawn(async move { bob.download_file(&p, &o, false, progress).await });
    wait_past(&most, 4 * MIB).await;
    download.abort();
    let _ = download.await;
    assert!(
        !out.exists(),
        "a partial download is not under the chosen name"
    );
    let (progress, first, _) = recording();
    pair.bob
        .download_file(&pointer, &out, false, progress)
        .await
        .unwrap();
    let resumed_at = first.load(Ordering::SeqCst);
    assert!(resumed_at >= 2 * MIB, "resumed at {resumed_at}");
    assert!(std::fs::read(&out).unwrap() == bytes);
    let leftovers: Vec<_> = std::fs::read_dir(pair.files.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "part files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_or_wrong_key_saves_nothing() {
    let server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    let bytes = content(300_000, 8);
    let path = write_file(pair.files.path(), "doc.txt", &bytes);
    let sent = pair
        .alice
        .send_file(Target::Room(pair.room), &path, no_progress())
        .await
        .unwrap();
    let _ = next_file(&mut pair.bob_events, pair.room).await;

    // The same blob announced with another hash (a sender lying, or a swapped blob).
    let mut lying = sent.pointer.clone();
    lying.sha256[0] ^= 1;
    pair.alice
        .send(Target::Room(pair.room), Payload::File(lying))
        .await
        .unwrap();
    let pointer = next_file(&mut pair.bob_events, pair.room).await;
    let out = pair.files.path().join("lying.txt");
    let err = pair
        .bob
        .download_file(&pointer, &out, false, no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Transfer(ref e) if matches!(**e, TransferError::HashMismatch)),
        "{err}"
    );
    assert!(!out.exists());

    // The wrong key: the first chunk fails to decrypt.
    let mut wrong = sent.pointer.clone();
    wrong.key = confide_crypto::payload::FileKey::from_bytes([1; 32]);
    let out = pair.files.path().join("wrong.txt");
    let err = pair
        .bob
        .download_file(&wrong, &out, false, no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Transfer(ref e) if matches!(**e, TransferError::Crypto(_))),
        "{err}"
    );
    assert!(!out.exists());
    let leftovers = std::fs::read_dir(pair.files.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .count();
    assert_eq!(leftovers, 0);
}

/// The 100 MiB limit itself: a file of exactly the limit goes through (about 30 s in a
/// debug build) and one byte more does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_exactly_the_default_limit_goes_through() {
    let server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    let limit = server.config.limits.max_file_bytes;
    assert_eq!(limit, 100 * MIB);
    let bytes = content(limit, 11);
    let path = write_file(pair.files.path(), "limit.bin", &bytes);
    pair.alice
        .send_file(Target::Room(pair.room), &path, no_progress())
        .await
        .unwrap();
    let pointer = next_file(&mut pair.bob_events, pair.room).await;
    bob_saves(&pair, &pointer, "limit-copy.bin", &bytes).await;
    let over = write_file(pair.files.path(), "over.bin", &content(limit + 1, 12));
    let err = pair
        .alice
        .send_file(Target::Room(pair.room), &over, no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FileTooLarge));
}

/// The chat screen's `/file` and `/save` as its runner carries them out: progress on
/// the status line's channel, a result for the status line, and a saved file that
/// never overwrites one already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_screen_sends_and_saves_files() {
    use confide_cli::commands::run_effect;
    use confide_cli::tui::state::{Effect, Outcome};

    let server = TestServer::start().await.unwrap();
    let mut pair = pair(&server).await;
    let bytes = content(3 * MIB + 17, 5);
    let path = write_file(pair.files.path(), "chart data.bin", &bytes);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = |effect| run_effect(&pair.alice, effect, &tx);
    let outcome = run(Effect::SendFile {
        target: Target::Room(pair.room),
        path: path.clone(),
    })
    .await;
    assert_eq!(
        outcome,
        Some(Outcome::Done(
            Ok("sent chart data.bin (3.0 MiB)".to_owned())
        ))
    );
    let mut last = None;
    while let Ok(outcome) = rx.try_recv() {
        let Outcome::Progress {
            verb, done, total, ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!((verb, total), ("sending", bytes.len() as u64));
        assert!(last.is_none_or(|last| done > last), "went back to {done}");
        last = Some(done);
    }
    assert_eq!(last, Some(bytes.len() as u64));

    // Bob saves it into a directory, under the sender's name for it.
    let (id, pointer) = next_file_message(&mut pair.bob_events, pair.room).await;
    let saves = tempfile::tempdir().unwrap();
    let save = |out: Option<PathBuf>| Effect::SaveFile {
        pointer: Box::new(pointer.clone()),
        out,
    };
    let outcome = run_effect(&pair.bob, save(Some(saves.path().to_owned())), &tx).await;
    let saved = saves.path().join("chart data.bin");
    assert_eq!(
        outcome,
        Some(Outcome::Done(Ok(format!(
            "saved chart data.bin (3.0 MiB) to {}",
            saved.display()
        ))))
    );
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);
    // Saving again over it is refused, and the file is untouched.
    let Some(Outcome::Done(Err(err))) = run_effect(&pair.bob, save(Some(saved.clone())), &tx).await
    else {
        panic!()
    };
    assert!(
        err.ends_with("exists; give another path: /save N PATH"),
        "{err}"
    );
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);
    // A file that is not there, or a directory, is a clear error and sends nothing.
    for (bad, why) in [
        (pair.files.path().join("missing.txt"), "cannot read"),
        (pair.files.path().to_owned(), "is not a regular file"),
    ] {
        let Some(Outcome::Done(Err(err))) = run(Effect::SendFile {
            target: Target::Room(pair.room),
            path: bad,
        })
        .await
        else {
            panic!()
        };
        assert!(err.contains(why), "{err}");
    }

    // /reply and /react from bob's chat screen reach the room, naming the file message.
    assert_eq!(
        run_effect(
            &pair.bob,
            Effect::Reply {
                room: pair.room,
                to: id,
                text: "got it, thanks".to_owned(),
            },
            &tx,
        )
        .await,
        Some(Outcome::Done(Ok("reply sent".to_owned())))
    );
    assert_eq!(
        run_effect(
            &pair.bob,
            Effect::React {
                room: pair.room,
                target: id,
                emoji: "👍".to_owned(),
                add: true,
            },
            &tx,
        )
        .await,
        Some(Outcome::Done(Ok("reaction added".to_owned())))
    );
    let replied = next_payload(&mut pair.bob_events, pair.room, |body| {
        matches!(body, Payload::Reply { .. })
    })
    .await;
    assert_eq!(
        replied,
        Payload::Reply {
            to: id,
            text: "got it, thanks".to_owned()
        }
    );
    let reacted = next_payload(&mut pair.bob_events, pair.room, |body| {
        matches!(body, Payload::Reaction { .. })
    })
    .await;
    assert_eq!(
        reacted,
        Payload::Reaction {
            target: id,
            emoji: "👍".to_owned(),
            add: true
        }
    );

    // /delete: the message for everyone, then the file from the server.
    let delete = || Effect::Delete {
        room: pair.room,
        target: id,
        file: Some(Box::new(pointer.clone())),
    };
    assert_eq!(
        run(delete()).await,
        Some(Outcome::Done(Ok(
            "deleted chart data.bin, and its file from the server".to_owned()
        )))
    );
    let again = saves.path().join("again.bin");
    let Some(Outcome::Done(Err(err))) = run_effect(&pair.bob, save(Some(again)), &tx).await else {
        panic!()
    };
    assert!(err.contains("no longer on the server"), "{err}");
    assert_eq!(files_under(saves.path()), [saved]);
    assert_eq!(
        run(delete()).await,
        Some(Outcome::Done(Ok(
            "deleted chart data.bin; its file was no longer on the server".to_owned()
        )))
    );
}
