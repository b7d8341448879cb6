//! One suite, run against every store implementation.

use super::*;
use confide_proto::{EntryKind, MemberChange};

mod delivery;

/// Appending entries alone, as most tests do.
trait AppendExt {
    fn append(&self, batch: &[Append]) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> AppendExt for S {
    fn append(&self, batch: &[Append]) -> Result<(), StoreError> {
        let writes: Vec<Write> = batch.iter().cloned().map(Write::Append).collect();
        self.write(&writes)
    }
}

fn user(store: &dyn Store, name: &str) -> UserRecord {
    store
        .create_user(
            &UserName::parse(name).unwrap(),
            "$argon2id$fake",
            Timestamp(1),
        )
        .unwrap()
}

fn room_name(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn message(room: RoomId, seq: u64, sender: &UserRecord, text: &str) -> Append {
    Append {
        entry: LogEntry {
            room,
            seq: Seq(seq),
            timestamp: Timestamp(1000 + seq as i64),
            sender: sender.name.clone(),
            device: None,
            kind: EntryKind::Message {
                body: text.as_bytes().to_vec(),
            },
        },
        nonce: Some((sender.id, MessageNonce([seq as u8; 16]))),
        effect: None,
        group: None,
    }
}

fn member(
    room: RoomId,
    seq: u64,
    by: &UserRecord,
    who: &UserRecord,
    change: MemberChange,
    effect: Effect,
) -> Append {
    Append {
        entry: LogEntry {
            room,
            seq: Seq(seq),
            timestamp: Timestamp(seq as i64),
            sender: by.name.clone(),
            device: None,
            kind: EntryKind::Member {
                user: who.name.clone(),
                change,
            },
        },
        nonce: None,
        effect: Some(effect),
        group: None,
    }
}

fn users_are_unique_ignoring_case_and_normalization(store: &dyn Store) {
    let alice = user(store, "Alice");
    assert!(matches!(
        store.create_user(&UserName::parse("aLiCe").unwrap(), "x", Timestamp(1)),
        Err(StoreError::Conflict)
    ));
    let found = store
        .user_by_name(&UserName::parse("ALICE").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(found, alice);
    assert_eq!(found.name.as_str(), "Alice");
    assert_eq!(store.user_by_id(alice.id).unwrap().unwrap(), alice);
    assert!(
        store
            .user_by_name(&UserName::parse("bob").unwrap())
            .unwrap()
            .is_none()
    );
    let renee = user(store, "Ren\u{e9}e");
    assert!(matches!(
        store.create_user(&UserName::parse("Rene\u{301}e").unwrap(), "x", Timestamp(1)),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.users().unwrap(), vec![alice, renee]);
}

fn sessions_resolve_and_end(store: &dyn Store) {
    let alice = user(store, "alice");
    let token = [7u8; 32];
    store
        .create_session(&token, alice.id, Timestamp(5))
        .unwrap();
    assert_eq!(store.session_user(&token).unwrap(), Some(alice.id));
    assert_eq!(store.session_user(&[8u8; 32]).unwrap(), None);
    store.delete_session(&token).unwrap();
    assert_eq!(store.session_user(&token).unwrap(), None);
}

fn rooms_and_direct_rooms(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let lobby = store
        .create_room(
            &NewRoom {
                name: Some(RoomName::lobby()),
                kind: StoredKind::Public,
                owner: None,
                direct: None,
                encryption: RoomEncryption::Mls,
            },
            Timestamp(1),
        )
        .unwrap();
    assert!(matches!(
        store.create_room(
            &NewRoom {
                name: Some(room_name("LOBBY")),
                kind: StoredKind::Private,
                owner: Some(alice.id),
                direct: None,
                encryption: RoomEncryption::Mls,
            },
            Timestamp(1)
        ),
        Err(StoreError::Conflict)
    ));
    let direct = store
        .create_room(
            &NewRoom {
                name: None,
                kind: StoredKind::Direct,
                owner: None,
                direct: Some((bob.id, alice.id)),
                encryption: RoomEncryption::Mls,
            },
            Timestamp(1),
        )
        .unwrap();
    assert_eq!(direct.direct, Some((alice.id, bob.id)));
    assert!(matches!(
        store.create_room(
            &NewRoom {
                name: None,
                kind: StoredKind::Direct,
                owner: None,
                direct: Some((alice.id, bob.id)),
                encryption: RoomEncryption::Mls,
            },
            Timestamp(1)
        ),
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.direct_room(bob.id, alice.id).unwrap(),
        Some(direct.clone())
    );
    assert_eq!(
        store.room_by_name(&room_name("Lobby")).unwrap(),
        Some(lobby.clone())
    );
    assert_eq!(store.room(direct.id).unwrap(), Some(direct.clone()));
    assert_eq!(store.room(lobby.id).unwrap(), Some(lobby.clone()));
    assert_eq!(store.room(RoomId(direct.id.0 + 100)).unwrap(), None);
    assert_eq!(store.rooms().unwrap(), vec![lobby, direct.clone()]);
    let members: Vec<UserId> = store
        .members(direct.id)
        .unwrap()
        .iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(members, vec![alice.id, bob.id]);
    assert_eq!(store.rooms_of(bob.id).unwrap(), vec![(direct.id, Seq(0))]);
}

fn direct_rooms_are_found_or_created_together(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let carol = user(store, "carol");
    let existing = store
        .create_room(
            &NewRoom::direct(alice.id, bob.id, RoomEncryption::Mls),
            Timestamp(1),
        )
        .unwrap();
    let got = store
        .direct_rooms(
            &[(bob.id, alice.id), (carol.id, alice.id), (bob.id, carol.id)],
            &RoomEncryption::Mls,
            Timestamp(2),
        )
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (existing.clone(), false), "found, in either order");
    let (alice_carol, created) = got[1].clone();
    assert!(created);
    assert_eq!(alice_carol.direct, Some((alice.id, carol.id)));
    assert_eq!(alice_carol.kind, StoredKind::Direct);
    assert!(got[2].1);
    let ids = [existing.id, alice_carol.id, got[2].0.id];
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // Each new room is stored with its two users as members and nothing in its log.
    for (record, _) in &got[1..] {
        assert_eq!(
            store
                .direct_room(record.direct.unwrap().1, record.direct.unwrap().0)
                .unwrap(),
            Some(record.clone())
        );
        let mut members: Vec<UserId> = store
            .members(record.id)
            .unwrap()
            .iter()
            .map(|m| m.user)
            .collect();
        members.sort();
        let (a, b) = record.direct.unwrap();
        assert_eq!(members, vec![a, b]);
        assert_eq!(store.last_seq(record.id).unwrap(), Seq(0));
    }
    // Asked again, everything is found and nothing created.
    let again = store
        .direct_rooms(
            &[(alice.id, carol.id), (carol.id, bob.id)],
            &RoomEncryption::Mls,
            Timestamp(3),
        )
        .unwrap();
    assert_eq!(
        again,
        vec![(got[1].0.clone(), false), (got[2].0.clone(), false)]
    );
    assert_eq!(
        store
            .direct_rooms(&[], &RoomEncryption::Mls, Timestamp(4))
            .unwrap(),
        vec![]
    );
}

fn log_appends_are_ordered_and_paged(store: &dyn Store) {
    let alice = user(store, "alice");
    let room = store
        .create_room(
            &NewRoom {
                name: Some(room_name("general")),
                kind: StoredKind::Public,
                owner: Some(alice.id),
                direct: None,
                encryption: RoomEncryption::Mls,
            },
            Timestamp(1),
        )
        .unwrap()
        .id;
    assert_eq!(store.last_seq(room).unwrap(), Seq(0));
    let batch: Vec<Append> = (1..=10)
        .map(|seq| message(room, seq, &alice, &format!("m{seq}")))
        .collect();
    store.append(&batch[..4]).unwrap();
    store.append(&batch[4..]).unwrap();
    assert_eq!(store.last_seq(room).unwrap(), Seq(10));
    let after: Vec<u64> = store
        .entries_after(room, Seq(3), 4)
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(after, vec![4, 5, 6, 7]);
    let newest: Vec<u64> = store
        .entries_before(room, None, 3)
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(newest, vec![8, 9, 10]);
    let older: Vec<u64> = store
        .entries_before(room, Some(Seq(8)), 3)
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(older, vec![5, 6, 7]);
    let entry = &store.entries_after(room, Seq(0), 1).unwrap()[0];
    assert_eq!(entry, &batch[0].entry);
    assert_eq!(
        store.find_nonce(alice.id, &MessageNonce([2; 16])).unwrap(),
        Some(StoredAck {
            room,
            seq: Seq(2),
            timestamp: Timestamp(1002)
        })
    );
    assert_eq!(
        store.find_nonce(alice.id, &MessageNonce([99; 16])).unwrap(),
        None
    );
    // A duplicate sequence number fails the whole batch and changes nothing.
    let clash = vec![
        message(room, 11, &alice, "ok"),
        message(room, 5, &alice, "dup"),
    ];
    assert!(store.append(&clash).is_err());
    assert_eq!(store.last_seq(room).unwrap(), Seq(10));
}

fn membership_effects_apply_with_the_entry(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let room = store
        .create_room(
            &NewRoom {
                name: Some(room_name("secret")),
                kind: StoredKind::Private,
                owner: Some(alice.id),
                direct: None,
                encryption: RoomEncryption::Mls,
            },
            Timestamp(1),
        )
        .unwrap()
        .id;
    store
        .append(&[member(
            room,
            1,
            &alice,
            &alice,
            MemberChange::Created,
            Effect::AddMember(alice.id),
        )])
        .unwrap();
    store
        .append(&[member(
            room,
            2,
            &alice,
            &bob,
            MemberChange::Invited,
            Effect::Invite(bob.id),
        )])
        .unwrap();
    assert_eq!(store.invites(room).unwrap(), vec![bob.id]);
    assert_eq!(store.invites_of(bob.id).unwrap(), vec![room]);
    store
        .append(&[member(
            room,
            3,
            &bob,
            &bob,
            MemberChange::Joined,
            Effect::AddMember(bob.id),
        )])
        .unwrap();
    assert!(store.invites(room).unwrap().is_empty());
    let members: Vec<(UserId, Seq)> = store
        .members(room)
        .unwrap()
        .iter()
        .map(|m| (m.user, m.joined_seq))
        .collect();
    assert_eq!(members, vec![(alice.id, Seq(1)), (bob.id, Seq(3))]);
    store
        .append(&[member(
            room,
            4,
            &alice,
            &bob,
            MemberChange::Banned,
            Effect::Ban(bob.id),
        )])
        .unwrap();
    assert_eq!(store.bans(room).unwrap(), vec![bob.id]);
    assert_eq!(store.rooms_of(bob.id).unwrap(), vec![]);
    store
        .append(&[member(
            room,
            5,
            &alice,
            &bob,
            MemberChange::Unbanned,
            Effect::Unban(bob.id),
        )])
        .unwrap();
    assert!(store.bans(room).unwrap().is_empty());
    store
        .append(&[member(
            room,
            6,
            &alice,
            &alice,
            MemberChange::Left,
            Effect::RemoveMember(alice.id),
        )])
        .unwrap();
    assert!(store.members(room).unwrap().is_empty());
}

fn room_states_hold_everything_a_room_starts_from(store: &dyn Store) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let carol = user(store, "carol");
    let new = |name: &str, owner| NewRoom {
        name: Some(room_name(name)),
        kind: StoredKind::Private,
        owner,
        direct: None,
        encryption: RoomEncryption::Mls,
    };
    let room = store
        .create_room(&new("secret", Some(alice.id)), Timestamp(1))
        .unwrap();
    let empty = store
        .create_room(&new("empty", None), Timestamp(1))
        .unwrap();
    store
        .append(&[
            member(
                room.id,
                1,
                &alice,
                &alice,
                MemberChange::Created,
                Effect::AddMember(alice.id),
            ),
            member(
                room.id,
                2,
                &alice,
                &bob,
                MemberChange::Invited,
                Effect::Invite(bob.id),
            ),
            message(room.id, 3, &alice, "hello"),
            member(
                room.id,
                4,
                &alice,
                &carol,
                MemberChange::Banned,
                Effect::Ban(carol.id),
            ),
        ])
        .unwrap();
    let states = store
        .room_states(&[room.id, RoomId(empty.id.0 + 100), empty.id], 10)
        .unwrap();
    let expected = RoomState {
        record: room.clone(),
        owner_name: Some(alice.name.clone()),
        last: Some((Seq(4), Timestamp(4))),
        members: store.members(room.id).unwrap(),
        invited: vec![bob.id],
        banned: vec![carol.id],
        nonces: store.recent_nonces(room.id, 10).unwrap(),
        group: None,
    };
    assert_eq!(expected.members.len(), 1);
    assert_eq!(expected.nonces.len(), 1);
    assert_eq!(states.len(), 3);
    assert_eq!(states[0].as_ref(), Some(&expected));
    assert_eq!(states[1], None);
    let empty_state = states[2].as_ref().unwrap();
    assert_eq!((&empty_state.owner_name, empty_state.last), (&None, None));
    assert!(empty_state.members.is_empty() && empty_state.nonces.is_empty());
}

macro_rules! suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn users_are_unique_ignoring_case_and_normalization() {
                let (_guard, store) = $make;
                super::users_are_unique_ignoring_case_and_normalization(&store);
            }

            #[test]
            fn sessions_resolve_and_end() {
                let (_guard, store) = $make;
                super::sessions_resolve_and_end(&store);
            }

            #[test]
            fn rooms_and_direct_rooms() {
                let (_guard, store) = $make;
                super::rooms_and_direct_rooms(&store);
            }

            #[test]
            fn direct_rooms_are_found_or_created_together() {
                let (_guard, store) = $make;
                super::direct_rooms_are_found_or_created_together(&store);
            }

            #[test]
            fn log_appends_are_ordered_and_paged() {
                let (_guard, store) = $make;
                super::log_appends_are_ordered_and_paged(&store);
            }

            #[test]
            fn membership_effects_apply_with_the_entry() {
                let (_guard, store) = $make;
                super::membership_effects_apply_with_the_entry(&store);
            }

            #[test]
            fn room_states_hold_everything_a_room_starts_from() {
                let (_guard, store) = $make;
                super::room_states_hold_everything_a_room_starts_from(&store);
            }

            #[test]
            fn rooms_keep_their_encryption() {
                let (_guard, store) = $make;
                super::delivery::rooms_keep_their_encryption(&store);
            }

            #[test]
            fn groups_move_with_their_commits() {
                let (_guard, store) = $make;
                super::delivery::groups_move_with_their_commits(&store);
            }

            #[test]
            fn a_failed_batch_creates_no_group() {
                let (_guard, store) = $make;
                super::delivery::a_failed_batch_creates_no_group(&store);
            }

            #[test]
            fn identity_bundles_are_replaced() {
                let (_guard, store) = $make;
                super::delivery::identity_bundles_are_replaced(&store);
            }

            #[test]
            fn key_packages_are_handed_out_once() {
                let (_guard, store) = $make;
                super::delivery::key_packages_are_handed_out_once(&store);
            }

            #[test]
            fn concurrent_claims_never_share_a_package() {
                let (_guard, store) = $make;
                super::delivery::concurrent_claims_never_share_a_package(&store);
            }
        }
    };
}

