//! The server as MLS delivery service, with real MLS bytes from openmls: KeyPackages,
//! groups and their epochs, commits ordered by compare and swap, Welcomes, application
//! messages checked against the epoch, ephemeral messages, identity bundles and direct
//! conversations opened without a message.

mod mls;

use crate::support::user;
use confide_proto::{
    ClaimedKeyPackage, DeviceId, EntryKind, Epoch, ErrorCode, Event, IdentityBundle, LogEntry,
    PendingWelcome, ProtoError, Reply, Request, RoomEncryption, RoomId, RoomInfo, RoomKind, Seq,
    Target, WelcomeId, WelcomeOut, WelcomeRecipient,
};
use confide_testkit::raw::random_nonce;
use confide_testkit::{RawClient, TIMEOUT, TestServer};
use mls::{Member, Outgoing};

/// Most events a test reads while waiting for one; every wait is also bounded by
/// [`TIMEOUT`].
const MAX_EVENTS: usize = 10_000;

const ALICE_DEVICE: DeviceId = DeviceId(0xa11ce);
const BOB_DEVICE: DeviceId = DeviceId(0xb0b);
const CAROL_DEVICE: DeviceId = DeviceId(u64::MAX - 7);

async fn relogin(server: &TestServer, name: &str, device: DeviceId) -> RawClient {
    let mut client = server.raw().await.unwrap();
    client.login(name).await.unwrap().unwrap();
    set_device(&mut client, device).await;
    client
}

async fn set_device(client: &mut RawClient, device: DeviceId) {
    assert_eq!(
        client.ok(Request::SetDevice { device }).await.unwrap(),
        Reply::Ok
    );
}

async fn create_room(
    client: &mut RawClient,
    name: &str,
    private: bool,
    encryption: RoomEncryption,
) -> RoomInfo {
    match client
        .ok(Request::CreateRoom {
            name: name.to_owned(),
            private,
            encryption,
        })
        .await
        .unwrap()
    {
        Reply::Room(info) => info,
        other => panic!("unexpected {other:?}"),
    }
}

async fn join(client: &mut RawClient, name: &str) {
    client
        .ok(Request::Join {
            name: name.to_owned(),
        })
        .await
        .unwrap();
}

async fn invite(client: &mut RawClient, room: RoomId, user: &str) {
    client
        .ok(Request::Invite {
            room,
            user: user.to_owned(),
        })
        .await
        .unwrap();
}

fn err(result: Result<Reply, ProtoError>) -> ProtoError {
    match result {
        Ok(reply) => panic!("expected an error, got {reply:?}"),
        Err(err) => err,
    }
}

async fn upload(
    client: &mut RawClient,
    device: DeviceId,
    one_time: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
) -> Result<Reply, ProtoError> {
    client
        .request(Request::UploadKeyPackages {
            device,
            one_time,
            last_resort,
        })
        .await
        .unwrap()
}

fn stock(one_time: u32, last_resort: bool) -> Reply {
    Reply::KeyPackageStock {
        one_time,
        last_resort,
    }
}

async fn claim(client: &mut RawClient, user: &str) -> Result<Vec<ClaimedKeyPackage>, ProtoError> {
    match client
        .request(Request::ClaimKeyPackages {
            user: user.to_owned(),
        })
        .await
        .unwrap()?
    {
        Reply::KeyPackages(packages) => Ok(packages),
        other => panic!("unexpected {other:?}"),
    }
}

/// Claims exactly one KeyPackage of a user's only device.
async fn claim_one(client: &mut RawClient, user: &str) -> Vec<u8> {
    let mut packages = claim(client, user).await.unwrap();
    assert_eq!(packages.len(), 1);
    packages.remove(0).package
}

async fn init_group(
    client: &mut RawClient,
    room: RoomId,
    group_info: Vec<u8>,
) -> Result<Reply, ProtoError> {
    client
        .request(Request::InitGroup { room, group_info })
        .await
        .unwrap()
}

fn commit_request(room: RoomId, out: &Outgoing, recipients: &[(&str, DeviceId)]) -> Request {
    Request::Commit {
        room,
        epoch: out.epoch,
        commit: out.commit.clone(),
        group_info: out.group_info.clone(),
        welcome: out.welcome.clone().map(|data| WelcomeOut {
            recipients: recipients
                .iter()
                .map(|(user, device)| WelcomeRecipient {
                    user: (*user).to_owned(),
                    device: *device,
                })
                .collect(),
            data,
        }),
    }
}

async fn commit(
    client: &mut RawClient,
    room: RoomId,
    out: &Outgoing,
    recipients: &[(&str, DeviceId)],
) -> Result<Reply, ProtoError> {
    client
        .request(commit_request(room, out, recipients))
        .await
        .unwrap()
}

/// Commits and expects the group to move to the next epoch; returns the commit's seq.
async fn committed(
    client: &mut RawClient,
    room: RoomId,
    out: &Outgoing,
    recipients: &[(&str, DeviceId)],
) -> Seq {
    match commit(client, room, out, recipients).await {
        Ok(Reply::Committed {
            room: got,
            seq,
            epoch,
            ..
        }) => {
            assert_eq!(got, room);
            assert_eq!(epoch, Epoch(out.epoch.0 + 1));
            seq
        }
        other => panic!("commit not accepted: {other:?}"),
    }
}

async fn send(client: &mut RawClient, room: RoomId, body: Vec<u8>) -> Result<Reply, ProtoError> {
    client
        .request(Request::Send {
            target: Target::Room(room),
            nonce: random_nonce(),
            body,
        })
        .await
        .unwrap()
}

async fn fetch_group_info(client: &mut RawClient, room: RoomId) -> Result<Reply, ProtoError> {
    client
        .request(Request::FetchGroupInfo { room })
        .await
        .unwrap()
}

async fn fetch_welcomes(client: &mut RawClient, device: DeviceId) -> Vec<PendingWelcome> {
    match client.ok(Request::FetchWelcomes { device }).await.unwrap() {
        Reply::Welcomes(welcomes) => welcomes,
        other => panic!("unexpected {other:?}"),
    }
}

