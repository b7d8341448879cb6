//! The client core against a real server: messaging, pinning, reconnection and catch-up.

use confide_client::{
    Auth, Client, ClientConfig, ClientError, ClientEvent, ClientHandle, ConnectionState, Entry,
    EventStream, Profile, ServerAddress,
};
use confide_proto::{Password, RoomKind, Target, UserName};
use confide_testkit::{TIMEOUT, TestServer};
use std::path::Path;

fn address(server: &TestServer) -> ServerAddress {
    server.address().parse().unwrap()
}

fn password(name: &str) -> Password {
    Password(format!("{name} password"))
}

async fn connect(
    server: &TestServer,
    profile: &Path,
    auth: Auth,
) -> Result<(ClientHandle, EventStream), ClientError> {
    let config =
        ClientConfig::new(address(server), Profile::open(profile).unwrap(), auth).sync(true);
    Client::connect(config).await
}

async fn register(server: &TestServer, profile: &Path, name: &str) -> (ClientHandle, EventStream) {
    let auth = Auth::Register {
        username: UserName::parse(name).unwrap(),
        password: password(name),
    };
    connect(server, profile, auth).await.unwrap()
}

fn text(entry: &Entry) -> Option<String> {
    entry.text().map(str::to_owned)
}

/// Message texts from `events` until `count` have arrived (bounded by the timeout).
async fn messages(events: &mut EventStream, count: usize) -> Vec<(Entry, bool)> {
    let mut got = Vec::new();
    while got.len() < count {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("timed out")
            .expect("stream ended");
        if let ClientEvent::Entry { entry, live } = event
            && text(&entry).is_some()
        {
            got.push((entry, live));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_in_the_lobby_and_privately() {
    let server = TestServer::start().await.unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, _alice_events) = register(&server, dirs.0.path(), "alice").await;
    let (bob, mut bob_events) = register(&server, dirs.1.path(), "bob").await;
    assert!(alice.server().newly_pinned);
    let lobby = alice.room_id(&"lobby".parse().unwrap()).await.unwrap();
    for n in 0..100 {
        alice
            .send_text(Target::Room(lobby), &format!("hello {n}"))
            .await
            .unwrap();
    }
    let got = messages(&mut bob_events, 100).await;
    let texts: Vec<String> = got.iter().map(|(entry, _)| text(entry).unwrap()).collect();
    assert_eq!(
        texts,
        (0..100).map(|n| format!("hello {n}")).collect::<Vec<_>>()
    );
    assert!(
        got.iter()
            .all(|(entry, _)| entry.sender.as_str() == "alice")
    );
    let ack = alice
        .send_text(Target::User("bob".into()), "just you")
        .await
        .unwrap();
    let got = messages(&mut bob_events, 1).await;
    assert_eq!(got[0].0.room, ack.room);
    assert_eq!(text(&got[0].0).unwrap(), "just you");
    let rooms = bob.rooms().await.unwrap();
    let direct = rooms.iter().find(|info| info.id == ack.room).unwrap();
    assert_eq!(
        direct.kind,
        RoomKind::Direct {
            peer: "alice".parse().unwrap()
        }
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_sent_while_offline_arrive_at_the_next_login() {
    let server = TestServer::start().await.unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, bob_events) = register(&server, dirs.1.path(), "bob").await;
    bob.close().await;
    drop(bob_events);
    let (alice, _alice_events) = register(&server, dirs.0.path(), "alice").await;
    for n in 0..5 {
        alice
            .send_text(
                Target::User("bob".into()),
                &format!("while you were out {n}"),
            )
            .await
            .unwrap();
    }
    // Bob comes back with his saved session and sees each message once, in order.
    let (bob, mut bob_events) = connect(&server, dirs.1.path(), Auth::Resume).await.unwrap();
    let got = messages(&mut bob_events, 5).await;
    for (n, (entry, live)) in got.iter().enumerate() {
        assert_eq!(text(entry).unwrap(), format!("while you were out {n}"));
        assert!(!live, "caught up, not live");
    }
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_a_restart_and_misses_nothing() {
    let mut server = TestServer::start().await.unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, _alice_events) = register(&server, dirs.0.path(), "alice").await;
    let (bob, mut bob_events) = register(&server, dirs.1.path(), "bob").await;
    let lobby = alice.room_id(&"lobby".parse().unwrap()).await.unwrap();
    alice
        .send_text(Target::Room(lobby), "before")
        .await
        .unwrap();
    messages(&mut bob_events, 1).await;
    // While the server is down and coming back, alice keeps sending; her handle
    // retries each message once the connection is back.
    server.restart().await.unwrap();
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            for n in 0..20 {
                alice
                    .send_text(Target::Room(lobby), &format!("after {n}"))
                    .await
                    .unwrap();
            }
        })
    };
    let mut states = Vec::new();
    let mut texts = Vec::new();
    while texts.len() < 20 {
        match tokio::time::timeout(TIMEOUT, bob_events.next())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Connection(state) => states.push(state),
            ClientEvent::Entry { entry, .. } => {
                if let Some(body) = text(&entry) {
                    texts.push(body);
                }
            }
            _ => {}
        }
    }
    sender.await.unwrap();
    assert_eq!(
        texts,
        (0..20).map(|n| format!("after {n}")).collect::<Vec<_>>()
    );
    assert!(
        states
            .iter()
            .any(|state| matches!(state, ConnectionState::Reconnecting { .. })),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|state| matches!(state, ConnectionState::Connected)),
        "{states:?}"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_refused_with_both_fingerprints() {
    let mut server = TestServer::start().await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (alice, _events) = register(&server, profile.path(), "alice").await;
    let pinned = alice.server().fingerprint;
    alice.close().await;
    // Another server (another certificate) appears at the same address.
    let addr = server.addr;
    server.stop().await.unwrap();
    let impostor = TestServer::start_at(addr).await.unwrap();
    let err = connect(&impostor, profile.path(), Auth::Resume)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, ClientError::FingerprintChanged { .. }),
        "{err:?}"
    );
    assert!(message.contains(&pinned.to_string()), "{message}");
    let presented = confide_client::Fingerprint(impostor.fingerprint);
    assert!(message.contains(&presented.to_string()), "{message}");
    // An explicit, wrong fingerprint is refused too, before any password is sent.
    let fresh = tempfile::tempdir().unwrap();
    let config = ClientConfig::new(
        address(&impostor),
        Profile::open(fresh.path()).unwrap(),
        Auth::Login {
            username: "alice".parse().unwrap(),
            password: password("alice"),
        },
    )
    .fingerprint(Some(pinned));
    let err = Client::connect(config).await.unwrap_err();
    assert!(
        matches!(err, ClientError::FingerprintMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_come_back_typed() {
    let server = TestServer::start().await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (alice, _events) = register(&server, profile.path(), "alice").await;
    alice.close().await;
    let other = tempfile::tempdir().unwrap();
    let auth = Auth::Login {
        username: "alice".parse().unwrap(),
        password: Password("wrong password".into()),
    };
    let err = connect(&server, other.path(), auth).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(confide_proto::ErrorCode::InvalidCredentials)
    );
    let err = connect(&server, other.path(), Auth::Resume)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("log"), "{err}");
}
