//! Hostile and broken clients: each gets a clear error or a disconnect and nobody else
//! notices.

use confide_proto::{EntryKind, ErrorCode, Event, Reply, Request, Target};
use confide_testkit::raw::random_nonce;
use confide_testkit::{RawClient, TIMEOUT, TestServer};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// A logged-in bystander in the lobby who must keep getting service.
async fn bystander(server: &TestServer, name: &str) -> (RawClient, confide_proto::RoomId) {
    let mut client = server.raw().await.unwrap();
    client.register(name).await.unwrap();
    let lobby = client.lobby().await.unwrap();
    (client, lobby)
}

/// Checks that `client` can still send and receive in `room`.
async fn still_served(client: &mut RawClient, room: confide_proto::RoomId, text: &str) {
    let reply = client.say(Target::Room(room), text).await.unwrap().unwrap();
    assert!(matches!(reply, Reply::Sent { .. }));
    loop {
        if let Event::Entry(entry) = client.next_event(TIMEOUT).await.unwrap()
            && entry.kind
                == (EntryKind::Message {
                    body: text.as_bytes().to_vec(),
                })
        {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_tls_is_dropped() {
    let server = TestServer::start().await.unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(TIMEOUT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap();
    // The server answers with a TLS alert or just closes; either way, no service.
    assert!(matches!(read, Ok(n) if n < 64) || read.is_err());
    still_served(&mut alice, lobby, "after garbage").await;
    wait_for_log(&server, "handshake_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handshake_times_out_without_blocking_others() {
    let server = TestServer::start_with(|config| config.limits.handshake_timeout_secs = 1)
        .await
        .unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    // Connects and says nothing at all.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    still_served(&mut alice, lobby, "while someone stalls").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the server should close a stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_logs_in_is_timed_out() {
    let server = TestServer::start_with(|config| config.limits.login_timeout_secs = 1)
        .await
        .unwrap();
    let mut client = server.raw().await.unwrap();
    let fatal = client
        .closed(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fatal.code, ErrorCode::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_from_its_header() {
    let server = TestServer::start().await.unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    let mut client = server.raw().await.unwrap();
    // Announce 512 MiB and send none of it: the server must refuse on the header alone.
    client.write_bytes(&[0x20, 0, 0, 0]).await.unwrap();
    let fatal = client.closed(TIMEOUT).await.unwrap().unwrap();
    assert_eq!(fatal.code, ErrorCode::FrameTooLarge);
    assert!(
        fatal.message.contains("exceeds the limit"),
        "{}",
        fatal.message
    );
    still_served(&mut alice, lobby, "after a huge frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_inside_tls_gets_a_malformed_error() {
    let server = TestServer::start().await.unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    let mut client = server.raw().await.unwrap();
    client
        .write_bytes(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let fatal = client.closed(TIMEOUT).await.unwrap().unwrap();
    assert_eq!(fatal.code, ErrorCode::Malformed);
    still_served(&mut alice, lobby, "after garbage frames").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_body_limit_is_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(|config| config.limits.max_body_bytes = 1000)
        .await
        .unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    let err = alice
        .request(Request::Send {
            target: Target::Room(lobby),
            nonce: random_nonce(),
            body: vec![b'x'; 1001],
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::MessageTooLarge);
    still_served(&mut alice, lobby, "a small one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_and_others_keep_their_service() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 20.0;
        config.limits.message_burst = 50.0;
        config.limits.max_rate_violations = 100_000;
    })
    .await
    .unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    let mut flooder = server.raw().await.unwrap();
    flooder.register("flooder").await.unwrap();
    let mut ids = Vec::new();
    for index in 0..500 {
        let id = flooder
            .send_request(Request::Send {
                target: Target::Room(lobby),
                nonce: random_nonce(),
                body: format!("flood {index}").into_bytes(),
            })
            .await
            .unwrap();
        ids.push(id);
    }
    let mut accepted = 0;
    let mut limited = 0;
    for id in ids {
        match flooder.response(id).await.unwrap() {
            Ok(Reply::Sent { .. }) => accepted += 1,
            Err(err) if err.code == ErrorCode::RateLimited => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((50..500).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + limited, 500);
    still_served(&mut alice, lobby, "during a flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_do_not_raise_an_accounts_message_rate() {
    let server = TestServer::start_with(|config| {
        config.limits.account_messages_per_second = 1.0;
        config.limits.account_message_burst = 30.0;
        config.limits.max_rate_violations = 100_000;
    })
    .await
    .unwrap();
    let mut first = server.raw().await.unwrap();
    let token = first.register("alice").await.unwrap();
    let lobby = first.lobby().await.unwrap();
    let mut second = server.raw().await.unwrap();
    second.ok(Request::Resume { token }).await.unwrap();
    let mut accepted = 0;
    for index in 0..40 {
        let client = if index % 2 == 0 {
            &mut first
        } else {
            &mut second
        };
        match client
            .say(Target::Room(lobby), &format!("m{index}"))
            .await
            .unwrap()
        {
            Ok(_) => accepted += 1,
            Err(err) => assert_eq!(err.code, ErrorCode::RateLimited),
        }
    }
    // 30 in the burst plus at most a few refilled while the test ran.
    assert!((30..35).contains(&accepted), "accepted {accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_flooder_is_disconnected() {
    let server = TestServer::start_with(|config| {
        config.limits.requests_per_second = 10.0;
        config.limits.request_burst = 10.0;
        config.limits.max_rate_violations = 20;
    })
    .await
    .unwrap();
    let mut flooder = server.raw().await.unwrap();
    for _ in 0..200 {
        if flooder.send_request(Request::Ping).await.is_err() {
            break;
        }
    }
    let mut fatal = None;
    for _ in 0..250 {
        match flooder.next_frame(TIMEOUT).await.unwrap() {
            Some(confide_proto::ServerFrame::Fatal(err)) => fatal = Some(err),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(fatal.unwrap().code, ErrorCode::RateLimited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_fan_out_continues() {
    let server = TestServer::start_with(|config| config.limits.outbound_queue = 64)
        .await
        .unwrap();
    let (mut alice, lobby) = bystander(&server, "alice").await;
    let mut reader = server.raw().await.unwrap();
    reader.register("reader").await.unwrap();
    // The sleeper logs in and then never reads again.
    let mut sleeper = server.raw().await.unwrap();
    sleeper.register("sleeper").await.unwrap();
    let total = 300;
    // The reader reads all the while.
    let reading = tokio::spawn(async move {
        let mut seen = 0;
        while seen < total {
            if let Event::Entry(entry) = reader.next_event(TIMEOUT).await.unwrap()
                && matches!(entry.kind, EntryKind::Message { .. })
            {
                seen += 1;
            }
        }
        reader
    });
    // Big messages fill the sleeper's socket buffers and then its queue.
    let body = vec![b'z'; 32 * 1024];
    for _ in 0..total {
        let reply = alice
            .request(Request::Send {
                target: Target::Room(lobby),
                nonce: random_nonce(),
                body: body.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(reply, Reply::Sent { .. }));
    }
    // The reader got every message even though the sleeper stalled.
    let mut reader = tokio::time::timeout(TIMEOUT, reading)
        .await
        .unwrap()
        .unwrap();
    reader.ok(Request::Ping).await.unwrap();
    // The sleeper was disconnected for being too slow.
    let fatal_or_closed = sleeper.closed(TIMEOUT).await;
    assert!(fatal_or_closed.is_ok(), "{fatal_or_closed:?}");
    wait_for_log(&server, "reason=too_slow").await;
}

/// Waits (bounded) until the event log contains `needle`.
pub async fn wait_for_log(server: &TestServer, needle: &str) {
    for _ in 0..200 {
        let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the event log never said {needle}");
}
