//! Files and live voice at the protocol level: blobs created, uploaded in chunks
//! (resumable, idempotent, strictly in order), downloaded by members, refused over the
//! limit, kept across restarts; voice relayed to listening connections only.
//!
//! The uploaded bytes stand in for ciphertext (the client core's encryption is tested in
//! `files`); the server never looks at them either way.

use crate::support::{create_room, login, user};
use confide_proto::{
    BlobId, BlobInfo, DeviceId, ErrorCode, Event, ProtoError, Reply, Request, RoomId, blob_chunks,
};
use confide_testkit::{RawClient, TestServer, files_under};

/// Chunk size used by most tests: small, so blobs of a few chunks stay small.
const CHUNK: u32 = 4096;

fn info(result: Result<Reply, ProtoError>) -> BlobInfo {
    match result {
        Ok(Reply::Blob(info)) => info,
        other => panic!("expected a blob, got {other:?}"),
    }
}

fn refused(result: Result<Reply, ProtoError>, code: ErrorCode) -> String {
    match result {
        Err(err) if err.code == code => err.message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

async fn create(client: &mut RawClient, room: RoomId, size: u64, chunk_size: u32) -> BlobInfo {
    let created = info(
        client
            .request(Request::CreateBlob {
                room,
                size,
                chunk_size,
            })
            .await
            .unwrap(),
    );
    assert_eq!((created.room, created.size), (room, size));
    assert_eq!((created.received, created.complete), (0, false));
    created
}

/// Chunk `index` of a blob of `size` bytes: recognisable stand-in ciphertext.
fn chunk_data(blob: &BlobInfo, index: u32) -> Vec<u8> {
    let start = u64::from(index) * u64::from(blob.chunk_size);
    let len = (blob.size - start).min(u64::from(blob.chunk_size));
    (0..len)
        .map(|n| ((start + n) * 131 + u64::from(blob.blob.0[0])) as u8)
        .collect()
}

async fn put(client: &mut RawClient, blob: &BlobInfo, index: u32) -> Result<Reply, ProtoError> {
    client
        .request(Request::PutChunk {
            blob: blob.blob,
            index,
            data: chunk_data(blob, index),
        })
        .await
        .unwrap()
}

/// Uploads chunks `range`, pipelined as the client core does, and returns the blob as
/// the last acknowledgement describes it.
async fn upload(client: &mut RawClient, blob: &BlobInfo, range: std::ops::Range<u32>) -> BlobInfo {
    let mut ids = Vec::new();
    for index in range {
        let request = Request::PutChunk {
            blob: blob.blob,
            index,
            data: chunk_data(blob, index),
        };
        ids.push((index, client.send_request(request).await.unwrap()));
    }
    let mut last = None;
    for (index, id) in ids {
        let acked = info(client.response(id).await.unwrap());
        assert_eq!(acked.received, index + 1);
        last = Some(acked);
    }
    last.unwrap()
}

async fn get(client: &mut RawClient, blob: BlobId, index: u32) -> Result<Vec<u8>, ProtoError> {
    match client
        .request(Request::GetChunk { blob, index })
        .await
        .unwrap()
    {
        Ok(Reply::Chunk {
            blob: got,
            index: got_index,
            data,
        }) => {
            assert_eq!((got, got_index), (blob, index));
            Ok(data)
        }
        Ok(other) => panic!("unexpected {other:?}"),
        Err(err) => Err(err),
    }
}

/// Downloads every chunk and checks it is what was uploaded.
async fn download_matches(client: &mut RawClient, blob: &BlobInfo) {
    for index in 0..blob_chunks(blob.size, blob.chunk_size) {
        assert_eq!(
            get(client, blob.blob, index).await.unwrap(),
            chunk_data(blob, index),
            "chunk {index}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_round_trip_in_chunks_including_an_empty_file() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let lobby = alice.lobby().await.unwrap();

    // An empty file is one chunk holding only its 16-byte tag.
    let empty = create(&mut alice, lobby, 16, 1024).await;
    assert_eq!(empty.chunks(), 1);
    let done = info(put(&mut alice, &empty, 0).await);
    assert_eq!((done.received, done.complete), (1, true));
    download_matches(&mut bob, &empty).await;

    // Three full chunks and a short one.
    let blob = create(&mut alice, lobby, 3 * u64::from(CHUNK) + 100, CHUNK).await;
    assert_eq!(blob.chunks(), 4);
    assert_eq!(blob.chunk_size, CHUNK);
    let partial = upload(&mut alice, &blob, 0..3).await;
    assert!(!partial.complete);
    // Not downloadable until complete, by anyone.
    refused(
        bob.request(Request::GetChunk {
            blob: blob.blob,
            index: 0,
        })
        .await
        .unwrap(),
        ErrorCode::NoSuchBlob,
    );
    assert_eq!(
        get(&mut alice, blob.blob, 0).await.unwrap_err().code,
        ErrorCode::NoSuchBlob
    );
    let complete = upload(&mut alice, &blob, 3..4).await;
    assert_eq!((complete.received, complete.complete), (4, true));
    download_matches(&mut bob, &blob).await;
    // The uploader is a member too.
    download_matches(&mut alice, &blob).await;
    assert_eq!(
        get(&mut bob, blob.blob, 4).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        get(&mut bob, BlobId([0x5a; 16]), 0).await.unwrap_err().code,
        ErrorCode::NoSuchBlob
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_chunks_asked_for_at_once_all_arrive() {
    // 12 MiB asked for before reading any of it: more than the socket buffers and the
    // server's window of unsent chunks hold, so the server has to wait for the reader.
    const LARGE: u32 = 256 * 1024;
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let blob = create(&mut alice, lobby, 48 * u64::from(LARGE), LARGE).await;
    assert!(upload(&mut alice, &blob, 0..48).await.complete);
    let mut ids = Vec::new();
    for index in 0..48 {
        let request = Request::GetChunk {
            blob: blob.blob,
            index,
        };
        ids.push((index, alice.send_request(request).await.unwrap()));
    }
    for (index, id) in ids {
        match alice.response(id).await.unwrap() {
            Ok(Reply::Chunk { data, .. }) => assert!(data == chunk_data(&blob, index)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_on_a_new_connection_and_resent_chunks_are_not_stored_twice() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let blob = create(&mut alice, lobby, 5 * u64::from(CHUNK), CHUNK).await;
    upload(&mut alice, &blob, 0..2).await;
    drop(alice);

    let mut alice = login(&server, "alice").await;
    let status = info(
        alice
            .request(Request::BlobStatus { blob: blob.blob })
            .await
            .unwrap(),
    );
    assert_eq!((status.received, status.complete), (2, false));
    assert_eq!(
        status,
        BlobInfo {
            received: 2,
            ..blob
        }
    );
    // A chunk sent again (its acknowledgement was lost) is acknowledged, not stored.
    let again = info(
        alice
            .request(Request::PutChunk {
                blob: blob.blob,
                index: 1,
                data: vec![0xee; CHUNK as usize],
            })
            .await
            .unwrap(),
    );
    assert_eq!(again.received, 2);
    let done = upload(&mut alice, &blob, 2..5).await;
    assert!(done.complete);
    // Once complete, any chunk sent again just gets the blob's state.
    assert_eq!(info(put(&mut alice, &blob, 4).await), done);
    download_matches(&mut alice, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_out_of_order_or_of_the_wrong_length_and_bad_shapes_are_refused() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let blob = create(&mut alice, lobby, u64::from(CHUNK) + 100, CHUNK).await;
    let message = refused(put(&mut alice, &blob, 1).await, ErrorCode::InvalidArgument);
    assert!(message.contains("expected chunk 0"), "{message}");
    let short = alice
        .request(Request::PutChunk {
            blob: blob.blob,
            index: 0,
            data: vec![1; 100],
        })
        .await
        .unwrap();
    let message = refused(short, ErrorCode::InvalidArgument);
    assert!(message.contains("4096 bytes"), "{message}");
    upload(&mut alice, &blob, 0..1).await;
    // The last chunk must be exactly the remainder.
    let long = alice
        .request(Request::PutChunk {
            blob: blob.blob,
            index: 1,
            data: vec![1; CHUNK as usize],
        })
        .await
        .unwrap();
    refused(long, ErrorCode::InvalidArgument);
    let status = info(
        alice
            .request(Request::BlobStatus { blob: blob.blob })
            .await
            .unwrap(),
    );
    assert_eq!((status.received, status.complete), (1, false));

    for (size, chunk_size, needle) in [
        (4096, 512, "chunk size 512"),
        (4096, 2 << 20, "chunk size"),
        (15, 1024, "16-byte tag"),
        (1024 + 5, 1024, "16-byte tag"),
    ] {
        let message = refused(
            alice
                .request(Request::CreateBlob {
                    room: lobby,
                    size,
                    chunk_size,
                })
                .await
                .unwrap(),
            ErrorCode::InvalidArgument,
        );
        assert!(message.contains(needle), "{message}");
    }
    // The connection is still fine.
    alice.ok(Request::Ping).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_limit_or_the_quota_are_refused_before_any_upload() {
    let server = TestServer::start_with(|config| {
        config.limits.max_file_bytes = 4096;
        config.limits.blob_quota_bytes = 10_000;
    })
    .await
    .unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    // 4097 bytes of plaintext: one byte over.
    let over = alice
        .request(Request::CreateBlob {
            room: lobby,
            size: 4097 + 2 * 16,
            chunk_size: 4096,
        })
        .await
        .unwrap();
    let message = refused(over, ErrorCode::FileTooLarge);
    assert_eq!(
        message,
        "file of 4.0 KiB (4097 bytes) exceeds this server's limit of 4.0 KiB (4096 bytes)"
    );
    let blobs = server.data_dir().join("blobs");
    assert!(files_under(&blobs).is_empty(), "{:?}", files_under(&blobs));
    // Exactly the limit is fine, twice; a third would exceed the storage quota.
    for _ in 0..2 {
        create(&mut alice, lobby, 4096 + 2 * 16, 4096).await;
    }
    let full = alice
        .request(Request::CreateBlob {
            room: lobby,
            size: 4096 + 2 * 16,
            chunk_size: 4096,
        })
        .await
        .unwrap();
    let message = refused(full, ErrorCode::FileTooLarge);
    assert!(message.contains("storage"), "{message}");
    // Another account has its own quota.
    let mut bob = user(&server, "bob").await;
    create(&mut bob, lobby, 4096 + 2 * 16, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_download_and_only_the_uploader_writes_or_sees_an_upload() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let secret = create_room(&mut alice, "secret", true).await;
    refused(
        bob.request(Request::CreateBlob {
            room: secret,
            size: 100,
            chunk_size: CHUNK,
        })
        .await
        .unwrap(),
        ErrorCode::NotMember,
    );
    let blob = create(&mut alice, secret, 2 * u64::from(CHUNK), CHUNK).await;
    upload(&mut alice, &blob, 0..1).await;
    // Someone else cannot see or write the upload: it does not exist for them.
    refused(
        bob.request(Request::BlobStatus { blob: blob.blob })
            .await
            .unwrap(),
        ErrorCode::NoSuchBlob,
    );
    refused(put(&mut bob, &blob, 1).await, ErrorCode::NoSuchBlob);
    upload(&mut alice, &blob, 1..2).await;
    assert_eq!(
        get(&mut bob, blob.blob, 0).await.unwrap_err().code,
        ErrorCode::NotMember
    );
    // Once a member, bob downloads it, but still cannot write it.
    alice
        .ok(Request::Invite {
            room: secret,
            user: "bob".to_owned(),
        })
        .await
        .unwrap();
    bob.ok(Request::Join {
        name: "secret".to_owned(),
    })
    .await
    .unwrap();
    download_matches(&mut bob, &blob).await;
    refused(
        bob.request(Request::BlobStatus { blob: blob.blob })
            .await
            .unwrap(),
        ErrorCode::NoSuchBlob,
    );
    refused(put(&mut bob, &blob, 1).await, ErrorCode::NoSuchBlob);
    // Removed from the room, he cannot download it any more.
    alice
        .ok(Request::Kick {
            room: secret,
            user: "bob".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(
        get(&mut bob, blob.blob, 0).await.unwrap_err().code,
        ErrorCode::NotMember
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_laid_out_as_files_and_survive_a_restart() {
    let mut server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let complete = create(&mut alice, lobby, 2 * u64::from(CHUNK) + 7 + 16, CHUNK).await;
    let partial = create(&mut alice, lobby, 4 * u64::from(CHUNK), CHUNK).await;
    let dir = server.data_dir().join("blobs");
    let file = |blob: &BlobInfo, extension: &str| dir.join(format!("{}.{extension}", blob.blob));
    assert!(file(&complete, "meta").is_file() && file(&complete, "part").is_file());
    upload(&mut alice, &complete, 0..3).await;
    upload(&mut alice, &partial, 0..2).await;
    assert!(file(&complete, "blob").is_file() && !file(&complete, "part").exists());
    let stored = std::fs::read(file(&complete, "blob")).unwrap();
    let sent: Vec<u8> = (0..3)
        .flat_map(|index| chunk_data(&complete, index))
        .collect();
    assert_eq!(stored, sent);
    assert_eq!(
        std::fs::metadata(file(&partial, "part")).unwrap().len(),
        2 * u64::from(CHUNK)
    );
    let mut names: Vec<String> = files_under(&dir)
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = vec![
        format!("{}.blob", complete.blob),
        format!("{}.meta", complete.blob),
        format!("{}.meta", partial.blob),
        format!("{}.part", partial.blob),
    ];
    expected.sort();
    assert_eq!(names, expected);
    drop(alice);

    server.restart().await.unwrap();
    let mut alice = login(&server, "alice").await;
    download_matches(&mut alice, &complete).await;
    let status = info(
        alice
            .request(Request::BlobStatus { blob: partial.blob })
            .await
            .unwrap(),
    );
    assert_eq!((status.received, status.complete), (2, false));
    assert!(upload(&mut alice, &partial, 2..4).await.complete);
    download_matches(&mut alice, &partial).await;
    drop(alice);

    // The event log names blobs, rooms and sizes, and nothing of their content.
    server.stop().await.unwrap();
    let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap();
    let created = format!(
        "blob_created blob={} room={lobby} size={}",
        complete.blob, complete.size
    );
    assert!(log.contains(&created), "{log}");
    let finished = format!(
        "blob_complete blob={} room={lobby} size={}",
        partial.blob, partial.size
    );
    assert!(log.contains(&finished), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_deletes_a_blob_and_its_bytes_and_quota_go_for_good() {
    let mut server = TestServer::start_with(|config| {
        config.limits.blob_quota_bytes = 4 * u64::from(CHUNK);
    })
    .await
    .unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let lobby = alice.lobby().await.unwrap();
    let file = create(&mut alice, lobby, 2 * u64::from(CHUNK), CHUNK).await;
    upload(&mut alice, &file, 0..2).await;
    let going = create(&mut alice, lobby, 2 * u64::from(CHUNK), CHUNK).await;
    upload(&mut alice, &going, 0..1).await;
    let full = alice
        .request(Request::CreateBlob {
            room: lobby,
            size: u64::from(CHUNK),
            chunk_size: CHUNK,
        })
        .await
        .unwrap();
    refused(full, ErrorCode::FileTooLarge);

    // Only the uploader deletes: to anyone else the blob does not exist.
    let delete = |blob: &BlobInfo| Request::DeleteBlob { blob: blob.blob };
    refused(
        bob.request(delete(&file)).await.unwrap(),
        ErrorCode::NoSuchBlob,
    );
    download_matches(&mut bob, &file).await;
    alice.ok(delete(&file)).await.unwrap();
    let gone = get(&mut bob, file.blob, 0).await.unwrap_err();
    assert_eq!(gone.code, ErrorCode::NoSuchBlob);
    assert!(gone.message.contains("no longer on the server"), "{gone:?}");
    refused(
        alice.request(delete(&file)).await.unwrap(),
        ErrorCode::NoSuchBlob,
    );
    let dir = server.data_dir().join("blobs");
    let left: Vec<String> = files_under(&dir)
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|name| !name.starts_with(&file.blob.to_string())),
        "{left:?}"
    );

    // Its bytes count no more against the quota.
    let next = create(&mut alice, lobby, 2 * u64::from(CHUNK), CHUNK).await;
    // An upload in progress can be deleted too; its next chunk finds nothing.
    alice.ok(delete(&going)).await.unwrap();
    refused(put(&mut alice, &going, 1).await, ErrorCode::NoSuchBlob);
    refused(
        alice
            .request(Request::BlobStatus { blob: going.blob })
            .await
            .unwrap(),
        ErrorCode::NoSuchBlob,
    );
    drop((alice, bob));

    // Deleted for good: a restart brings neither back, nor their quota.
    server.restart().await.unwrap();
    let mut alice = login(&server, "alice").await;
    assert_eq!(
        get(&mut alice, file.blob, 0).await.unwrap_err().code,
        ErrorCode::NoSuchBlob
    );
    assert!(upload(&mut alice, &next, 0..2).await.complete);
    create(&mut alice, lobby, 2 * u64::from(CHUNK), CHUNK).await;
    drop(alice);
    server.stop().await.unwrap();
    let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap();
    let deleted = format!(
        "blob_deleted blob={} room={lobby} size={} complete=true user=alice",
        file.blob, file.size
    );
    assert!(log.contains(&deleted), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_older_than_the_retention_are_deleted() {
    let mut server = TestServer::start_with(|config| {
        config.limits.blob_retention_days = 30;
    })
    .await
    .unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let old = create(&mut alice, lobby, u64::from(CHUNK), CHUNK).await;
    let recent = create(&mut alice, lobby, u64::from(CHUNK), CHUNK).await;
    upload(&mut alice, &old, 0..1).await;
    upload(&mut alice, &recent, 0..1).await;
    drop(alice);
    server.stop().await.unwrap();
    // Make one upload 31 days old, as the server wrote it, and start again: expiry
    // runs at start (and every hour).
    let meta = server
        .data_dir()
        .join("blobs")
        .join(format!("{}.meta", old.blob));
    let text = std::fs::read_to_string(&meta).unwrap();
    let month_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 31 * 24 * 3600 * 1000;
    let aged: Vec<String> = text
        .lines()
        .map(|line| match line.split_once('=') {
            Some(("created_ms", _)) => format!("created_ms={month_ago}"),
            _ => line.to_owned(),
        })
        .collect();
    std::fs::write(&meta, aged.join("\n") + "\n").unwrap();
    server.restart().await.unwrap();
    let mut alice = login(&server, "alice").await;
    let expired = get(&mut alice, old.blob, 0).await.unwrap_err();
    assert_eq!(expired.code, ErrorCode::NoSuchBlob);
    assert!(expired.message.contains("expired"), "{expired:?}");
    assert!(!meta.exists());
    download_matches(&mut alice, &recent).await;
    drop(alice);
    server.stop().await.unwrap();
    let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap();
    let line = format!("blob_expired blob={} room={lobby} complete=true", old.blob);
    assert!(log.contains(&line), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_and_voice_are_not_held_to_the_general_request_rate() {
    let server = TestServer::start_with(|config| {
        config.limits.requests_per_second = 0.1;
        config.limits.request_burst = 6.0;
    })
    .await
    .unwrap();
    // Register, list rooms, create: three of the six general requests.
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let blob = create(&mut alice, lobby, 40 * u64::from(CHUNK), CHUNK).await;
    assert!(upload(&mut alice, &blob, 0..40).await.complete);
    download_matches(&mut alice, &blob).await;
    for _ in 0..50 {
        alice
            .ok(Request::SendVoice {
                room: lobby,
                body: vec![1; 100],
            })
            .await
            .unwrap();
    }
    // Other requests still have their own limit.
    let mut limited = false;
    for _ in 0..10 {
        match alice.request(Request::Ping).await.unwrap() {
            Ok(_) => {}
            Err(err) if err.code == ErrorCode::RateLimited => limited = true,
            Err(err) => panic!("{err}"),
        }
    }
    assert!(limited);
}

/// Voice events received so far, after a round trip that any earlier frame precedes.
async fn voices(client: &mut RawClient) -> Vec<(String, Option<DeviceId>, Vec<u8>)> {
    client.ok(Request::Ping).await.unwrap();
    let mut found = Vec::new();
    client.events.retain(|event| match event {
        Event::Voice {
            sender,
            device,
            body,
            ..
        } => {
            found.push((sender.to_string(), *device, body.clone()));
            false
        }
        _ => true,
    });
    found
}

async fn say(client: &mut RawClient, room: RoomId, body: &[u8]) {
    client
        .ok(Request::SendVoice {
            room,
            body: body.to_vec(),
        })
        .await
        .unwrap();
}

async fn listen(client: &mut RawClient, room: RoomId, on: bool) {
    client.ok(Request::Listen { room, on }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_voice_reaches_only_connections_that_listen() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut alice_phone = login(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let mut carol = user(&server, "carol").await;
    let mut dave = user(&server, "dave").await;
    let call = create_room(&mut alice, "call", false).await;
    for member in [&mut bob, &mut carol] {
        member
            .ok(Request::Join {
                name: "call".to_owned(),
            })
            .await
            .unwrap();
    }
    alice
        .ok(Request::SetDevice {
            device: DeviceId(7),
        })
        .await
        .unwrap();
    for client in [&mut alice, &mut alice_phone, &mut bob] {
        listen(client, call, true).await;
    }

    say(&mut alice, call, b"frame one").await;
    let expected = vec![("alice".to_owned(), Some(DeviceId(7)), b"frame one".to_vec())];
    assert_eq!(voices(&mut bob).await, expected);
    // The speaker's other device hears it; the connection that spoke does not.
    assert_eq!(voices(&mut alice_phone).await, expected);
    assert!(voices(&mut alice).await.is_empty());
    // A member who did not ask for voice gets none.
    assert!(voices(&mut carol).await.is_empty());

    // A non-member can neither listen nor speak.
    refused(
        dave.request(Request::Listen {
            room: call,
            on: true,
        })
        .await
        .unwrap(),
        ErrorCode::NotMember,
    );
    refused(
        dave.request(Request::SendVoice {
            room: call,
            body: b"hello".to_vec(),
        })
        .await
        .unwrap(),
        ErrorCode::NotMember,
    );

    // Switched off, bob hears nothing more; carol listens from now on.
    listen(&mut bob, call, false).await;
    listen(&mut carol, call, true).await;
    say(&mut alice_phone, call, b"frame two").await;
    assert!(voices(&mut bob).await.is_empty());
    let expected = vec![("alice".to_owned(), None, b"frame two".to_vec())];
    assert_eq!(voices(&mut carol).await, expected);
    assert_eq!(voices(&mut alice).await, expected);

    // Leaving ends listening: back in the room, carol must ask again.
    carol.ok(Request::Leave { room: call }).await.unwrap();
    carol
        .ok(Request::Join {
            name: "call".to_owned(),
        })
        .await
        .unwrap();
    say(&mut bob, call, b"frame three").await;
    assert!(voices(&mut carol).await.is_empty());
    assert_eq!(voices(&mut alice).await.len(), 1);

    // Voice is bounded like a message body.
    let max = server.config.limits.max_body_bytes as usize;
    refused(
        bob.request(Request::SendVoice {
            room: call,
            body: vec![0; max + 1],
        })
        .await
        .unwrap(),
        ErrorCode::MessageTooLarge,
    );
}