suite!(memory, ((), MemoryStore::new()));
suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("confide.db")).unwrap();
    (dir, store)
});

#[test]
fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confide.db");
    let alice;
    let room;
    {
        let store = SqliteStore::open(&path).unwrap();
        alice = user(&store, "alice");
        room = store
            .create_room(
                &NewRoom {
                    name: Some(room_name("general")),
                    kind: StoredKind::Public,
                    owner: None,
                    direct: None,
                    encryption: RoomEncryption::Mls,
                },
                Timestamp(1),
            )
            .unwrap()
            .id;
        store.append(&[message(room, 1, &alice, "kept")]).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.user_by_id(alice.id).unwrap(), Some(alice));
    assert_eq!(store.last_seq(room).unwrap(), Seq(1));
}

#[test]
fn sqlite_keeps_delivery_state_across_reopen() {
    use confide_proto::{DeviceId, Epoch, IdentityBundle, WelcomeId};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confide.db");
    let (alice, room);
    let bundle = IdentityBundle {
        identity_key: vec![1; 32],
        device_list: b"devices".to_vec(),
        signature: vec![2; 64],
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        alice = user(&store, "alice");
        room = delivery::new_room(&store, "secret", RoomEncryption::Mls);
        store
            .write(&[Write::InitGroup {
                room,
                group_info: b"info 0".to_vec(),
            }])
            .unwrap();
        let welcome = WelcomeBatch {
            data: b"welcome".to_vec(),
            recipients: vec![
                WelcomeFor {
                    id: WelcomeId(1),
                    user: alice.id,
                    device: DeviceId(1),
                },
                WelcomeFor {
                    id: WelcomeId(2),
                    user: alice.id,
                    device: DeviceId(2),
                },
            ],
        };
        store
            .append(&[delivery::commit(room, 1, &alice, 0, Some(welcome))])
            .unwrap();
        assert!(
            store
                .delete_welcome(alice.id, DeviceId(2), WelcomeId(2))
                .unwrap()
        );
        store.set_identity(alice.id, &bundle).unwrap();
        store
            .add_key_packages(alice.id, DeviceId(1), &[b"kp".to_vec()], Some(b"last"), 10)
            .unwrap();
        store.close().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let group = store.group(room).unwrap().unwrap();
    assert_eq!((group.epoch, group.seq), (Epoch(1), Seq(1)));
    assert_eq!(group.group_info, b"info 1");
    assert_eq!(store.welcomes(alice.id, DeviceId(1)).unwrap().len(), 1);
    assert!(store.welcomes(alice.id, DeviceId(2)).unwrap().is_empty());
    assert_eq!(store.last_welcome_id().unwrap(), WelcomeId(2));
    assert_eq!(store.identity(alice.id).unwrap(), Some(bundle));
    assert_eq!(
        store.key_package_stock(alice.id, DeviceId(1)).unwrap(),
        KeyPackageStock {
            one_time: 1,
            last_resort: true
        }
    );
}

/// A data directory made by the first version (schema 1, before end-to-end
/// encryption) opens, keeps everything, and gains the new tables.
#[test]
fn sqlite_opens_a_version_1_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confide.db");
    let old_entry = postcard::to_allocvec(&EntryKind::Message {
        body: b"from v1".to_vec(),
    })
    .unwrap();
    {
        // What the first version wrote: its schema, its meta row, and some data.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(super::sqlite::SCHEMA_V1).unwrap();
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('schema', '1');
             INSERT INTO users (id, name, canonical, password_hash, created_ms)
                 VALUES (1, 'alice', 'alice', '$argon2id$fake', 1);
             INSERT INTO rooms (id, name, canonical, kind, owner, created_ms)
                 VALUES (1, 'lobby', 'lobby', 0, NULL, 1);
             INSERT INTO members (room_id, user_id, joined_seq) VALUES (1, 1, 1);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO log (room_id, seq, ts_ms, sender, kind) VALUES (1, 1, 5, 'alice', ?1)",
            rusqlite::params![old_entry],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let alice = store.user_by_id(UserId(1)).unwrap().unwrap();
    assert_eq!(alice.name.as_str(), "alice");
    let rooms = store.rooms().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].encryption, RoomEncryption::Mls);
    let entries = store.entries_after(RoomId(1), Seq(0), 10).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].device, None);
    assert_eq!(
        entries[0].kind,
        EntryKind::Message {
            body: b"from v1".to_vec()
        }
    );
    assert_eq!(store.group(RoomId(1)).unwrap(), None);
    store
        .write(&[Write::InitGroup {
            room: RoomId(1),
            group_info: b"info".to_vec(),
        }])
        .unwrap();
    drop(store);
    // Reopening finds the current version and does not migrate twice.
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.group(RoomId(1)).unwrap().is_some());
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    let meta: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!((version, meta.as_str()), (2, "2"));
}
