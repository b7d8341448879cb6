//! Groups between real devices, with the test standing in for the server: it orders
//! commits per epoch (first wins) and hands every message to every member in log order.

use super::*;
use crate::trust::{TrustChange, TrustStore};

fn device(user: &str, id: u64) -> Device {
    Device::create(user, id).unwrap()
}

fn anyone(_: &GroupMember) -> bool {
    true
}

/// Alice creates room 7's group and adds Bob; both are at epoch 1.
fn alice_and_bob() -> (Device, Device) {
    let mut alice = device("alice", 1);
    let mut bob = device("bob", 2);
    alice.create_group(7).unwrap();
    let kp = bob.key_packages(1).unwrap();
    let commit = alice.prepare_commit(7, &kp, &[], anyone).unwrap();
    assert_eq!(commit.epoch, 0);
    assert_eq!(commit.added, vec![bob.id().clone()]);
    assert_eq!(alice.commit_accepted(7).unwrap(), 1);
    assert_eq!(bob.join_from_welcome(&commit.welcome.unwrap()).unwrap(), 7);
    assert_eq!(bob.epoch(7).unwrap(), 1);
    (alice, bob)
}

fn text(incoming: Incoming) -> (MemberId, Vec<u8>) {
    match incoming {
        Incoming::Application { sender, plaintext } => (sender.id, plaintext.to_vec()),
        other => panic!("expected an application message, got {other:?}"),
    }
}

#[test]
fn two_devices_talk_both_ways() {
    let (mut alice, mut bob) = alice_and_bob();
    let c = alice.encrypt(7, b"hello bob").unwrap();
    let (sender, plain) = text(bob.process(7, &c).unwrap());
    assert_eq!(sender, *alice.id());
    assert_eq!(plain, b"hello bob");
    assert!(matches!(
        alice.process(7, &c).unwrap(),
        Incoming::OwnMessage
    ));
    let c = bob.encrypt(7, b"hi alice").unwrap();
    assert_eq!(text(alice.process(7, &c).unwrap()).1, b"hi alice");
    assert!(!c.windows(8).any(|w| w == b"hi alice"));
    let members = alice.members(7).unwrap();
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .any(|m| m.id == *bob.id() && m.signature_key == bob.signature_key())
    );
}

#[test]
fn tampered_and_replayed_messages_are_refused() {
    let (mut alice, mut bob) = alice_and_bob();
    let c = alice.encrypt(7, b"once").unwrap();
    let mut bad = c.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert!(matches!(bob.process(7, &bad), Err(CryptoError::Tampered)));
    assert_eq!(text(bob.process(7, &c).unwrap()).1, b"once");
    assert!(matches!(bob.process(7, &c), Err(CryptoError::Replayed)));
    assert!(matches!(
        bob.process(7, b"not mls at all"),
        Err(CryptoError::Malformed(_))
    ));
    // The group keeps working after all of that.
    let c = alice.encrypt(7, b"twice").unwrap();
    assert_eq!(text(bob.process(7, &c).unwrap()).1, b"twice");
}

#[test]
fn a_removed_member_reads_nothing_sent_afterwards() {
    let (mut alice, mut bob) = alice_and_bob();
    let mut carol = device("carol", 3);
    let kp = carol.key_packages(1).unwrap();
    let add = alice.prepare_commit(7, &kp, &[], anyone).unwrap();
    alice.commit_accepted(7).unwrap();
    assert!(matches!(
        bob.process(7, &add.commit).unwrap(),
        Incoming::Commit { epoch: 2, .. }
    ));
    carol.join_from_welcome(&add.welcome.unwrap()).unwrap();

    let remove = alice
        .prepare_commit(7, &[], &[bob.id().clone()], anyone)
        .unwrap();
    assert_eq!(remove.removed, vec![bob.id().clone()]);
    alice.commit_accepted(7).unwrap();
    match carol.process(7, &remove.commit).unwrap() {
        Incoming::Commit {
            removed,
            self_removed,
            ..
        } => {
            assert_eq!(removed, vec![bob.id().clone()]);
            assert!(!self_removed);
        }
        other => panic!("{other:?}"),
    }
    match bob.process(7, &remove.commit).unwrap() {
        Incoming::Commit { self_removed, .. } => assert!(self_removed),
        other => panic!("{other:?}"),
    }
    assert!(!bob.has_group(7));

    let secret = alice.encrypt(7, b"after bob left").unwrap();
    assert_eq!(
        text(carol.process(7, &secret).unwrap()).1,
        b"after bob left"
    );
    assert!(matches!(bob.process(7, &secret), Err(CryptoError::NoGroup)));
    // Even a copy of Bob's state from before the removal cannot read it: the message
    // belongs to an epoch whose secrets Bob never had.
    let (mut alice2, mut bob2) = alice_and_bob();
    let remove = alice2
        .prepare_commit(7, &[], &[bob2.id().clone()], anyone)
        .unwrap();
    alice2.commit_accepted(7).unwrap();
    let secret = alice2.encrypt(7, b"after bob left").unwrap();
    assert!(matches!(
        bob2.process(7, &secret),
        Err(CryptoError::WrongEpoch { .. })
    ));
    drop(remove);
}

