//! The watch against groups of real devices: the test stands in for the server, checking
//! each commit before the devices apply it.

use super::*;
use crate::device::{Device, GroupMember};

const ROOM: u64 = 7;

fn device(user: &str, id: u64) -> Device {
    Device::create(user, id).unwrap()
}

fn anyone(_: &GroupMember) -> bool {
    true
}

/// Flips a bit inside the signature of a commit (a public message ends with the
/// signature, the confirmation tag and, for a member's commit, the membership tag; each
/// has a one-byte length: 64 and 32 bytes).
fn break_signature(commit: &[u8], external: bool) -> Vec<u8> {
    let mut bad = commit.to_vec();
    let tail = if external { 33 } else { 66 };
    let start = bad.len() - tail - 64;
    assert_eq!(bad[start - 1], 64, "not the signature's length byte");
    bad[start + 10] ^= 1;
    bad
}

/// Alice creates the room's group; the watch starts from its GroupInfo.
fn alice_alone() -> (Device, GroupWatch) {
    let mut alice = device("alice", 1);
    let info = alice.create_group(ROOM).unwrap();
    let watch = GroupWatch::init(ROOM, &info, alice.id()).unwrap();
    (alice, watch)
}

/// Checks and applies a commit the way the server does, then lets its author apply it.
fn accept(watch: &mut GroupWatch, author: &mut Device, commit: &crate::PreparedCommit) -> u64 {
    let checked = watch
        .check_commit(&commit.commit, &commit.group_info, author.id())
        .unwrap();
    assert_eq!(checked.epoch(), commit.epoch);
    assert_eq!(checked.committer(), author.id());
    let epoch = watch.apply(checked).unwrap();
    assert_eq!(author.commit_accepted(ROOM).unwrap(), epoch);
    epoch
}

fn sorted(mut members: Vec<MemberId>) -> Vec<MemberId> {
    members.sort();
    members
}

