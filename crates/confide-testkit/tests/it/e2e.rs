//! End-to-end encryption through the client core against real servers: what members
//! read, what the server never sees, and what a receiving client reports when a
//! message is forged.

use confide_client::{
    Auth, Client, ClientConfig, ClientEvent, ClientHandle, Content, Entry, EventStream, KeyStore,
    Profile, Protection, RoomKey, Unreadable,
};
use confide_crypto::payload::{Envelope, MessageId, Payload};
use confide_crypto::shared_key::SharedKey;
use confide_proto::{Reply, Request, RoomId, Target, UserName};
use confide_testkit::next_entry;
use confide_testkit::process::ServerProcess;
use confide_testkit::raw::{RawClient, random_nonce};
use confide_testkit::{TIMEOUT, TestServer, connect_user, files_under};
use std::net::SocketAddr;
use std::path::Path;

async fn register_at(addr: SocketAddr, profile: &Path, name: &str) -> (ClientHandle, EventStream) {
    connect_user(addr, profile, name, true).await.unwrap()
}

/// Logs in with the password `register_at` chose (from a new profile: a new device).
async fn login_at(addr: SocketAddr, profile: &Path, name: &str) -> (ClientHandle, EventStream) {
    connect_user(addr, profile, name, false).await.unwrap()
}

async fn connect_at(addr: SocketAddr, profile: &Path, auth: Auth) -> (ClientHandle, EventStream) {
    let config = ClientConfig::new(
        addr.to_string().parse().unwrap(),
        Profile::open(profile).unwrap(),
        auth,
    )
    .sync(true);
    let (client, events) = Client::connect(config).await.unwrap();
    client.keys_published().await.unwrap();
    (client, events)
}

/// A registered user with a profile of their own.
struct Person {
    client: ClientHandle,
    events: EventStream,
    profile: tempfile::TempDir,
}

impl Person {
    async fn register(server: &TestServer, name: &str) -> Person {
        let profile = tempfile::tempdir().unwrap();
        let (client, events) = register_at(server.addr, profile.path(), name).await;
        Person {
            client,
            events,
            profile,
        }
    }

    async fn says(&self, room: RoomId, text: &str) {
        self.client
            .send_text(Target::Room(room), text)
            .await
            .unwrap();
    }

    /// Asserts that the next message someone else wrote in `room` is `text`.
    async fn hears(&mut self, room: RoomId, text: &str) {
        assert_eq!(
            next_message(&mut self.events, room).await.text(),
            Some(text)
        );
    }

    /// The device state kept in this person's profile (close the client first).
    fn stored_keys(&self, server: &TestServer, name: &str) -> confide_client::E2eState {
        let keys = KeyStore::open(
            &Profile::open(self.profile.path()).unwrap(),
            &server.address(),
            name,
        )
        .unwrap();
        let (state, created) = keys.load_or_create(name).unwrap();
        assert!(!created, "the profile had keys");
        state
    }
}

/// Registers `names`; the first creates the public room `room`, the others join it, and
/// the first one's greeting reaches them all, so the room's group holds every device.
async fn gathered<const N: usize>(
    server: &TestServer,
    room: &str,
    names: [&str; N],
) -> (RoomId, [Person; N]) {
    let mut people = Vec::with_capacity(N);
    for name in names {
        people.push(Person::register(server, name).await);
    }
    let mut people: [Person; N] = people.try_into().unwrap_or_else(|_| unreachable!());
    let room_id = people[0]
        .client
        .create_room(room.parse().unwrap(), false)
        .await
        .unwrap()
        .id;
    for person in &people[1..] {
        person.client.join(room.parse().unwrap()).await.unwrap();
    }
    people[0].says(room_id, "greetings").await;
    for person in &mut people[1..] {
        person.hears(room_id, "greetings").await;
    }
    (room_id, people)
}

/// The next message entry in `room` from someone else than `me` (bounded by the
/// timeout).
async fn next_message(events: &mut EventStream, room: RoomId) -> Entry {
    next_message_not_from(events, room, None).await
}