#[test]
fn a_new_member_cannot_read_what_was_sent_before() {
    let (mut alice, mut bob) = alice_and_bob();
    let before = alice.encrypt(7, b"before carol").unwrap();
    assert_eq!(text(bob.process(7, &before).unwrap()).1, b"before carol");
    let mut carol = device("carol", 3);
    let add = alice
        .prepare_commit(7, &carol.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    alice.commit_accepted(7).unwrap();
    bob.process(7, &add.commit).unwrap();
    carol.join_from_welcome(&add.welcome.unwrap()).unwrap();
    assert!(matches!(
        carol.process(7, &before),
        Err(CryptoError::WrongEpoch {
            message: 1,
            group: 2
        })
    ));
    let after = alice.encrypt(7, b"welcome carol").unwrap();
    assert_eq!(text(carol.process(7, &after).unwrap()).1, b"welcome carol");
    assert_eq!(text(bob.process(7, &after).unwrap()).1, b"welcome carol");
}

#[test]
fn concurrent_commits_first_wins_and_the_loser_retries() {
    let (mut alice, mut bob) = alice_and_bob();
    let mut carol = device("carol", 3);
    let mut dave = device("dave", 4);
    let from_alice = alice
        .prepare_commit(7, &carol.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    let from_bob = bob
        .prepare_commit(7, &dave.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    assert_eq!(from_alice.epoch, from_bob.epoch);
    // The server takes Alice's; Bob's is stale.
    alice.commit_accepted(7).unwrap();
    bob.commit_rejected(7).unwrap();
    bob.process(7, &from_alice.commit).unwrap();
    carol
        .join_from_welcome(&from_alice.welcome.unwrap())
        .unwrap();
    let retry = bob
        .prepare_commit(7, &dave.key_packages(1).unwrap(), &[], anyone)
        .unwrap();
    assert_eq!(retry.epoch, 2);
    bob.commit_accepted(7).unwrap();
    alice.process(7, &retry.commit).unwrap();
    carol.process(7, &retry.commit).unwrap();
    dave.join_from_welcome(&retry.welcome.unwrap()).unwrap();
    let c = dave.encrypt(7, b"hi all").unwrap();
    for d in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(text(d.process(7, &c).unwrap()).1, b"hi all");
    }
}

#[test]
fn external_join_from_group_info() {
    let mut alice = device("alice", 1);
    let info = alice.create_group(9).unwrap();
    assert_eq!(crate::ds::inspect_group_info(9, &info).unwrap(), 0);
    let mut erin = device("erin", 5);
    let join = erin.prepare_external_join(9, &info).unwrap();
    assert!(crate::ds::inspect_commit(9, &join.commit).unwrap().external);
    assert_eq!(
        crate::ds::inspect_group_info(9, &join.group_info).unwrap(),
        1
    );
    erin.commit_accepted(9).unwrap();
    match alice.process(9, &join.commit).unwrap() {
        Incoming::Commit {
            committer, epoch, ..
        } => {
            assert_eq!(committer.id, *erin.id());
            assert_eq!(committer.signature_key, erin.signature_key());
            assert_eq!(epoch, 1);
        }
        other => panic!("{other:?}"),
    }
    let c = erin.encrypt(9, b"joined").unwrap();
    assert_eq!(text(alice.process(9, &c).unwrap()).1, b"joined");
    // A refused external join leaves no group behind.
    let mut frank = device("frank", 6);
    frank.prepare_external_join(9, &info).unwrap();
    frank.commit_rejected(9).unwrap();
    assert!(!frank.has_group(9));
}

#[test]
fn commits_and_messages_carry_only_public_framing() {
    let (mut alice, _bob) = alice_and_bob();
    let c = alice.encrypt(7, b"secret").unwrap();
    assert_eq!(crate::ds::inspect_application(7, &c).unwrap().epoch, 1);
    assert_eq!(
        crate::ds::inspect_application(8, &c),
        Err(crate::ds::DsError::WrongGroup)
    );
    assert!(crate::ds::inspect_commit(7, &c).is_err());
}

#[test]
fn devices_off_the_signed_list_are_refused() {
    let mut alice = device("alice", 1);
    alice.create_group(7).unwrap();
    let bob = device("bob", 2);
    let impostor = device("bob", 3);
    let mut trust = TrustStore::default();
    trust
        .observe("bob", &bob.signed_device_list().unwrap())
        .unwrap();
    let allow = |m: &GroupMember| trust.allows(&m.id, &m.signature_key);
    let err = alice
        .prepare_commit(7, &impostor.key_packages(1).unwrap(), &[], allow)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not on its user's signed device list"),
        "{err}"
    );
    alice
        .prepare_commit(7, &bob.key_packages(1).unwrap(), &[], allow)
        .unwrap();
}

#[test]
fn sealed_state_survives_a_restart() {
    let (mut alice, bob) = alice_and_bob();
    let key = crate::at_rest::StateKey::from_bytes([3; 32]);
    let sealed = bob.seal(&key).unwrap();
    assert!(!sealed.windows(5).any(|w| w == b"alice"));
    drop(bob);
    let mut bob = Device::open(&key, &sealed).unwrap();
    assert_eq!(bob.id().user, "bob");
    assert_eq!(bob.rooms(), vec![7]);
    let c = alice.encrypt(7, b"after restart").unwrap();
    assert_eq!(text(bob.process(7, &c).unwrap()).1, b"after restart");
    let wrong = crate::at_rest::StateKey::from_bytes([4; 32]);
    assert!(matches!(
        Device::open(&wrong, &sealed),
        Err(CryptoError::AtRest(_))
    ));
}

#[test]
fn exported_secrets_match_across_members_and_change_per_epoch() {
    let (mut alice, mut bob) = alice_and_bob();
    let a = alice.export_secret(7, "voice", b"", 32).unwrap();
    let b = bob.export_secret(7, "voice", b"", 32).unwrap();
    assert_eq!(*a, *b);
    let update = alice.prepare_commit(7, &[], &[], anyone).unwrap();
    alice.commit_accepted(7).unwrap();
    bob.process(7, &update.commit).unwrap();
    let a2 = alice.export_secret(7, "voice", b"", 32).unwrap();
    assert_ne!(*a, *a2);
    assert_eq!(*a2, *bob.export_secret(7, "voice", b"", 32).unwrap());
}

#[test]
fn device_lists_are_signed_and_pinned() {
    let bob = device("bob", 2);
    let signed = bob.signed_device_list().unwrap();
    let list = signed.verify("bob").unwrap();
    assert!(list.allows(2, bob.signature_key()));
    assert!(matches!(
        signed.verify("mallory"),
        Err(IdentityError::WrongUser { .. })
    ));
    let mut forged = signed.clone();
    forged.device_list[0] ^= 1;
    assert_eq!(forged.verify("bob"), Err(IdentityError::BadSignature));

    let mut trust = TrustStore::default();
    assert_eq!(trust.observe("bob", &signed).unwrap(), TrustChange::New);
    assert_eq!(
        trust.observe("bob", &signed).unwrap(),
        TrustChange::Unchanged
    );
    assert!(trust.mark_verified("bob"));
    // Bob reinstalls: a new identity key. Verification is reset and flagged.
    let reinstalled = device("bob", 9).signed_device_list().unwrap();
    assert_eq!(
        trust.observe("bob", &reinstalled).unwrap(),
        TrustChange::IdentityChanged { was_verified: true }
    );
    let contact = trust.contact("bob").unwrap();
    assert!(contact.key_changed && !contact.verified);
}
