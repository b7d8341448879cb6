//! Messages: bursts without loss or reordering, private messages, offline sync, and
//! resends that are not stored twice.

use confide_proto::{
    EntryKind, ErrorCode, Event, LogEntry, Reply, Request, RoomId, RoomKind, Seq, SyncCursor,
    Target,
};
use confide_testkit::raw::random_nonce;
use confide_testkit::{RawClient, TIMEOUT, TestServer};
use std::collections::{BTreeMap, HashMap};

fn text(entry: &LogEntry) -> Option<String> {
    match &entry.kind {
        EntryKind::Message { body } => Some(String::from_utf8(body.clone()).unwrap()),
        EntryKind::Member { .. } | EntryKind::Commit { .. } => None,
    }
}

/// Collects message entries of `room` until `count` have arrived.
async fn collect(client: &mut RawClient, room: RoomId, count: usize) -> Vec<LogEntry> {
    let mut got = Vec::new();
    while got.len() < count {
        if let Event::Entry(entry) = client.next_event(TIMEOUT).await.unwrap()
            && entry.room == room
            && text(&entry).is_some()
        {
            got.push(entry);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_many_clients_arrives_complete_in_order_with_the_right_senders() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250;
    let server = TestServer::start().await.unwrap();
    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        let mut client = server.raw().await.unwrap();
        client.register(&format!("user{index}")).await.unwrap();
        clients.push(client);
    }
    let lobby = clients[0].lobby().await.unwrap();
    // Everyone sends everything at once, without waiting for acknowledgements.
    let mut tasks = Vec::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_CLIENT {
                let body = format!("user{index}:{n}").into_bytes();
                let request = Request::Send {
                    target: Target::Room(lobby),
                    nonce: random_nonce(),
                    body,
                };
                ids.push(client.send_request(request).await.unwrap());
            }
            let mut acked = Vec::new();
            for id in ids {
                match client.response(id).await.unwrap() {
                    Ok(Reply::Sent { room, seq, .. }) => {
                        assert_eq!(room, lobby);
                        acked.push(seq);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            // A sender's own messages are acknowledged in the order sent.
            assert!(acked.windows(2).all(|pair| pair[0] < pair[1]));
            let received = collect(&mut client, lobby, CLIENTS * PER_CLIENT).await;
            (index, acked, received)
        }));
    }
    let mut all_acked = BTreeMap::new();
    let mut deliveries = Vec::new();
    for task in tasks {
        let (index, acked, received) = task.await.unwrap();
        for (n, seq) in acked.into_iter().enumerate() {
            assert!(
                all_acked.insert(seq, format!("user{index}:{n}")).is_none(),
                "seq {seq} acked twice"
            );
        }
        deliveries.push(received);
    }
    assert_eq!(all_acked.len(), CLIENTS * PER_CLIENT);
    for received in deliveries {
        assert_eq!(
            received.len(),
            CLIENTS * PER_CLIENT,
            "lost or extra messages"
        );
        // Strictly increasing sequence numbers: nothing duplicated or reordered.
        assert!(received.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        let mut next_per_sender: HashMap<String, usize> = HashMap::new();
        for entry in &received {
            let body = text(entry).unwrap();
            // The body is exactly what was acknowledged under this sequence number.
            assert_eq!(all_acked.get(&entry.seq), Some(&body));
            // The sender name is the account that sent it, never another.
            let (sender, n) = body.split_once(':').unwrap();
            assert_eq!(entry.sender.as_str(), sender);
            let expected = next_per_sender.entry(sender.to_owned()).or_default();
            assert_eq!(n.parse::<usize>().unwrap(), *expected, "per-sender order");
            *expected += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_only_their_recipient() {
    let server = TestServer::start().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    alice.register("alice").await.unwrap();
    let mut bob = server.raw().await.unwrap();
    bob.register("bob").await.unwrap();
    let mut carol = server.raw().await.unwrap();
    carol.register("carol").await.unwrap();
    let lobby = carol.lobby().await.unwrap();
    let Reply::Sent { room: direct, .. } = alice
        .say(Target::User("BOB".into()), "psst, bob")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    // Bob learns about the conversation, then gets the message.
    loop {
        match bob.next_event(TIMEOUT).await.unwrap() {
            Event::Room(info) if info.id == direct => {
                assert_eq!(
                    info.kind,
                    RoomKind::Direct {
                        peer: "alice".parse().unwrap()
                    }
                );
            }
            Event::Entry(entry) if entry.room == direct => {
                assert_eq!(text(&entry).unwrap(), "psst, bob");
                assert_eq!(entry.sender.as_str(), "alice");
                break;
            }
            _ => {}
        }
    }
    // Bob answers in the same conversation.
    let Reply::Sent { room, .. } = bob
        .say(Target::User("alice".into()), "hi alice")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(room, direct);
    // Carol sees neither message, cannot post to or read the conversation.
    carol
        .say(Target::Room(lobby), "marker")
        .await
        .unwrap()
        .unwrap();
    loop {
        match carol.next_event(TIMEOUT).await.unwrap() {
            Event::Entry(entry) if text(&entry).as_deref() == Some("marker") => break,
            Event::Entry(entry) => {
                assert_ne!(entry.room, direct, "carol received a direct message")
            }
            Event::Room(info) => assert_ne!(info.id, direct),
            Event::Presence { room, .. } => assert_ne!(room, direct),
            other => panic!("unexpected event {other:?}"),
        }
    }
    let err = carol
        .say(Target::Room(direct), "butting in")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
    let err = carol
        .request(Request::History {
            room: direct,
            before: None,
            limit: 10,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
    let Reply::Synced { rooms, entries, .. } = carol
        .ok(Request::Sync {
            cursors: vec![],
            limit: 1000,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(rooms.iter().all(|info| info.id != direct));
    assert!(entries.iter().all(|entry| entry.room != direct));
    let err = alice
        .say(Target::User("nobody".into()), "hello?")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchUser);
    let err = alice
        .say(Target::User("alice".into()), "me")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}

/// Syncs page by page (small pages on purpose) until nothing more is waiting.
async fn sync_all(client: &mut RawClient, mut cursors: HashMap<RoomId, Seq>) -> Vec<LogEntry> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        let request = Request::Sync {
            cursors: cursors
                .iter()
                .map(|(&room, &seen)| SyncCursor { room, seen })
                .collect(),
            limit: 7,
        };
        let Reply::Synced { entries, more, .. } = client.ok(request).await.unwrap() else {
            panic!()
        };
        for entry in &entries {
            cursors.insert(entry.room, entry.seq);
        }
        all.extend(entries);
        if !more {
            return all;
        }
    }
    panic!("sync never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_exactly_what_they_missed() {
    let server = TestServer::start().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    alice.register("alice").await.unwrap();
    let lobby = alice.lobby().await.unwrap();
    let mut bob = server.raw().await.unwrap();
    let bob_token = bob.register("bob").await.unwrap();
    // Before going offline, bob has seen everything in the lobby up to a message.
    alice
        .say(Target::Room(lobby), "before")
        .await
        .unwrap()
        .unwrap();
    let seen = collect(&mut bob, lobby, 1).await[0].seq;
    drop(bob);
    let mut sent = Vec::new();
    for n in 0..30 {
        let Reply::Sent { room, seq, .. } = alice
            .say(Target::Room(lobby), &format!("room {n}"))
            .await
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        sent.push((room, seq, format!("room {n}")));
        if n % 3 == 0 {
            let body = format!("direct {n}");
            let Reply::Sent { room, seq, .. } = alice
                .say(Target::User("bob".into()), &body)
                .await
                .unwrap()
                .unwrap()
            else {
                panic!()
            };
            sent.push((room, seq, body));
        }
    }
    let mut bob = server.raw().await.unwrap();
    bob.ok(Request::Resume { token: bob_token }).await.unwrap();
    let missed = sync_all(&mut bob, HashMap::from([(lobby, seen)])).await;
    let mut got: Vec<(RoomId, Seq, String)> = missed
        .iter()
        .filter_map(|entry| text(entry).map(|body| (entry.room, entry.seq, body)))
        .collect();
    // Per room, in order, without gaps: every entry after the cursor is there once.
    let mut by_room: BTreeMap<RoomId, Vec<Seq>> = BTreeMap::new();
    for entry in &missed {
        by_room.entry(entry.room).or_default().push(entry.seq);
    }
    for (room, seqs) in &by_room {
        let start = if *room == lobby { seen.0 + 1 } else { 1 };
        let expected: Vec<Seq> = (start..start + seqs.len() as u64).map(Seq).collect();
        assert_eq!(seqs, &expected, "room {room}");
    }
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    // Syncing again from the end returns nothing.
    let cursors = by_room
        .iter()
        .map(|(room, seqs)| (*room, *seqs.last().unwrap()))
        .collect();
    assert!(sync_all(&mut bob, cursors).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_message_is_acknowledged_again_but_stored_once() {
    let mut server = TestServer::start().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    let token = alice.register("alice").await.unwrap();
    let lobby = alice.lobby().await.unwrap();
    let nonce = random_nonce();
    let send = |body: &str| Request::Send {
        target: Target::Room(lobby),
        nonce,
        body: body.as_bytes().to_vec(),
    };
    let first = alice.ok(send("once")).await.unwrap();
    let second = alice.ok(send("once")).await.unwrap();
    assert_eq!(first, second);
    // Also after a restart, from a new connection.
    server.restart().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    alice.ok(Request::Resume { token }).await.unwrap();
    assert_eq!(alice.ok(send("once")).await.unwrap(), first);
    let Reply::History { entries, .. } = alice
        .ok(Request::History {
            room: lobby,
            before: None,
            limit: 100,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        entries
            .iter()
            .filter(|entry| text(entry).as_deref() == Some("once"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_and_starts_at_the_join() {
    let server = TestServer::start().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    alice.register("alice").await.unwrap();
    let lobby = alice.lobby().await.unwrap();
    alice
        .say(Target::Room(lobby), "before bob")
        .await
        .unwrap()
        .unwrap();
    let mut bob = server.raw().await.unwrap();
    bob.register("bob").await.unwrap();
    for n in 0..25 {
        alice
            .say(Target::Room(lobby), &format!("m{n}"))
            .await
            .unwrap()
            .unwrap();
    }
    let mut texts = Vec::new();
    let mut before = None;
    for _ in 0..100 {
        let Reply::History { entries, more } = bob
            .ok(Request::History {
                room: lobby,
                before,
                limit: 10,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        before = entries.first().map(|entry| entry.seq);
        let mut page: Vec<String> = entries.iter().filter_map(text).collect();
        page.extend(texts);
        texts = page;
        if !more {
            break;
        }
    }
    let expected: Vec<String> = (0..25).map(|n| format!("m{n}")).collect();
    assert_eq!(
        texts, expected,
        "bob sees everything since he joined and nothing before"
    );
}