async fn next_message_not_from(events: &mut EventStream, room: RoomId, me: Option<&str>) -> Entry {
    next_entry(events, room, |entry| {
        (entry.is_new_message() && me.is_none_or(|me| entry.sender.as_str() != me))
            .then(|| entry.clone())
    })
    .await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_sees_a_canary_in_a_room_a_direct_message_or_a_shared_key_room() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::start_logging(&data, "debug", Some(&log)).unwrap();
    let profiles = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, mut alice_events) = register_at(server.addr, profiles.0.path(), "alice").await;
    let (bob, mut bob_events) = register_at(server.addr, profiles.1.path(), "bob").await;

    let canaries = [
        "canary-room-7d41c2",
        "canary-direct-9be03a",
        "canary-shared-5f2e18",
    ];
    // A private room: alice creates it, invites bob, bob joins.
    let room = alice
        .create_room("hideout".parse().unwrap(), true)
        .await
        .unwrap();
    alice.invite(room.id, "bob".parse().unwrap()).await.unwrap();
    bob.join("hideout".parse().unwrap()).await.unwrap();
    alice
        .send_text(Target::Room(room.id), canaries[0])
        .await
        .unwrap();
    let got = next_message(&mut bob_events, room.id).await;
    assert_eq!(got.text(), Some(canaries[0]));
    assert!(matches!(
        got.content,
        Content::Message {
            protection: Protection::Mls,
            ..
        }
    ));
    // Bob answers: both directions work in the same group.
    bob.send_text(Target::Room(room.id), "got it")
        .await
        .unwrap();
    assert_eq!(
        next_message_not_from(&mut alice_events, room.id, Some("alice"))
            .await
            .text(),
        Some("got it")
    );

    // A direct message.
    let ack = alice
        .send_text(Target::User("bob".into()), canaries[1])
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut bob_events, ack.room).await.text(),
        Some(canaries[1])
    );

    // A shared-key room (Fernet, for people coming from the original programs).
    let key = SharedKey::generate(rand::random());
    let shared = alice
        .create_shared_key_room(
            "oldschool".parse().unwrap(),
            false,
            RoomKey::File(key.clone()),
        )
        .await
        .unwrap();
    let joined = bob.join("oldschool".parse().unwrap()).await.unwrap();
    bob.add_room_key(&joined, RoomKey::File(key)).await.unwrap();
    alice
        .send_text(Target::Room(shared.id), canaries[2])
        .await
        .unwrap();
    let got = next_message(&mut bob_events, shared.id).await;
    assert_eq!(got.text(), Some(canaries[2]));
    assert!(matches!(
        got.content,
        Content::Message {
            protection: Protection::SharedKey,
            ..
        }
    ));

    // Each sender's own history shows its messages (MLS cannot decrypt one's own: the
    // client kept the plaintext).
    let page = alice.history(room.id, None, 50).await.unwrap();
    let texts: Vec<&str> = page.entries.iter().filter_map(Entry::text).collect();
    assert_eq!(texts, [canaries[0], "got it"]);

    alice.close().await;
    bob.close().await;
    let status = server.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    let mut searched = 0;
    for path in files_under(&data).into_iter().chain([log.clone()]) {
        let bytes = std::fs::read(&path).unwrap();
        searched += 1;
        for canary in canaries {
            assert!(
                !contains(&bytes, canary.as_bytes()),
                "{canary} found in {}",
                path.display()
            );
        }
    }
    assert!(
        searched >= 3,
        "the database, its WAL or log, and the server's output"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("listening on"), "the log was captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_cannot_read_what_was_sent_before_joining() {
    let server = TestServer::start().await.unwrap();
    let profiles = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, _alice_events) = register_at(server.addr, profiles.0.path(), "alice").await;
    let room = alice
        .create_room("club".parse().unwrap(), false)
        .await
        .unwrap();
    alice
        .send_text(Target::Room(room.id), "before carol")
        .await
        .unwrap();
    let (carol, mut carol_events) = register_at(server.addr, profiles.1.path(), "carol").await;
    carol.join("club".parse().unwrap()).await.unwrap();
    alice
        .send_text(Target::Room(room.id), "after carol")
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut carol_events, room.id).await.text(),
        Some("after carol")
    );
    // The server hands out history only from the join on, and the group could not
    // have decrypted anything earlier anyway (shown in confide-crypto's tests).
    let page = carol.history(room.id, None, 50).await.unwrap();
    let messages: Vec<&Entry> = page.entries.iter().filter(|e| e.is_new_message()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].text(), Some("after carol"));
    alice.close().await;
    carol.close().await;
}

/// Logs in as `name` over the raw protocol and says which device this connection is.
async fn raw_as(server: &TestServer, name: &str, device: u64) -> RawClient {
    let mut raw = server.raw().await.unwrap();
    raw.login(name).await.unwrap().unwrap();
    raw.ok(Request::SetDevice {
        device: confide_proto::DeviceId(device),
    })
    .await
    .unwrap();
    raw
}