#[test]
fn a_new_group_must_hold_only_its_creator() {
    let mut alice = device("alice", 1);
    let info = alice.create_group(ROOM).unwrap();
    let watch = GroupWatch::init(ROOM, &info, alice.id()).unwrap();
    assert_eq!((watch.room(), watch.epoch()), (ROOM, 0));
    assert_eq!(watch.members(), vec![alice.id().clone()]);
    assert!(!format!("{watch:?}").contains("alice"));
    // Another device of the same user, another user, another room, not a GroupInfo.
    let other_device = MemberId {
        user: "alice".into(),
        device: 2,
    };
    assert_eq!(
        GroupWatch::init(ROOM, &info, &other_device).unwrap_err(),
        DsError::WrongCreator
    );
    assert_eq!(
        GroupWatch::init(ROOM, &info, device("bob", 1).id()).unwrap_err(),
        DsError::WrongCreator
    );
    assert_eq!(
        GroupWatch::init(ROOM + 1, &info, alice.id()).unwrap_err(),
        DsError::WrongGroup
    );
    assert_eq!(
        GroupWatch::from_group_info(ROOM, b"not mls").unwrap_err(),
        DsError::Malformed
    );
    // A GroupInfo of a later epoch, or with two members, does not start a group.
    let bob = device("bob", 2);
    let add = alice
        .prepare_commit(ROOM, &bob.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    assert_eq!(
        GroupWatch::init(ROOM, &add.group_info, alice.id()).unwrap_err(),
        DsError::WrongEpoch {
            expected: 0,
            found: 1
        }
    );
    // Whereas an existing group is watched from any epoch's GroupInfo.
    let later = GroupWatch::from_group_info(ROOM, &add.group_info).unwrap();
    assert_eq!((later.epoch(), later.member_count()), (1, 2));
}

#[test]
fn honest_adds_removals_and_external_joins_advance_the_epoch() {
    let (mut alice, mut watch) = alice_alone();
    let mut bob = device("bob", 2);
    let carol = device("carol", 3);
    let add = alice
        .prepare_commit(
            ROOM,
            &[bob.key_packages(1).unwrap(), carol.key_packages(1).unwrap()].concat(),
            &[],
            anyone,
        )
        .unwrap();
    assert_eq!(accept(&mut watch, &mut alice, &add), 1);
    bob.join_from_welcome(add.welcome.as_ref().unwrap())
        .unwrap();
    assert_eq!(
        sorted(watch.members()),
        vec![alice.id().clone(), bob.id().clone(), carol.id().clone()]
    );

    // Bob removes Carol (a blank leaf in the middle of the tree).
    let remove = bob
        .prepare_commit(ROOM, &[], &[carol.id().clone()], anyone)
        .unwrap();
    let checked = watch
        .check_commit(&remove.commit, &remove.group_info, bob.id())
        .unwrap();
    assert!(!checked.external());
    assert_eq!(watch.apply(checked).unwrap(), 2);
    bob.commit_accepted(ROOM).unwrap();
    alice.process(ROOM, &remove.commit).unwrap();
    assert_eq!(
        sorted(watch.members()),
        vec![alice.id().clone(), bob.id().clone()]
    );

    // Erin joins by herself from the latest GroupInfo, into Carol's old leaf.
    let mut erin = device("erin", 5);
    let join = erin
        .prepare_external_join(ROOM, &remove.group_info)
        .unwrap();
    let checked = watch
        .check_commit(&join.commit, &join.group_info, erin.id())
        .unwrap();
    assert!(checked.external());
    assert_eq!(watch.apply(checked).unwrap(), 3);
    erin.commit_accepted(ROOM).unwrap();
    alice.process(ROOM, &join.commit).unwrap();
    bob.process(ROOM, &join.commit).unwrap();

    // A self-update (a path, no proposals), and the group goes on.
    let update = alice.prepare_commit(ROOM, &[], &[], anyone).unwrap();
    assert_eq!(accept(&mut watch, &mut alice, &update), 4);
    // The watch is where a fresh one built from the last GroupInfo is.
    let fresh = GroupWatch::from_group_info(ROOM, &update.group_info).unwrap();
    assert_eq!(fresh.group.group_context(), watch.group.group_context());
    assert_eq!(
        fresh.group.confirmation_tag(),
        watch.group.confirmation_tag()
    );
    assert_eq!(
        sorted(watch.members()),
        vec![alice.id().clone(), bob.id().clone(), erin.id().clone()]
    );
}

#[test]
fn a_commit_with_a_broken_signature_is_refused_and_changes_nothing() {
    let (mut alice, mut watch) = alice_alone();
    let bob = device("bob", 2);
    let add = alice
        .prepare_commit(ROOM, &bob.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    let bad = break_signature(&add.commit, false);
    assert_eq!(
        watch
            .check_commit(&bad, &add.group_info, alice.id())
            .unwrap_err(),
        DsError::BadSignature
    );
    assert_eq!((watch.epoch(), watch.member_count()), (0, 1));
    // The honest commit still goes through afterwards.
    assert_eq!(accept(&mut watch, &mut alice, &add), 1);

    // The same for a new member's external commit.
    let mut erin = device("erin", 5);
    let join = erin.prepare_external_join(ROOM, &add.group_info).unwrap();
    let bad = break_signature(&join.commit, true);
    assert_eq!(
        watch
            .check_commit(&bad, &join.group_info, erin.id())
            .unwrap_err(),
        DsError::BadSignature
    );
    assert_eq!((watch.epoch(), watch.member_count()), (1, 2));
    let checked = watch
        .check_commit(&join.commit, &join.group_info, erin.id())
        .unwrap();
    assert_eq!(watch.apply(checked).unwrap(), 2);
}

#[test]
fn a_commit_by_another_device_than_the_sender_is_refused() {
    let (mut alice, mut watch) = alice_alone();
    let mut bob = device("bob", 2);
    let add = alice
        .prepare_commit(ROOM, &bob.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    // Bob's connection uploads Alice's commit; so does another device of Alice's.
    let alice_phone = MemberId {
        user: "alice".into(),
        device: 9,
    };
    for sender in [bob.id(), &alice_phone] {
        let err = watch
            .check_commit(&add.commit, &add.group_info, sender)
            .unwrap_err();
        assert_eq!(
            err,
            DsError::WrongCommitter {
                claimed: alice.id().to_string()
            }
        );
    }
    assert_eq!(watch.epoch(), 0);
    accept(&mut watch, &mut alice, &add);
    bob.join_from_welcome(add.welcome.as_ref().unwrap())
        .unwrap();
    // An external join in someone else's name is refused too.
    let mut erin = device("erin", 5);
    let join = erin.prepare_external_join(ROOM, &add.group_info).unwrap();
    assert!(matches!(
        watch.check_commit(&join.commit, &join.group_info, bob.id()),
        Err(DsError::WrongCommitter { .. })
    ));
    // And Bob's own commit, sent as Bob, is fine.
    let update = bob.prepare_commit(ROOM, &[], &[], anyone).unwrap();
    let checked = watch
        .check_commit(&update.commit, &update.group_info, bob.id())
        .unwrap();
    assert_eq!(watch.apply(checked).unwrap(), 2);
}

#[test]
fn a_group_info_that_does_not_match_the_commit_is_refused() {
    let (mut alice, mut watch) = alice_alone();
    let first = watch.group.group_context().clone();
    let (bob, carol) = (device("bob", 2), device("carol", 3));
    let add_bob = alice
        .prepare_commit(ROOM, &bob.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    alice.commit_rejected(ROOM).unwrap();
    let add_carol = alice
        .prepare_commit(ROOM, &carol.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    // Another commit's GroupInfo for the same epoch: another tree and transcript.
    assert_eq!(
        watch
            .check_commit(&add_bob.commit, &add_carol.group_info, alice.id())
            .unwrap_err(),
        DsError::GroupInfoMismatch("group context")
    );
    // The current epoch's GroupInfo instead of the next one's.
    let mut founder = device("alice", 1);
    let old = founder.create_group(ROOM).unwrap();
    assert_eq!(
        watch
            .check_commit(&add_bob.commit, &old, alice.id())
            .unwrap_err(),
        DsError::GroupInfoMismatch("epoch")
    );
    // The right GroupInfo with its signature broken (it ends with the signature).
    let mut forged = add_carol.group_info.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert_eq!(
        watch
            .check_commit(&add_carol.commit, &forged, alice.id())
            .unwrap_err(),
        DsError::BadSignature
    );
    // Another room's GroupInfo, and no GroupInfo at all.
    let mut elsewhere = device("alice", 1);
    elsewhere.create_group(ROOM + 1).unwrap();
    let other = elsewhere
        .prepare_commit(ROOM + 1, &carol.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    assert_eq!(
        watch
            .check_commit(&add_carol.commit, &other.group_info, alice.id())
            .unwrap_err(),
        DsError::WrongGroup
    );
    assert_eq!(
        watch
            .check_commit(&add_carol.commit, &add_carol.commit, alice.id())
            .unwrap_err(),
        DsError::WrongKind {
            expected: "a GroupInfo"
        }
    );
    assert_eq!(watch.group.group_context(), &first);
    assert_eq!(accept(&mut watch, &mut alice, &add_carol), 1);
}

#[test]
fn commits_of_other_epochs_or_kinds_are_refused() {
    let (mut alice, mut watch) = alice_alone();
    let bob = device("bob", 2);
    let add = alice
        .prepare_commit(ROOM, &bob.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    accept(&mut watch, &mut alice, &add);
    // Replayed: made in epoch 0, the group is at 1.
    assert_eq!(
        watch
            .check_commit(&add.commit, &add.group_info, alice.id())
            .unwrap_err(),
        DsError::WrongEpoch {
            expected: 1,
            found: 0
        }
    );
    let message = alice.encrypt(ROOM, b"hello").unwrap();
    assert!(matches!(
        watch.check_commit(&message, &add.group_info, alice.id()),
        Err(DsError::WrongKind { .. })
    ));
    // A checked commit applies only to the epoch it was checked in.
    let update = alice.prepare_commit(ROOM, &[], &[], anyone).unwrap();
    let checked = watch
        .check_commit(&update.commit, &update.group_info, alice.id())
        .unwrap();
    let mut other = GroupWatch::from_group_info(ROOM, &update.group_info).unwrap();
    assert!(matches!(
        other.apply(checked),
        Err(DsError::WrongEpoch { .. })
    ));
    assert_eq!(other.epoch(), 2);
}

#[test]
fn tree_hashes_match_openmls() {
    let (mut alice, _) = alice_alone();
    let mut infos = Vec::new();
    let mut others = Vec::new();
    for i in 2..7 {
        let next = device(&format!("user{i}"), i);
        let add = alice
            .prepare_commit(ROOM, &next.key_packages(1).unwrap(), &[], anyone)
            .unwrap();
        alice.commit_accepted(ROOM).unwrap();
        infos.push(add.group_info);
        others.push(next);
    }
    // Blank leaves in the middle and at the end (the tree shrinks).
    for gone in [others[1].id().clone(), others[4].id().clone()] {
        let remove = alice.prepare_commit(ROOM, &[], &[gone], anyone).unwrap();
        alice.commit_accepted(ROOM).unwrap();
        infos.push(remove.group_info);
    }
    let crypto = RustCrypto::default();
    for info in &infos {
        let info = group_info_of(ROOM, info).unwrap();
        let nodes = tree_nodes(ratchet_tree(&info).unwrap()).unwrap();
        let hash = tree_hash(&crypto, CIPHERSUITE.hash_algorithm(), &nodes).unwrap();
        assert_eq!(
            hash,
            info.group_context().tree_hash(),
            "{} nodes",
            nodes.len()
        );
        // Any change to the tree changes its hash.
        let mut fewer = nodes.clone();
        fewer.truncate(nodes.len() - 2);
        while matches!(fewer.last(), Some(None)) {
            fewer.pop();
        }
        let hash = tree_hash(&crypto, CIPHERSUITE.hash_algorithm(), &fewer).unwrap();
        assert_ne!(hash, info.group_context().tree_hash());
    }
}

#[test]
fn opaque_lengths_use_the_mls_varint() {
    let mut out = Vec::new();
    opaque(&mut out, &[7; 3]).unwrap();
    assert_eq!(out, [3, 7, 7, 7]);
    let mut out = Vec::new();
    opaque(&mut out, &[0; 300]).unwrap();
    assert_eq!(&out[..2], &[0x41, 0x2c]);
    let mut out = Vec::new();
    opaque(&mut out, &[0; 0x4000]).unwrap();
    assert_eq!(&out[..4], &[0x80, 0, 0x40, 0]);
}
