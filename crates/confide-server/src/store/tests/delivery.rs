//! The delivery service's part of the store suite: groups, identity bundles,
//! KeyPackages and Welcomes, run against every implementation.

use super::*;
use confide_proto::{DeviceId, Epoch, IdentityBundle, WelcomeId};

pub(super) fn new_room(store: &dyn Store, name: &str, encryption: RoomEncryption) -> RoomId {
    store
        .create_room(
            &NewRoom {
                name: Some(room_name(name)),
                kind: StoredKind::Private,
                owner: None,
                direct: None,
                encryption,
            },
            Timestamp(1),
        )
        .unwrap()
        .id
}

pub(super) fn commit(
    room: RoomId,
    seq: u64,
    sender: &UserRecord,
    epoch: u64,
    welcome: Option<WelcomeBatch>,
) -> Append {
    Append {
        entry: LogEntry {
            room,
            seq: Seq(seq),
            timestamp: Timestamp(2000 + seq as i64),
            sender: sender.name.clone(),
            device: Some(DeviceId(u64::MAX - 1)),
            kind: EntryKind::Commit {
                epoch: Epoch(epoch),
                data: vec![0xc0, seq as u8],
            },
        },
        nonce: None,
        effect: None,
        group: Some(GroupUpdate {
            epoch: Epoch(epoch + 1),
            group_info: format!("info {}", epoch + 1).into_bytes(),
            welcome,
        }),
    }
}

fn init(room: RoomId) -> Write {
    Write::InitGroup {
        room,
        group_info: b"info 0".to_vec(),
    }
}

pub(super) fn rooms_keep_their_encryption(store: &dyn Store) {
    let salted = RoomEncryption::SharedKey {
        salt: Some([9; 16]),
    };
    let keyed = RoomEncryption::SharedKey { salt: None };
    let mls = new_room(store, "mls", RoomEncryption::Mls);
    let with_salt = new_room(store, "salted", salted.clone());
    let with_key = new_room(store, "keyed", keyed.clone());
    let found: Vec<(RoomId, RoomEncryption)> = store
        .rooms()
        .unwrap()
        .into_iter()
        .map(|room| (room.id, room.encryption))
        .collect();
    assert_eq!(
        found,
        vec![
            (mls, RoomEncryption::Mls),
            (with_salt, salted.clone()),
            (with_key, keyed)
        ]
    );
    assert_eq!(
        store
            .room_by_name(&room_name("SALTED"))
            .unwrap()
            .unwrap()
            .encryption,
        salted
    );
}

pub(super) fn groups_move_with_their_commits(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let room = new_room(store, "secret", RoomEncryption::Mls);
    assert_eq!(store.group(room).unwrap(), None);
    assert_eq!(store.last_welcome_id().unwrap(), WelcomeId(0));
    store.write(&[init(room)]).unwrap();
    assert_eq!(
        store.group(room).unwrap(),
        Some(GroupRecord {
            epoch: Epoch(0),
            group_info: b"info 0".to_vec(),
            seq: Seq(0),
        })
    );
    let welcome = WelcomeBatch {
        data: b"welcome".to_vec(),
        recipients: vec![
            WelcomeFor {
                id: WelcomeId(7),
                user: bob.id,
                device: DeviceId(2),
            },
            WelcomeFor {
                id: WelcomeId(8),
                user: alice.id,
                device: DeviceId(u64::MAX),
            },
        ],
    };
    let first = commit(room, 1, &alice, 0, Some(welcome));
    store
        .write(&[
            Write::Append(first.clone()),
            Write::Append(message(room, 2, &alice, "after")),
        ])
        .unwrap();
    // The entry keeps its device (all 64 bits) and its commit.
    let entries = store.entries_after(room, Seq(0), 10).unwrap();
    assert_eq!(entries[0], first.entry);
    assert_eq!(entries[1].device, None);
    assert_eq!(
        store.group(room).unwrap(),
        Some(GroupRecord {
            epoch: Epoch(1),
            group_info: b"info 1".to_vec(),
            seq: Seq(1),
        })
    );
    let pending = store.welcomes(bob.id, DeviceId(2)).unwrap();
    assert_eq!(
        pending,
        vec![PendingWelcome {
            id: WelcomeId(7),
            room,
            sender: alice.name.clone(),
            timestamp: first.entry.timestamp,
            seq: Seq(1),
            data: b"welcome".to_vec(),
        }]
    );
    assert!(store.welcomes(bob.id, DeviceId(3)).unwrap().is_empty());
    assert_eq!(
        store.welcomes(alice.id, DeviceId(u64::MAX)).unwrap().len(),
        1
    );
    assert_eq!(store.last_welcome_id().unwrap(), WelcomeId(8));
    // Only its recipient device can acknowledge a Welcome, once.
    assert!(
        !store
            .delete_welcome(alice.id, DeviceId(2), WelcomeId(7))
            .unwrap()
    );
    assert!(
        !store
            .delete_welcome(bob.id, DeviceId(3), WelcomeId(7))
            .unwrap()
    );
    assert!(
        store
            .delete_welcome(bob.id, DeviceId(2), WelcomeId(7))
            .unwrap()
    );
    assert!(
        !store
            .delete_welcome(bob.id, DeviceId(2), WelcomeId(7))
            .unwrap()
    );
    assert!(store.welcomes(bob.id, DeviceId(2)).unwrap().is_empty());
    // The other recipient still has the same bytes.
    assert_eq!(
        store.welcomes(alice.id, DeviceId(u64::MAX)).unwrap()[0].data,
        b"welcome"
    );
    assert!(
        store
            .delete_welcome(alice.id, DeviceId(u64::MAX), WelcomeId(8))
            .unwrap()
    );
    // Ids are never reused, even once every Welcome is acknowledged.
    assert_eq!(store.last_welcome_id().unwrap(), WelcomeId(8));
    store.append(&[commit(room, 3, &bob, 1, None)]).unwrap();
    assert_eq!(store.group(room).unwrap().unwrap().epoch, Epoch(2));
}

