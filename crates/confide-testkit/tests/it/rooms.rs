//! Rooms: create, invite, join, leave, kick, ban, lists, presence, and persistence.

use crate::support::{create_room, login, user};
use confide_proto::{
    EntryKind, ErrorCode, Event, MemberChange, Membership, Reply, Request, RoomEncryption, RoomId,
    RoomKind, Target,
};
use confide_testkit::{RawClient, TIMEOUT, TestServer};
use std::time::Duration;

/// Waits for the membership entry `change` of `who` in `room`.
async fn expect_member(client: &mut RawClient, room: RoomId, who: &str, change: MemberChange) {
    loop {
        if let Event::Entry(entry) = client.next_event(TIMEOUT).await.unwrap()
            && entry.room == room
            && let EntryKind::Member { user, change: got } = &entry.kind
            && user.as_str() == who
            && *got == change
        {
            return;
        }
    }
}

async fn members(client: &mut RawClient, room: RoomId) -> Vec<(String, bool, bool)> {
    match client.ok(Request::Members { room }).await.unwrap() {
        Reply::Members(list) => list
            .into_iter()
            .map(|m| (m.user.to_string(), m.owner, m.online))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_are_created_listed_and_joined() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let room = create_room(&mut alice, "General", false).await;
    let err = bob
        .request(Request::CreateRoom {
            name: "general".into(),
            private: false,
            encryption: RoomEncryption::Mls,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RoomExists);
    let err = bob
        .request(Request::CreateRoom {
            name: "bad name!".into(),
            private: false,
            encryption: RoomEncryption::Mls,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRoomName);
    // Bob sees it in the list as a room he may join.
    let Reply::Rooms(rooms) = bob.ok(Request::ListRooms).await.unwrap() else {
        panic!()
    };
    let listed = rooms.iter().find(|info| info.id == room).unwrap();
    assert_eq!(listed.membership, Membership::None);
    assert_eq!(listed.owner.as_ref().unwrap().as_str(), "alice");
    assert_eq!(listed.kind, RoomKind::Public);
    // Joining is case-insensitive and announced to members.
    let Reply::Room(joined) = bob
        .ok(Request::Join {
            name: "GENERAL".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(joined.id, room);
    expect_member(&mut alice, room, "bob", MemberChange::Joined).await;
    assert_eq!(
        members(&mut alice, room).await,
        vec![("alice".into(), true, true), ("bob".into(), false, true)]
    );
    let err = bob
        .request(Request::Join {
            name: "general".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyMember);
    let err = bob
        .request(Request::Join {
            name: "nowhere".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchRoom);
    // Bob leaves; alice sees it; bob can no longer post there.
    bob.ok(Request::Leave { room }).await.unwrap();
    expect_member(&mut alice, room, "bob", MemberChange::Left).await;
    let err = bob
        .say(Target::Room(room), "still here?")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_need_an_invitation() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let room = create_room(&mut alice, "secret", true).await;
    let err = bob
        .request(Request::Join {
            name: "secret".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotInvited);
    let err = bob
        .request(Request::Members { room })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
    alice
        .ok(Request::Invite {
            room,
            user: "Bob".into(),
        })
        .await
        .unwrap();
    // Bob is told about the invitation.
    loop {
        if let Event::Room(info) = bob.next_event(TIMEOUT).await.unwrap()
            && info.id == room
        {
            assert_eq!(info.membership, Membership::Invited);
            assert_eq!(info.kind, RoomKind::Private);
            break;
        }
    }
    let err = alice
        .request(Request::Invite {
            room,
            user: "nobody".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchUser);
    bob.ok(Request::Join {
        name: "secret".into(),
    })
    .await
    .unwrap();
    expect_member(&mut alice, room, "bob", MemberChange::Joined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_kick_and_ban_and_others_cannot() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let mut carol = user(&server, "carol").await;
    let room = create_room(&mut alice, "club", false).await;
    bob.ok(Request::Join {
        name: "club".into(),
    })
    .await
    .unwrap();
    carol
        .ok(Request::Join {
            name: "club".into(),
        })
        .await
        .unwrap();
    let err = bob
        .request(Request::Kick {
            room,
            user: "carol".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    alice
        .ok(Request::Kick {
            room,
            user: "carol".into(),
        })
        .await
        .unwrap();
    expect_member(&mut carol, room, "carol", MemberChange::Kicked).await;
    loop {
        if let Event::Room(info) = carol.next_event(TIMEOUT).await.unwrap()
            && info.id == room
        {
            assert_eq!(info.membership, Membership::None);
            break;
        }
    }
    // Kicked is not banned: carol may come back.
    carol
        .ok(Request::Join {
            name: "club".into(),
        })
        .await
        .unwrap();
    alice
        .ok(Request::Ban {
            room,
            user: "carol".into(),
        })
        .await
        .unwrap();
    let err = carol
        .request(Request::Join {
            name: "club".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Banned);
    let err = carol
        .say(Target::Room(room), "let me in")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
    let err = carol
        .request(Request::History {
            room,
            before: None,
            limit: 10,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
    alice
        .ok(Request::Unban {
            room,
            user: "carol".into(),
        })
        .await
        .unwrap();
    carol
        .ok(Request::Join {
            name: "club".into(),
        })
        .await
        .unwrap();
    // The lobby cannot be left, and nobody owns it.
    let lobby = alice.lobby().await.unwrap();
    let err = alice
        .request(Request::Leave { room: lobby })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    let err = alice
        .request(Request::Kick {
            room: lobby,
            user: "bob".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_bans_survive_a_restart() {
    let mut server = TestServer::start().await.unwrap();
    let (room, alice_token, carol_token) = {
        let mut alice = server.raw().await.unwrap();
        let alice_token = alice.register("alice").await.unwrap();
        let mut bob = user(&server, "bob").await;
        let mut carol = server.raw().await.unwrap();
        let carol_token = carol.register("carol").await.unwrap();
        let room = create_room(&mut alice, "keep", false).await;
        bob.ok(Request::Join {
            name: "keep".into(),
        })
        .await
        .unwrap();
        carol
            .ok(Request::Join {
                name: "keep".into(),
            })
            .await
            .unwrap();
        alice
            .ok(Request::Ban {
                room,
                user: "carol".into(),
            })
            .await
            .unwrap();
        (room, alice_token, carol_token)
    };
    server.restart().await.unwrap();
    let mut alice = server.raw().await.unwrap();
    alice
        .ok(Request::Resume { token: alice_token })
        .await
        .unwrap();
    let list = members(&mut alice, room).await;
    let names: Vec<&str> = list.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, vec!["alice", "bob"]);
    let mut carol = server.raw().await.unwrap();
    carol
        .ok(Request::Resume { token: carol_token })
        .await
        .unwrap();
    let err = carol
        .request(Request::Join {
            name: "keep".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Banned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_connections() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let lobby = alice.lobby().await.unwrap();
    let bob_token = {
        let mut bob = server.raw().await.unwrap();
        let token = bob.register("bob").await.unwrap();
        loop {
            if let Event::Presence { room, user, online } = alice.next_event(TIMEOUT).await.unwrap()
                && user.as_str() == "bob"
            {
                assert_eq!(room, lobby);
                assert!(online);
                break;
            }
        }
        token
    };
    // Bob's connection is gone: alice hears that he went offline.
    loop {
        if let Event::Presence { user, online, .. } = alice.next_event(TIMEOUT).await.unwrap()
            && user.as_str() == "bob"
        {
            assert!(!online);
            break;
        }
    }
    assert_eq!(
        members(&mut alice, lobby).await,
        vec![("alice".into(), false, true), ("bob".into(), false, false)]
    );
    // Two connections of one user: offline only when both are gone.
    let mut first = server.raw().await.unwrap();
    first
        .ok(Request::Resume {
            token: bob_token.clone(),
        })
        .await
        .unwrap();
    let mut second = server.raw().await.unwrap();
    second
        .ok(Request::Resume { token: bob_token })
        .await
        .unwrap();
    drop(first);
    second.ok(Request::Ping).await.unwrap();
    let list = members(&mut alice, lobby).await;
    assert_eq!(list[1], ("bob".into(), false, true));
}

/// In a room with 100 or more members online, presence changes are gathered and sent
/// together; each still arrives, once, and nobody hears about themselves.
#[tokio::test]
async fn presence_in_a_large_room_is_gathered_and_complete() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut crowd = Vec::new();
    for index in 0..110 {
        crowd.push(user(&server, &format!("crowd{index}")).await);
    }
    let mut late = Vec::new();
    for index in 0..5 {
        late.push(user(&server, &format!("late{index}")).await);
    }
    // Alice hears each late user come online, then, once they leave, go offline: each
    // change exactly once. (Coming and going within one gathering would be left out.)
    let mut heard: std::collections::BTreeMap<String, Vec<bool>> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for round in [true, false] {
        if !round {
            late.clear();
        }
        while heard.values().map(Vec::len).sum::<usize>() < if round { 5 } else { 10 } {
            assert!(
                tokio::time::Instant::now() < deadline,
                "heard only {heard:?}"
            );
            if let Event::Presence { user, online, .. } = alice.next_event(TIMEOUT).await.unwrap() {
                assert_ne!(user.as_str(), "alice", "told about herself");
                if user.as_str().starts_with("late") {
                    heard
                        .entry(user.as_str().to_owned())
                        .or_default()
                        .push(online);
                }
            }
        }
    }
    let expected: std::collections::BTreeMap<String, Vec<bool>> = (0..5)
        .map(|index| (format!("late{index}"), vec![true, false]))
        .collect();
    assert_eq!(heard, expected);
    // Members' online state agrees.
    let lobby = alice.lobby().await.unwrap();
    let listed = members(&mut alice, lobby).await;
    assert_eq!(listed.len(), 116);
    assert!(
        listed
            .iter()
            .all(|(name, _, online)| *online != name.as_str().starts_with("late"))
    );
}

/// Waits until the event log says `room` has left the server's memory.
async fn unloaded(server: &TestServer, room: RoomId) {
    let needle = format!(" room_unload room={room}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for _ in 0..600 {
        let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap();
        if log.lines().any(|line| line.ends_with(&needle)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room {room} stayed in memory"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("room {room} stayed in memory");
}

/// The next message entry `client` receives.
async fn next_message(client: &mut RawClient) -> (RoomId, u64, Vec<u8>) {
    for _ in 0..100 {
        if let Event::Entry(entry) = client.next_event(TIMEOUT).await.unwrap()
            && let EntryKind::Message { body } = entry.kind
        {
            return (entry.room, entry.seq.0, body);
        }
    }
    panic!("no message arrived");
}

/// Rooms nobody is online in leave memory after a while and come back from the store
/// as they were: numbering, resent messages, membership, the room list and live
/// delivery all carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_nobody_uses_leave_memory_and_come_back_whole() {
    let server = TestServer::start_with(|config| config.limits.room_idle_secs = 1)
        .await
        .unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let lobby = alice.lobby().await.unwrap();
    let plans = create_room(&mut alice, "plans", false).await;
    bob.ok(Request::Join {
        name: "plans".into(),
    })
    .await
    .unwrap();
    let nonce = confide_testkit::raw::random_nonce();
    let first = Request::Send {
        target: Target::Room(plans),
        nonce,
        body: b"first".to_vec(),
    };
    let Reply::Sent { seq: first_seq, .. } = alice.ok(first.clone()).await.unwrap() else {
        panic!()
    };
    let Reply::Sent {
        room: direct,
        seq: direct_seq,
        ..
    } = alice
        .say(Target::User("bob".into()), "psst")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    drop(alice);
    drop(bob);
    for room in [plans, direct, lobby] {
        unloaded(&server, room).await;
    }

    // Someone who is not a member still finds the public room in the list.
    let mut carol = user(&server, "carol").await;
    let Reply::Rooms(rooms) = carol.ok(Request::ListRooms).await.unwrap() else {
        panic!()
    };
    assert!(rooms.iter().any(|info| info.id == plans));

    let mut bob = login(&server, "bob").await;
    let mut alice = login(&server, "alice").await;
    // A resend of a message stored before the room left memory is still recognised.
    let Reply::Sent { seq, .. } = alice.ok(first).await.unwrap() else {
        panic!()
    };
    assert_eq!(seq, first_seq);
    // Numbering carries on, and members online get what is posted.
    let Reply::Sent { seq, .. } = alice
        .say(Target::Room(plans), "second")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(seq.0, first_seq.0 + 1);
    assert_eq!(
        next_message(&mut bob).await,
        (plans, seq.0, b"second".to_vec())
    );
    // Sending by name finds the same conversation.
    let Reply::Sent { room, seq, .. } = alice
        .say(Target::User("bob".into()), "again")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((room, seq.0), (direct, direct_seq.0 + 1));
    assert_eq!(
        next_message(&mut bob).await,
        (direct, seq.0, b"again".to_vec())
    );
    // Membership came back from the store: the owner is still the owner, Carol is not
    // a member until she joins.
    let err = carol
        .request(Request::Send {
            target: Target::Room(plans),
            nonce: confide_testkit::raw::random_nonce(),
            body: b"let me in".to_vec(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotMember);
    let listed = members(&mut alice, plans).await;
    assert_eq!(
        listed,
        vec![("alice".into(), true, true), ("bob".into(), false, true)]
    );
}

/// After a restart no room runs: the first logins start every room of theirs, each
/// exactly once even when several connections log in at the same moment, and every
/// connection is subscribed to all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_after_a_restart_start_each_room_once() {
    let mut server = TestServer::start_with(|config| config.limits.room_idle_secs = 0)
        .await
        .unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    drop(user(&server, "carol").await);
    let lobby = alice.lobby().await.unwrap();
    let mut rooms = vec![lobby];
    for index in 0..6 {
        let name = format!("room{index}");
        rooms.push(create_room(&mut alice, &name, false).await);
        if index % 2 == 0 {
            bob.ok(Request::Join { name }).await.unwrap();
        }
    }
    for peer in ["bob", "carol"] {
        let Reply::Sent { room, .. } = alice
            .say(Target::User(peer.into()), "hi")
            .await
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        rooms.push(room);
    }
    drop((alice, bob));
    server.restart().await.unwrap();

    // Three connections of alice's and one of bob's log in at once.
    let (a1, a2, a3, bob) = tokio::join!(
        login(&server, "alice"),
        login(&server, "alice"),
        login(&server, "alice"),
        login(&server, "bob"),
    );
    let mut bob = bob;
    // The event log has its own writer thread. A connection opened now is recorded after
    // everything the logins recorded, so once its line is in the file, theirs are too.
    let marker = tokio::net::TcpStream::connect(server.address())
        .await
        .unwrap();
    let marked = format!("peer={}", marker.local_addr().unwrap());
    crate::hostile::wait_for_log(&server, &marked).await;
    drop(marker);
    let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap();
    let since_restart = log
        .rsplit_once(" start listen=")
        .map(|(_, after)| after)
        .unwrap();
    for room in &rooms {
        let needle = format!(" room_load room={room}");
        let loads = since_restart
            .lines()
            .filter(|line| line.ends_with(&needle))
            .count();
        assert_eq!(
            loads, 1,
            "room {room} started {loads} times:\n{since_restart}"
        );
    }
    // Every connection of alice's gets what bob posts in the rooms they share.
    let Reply::Sent { seq, .. } = bob
        .say(Target::Room(rooms[1]), "back")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    for mut alice in [a1, a2, a3] {
        assert_eq!(
            next_message(&mut alice).await,
            (rooms[1], seq.0, b"back".to_vec())
        );
        let Reply::Rooms(listed) = alice.ok(Request::ListRooms).await.unwrap() else {
            panic!()
        };
        for room in &rooms {
            let info = listed.iter().find(|info| info.id == *room).unwrap();
            assert_eq!(info.membership, Membership::Joined, "{info:?}");
        }
    }
}