async fn ack_welcome(
    client: &mut RawClient,
    id: WelcomeId,
    device: DeviceId,
) -> Result<Reply, ProtoError> {
    client
        .request(Request::AckWelcome { id, device })
        .await
        .unwrap()
}

async fn history(client: &mut RawClient, room: RoomId) -> Vec<LogEntry> {
    match client
        .ok(Request::History {
            room,
            before: None,
            limit: 1000,
        })
        .await
        .unwrap()
    {
        Reply::History { entries, .. } => entries,
        other => panic!("unexpected {other:?}"),
    }
}

async fn room_info(client: &mut RawClient, room: RoomId) -> RoomInfo {
    match client.ok(Request::ListRooms).await.unwrap() {
        Reply::Rooms(rooms) => rooms.into_iter().find(|info| info.id == room).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Reads events until `pick` accepts one, bounded in count and time.
async fn wait_for<T>(client: &mut RawClient, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    for _ in 0..MAX_EVENTS {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = client.next_event(left).await.unwrap();
        if let Some(found) = pick(event) {
            return found;
        }
    }
    panic!("the awaited event did not come within {MAX_EVENTS} events");
}

/// Waits for the entry of `room` with sequence number `seq`.
async fn entry_at(client: &mut RawClient, room: RoomId, seq: Seq) -> LogEntry {
    wait_for(client, |event| match event {
        Event::Entry(entry) if entry.room == room && entry.seq == seq => Some(entry),
        _ => None,
    })
    .await
}

/// Every event up to the message `marker` in `room`, which the caller has sent.
async fn events_until_marker(client: &mut RawClient, room: RoomId, marker: &str) -> Vec<Event> {
    let mut seen = Vec::new();
    wait_for(client, |event| {
        if let Event::Entry(entry) = &event
            && entry.room == room
            && entry.kind
                == (EntryKind::Message {
                    body: marker.as_bytes().to_vec(),
                })
        {
            return Some(());
        }
        seen.push(event);
        None
    })
    .await;
    seen
}

/// Two devices in one MLS group at epoch 1: Alice made room `name` and its group, Bob
/// joined the room and the group through the Welcome pushed to him.
struct Pair {
    room: RoomId,
    alice: RawClient,
    bob: RawClient,
    alice_mls: Member,
    bob_mls: Member,
    /// The seq of the commit that added Bob.
    added_at: Seq,
}

async fn pair(server: &TestServer, name: &str) -> Pair {
    let mut alice = user(server, "alice").await;
    let mut bob = user(server, "bob").await;
    set_device(&mut alice, ALICE_DEVICE).await;
    set_device(&mut bob, BOB_DEVICE).await;
    let room = create_room(&mut alice, name, false, RoomEncryption::Mls)
        .await
        .id;
    join(&mut bob, name).await;
    let mut alice_mls = Member::new("alice", ALICE_DEVICE);
    let bob_mls = Member::new("bob", BOB_DEVICE);
    let group_info = alice_mls.create_group(room);
    init_group(&mut alice, room, group_info).await.unwrap();
    upload(&mut bob, BOB_DEVICE, vec![bob_mls.key_package()], None)
        .await
        .unwrap();
    let package = claim_one(&mut alice, "bob").await;
    let out = alice_mls.add(&[package]);
    let added_at = committed(&mut alice, room, &out, &[("bob", BOB_DEVICE)]).await;
    alice_mls.merge();
    let mut pair = Pair {
        room,
        alice,
        bob,
        alice_mls,
        bob_mls,
        added_at,
    };
    let welcome = wait_for(&mut pair.bob, |event| match event {
        Event::Welcome { device, welcome } if device == BOB_DEVICE => Some(welcome),
        _ => None,
    })
    .await;
    pair.bob_mls.join(&welcome.data);
    ack_welcome(&mut pair.bob, welcome.id, BOB_DEVICE)
        .await
        .unwrap();
    assert_eq!(pair.bob_mls.epoch(), Epoch(1));
    pair
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_packages_are_handed_out_once_then_the_last_resort() {
    let server = TestServer::start_with(|config| config.limits.key_packages_per_device = 3)
        .await
        .unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let _carol = user(&server, "carol").await;
    let mls = Member::new("alice", ALICE_DEVICE);
    let (first, second, last) = (mls.key_package(), mls.key_package(), mls.key_package());
    let refused = err(upload(
        &mut alice,
        ALICE_DEVICE,
        vec![first.clone(), b"not a key package".to_vec()],
        None,
    )
    .await);
    assert_eq!(refused.code, ErrorCode::InvalidArgument);
    assert!(refused.message.contains("KeyPackage 1"), "{refused}");
    let too_big = err(upload(&mut alice, ALICE_DEVICE, vec![vec![0; 17 * 1024]], None).await);
    assert_eq!(too_big.code, ErrorCode::InvalidArgument);
    // An empty upload reports the stock: nothing was stored above.
    assert_eq!(
        upload(&mut alice, ALICE_DEVICE, Vec::new(), None).await,
        Ok(stock(0, false))
    );
    assert_eq!(
        upload(
            &mut alice,
            ALICE_DEVICE,
            vec![first.clone(), second.clone()],
            Some(last.clone())
        )
        .await,
        Ok(stock(2, true))
    );
    let over = err(upload(
        &mut alice,
        ALICE_DEVICE,
        vec![mls.key_package(), mls.key_package()],
        None,
    )
    .await);
    assert_eq!(over.code, ErrorCode::InvalidArgument);
    let one = |package: &Vec<u8>| {
        vec![ClaimedKeyPackage {
            device: ALICE_DEVICE,
            package: package.clone(),
        }]
    };
    assert_eq!(claim(&mut bob, "alice").await, Ok(one(&first)));
    assert_eq!(claim(&mut bob, "ALICE").await, Ok(one(&second)));
    assert_eq!(claim(&mut bob, "alice").await, Ok(one(&last)));
    assert_eq!(claim(&mut bob, "alice").await, Ok(one(&last)));
    assert_eq!(
        upload(&mut alice, ALICE_DEVICE, Vec::new(), None).await,
        Ok(stock(0, true))
    );
    let none = claim(&mut bob, "carol").await.unwrap_err();
    assert_eq!(none.code, ErrorCode::NoKeyPackages);
    let unknown = claim(&mut bob, "nobody").await.unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NoSuchUser);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_package_claims_are_rate_limited_per_claiming_account() {
    let server = TestServer::start_with(|config| {
        config.limits.key_package_claims_per_minute = 1;
        config.limits.key_package_claim_burst = 3;
    })
    .await
    .unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let mut carol = user(&server, "carol").await;
    let mls = Member::new("alice", ALICE_DEVICE);
    upload(
        &mut alice,
        ALICE_DEVICE,
        Vec::new(),
        Some(mls.key_package()),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        claim(&mut bob, "alice").await.unwrap();
    }
    let limited = claim(&mut bob, "alice").await.unwrap_err();
    assert_eq!(limited.code, ErrorCode::RateLimited);
    // Another account has its own allowance.
    claim(&mut carol, "alice").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_init_group_wins() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let mut carol = user(&server, "carol").await;
    set_device(&mut alice, ALICE_DEVICE).await;
    set_device(&mut bob, BOB_DEVICE).await;
    let info = create_room(&mut alice, "secret", false, RoomEncryption::Mls).await;
    assert_eq!(
        (info.encryption.clone(), info.epoch),
        (RoomEncryption::Mls, None)
    );
    let room = info.id;
    join(&mut bob, "secret").await;
    let (mut alice_mls, mut bob_mls) = (
        Member::new("alice", ALICE_DEVICE),
        Member::new("bob", BOB_DEVICE),
    );
    let (alice_info, bob_info) = (alice_mls.create_group(room), bob_mls.create_group(room));
    let (from_alice, from_bob) = tokio::join!(
        init_group(&mut alice, room, alice_info.clone()),
        init_group(&mut bob, room, bob_info.clone())
    );
    let (winner, loser) = match (&from_alice, &from_bob) {
        (Ok(_), Err(_)) => (alice_info, from_bob),
        (Err(_), Ok(_)) => (bob_info, from_alice),
        other => panic!("exactly one InitGroup must win: {other:?}"),
    };
    assert_eq!(err(loser).code, ErrorCode::GroupExists);
    let expected = Reply::GroupInfo {
        room,
        epoch: Epoch(0),
        seq: Seq(0),
        group_info: winner.clone(),
    };
    assert_eq!(fetch_group_info(&mut bob, room).await, Ok(expected.clone()));
    assert_eq!(fetch_group_info(&mut alice, room).await, Ok(expected));
    assert_eq!(room_info(&mut bob, room).await.epoch, Some(Epoch(0)));
    let again = err(init_group(&mut alice, room, winner.clone()).await);
    assert_eq!(again.code, ErrorCode::GroupExists);
    // Only members may create or read the group.
    assert_eq!(
        err(fetch_group_info(&mut carol, room).await).code,
        ErrorCode::NotMember
    );
    // A room without a group, and bytes that are not its GroupInfo.
    let other = create_room(&mut carol, "other", false, RoomEncryption::Mls)
        .await
        .id;
    assert_eq!(
        err(fetch_group_info(&mut carol, other).await).code,
        ErrorCode::NoGroup
    );
    assert_eq!(
        err(init_group(&mut alice, other, winner.clone()).await).code,
        ErrorCode::NotMember
    );
    let wrong_room = err(init_group(&mut carol, other, winner).await);
    assert_eq!(wrong_room.code, ErrorCode::InvalidHandshake);
    let garbage = err(init_group(&mut carol, other, b"garbage".to_vec()).await);
    assert_eq!(garbage.code, ErrorCode::InvalidHandshake);
    // A shared-key room never has an MLS group.
    let salt = RoomEncryption::SharedKey {
        salt: Some([7; 16]),
    };
    let legacy = create_room(&mut carol, "legacy", true, salt.clone()).await;
    assert_eq!(legacy.encryption, salt);
    let mut carol_mls = Member::new("carol", CAROL_DEVICE);
    let refused = err(init_group(&mut carol, legacy.id, carol_mls.create_group(legacy.id)).await);
    assert_eq!(refused.code, ErrorCode::NoGroup);
    assert_eq!(
        err(fetch_group_info(&mut carol, legacy.id).await).code,
        ErrorCode::NoGroup
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_for_one_epoch_are_compare_and_swap() {
    let server = TestServer::start().await.unwrap();
    let Pair {
        room,
        mut alice,
        mut bob,
        mut alice_mls,
        mut bob_mls,
        ..
    } = pair(&server, "cas").await;
    let mut carol = user(&server, "carol").await;
    join(&mut carol, "cas").await;
    // Both commit in epoch 1 at once: exactly one wins.
    let (from_alice, from_bob) = (alice_mls.self_update(), bob_mls.self_update());
    let (alice_result, bob_result) = tokio::join!(
        commit(&mut alice, room, &from_alice, &[]),
        commit(&mut bob, room, &from_bob, &[])
    );
    let alice_won = match (&alice_result, &bob_result) {
        (Ok(_), Err(_)) => true,
        (Err(_), Ok(_)) => false,
        other => panic!("exactly one commit must win epoch 1: {other:?}"),
    };
    let (won, lost) = if alice_won {
        (alice_result, bob_result)
    } else {
        (bob_result, alice_result)
    };
    let Ok(Reply::Committed {
        seq: won_seq,
        epoch: won_epoch,
        ..
    }) = won
    else {
        panic!("unexpected {won:?}");
    };
    assert_eq!(won_epoch, Epoch(2));
    let lost = err(lost);
    assert_eq!(lost.code, ErrorCode::StaleEpoch);
    assert_eq!(lost.message, "group is at epoch 2");
    let (winner, winner_mls, winner_device, loser, loser_mls) = if alice_won {
        (
            &mut alice,
            &mut alice_mls,
            ALICE_DEVICE,
            &mut bob,
            &mut bob_mls,
        )
    } else {
        (
            &mut bob,
            &mut bob_mls,
            BOB_DEVICE,
            &mut alice,
            &mut alice_mls,
        )
    };
    winner_mls.merge();
    loser_mls.discard();
    // The loser catches up from the log and the GroupInfo, then commits again.
    let entries = history(loser, room).await;
    let last = entries.last().unwrap();
    assert_eq!(last.seq, won_seq);
    assert_eq!(last.device, Some(winner_device));
    let EntryKind::Commit { epoch, data } = &last.kind else {
        panic!("expected a commit, got {last:?}");
    };
    assert_eq!(*epoch, Epoch(1));
    loser_mls.apply_commit(data);
    assert_eq!(loser_mls.epoch(), Epoch(2));
    match fetch_group_info(loser, room).await {
        Ok(Reply::GroupInfo { epoch, seq, .. }) => assert_eq!((epoch, seq), (Epoch(2), won_seq)),
        other => panic!("unexpected {other:?}"),
    }
    let retry = loser_mls.self_update();
    let retry_seq = committed(loser, room, &retry, &[]).await;
    loser_mls.merge();
    // The winner applies the loser's commit as it arrives live.
    let entry = entry_at(winner, room, retry_seq).await;
    let EntryKind::Commit { epoch, data } = entry.kind else {
        panic!("expected a commit");
    };
    assert_eq!(epoch, Epoch(2));
    winner_mls.apply_commit(&data);
    assert_eq!(winner_mls.epoch(), Epoch(3));
    // Both are in the same epoch again: a message from one reads at the other.
    let body = winner_mls.encrypt("after the race");
    let Ok(Reply::Sent { seq, .. }) = send(winner, room, body).await else {
        panic!("message refused");
    };
    let entry = entry_at(loser, room, seq).await;
    let EntryKind::Message { body } = entry.kind else {
        panic!("expected a message");
    };
    assert_eq!(loser_mls.decrypt(&body), "after the race");
    // The bystander, a room member outside the group, sees the commits in the log.
    let epochs: Vec<Epoch> = history(&mut carol, room)
        .await
        .into_iter()
        .filter_map(|entry| match entry.kind {
            EntryKind::Commit { epoch, .. } => Some(epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, vec![Epoch(1), Epoch(2)]);
    assert_eq!(room_info(&mut carol, room).await.epoch, Some(Epoch(3)));
}

/// A member's commit with one bit of its signature flipped. A public message ends with
/// the signature (64 bytes), the confirmation tag and the membership tag (32 bytes each),
/// each after a one-byte length.
fn break_signature(out: &Outgoing) -> Outgoing {
    let mut commit = out.commit.clone();
    let start = commit.len() - 66 - 64;
    assert_eq!(commit[start - 1], 64, "not the signature's length byte");
    commit[start + 10] ^= 1;
    Outgoing {
        epoch: out.epoch,
        commit,
        group_info: out.group_info.clone(),
        welcome: out.welcome.clone(),
    }
}

/// Refused as an invalid handshake, naming `reason`.
fn refused_for(result: Result<Reply, ProtoError>, reason: &str) {
    let refused = err(result);
    assert_eq!(refused.code, ErrorCode::InvalidHandshake, "{refused}");
    assert!(refused.message.contains(reason), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_commits_are_refused_and_the_epoch_holds() {
    let mut server = TestServer::start().await.unwrap();
    let Pair {
        room,
        mut alice,
        mut bob,
        mut alice_mls,
        mut bob_mls,
        ..
    } = pair(&server, "forged").await;
    let before = history(&mut alice, room).await.len();
    // Alice's commit with a broken signature; the same commit uploaded by Bob, whose
    // device did not make it; Alice's commit with Bob's GroupInfo for the next epoch.
    let honest = alice_mls.self_update();
    refused_for(
        commit(&mut alice, room, &break_signature(&honest), &[]).await,
        "signature does not verify",
    );
    refused_for(
        commit(&mut bob, room, &honest, &[]).await,
        "not from this connection's device",
    );
    let from_bob = bob_mls.self_update();
    bob_mls.discard();
    let mismatched = Outgoing {
        epoch: honest.epoch,
        commit: honest.commit.clone(),
        group_info: from_bob.group_info,
        welcome: None,
    };
    refused_for(
        commit(&mut alice, room, &mismatched, &[]).await,
        "GroupInfo does not match",
    );
    // A connection that named no device cannot commit at all.
    let mut deviceless = server.raw().await.unwrap();
    deviceless.login("alice").await.unwrap().unwrap();
    refused_for(
        commit(&mut deviceless, room, &honest, &[]).await,
        "SetDevice",
    );
    // None of that moved the group or reached the log.
    assert_eq!(room_info(&mut bob, room).await.epoch, Some(Epoch(1)));
    assert_eq!(history(&mut alice, room).await.len(), before);
    // The honest commit goes through, and Bob applies it.
    let seq = committed(&mut alice, room, &honest, &[]).await;
    alice_mls.merge();
    let entry = entry_at(&mut bob, room, seq).await;
    let EntryKind::Commit { data, .. } = entry.kind else {
        panic!("expected a commit");
    };
    bob_mls.apply_commit(&data);
    // A forged commit for a past epoch is stale before it is anything else.
    assert_eq!(
        err(commit(&mut alice, room, &break_signature(&honest), &[]).await).code,
        ErrorCode::StaleEpoch
    );

    // After a restart the server rebuilds the group's public state from the stored
    // GroupInfo and goes on checking.
    drop((alice, bob, deviceless));
    server.restart().await.unwrap();
    let mut alice = relogin(&server, "alice", ALICE_DEVICE).await;
    let mut bob = relogin(&server, "bob", BOB_DEVICE).await;
    let update = bob_mls.self_update();
    refused_for(
        commit(&mut bob, room, &break_signature(&update), &[]).await,
        "signature does not verify",
    );
    refused_for(
        commit(&mut alice, room, &update, &[]).await,
        "not from this connection's device",
    );
    assert_eq!(room_info(&mut alice, room).await.epoch, Some(Epoch(2)));
    committed(&mut bob, room, &update, &[]).await;
    bob_mls.merge();
    assert_eq!(room_info(&mut alice, room).await.epoch, Some(Epoch(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_misdirected_handshakes_are_refused() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    set_device(&mut alice, ALICE_DEVICE).await;
    let one = create_room(&mut alice, "one", false, RoomEncryption::Mls)
        .await
        .id;
    let two = create_room(&mut alice, "two", false, RoomEncryption::Mls)
        .await
        .id;
    let three = create_room(&mut alice, "three", false, RoomEncryption::Mls)
        .await
        .id;
    let (mut one_mls, mut two_mls) = (
        Member::new("alice", ALICE_DEVICE),
        Member::new("alice", ALICE_DEVICE),
    );
    init_group(&mut alice, one, one_mls.create_group(one))
        .await
        .unwrap();
    init_group(&mut alice, two, two_mls.create_group(two))
        .await
        .unwrap();
    let before = history(&mut alice, one).await.len();
    let good = one_mls.self_update();
    let expect = |result: Result<Reply, ProtoError>, code: ErrorCode| {
        let refused = err(result);
        assert_eq!(refused.code, code, "{refused}");
        refused
    };
    // Not MLS at all.
    let mut garbage = Outgoing {
        epoch: Epoch(0),
        commit: b"garbage".to_vec(),
        group_info: good.group_info.clone(),
        welcome: None,
    };
    expect(
        commit(&mut alice, one, &garbage, &[]).await,
        ErrorCode::InvalidHandshake,
    );
    // A commit of room two's group sent to room one.
    let bob_package = Member::new("bob", BOB_DEVICE).key_package();
    let elsewhere = two_mls.add(&[bob_package]);
    expect(
        commit(&mut alice, one, &elsewhere, &[]).await,
        ErrorCode::InvalidHandshake,
    );
    // The GroupInfo must be the next epoch's.
    garbage.commit = good.commit.clone();
    garbage.group_info = one_mls.group_info();
    expect(
        commit(&mut alice, one, &garbage, &[]).await,
        ErrorCode::InvalidHandshake,
    );
    // A commit claimed for another epoch.
    let mut future = Outgoing {
        epoch: Epoch(5),
        commit: good.commit.clone(),
        group_info: good.group_info.clone(),
        welcome: None,
    };
    let stale = expect(
        commit(&mut alice, one, &future, &[]).await,
        ErrorCode::StaleEpoch,
    );
    assert_eq!(stale.message, "group is at epoch 0");
    // A Welcome for someone outside the room, or for nobody, or that is no Welcome.
    future.epoch = Epoch(0);
    future.welcome = elsewhere.welcome.clone();
    let outsider = expect(
        commit(&mut alice, one, &future, &[("bob", BOB_DEVICE)]).await,
        ErrorCode::NotMember,
    );
    assert!(outsider.message.contains("bob"), "{outsider}");
    let unknown = expect(
        commit(&mut alice, one, &future, &[("nobody", BOB_DEVICE)]).await,
        ErrorCode::NotMember,
    );
    assert!(unknown.message.contains("nobody"), "{unknown}");
    expect(
        commit(&mut alice, one, &future, &[]).await,
        ErrorCode::InvalidArgument,
    );
    future.welcome = Some(b"not a welcome".to_vec());
    expect(
        commit(&mut alice, one, &future, &[("alice", ALICE_DEVICE)]).await,
        ErrorCode::InvalidHandshake,
    );
    // No group yet, and not a member.
    expect(
        commit(&mut alice, three, &good, &[]).await,
        ErrorCode::NoGroup,
    );
    expect(
        commit(&mut bob, one, &good, &[]).await,
        ErrorCode::NotMember,
    );
    // Nothing was stored; the right commit still goes through.
    assert_eq!(history(&mut alice, one).await.len(), before);
    committed(&mut alice, one, &good, &[]).await;
    one_mls.merge();
    assert_eq!(one_mls.epoch(), Epoch(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcomes_are_pushed_live_and_kept_for_offline_devices() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let (mut bob_mls, mut carol_mls) = (
        Member::new("bob", BOB_DEVICE),
        Member::new("carol", CAROL_DEVICE),
    );
    {
        // Carol sets up her device, then goes offline.
        let mut carol = user(&server, "carol").await;
        upload(
            &mut carol,
            CAROL_DEVICE,
            vec![carol_mls.key_package()],
            None,
        )
        .await
        .unwrap();
    }
    set_device(&mut alice, ALICE_DEVICE).await;
    set_device(&mut bob, BOB_DEVICE).await;
    upload(&mut bob, BOB_DEVICE, vec![bob_mls.key_package()], None)
        .await
        .unwrap();
    let room = create_room(&mut alice, "club", true, RoomEncryption::Mls)
        .await
        .id;
    // Invited users may receive a Welcome before they join the room.
    invite(&mut alice, room, "bob").await;
    invite(&mut alice, room, "carol").await;
    let mut alice_mls = Member::new("alice", ALICE_DEVICE);
    init_group(&mut alice, room, alice_mls.create_group(room))
        .await
        .unwrap();
    let packages = vec![
        claim_one(&mut alice, "bob").await,
        claim_one(&mut alice, "carol").await,
    ];
    let out = alice_mls.add(&packages);
    let seq = committed(
        &mut alice,
        room,
        &out,
        &[("bob", BOB_DEVICE), ("carol", CAROL_DEVICE)],
    )
    .await;
    alice_mls.merge();
    let live = wait_for(&mut bob, |event| match event {
        Event::Welcome { device, welcome } => Some((device, welcome)),
        _ => None,
    })
    .await;
    let (device, welcome) = live;
    assert_eq!(device, BOB_DEVICE);
    assert_eq!(
        (welcome.room, welcome.seq, welcome.sender.as_str()),
        (room, seq, "alice")
    );
    assert_eq!(Some(&welcome.data), out.welcome.as_ref());
    bob_mls.join(&welcome.data);
    assert_eq!((bob_mls.epoch(), bob_mls.members()), (Epoch(1), 3));
    assert_eq!(
        fetch_welcomes(&mut bob, BOB_DEVICE).await,
        vec![welcome.clone()]
    );
    assert_eq!(
        ack_welcome(&mut bob, welcome.id, BOB_DEVICE).await,
        Ok(Reply::Ok)
    );
    let twice = err(ack_welcome(&mut bob, welcome.id, BOB_DEVICE).await);
    assert_eq!(twice.code, ErrorCode::NoSuchWelcome);
    assert!(fetch_welcomes(&mut bob, BOB_DEVICE).await.is_empty());
    // Carol finds hers when she comes back.
    let mut carol = relogin(&server, "carol", CAROL_DEVICE).await;
    let pending = fetch_welcomes(&mut carol, CAROL_DEVICE).await;
    assert_eq!(pending.len(), 1);
    let for_carol = &pending[0];
    assert_eq!((for_carol.room, for_carol.seq), (room, seq));
    assert!(fetch_welcomes(&mut carol, DeviceId(1)).await.is_empty());
    // Nobody else can acknowledge it, and not from another device.
    let theft = err(ack_welcome(&mut bob, for_carol.id, CAROL_DEVICE).await);
    assert_eq!(theft.code, ErrorCode::NoSuchWelcome);
    let wrong_device = err(ack_welcome(&mut carol, for_carol.id, DeviceId(1)).await);
    assert_eq!(wrong_device.code, ErrorCode::NoSuchWelcome);
    carol_mls.join(&for_carol.data);
    assert_eq!(carol_mls.epoch(), Epoch(1));
    ack_welcome(&mut carol, for_carol.id, CAROL_DEVICE)
        .await
        .unwrap();
    assert!(fetch_welcomes(&mut carol, CAROL_DEVICE).await.is_empty());
    // Invited, Carol can read the GroupInfo; once she joins she reads messages.
    match fetch_group_info(&mut carol, room).await {
        Ok(Reply::GroupInfo { epoch, .. }) => assert_eq!(epoch, Epoch(1)),
        other => panic!("unexpected {other:?}"),
    }
    join(&mut carol, "club").await;
    let Ok(Reply::Sent { seq, .. }) = send(&mut alice, room, alice_mls.encrypt("welcome!")).await
    else {
        panic!("message refused");
    };
    let entry = entry_at(&mut carol, room, seq).await;
    let EntryKind::Message { body } = entry.kind else {
        panic!("expected a message");
    };
    assert_eq!(carol_mls.decrypt(&body), "welcome!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_key_packages_and_welcomes_survive_a_restart() {
    let mut server = TestServer::start().await.unwrap();
    let Pair {
        room,
        mut alice,
        bob,
        mut alice_mls,
        added_at,
        ..
    } = pair(&server, "keep").await;
    let dave_mls = Member::new("dave", DeviceId(9));
    let mut dave = user(&server, "dave").await;
    let dave_packages = vec![dave_mls.key_package(), dave_mls.key_package()];
    upload(&mut dave, DeviceId(9), dave_packages.clone(), None)
        .await
        .unwrap();
    invite(&mut alice, room, "dave").await;
    // A Welcome left pending for Dave, who never acknowledges it before the restart.
    let package = claim_one(&mut alice, "dave").await;
    assert_eq!(package, dave_packages[0]);
    let out = alice_mls.add(&[package]);
    let seq = committed(&mut alice, room, &out, &[("dave", DeviceId(9))]).await;
    alice_mls.merge();
    let group_info = out.group_info.clone();
    let old_id = fetch_welcomes(&mut dave, DeviceId(9)).await[0].id;
    let bundle = IdentityBundle {
        identity_key: vec![1; 32],
        device_list: b"alice's devices".to_vec(),
        signature: vec![2; 64],
    };
    alice
        .ok(Request::PublishIdentity {
            bundle: bundle.clone(),
        })
        .await
        .unwrap();
    drop((alice, bob, dave));
    server.restart().await.unwrap();

    let mut alice = relogin(&server, "alice", ALICE_DEVICE).await;
    let mut bob = relogin(&server, "bob", BOB_DEVICE).await;
    let mut dave = relogin(&server, "dave", DeviceId(9)).await;
    assert_eq!(
        fetch_group_info(&mut bob, room).await,
        Ok(Reply::GroupInfo {
            room,
            epoch: Epoch(2),
            seq,
            group_info,
        })
    );
    assert_eq!(room_info(&mut bob, room).await.epoch, Some(Epoch(2)));
    let pending = fetch_welcomes(&mut dave, DeviceId(9)).await;
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].id, pending[0].seq), (old_id, seq));
    assert_eq!(Some(&pending[0].data), out.welcome.as_ref());
    // The one-time package handed out before the restart stays handed out.
    assert_eq!(claim_one(&mut alice, "dave").await, dave_packages[1]);
    assert_eq!(
        upload(&mut dave, DeviceId(9), Vec::new(), None).await,
        Ok(stock(0, false))
    );
    match alice
        .ok(Request::FetchIdentity {
            user: "alice".to_owned(),
        })
        .await
        .unwrap()
    {
        Reply::Identity { bundle: found, .. } => assert_eq!(found, Some(bundle)),
        other => panic!("unexpected {other:?}"),
    }
    // The epoch is enforced after the restart as before it.
    let stale = Outgoing {
        epoch: Epoch(1),
        ..out
    };
    assert_eq!(
        err(commit(&mut alice, room, &stale, &[("dave", DeviceId(9))]).await).code,
        ErrorCode::StaleEpoch
    );
    let update = alice_mls.self_update();
    let next = committed(&mut alice, room, &update, &[]).await;
    alice_mls.merge();
    assert!(next > seq && seq > added_at);
    // New Welcome ids continue after the old ones.
    let carol_mls = Member::new("carol", CAROL_DEVICE);
    let mut carol = user(&server, "carol").await;
    set_device(&mut carol, CAROL_DEVICE).await;
    upload(
        &mut carol,
        CAROL_DEVICE,
        vec![carol_mls.key_package()],
        None,
    )
    .await
    .unwrap();
    invite(&mut alice, room, "carol").await;
    let package = claim_one(&mut alice, "carol").await;
    let out = alice_mls.add(&[package]);
    committed(&mut alice, room, &out, &[("carol", CAROL_DEVICE)]).await;
    let new = fetch_welcomes(&mut carol, CAROL_DEVICE).await;
    assert!(new[0].id > old_id);
    // The event log names what happened, never what it said.
    server.stop().await.unwrap();
    let log = std::fs::read_to_string(server.data_dir().join("events.log")).unwrap();
    for needle in [
        "init_group room=",
        "commit room=",
        "recipients=1",
        "claim_key_packages claimer=alice target=dave count=1",
        "publish_identity user=alice",
    ] {
        assert!(log.contains(needle), "no {needle:?} in the event log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_messages_must_be_mls_of_the_current_epoch() {
    let server = TestServer::start().await.unwrap();
    let Pair {
        room,
        mut alice,
        mut bob,
        mut alice_mls,
        mut bob_mls,
        ..
    } = pair(&server, "e2e").await;
    let body = alice_mls.encrypt("one");
    let nonce = random_nonce();
    let send_with = |nonce, body| Request::Send {
        target: Target::Room(room),
        nonce,
        body,
    };
    let Ok(Reply::Sent { seq: first, .. }) =
        alice.request(send_with(nonce, body.clone())).await.unwrap()
    else {
        panic!("message refused");
    };
    let entry = entry_at(&mut bob, room, first).await;
    assert_eq!(entry.device, Some(ALICE_DEVICE));
    let EntryKind::Message { body: received } = &entry.kind else {
        panic!("expected a message");
    };
    assert_eq!(bob_mls.decrypt(received), "one");
    // Plain text, and a commit sent as a message, are not application messages.
    assert_eq!(
        err(send(&mut alice, room, b"hello in the clear".to_vec()).await).code,
        ErrorCode::InvalidHandshake
    );
    let update = alice_mls.self_update();
    assert_eq!(
        err(send(&mut alice, room, update.commit.clone()).await).code,
        ErrorCode::InvalidHandshake
    );
    alice_mls.discard();
    // A message made in epoch 1 is refused once the group is at epoch 2.
    let held = bob_mls.encrypt("held back");
    let update = alice_mls.self_update();
    let commit_seq = committed(&mut alice, room, &update, &[]).await;
    alice_mls.merge();
    let ephemeral = |body: Vec<u8>| Request::SendEphemeral { room, body };
    // Ephemeral messages (typing) follow the same rules, although nothing is stored.
    assert_eq!(
        err(bob.request(ephemeral(held.clone())).await.unwrap()).code,
        ErrorCode::StaleEpoch
    );
    assert_eq!(
        err(bob
            .request(ephemeral(b"typing in the clear".to_vec()))
            .await
            .unwrap())
        .code,
        ErrorCode::InvalidHandshake
    );
    let stale = err(send(&mut bob, room, held).await);
    assert_eq!(stale.code, ErrorCode::StaleEpoch);
    assert_eq!(stale.message, "group is at epoch 2");
    // A resend of a message the server already stored is still acknowledged once.
    match alice.request(send_with(nonce, body)).await.unwrap() {
        Ok(Reply::Sent { seq, .. }) => assert_eq!(seq, first),
        other => panic!("unexpected {other:?}"),
    }
    let entry = entry_at(&mut bob, room, commit_seq).await;
    let EntryKind::Commit { data, .. } = entry.kind else {
        panic!("expected a commit");
    };
    bob_mls.apply_commit(&data);
    let Ok(Reply::Sent { seq, .. }) = send(&mut bob, room, bob_mls.encrypt("two")).await else {
        panic!("message refused");
    };
    let entry = entry_at(&mut alice, room, seq).await;
    let EntryKind::Message { body } = entry.kind else {
        panic!("expected a message");
    };
    assert_eq!(alice_mls.decrypt(&body), "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_reach_online_members_and_are_never_stored() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    set_device(&mut alice, ALICE_DEVICE).await;
    let mut alice_again = server.raw().await.unwrap();
    alice_again.login("alice").await.unwrap().unwrap();
    let mut bob = user(&server, "bob").await;
    let mut carol = user(&server, "carol").await;
    let room = create_room(&mut alice, "typing", false, RoomEncryption::Mls)
        .await
        .id;
    join(&mut bob, "typing").await;
    let lobby = alice.lobby().await.unwrap();
    let ephemeral = |body: &[u8]| Request::SendEphemeral {
        room,
        body: body.to_vec(),
    };
    assert_eq!(alice.ok(ephemeral(b"typing...")).await.unwrap(), Reply::Ok);
    let expected = Event::Ephemeral {
        room,
        sender: alice_name(),
        device: Some(ALICE_DEVICE),
        body: b"typing...".to_vec(),
    };
    for receiver in [&mut bob, &mut alice_again] {
        let got = wait_for(receiver, |event| {
            matches!(event, Event::Ephemeral { .. }).then_some(event)
        })
        .await;
        assert_eq!(got, expected);
    }
    // Neither the sending connection nor a non-member gets it.
    alice
        .say(Target::Room(room), "marker")
        .await
        .unwrap()
        .unwrap();
    alice
        .say(Target::Room(lobby), "marker")
        .await
        .unwrap()
        .unwrap();
    let own = events_until_marker(&mut alice, room, "marker").await;
    assert!(
        !own.iter()
            .any(|event| matches!(event, Event::Ephemeral { .. }))
    );
    let outside = events_until_marker(&mut carol, lobby, "marker").await;
    assert!(
        !outside
            .iter()
            .any(|event| matches!(event, Event::Ephemeral { .. }))
    );
    // Nothing is stored.
    let stored = history(&mut bob, room).await;
    assert!(stored.iter().all(|entry| match &entry.kind {
        EntryKind::Message { body } => body == b"marker",
        _ => true,
    }));
    assert_eq!(
        err(carol.request(ephemeral(b"hi")).await.unwrap()).code,
        ErrorCode::NotMember
    );
    assert_eq!(
        err(alice.request(ephemeral(&[0; 4097])).await.unwrap()).code,
        ErrorCode::MessageTooLarge
    );
}

fn alice_name() -> confide_proto::UserName {
    confide_proto::UserName::parse("alice").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_changes_are_pushed_to_room_mates() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut alice_again = server.raw().await.unwrap();
    alice_again.login("alice").await.unwrap().unwrap();
    let mut bob = user(&server, "bob").await;
    let fetch = |name: &str| Request::FetchIdentity {
        user: name.to_owned(),
    };
    assert_eq!(
        bob.ok(fetch("alice")).await.unwrap(),
        Reply::Identity {
            user: alice_name(),
            bundle: None
        }
    );
    let bundle = IdentityBundle {
        identity_key: vec![1; 32],
        device_list: vec![3; 1000],
        signature: vec![2; 64],
    };
    alice
        .ok(Request::PublishIdentity {
            bundle: bundle.clone(),
        })
        .await
        .unwrap();
    for receiver in [&mut bob, &mut alice_again] {
        let user = wait_for(receiver, |event| match event {
            Event::IdentityChanged { user } => Some(user),
            _ => None,
        })
        .await;
        assert_eq!(user, alice_name());
    }
    assert_eq!(
        bob.ok(fetch("ALICE")).await.unwrap(),
        Reply::Identity {
            user: alice_name(),
            bundle: Some(bundle.clone())
        }
    );
    // The publishing connection is not told about its own change.
    let lobby = alice.lobby().await.unwrap();
    alice
        .say(Target::Room(lobby), "marker")
        .await
        .unwrap()
        .unwrap();
    let own = events_until_marker(&mut alice, lobby, "marker").await;
    assert!(
        !own.iter()
            .any(|event| matches!(event, Event::IdentityChanged { .. }))
    );
    for oversized in [
        IdentityBundle {
            identity_key: vec![0; 65],
            ..bundle.clone()
        },
        IdentityBundle {
            signature: vec![0; 129],
            ..bundle.clone()
        },
        IdentityBundle {
            device_list: vec![0; 64 * 1024 + 1],
            ..bundle.clone()
        },
    ] {
        let refused = err(alice
            .request(Request::PublishIdentity { bundle: oversized })
            .await
            .unwrap());
        assert_eq!(refused.code, ErrorCode::InvalidArgument);
    }
    assert_eq!(
        err(bob.request(fetch("nobody")).await.unwrap()).code,
        ErrorCode::NoSuchUser
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_opened_at_once_are_one_per_pair_and_survive_a_restart() {
    // Every user opens a conversation with every other at the same moment, so each pair
    // is asked for from both ends at once, and many are created together.
    const USERS: usize = 8;
    let mut server = TestServer::start().await.unwrap();
    let names: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();
    let mut clients = Vec::new();
    for name in &names {
        clients.push(user(&server, name).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let names = names.clone();
        tasks.spawn(async move {
            let mut opened = Vec::new();
            for (j, peer) in names.iter().enumerate() {
                if i == j {
                    continue;
                }
                let request = Request::OpenDirect { user: peer.clone() };
                match client.ok(request).await.unwrap() {
                    Reply::Room(info) => opened.push(((i.min(j), i.max(j)), info.id)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (i, client, opened)
        });
    }
    let mut rooms: std::collections::HashMap<(usize, usize), RoomId> = Default::default();
    let mut clients: Vec<Option<RawClient>> = (0..USERS).map(|_| None).collect();
    while let Some(done) = tokio::time::timeout(TIMEOUT, tasks.join_next())
        .await
        .unwrap()
    {
        let (i, client, opened) = done.unwrap();
        clients[i] = Some(client);
        for (pair, id) in opened {
            let first = *rooms.entry(pair).or_insert(id);
            assert_eq!(first, id, "both ends of {pair:?} got the same conversation");
        }
    }
    assert_eq!(rooms.len(), USERS * (USERS - 1) / 2);
    let distinct: std::collections::HashSet<RoomId> = rooms.values().copied().collect();
    assert_eq!(distinct.len(), rooms.len(), "one conversation per pair");
    // Each conversation works: a message sent by name lands in it, at sequence 1.
    let mut first = clients[0].take().unwrap();
    for peer in 1..USERS {
        match first
            .say(Target::User(names[peer].clone()), "hello")
            .await
            .unwrap()
        {
            Ok(Reply::Sent { room, seq, .. }) => {
                assert_eq!((room, seq), (rooms[&(0, peer)], Seq(1)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(first);
    drop(clients);
    // The conversations were stored: after a restart each pair finds the same one.
    server.restart().await.unwrap();
    let mut last = crate::support::login(&server, &names[USERS - 1]).await;
    for peer in 0..USERS - 1 {
        let request = Request::OpenDirect {
            user: names[peer].clone(),
        };
        match last.ok(request).await.unwrap() {
            Reply::Room(info) => {
                assert_eq!(info.id, rooms[&(peer, USERS - 1)]);
                let expected = if peer == 0 { Seq(1) } else { Seq(0) };
                assert_eq!(info.last_seq, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_direct_is_idempotent_and_sends_nothing() {
    let server = TestServer::start().await.unwrap();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let open = |name: &str| Request::OpenDirect {
        user: name.to_owned(),
    };
    let Reply::Room(info) = alice.ok(open("bob")).await.unwrap() else {
        panic!("expected a room");
    };
    assert!(matches!(&info.kind, RoomKind::Direct { peer } if peer.as_str() == "bob"));
    assert_eq!(
        (info.encryption.clone(), info.epoch),
        (RoomEncryption::Mls, None)
    );
    assert_eq!(info.last_seq, Seq(0));
    let announced = wait_for(&mut bob, |event| match event {
        Event::Room(room) if room.id == info.id => Some(room),
        _ => None,
    })
    .await;
    assert!(matches!(&announced.kind, RoomKind::Direct { peer } if peer.as_str() == "alice"));
    let Reply::Room(again) = alice.ok(open("BOB")).await.unwrap() else {
        panic!("expected a room");
    };
    let Reply::Room(from_bob) = bob.ok(open("alice")).await.unwrap() else {
        panic!("expected a room");
    };
    assert_eq!((again.id, from_bob.id), (info.id, info.id));
    assert!(history(&mut bob, info.id).await.is_empty());
    // Sending by name uses the same conversation.
    match alice
        .say(Target::User("bob".to_owned()), "hi")
        .await
        .unwrap()
    {
        Ok(Reply::Sent { room, seq, .. }) => assert_eq!((room, seq), (info.id, Seq(1))),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err(alice.request(open("alice")).await.unwrap()).code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        err(alice.request(open("nobody")).await.unwrap()).code,
        ErrorCode::NoSuchUser
    );
}