/// Alice's events, skipping her own messages.
struct Incoming(EventStream);

impl Incoming {
    async fn next(&mut self, room: RoomId) -> Entry {
        next_message_not_from(&mut self.0, room, Some("alice")).await
    }
}

fn text_envelope(text: &str) -> Vec<u8> {
    Envelope {
        id: MessageId::from_bytes(rand::random()),
        sent_at_ms: 0,
        body: Payload::Text {
            text: text.to_owned(),
        },
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_replayed_and_off_list_messages_are_reported_not_shown() {
    let server = TestServer::start().await.unwrap();
    let (room, [alice, bob]) = gathered(&server, "den", ["alice", "bob"]).await;
    bob.client.close().await;
    let alice_events = alice.events;
    let alice = alice.client;

    // Bob's real device, from his profile: on his signed list, in the group.
    let mut state = bob.stored_keys(&server, "bob");
    let device = state.device.id().device;
    let mut raw = raw_as(&server, "bob", device).await;

    // 1. A ciphertext with one byte flipped.
    let mut tampered = state.device.encrypt(room.0, &text_envelope("x")).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    raw.ok(Request::Send {
        target: Target::Room(room),
        nonce: random_nonce(),
        body: tampered,
    })
    .await
    .unwrap();
    let mut alice_events = Incoming(alice_events);
    assert_eq!(
        alice_events.next(room).await.content,
        Content::Unreadable(Unreadable::Tampered)
    );

    // 2. A valid message, then the same ciphertext again (the server stores both: it
    // cannot tell; the client must).
    let valid = state
        .device
        .encrypt(room.0, &text_envelope("once"))
        .unwrap();
    for _ in 0..2 {
        raw.ok(Request::Send {
            target: Target::Room(room),
            nonce: random_nonce(),
            body: valid.clone(),
        })
        .await
        .unwrap();
    }
    assert_eq!(alice_events.next(room).await.text(), Some("once"));
    assert_eq!(
        alice_events.next(room).await.content,
        Content::Unreadable(Unreadable::Replayed)
    );

    // 3. A device that is not on bob's signed list joins by external commit (the
    // server cannot check lists) and sends.
    let rogue_id = device.wrapping_add(1);
    let mut rogue = confide_crypto::Device::create("bob", rogue_id).unwrap();
    let mut raw = raw_as(&server, "bob", rogue_id).await;
    let Reply::GroupInfo {
        group_info, epoch, ..
    } = raw.ok(Request::FetchGroupInfo { room }).await.unwrap()
    else {
        panic!("expected a GroupInfo");
    };
    let prepared = rogue.prepare_external_join(room.0, &group_info).unwrap();
    assert_eq!(prepared.epoch, epoch.0);
    raw.ok(Request::Commit {
        room,
        epoch,
        commit: prepared.commit,
        group_info: prepared.group_info,
        welcome: None,
    })
    .await
    .unwrap();
    rogue.commit_accepted(room.0).unwrap();
    let forged = rogue.encrypt(room.0, &text_envelope("trust me")).unwrap();
    raw.ok(Request::Send {
        target: Target::Room(room),
        nonce: random_nonce(),
        body: forged,
    })
    .await
    .unwrap();
    let got = alice_events.next(room).await;
    assert_eq!(
        got.content,
        Content::Unreadable(Unreadable::UnknownDevice { device: rogue_id })
    );
    // The client is still fine: alice keeps chatting in the room.
    alice
        .send_text(Target::Room(room), "still here")
        .await
        .unwrap();
    drop(state);
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_member_is_removed_from_the_group_at_once_and_reads_nothing_after() {
    let server = TestServer::start().await.unwrap();
    let (room, [alice, bob]) = gathered(&server, "circle", ["alice", "bob"]).await;
    bob.client.close().await;
    let alice = alice.client;
    // Bob's device as it was when he was removed (a copy an attacker could keep).
    let mut bob_state = bob.stored_keys(&server, "bob");
    let epoch_before = bob_state.device.epoch(room.0).unwrap();

    alice.kick(room, "bob".parse().unwrap()).await.unwrap();
    // Before anyone writes again, the log already holds alice's commit removing bob.
    let mut raw = server.raw().await.unwrap();
    raw.login("alice").await.unwrap().unwrap();
    let history = async |raw: &mut RawClient| {
        let Reply::History { entries, .. } = raw
            .ok(Request::History {
                room,
                before: None,
                limit: 50,
            })
            .await
            .unwrap()
        else {
            panic!("expected history");
        };
        entries
    };
    let before_message = history(&mut raw).await;
    alice
        .send_text(Target::Room(room), "after bob left")
        .await
        .unwrap();
    let entries = history(&mut raw).await;
    assert_eq!(entries[..before_message.len()], before_message[..]);
    let kick = entries
        .iter()
        .position(|e| {
            matches!(
                &e.kind,
                confide_proto::EntryKind::Member {
                    change: confide_proto::MemberChange::Kicked,
                    ..
                }
            )
        })
        .expect("the kick is logged");
    let commit = entries
        .iter()
        .position(|e| {
            matches!(e.kind, confide_proto::EntryKind::Commit { .. }) && e.seq > entries[kick].seq
        })
        .expect("a commit after the kick");
    let message = entries
        .iter()
        .rposition(|e| matches!(e.kind, confide_proto::EntryKind::Message { .. }))
        .unwrap();
    assert!(
        commit < message,
        "the removal is committed before the next message"
    );
    // Bob's old device applies the commit that removes it, and cannot read on.
    let confide_proto::EntryKind::Commit { data, epoch } = &entries[commit].kind else {
        unreachable!()
    };
    assert_eq!(epoch.0, epoch_before);
    match bob_state.device.process(room.0, data) {
        Ok(confide_crypto::Incoming::Commit { self_removed, .. }) => assert!(self_removed),
        Err(confide_crypto::CryptoError::Removed) => {}
        other => panic!("expected the removal, got {other:?}"),
    }
    let confide_proto::EntryKind::Message { body } = &entries[message].kind else {
        unreachable!()
    };
    assert!(bob_state.device.process(room.0, body).is_err());
    alice.close().await;
}

/// The next event `pick` accepts (bounded by the timeout).
async fn wait_for<T>(
    events: &mut EventStream,
    mut pick: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    loop {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("timed out waiting for an event")
            .expect("stream ended");
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

/// The room's log as the server holds it, read by a raw connection of `name`.
async fn server_log(server: &TestServer, name: &str, room: RoomId) -> Vec<confide_proto::LogEntry> {
    let mut raw = server.raw().await.unwrap();
    raw.login(name).await.unwrap().unwrap();
    let Reply::History { entries, .. } = raw
        .ok(Request::History {
            room,
            before: None,
            limit: 500,
        })
        .await
        .unwrap()
    else {
        panic!("expected history");
    };
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_is_removed_from_the_group_without_anyone_writing() {
    let server = TestServer::start().await.unwrap();
    let (room, [mut alice, bob, mut carol]) =
        gathered(&server, "porch", ["alice", "bob", "carol"]).await;

    bob.client.leave(room).await.unwrap();
    // Nobody writes: a remaining member's client commits bob's removal by itself.
    let left_seq = wait_for(&mut alice.events, |event| match event {
        ClientEvent::Entry { entry, .. }
            if entry.room == room
                && matches!(
                    &entry.content,
                    Content::Member { user, change: confide_proto::MemberChange::Left }
                        if user.as_str() == "bob"
                ) =>
        {
            Some(entry.seq)
        }
        _ => None,
    })
    .await;
    let commit = wait_for(&mut carol.events, |event| match event {
        ClientEvent::Entry { entry, .. }
            if entry.room == room
                && entry.seq > left_seq
                && matches!(entry.content, Content::Commit { .. }) =>
        {
            Some(entry)
        }
        _ => None,
    })
    .await;
    assert!(
        ["alice", "carol"].contains(&commit.sender.as_str()),
        "{commit:?}"
    );
    // Usually one of them commits; the other finds nothing left to do (at most one
    // commit per member in any case).
    let log = server_log(&server, "alice", room).await;
    let commits_after = log
        .iter()
        .filter(|e| e.seq > left_seq && matches!(e.kind, confide_proto::EntryKind::Commit { .. }))
        .count();
    assert!((1..=2).contains(&commits_after), "{commits_after} commits");

    // Bob's own device forgot the group's keys when he left.
    bob.client.close().await;
    assert!(!bob.stored_keys(&server, "bob").device.has_group(room.0));

    // The room goes on for the two who stayed.
    carol.says(room, "just us now").await;
    alice.hears(room, "just us now").await;
    alice.client.close().await;
    carol.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offline_across_several_epochs_catches_up_and_reads_everything() {
    let server = TestServer::start().await.unwrap();
    let (room, [alice, bob, carol]) = gathered(&server, "journal", ["alice", "bob", "carol"]).await;
    bob.client.close().await;
    let bob_profile = bob.profile;
    let (alice, carol) = (alice.client, carol.client);

    // While bob is away the group goes through several epochs: a member joins by
    // herself, one is kicked, another is added by alice, and each writes.
    alice
        .send_text(Target::Room(room), "m1 bob is away")
        .await
        .unwrap();
    let dave = Person::register(&server, "dave").await;
    dave.client.join("journal".parse().unwrap()).await.unwrap();
    dave.says(room, "m2 dave joined").await;
    alice.kick(room, "carol".parse().unwrap()).await.unwrap();
    alice
        .send_text(Target::Room(room), "m3 carol is out")
        .await
        .unwrap();
    let erin = Person::register(&server, "erin").await;
    erin.client.join("journal".parse().unwrap()).await.unwrap();
    alice
        .send_text(Target::Room(room), "m4 erin is in")
        .await
        .unwrap();
    erin.says(room, "m5 hello from erin").await;
    dave.says(room, "m6 last one").await;
    let log = server_log(&server, "alice", room).await;
    let epochs = log
        .iter()
        .filter(|e| matches!(e.kind, confide_proto::EntryKind::Commit { .. }))
        .count();
    assert!(epochs >= 4, "the group moved through {epochs} commits");

    // Bob comes back with his stored session and reads all of it, in order.
    let (bob, mut bob_events) = connect_at(server.addr, bob_profile.path(), Auth::Resume).await;
    let expected = [
        "m1 bob is away",
        "m2 dave joined",
        "m3 carol is out",
        "m4 erin is in",
        "m5 hello from erin",
        "m6 last one",
    ];
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let entry = next_message(&mut bob_events, room).await;
        assert!(
            matches!(
                entry.content,
                Content::Message {
                    protection: Protection::Mls,
                    ..
                }
            ),
            "{entry:?}"
        );
        got.push(entry.text().unwrap().to_owned());
    }
    assert_eq!(got, expected);
    // And can still write in the latest epoch.
    bob.send_text(Target::Room(room), "back").await.unwrap();
    for client in [alice, bob, carol, dave.client, erin.client] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_notices_are_encrypted_relayed_live_and_never_stored() {
    let server = TestServer::start().await.unwrap();
    let (room, [mut alice, mut bob]) = gathered(&server, "studio", ["alice", "bob"]).await;
    // A room without a group yet: typing sends nothing rather than creating one.
    let empty = alice
        .client
        .create_room("empty".parse().unwrap(), false)
        .await
        .unwrap();
    assert!(!alice.client.typing(empty.id, true).await.unwrap());
    // Bob's client confirms the greeting's delivery (a stored message); wait for it so
    // that the log is settled before typing.
    wait_for(&mut alice.events, |event| match event {
        ClientEvent::Entry { entry, .. } if entry.room == room && entry.is_receipt() => Some(()),
        _ => None,
    })
    .await;
    let stored_before = server_log(&server, "alice", room).await;
    let typing = async |events: &mut EventStream| {
        wait_for(events, |event| match event {
            ClientEvent::Typing {
                room: r,
                user,
                active,
            } if r == room => Some((user.to_string(), active)),
            _ => None,
        })
        .await
    };

    assert!(bob.client.typing(room, true).await.unwrap());
    assert_eq!(typing(&mut alice.events).await, ("bob".to_owned(), true));
    // Repeated keystrokes within a few seconds send nothing more.
    assert!(!bob.client.typing(room, true).await.unwrap());
    assert!(bob.client.typing(room, false).await.unwrap());
    assert_eq!(typing(&mut alice.events).await, ("bob".to_owned(), false));
    assert!(
        !bob.client.typing(room, false).await.unwrap(),
        "already stopped"
    );
    // Alice, whose group is the same, types back.
    assert!(alice.client.typing(room, true).await.unwrap());
    assert_eq!(typing(&mut bob.events).await, ("alice".to_owned(), true));

    // Nothing was stored, and messages still decrypt after the notices moved the
    // senders' ratchets.
    assert_eq!(server_log(&server, "alice", room).await, stored_before);
    bob.says(room, "after typing").await;
    alice.hears(room, "after typing").await;
    alice.client.close().await;
    bob.client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_users_new_identity_is_announced_loudly_to_those_who_share_a_room() {
    let server = TestServer::start().await.unwrap();
    let (room, [alice, bob]) = gathered(&server, "trust", ["alice", "bob"]).await;
    let (alice, mut alice_events) = (alice.client, alice.events);
    bob.client.close().await;
    let bob_name: UserName = "bob".parse().unwrap();
    let before = alice.verification(&bob_name).await.unwrap();
    assert!(!before.verified);
    assert!(alice.mark_verified(&bob_name).await.unwrap());

    // Bob reinstalls: a new profile, so a new device and a new identity key, published
    // when he logs in. Alice hears of it live, and loudly, since she had verified him.
    let new_profile = tempfile::tempdir().unwrap();
    let (bob, _bob_events) = login_at(server.addr, new_profile.path(), "bob").await;
    let change = wait_for(&mut alice_events, |event| match event {
        ClientEvent::IdentityChanged {
            user,
            key_changed,
            was_verified,
        } if user.as_str() == "bob" => Some((key_changed, was_verified)),
        _ => None,
    })
    .await;
    assert_eq!(change, (true, true));
    let after = alice.verification(&bob_name).await.unwrap();
    assert!(!after.verified, "verification is reset by a new key");
    assert!(after.key_changed);
    assert_ne!(
        before.safety_number.digits(),
        after.safety_number.digits(),
        "a new key gives a new safety number"
    );
    // The room goes on with bob's new device.
    bob.send_text(Target::Room(room), "new phone who dis")
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut alice_events, room).await.text(),
        Some("new phone who dis")
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stored_but_never_acknowledged_reads_back_with_its_text() {
    let server = TestServer::start().await.unwrap();
    // Alice uses the server through a proxy that can hold the server's answers.
    let proxy = confide_testkit::proxy::Proxy::start(server.addr)
        .await
        .unwrap();
    let alice_profile = tempfile::tempdir().unwrap();
    let (client, _events) = register_at(proxy.addr, alice_profile.path(), "alice").await;
    let mut bob = Person::register(&server, "bob").await;
    let room = client
        .create_room("relay".parse().unwrap(), false)
        .await
        .unwrap()
        .id;
    bob.client.join("relay".parse().unwrap()).await.unwrap();
    client
        .send_text(Target::Room(room), "greetings")
        .await
        .unwrap();
    bob.hears(room, "greetings").await;
    let last_of_alice = |log: &[confide_proto::LogEntry]| {
        log.iter()
            .filter(|entry| {
                entry.sender.as_str() == "alice"
                    && matches!(entry.kind, confide_proto::EntryKind::Message { .. })
            })
            .map(|entry| entry.seq)
            .max()
    };
    let before = last_of_alice(&server_log(&server, "bob", room).await);

    let client = std::sync::Arc::new(client);
    // A send first catches the room up (small requests); the message itself is large,
    // and the server's answers are held from the moment it goes out.
    let text = format!("stored, never acknowledged {}", "x".repeat(8000));
    proxy.hold_replies_after(6000);
    let sending = {
        let client = std::sync::Arc::clone(&client);
        let text = text.clone();
        tokio::spawn(async move { client.send_text(Target::Room(room), &text).await })
    };
    // The server stores the message; its acknowledgement stays in the proxy.
    let stored = async {
        loop {
            let last = last_of_alice(&server_log(&server, "bob", room).await);
            if last > before {
                return last.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let seq = tokio::time::timeout(TIMEOUT, stored)
        .await
        .expect("never stored");
    // The connection is lost, the client cannot get back in (the handshake's answers
    // are held too), and alice closes it: the send's fate is unknown to her device.
    proxy.cut();
    tokio::time::timeout(TIMEOUT, client.close())
        .await
        .expect("close hung");
    let result = tokio::time::timeout(TIMEOUT, sending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        result.is_err(),
        "the send cannot have been acknowledged: {result:?}"
    );
    // Bob has it; alice, back, reads her own message back with its text.
    bob.hears(room, &text).await;
    proxy.hold_replies(false);
    let (alice, mut alice_events) =
        connect_at(proxy.addr, alice_profile.path(), Auth::Resume).await;
    let own = loop {
        let entry = next_message(&mut alice_events, room).await;
        if entry.seq == seq {
            break entry;
        }
    };
    assert_eq!(own.sender.as_str(), "alice");
    assert!(
        own.text() == Some(text.as_str()),
        "her own message did not read back with its text: {:?}",
        own.content
    );
    alice.close().await;
    bob.client.close().await;
}