pub(super) fn a_failed_batch_creates_no_group(store: &dyn Store) {
    let alice = user(store, "alice");
    let room = new_room(store, "secret", RoomEncryption::Mls);
    store.append(&[message(room, 1, &alice, "one")]).unwrap();
    let clash = [init(room), Write::Append(message(room, 1, &alice, "dup"))];
    assert!(store.write(&clash).is_err());
    assert_eq!(store.group(room).unwrap(), None);
    store.write(&[init(room)]).unwrap();
    let welcome = WelcomeBatch {
        data: b"w".to_vec(),
        recipients: vec![WelcomeFor {
            id: WelcomeId(1),
            user: alice.id,
            device: DeviceId(1),
        }],
    };
    let clash = [
        Write::Append(commit(room, 2, &alice, 0, Some(welcome))),
        Write::Append(message(room, 1, &alice, "dup")),
    ];
    assert!(store.write(&clash).is_err());
    assert_eq!(store.group(room).unwrap().unwrap().epoch, Epoch(0));
    assert!(store.welcomes(alice.id, DeviceId(1)).unwrap().is_empty());
    assert_eq!(store.last_seq(room).unwrap(), Seq(1));
}

pub(super) fn identity_bundles_are_replaced(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    assert_eq!(store.identity(alice.id).unwrap(), None);
    let first = IdentityBundle {
        identity_key: vec![1; 32],
        device_list: b"devices v1".to_vec(),
        signature: vec![2; 64],
    };
    store.set_identity(alice.id, &first).unwrap();
    assert_eq!(store.identity(alice.id).unwrap(), Some(first));
    let second = IdentityBundle {
        identity_key: vec![3; 32],
        device_list: b"devices v2".to_vec(),
        signature: vec![4; 64],
    };
    store.set_identity(alice.id, &second).unwrap();
    assert_eq!(store.identity(alice.id).unwrap(), Some(second));
    assert_eq!(store.identity(bob.id).unwrap(), None);
}

fn package(label: &str) -> Vec<u8> {
    label.as_bytes().to_vec()
}

pub(super) fn key_packages_are_handed_out_once(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let (phone, laptop) = (DeviceId(u64::MAX), DeviceId(5));
    assert_eq!(
        store.key_package_stock(alice.id, phone).unwrap(),
        KeyPackageStock::default()
    );
    assert!(store.claim_key_packages(alice.id).unwrap().is_empty());
    let stock = store
        .add_key_packages(
            alice.id,
            phone,
            &[package("p1"), package("p2")],
            Some(&package("p-last")),
            3,
        )
        .unwrap();
    assert_eq!(
        stock,
        KeyPackageStock {
            one_time: 2,
            last_resort: true
        }
    );
    // Over the limit nothing is stored, not even the last-resort package.
    assert!(matches!(
        store.add_key_packages(
            alice.id,
            phone,
            &[package("p3"), package("p4")],
            Some(&package("p-other")),
            3
        ),
        Err(StoreError::Limit(3))
    ));
    assert_eq!(store.key_package_stock(alice.id, phone).unwrap(), stock);
    store
        .add_key_packages(alice.id, laptop, &[package("l1")], None, 3)
        .unwrap();
    store
        .add_key_packages(bob.id, DeviceId(1), &[package("b1")], None, 3)
        .unwrap();
    let claims = |store: &dyn Store| -> Vec<(DeviceId, String)> {
        store
            .claim_key_packages(alice.id)
            .unwrap()
            .into_iter()
            .map(|claimed| (claimed.device, String::from_utf8(claimed.package).unwrap()))
            .collect()
    };
    // Oldest first, one per device; a device with nothing left is left out.
    let mut first = claims(store);
    first.sort();
    assert_eq!(
        first,
        vec![(laptop, "l1".to_owned()), (phone, "p1".to_owned())]
    );
    assert_eq!(claims(store), vec![(phone, "p2".to_owned())]);
    // Then the last-resort package, which is kept.
    assert_eq!(claims(store), vec![(phone, "p-last".to_owned())]);
    assert_eq!(claims(store), vec![(phone, "p-last".to_owned())]);
    assert_eq!(
        store.key_package_stock(alice.id, phone).unwrap(),
        KeyPackageStock {
            one_time: 0,
            last_resort: true
        }
    );
    // A new last-resort package replaces the old one.
    store
        .add_key_packages(alice.id, phone, &[], Some(&package("p-new")), 3)
        .unwrap();
    assert_eq!(claims(store), vec![(phone, "p-new".to_owned())]);
    // Bob's stock was never touched.
    assert_eq!(
        store
            .key_package_stock(bob.id, DeviceId(1))
            .unwrap()
            .one_time,
        1
    );
}

pub(super) fn concurrent_claims_never_share_a_package(store: &dyn Store) {
    const PACKAGES: usize = 60;
    let alice = user(store, "alice");
    let packages: Vec<Vec<u8>> = (0..PACKAGES).map(|n| package(&format!("k{n}"))).collect();
    store
        .add_key_packages(alice.id, DeviceId(1), &packages, None, PACKAGES)
        .unwrap();
    let claimed: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut got = Vec::new();
                    for _ in 0..PACKAGES {
                        for claimed in store.claim_key_packages(alice.id).unwrap() {
                            got.push(claimed.package);
                        }
                    }
                    got
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let mut unique = claimed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(claimed.len(), PACKAGES, "each package handed out once");
    assert_eq!(unique.len(), PACKAGES);
}
