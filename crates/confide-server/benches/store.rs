//! Store micro-benchmarks: appending batches of messages (one durable transaction per
//! batch, as the persister does) and reading them back for sync, for SQLite and memory.

use confide_proto::RoomEncryption;
use confide_proto::{
    EntryKind, LogEntry, MessageNonce, RoomId, RoomName, Seq, Timestamp, UserName,
};
use confide_server::store::{Append, MemoryStore, NewRoom, SqliteStore, Store, StoredKind, Write};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const BODY: usize = 256;

struct Fixture {
    store: Box<dyn Store>,
    room: RoomId,
    sender: confide_proto::UserId,
    next_seq: std::cell::Cell<u64>,
    _dir: Option<tempfile::TempDir>,
}

fn fixture(sqlite: bool) -> Fixture {
    let (store, dir): (Box<dyn Store>, _) = if sqlite {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("bench.db")).unwrap();
        (Box::new(store), Some(dir))
    } else {
        (Box::new(MemoryStore::new()), None)
    };
    let user = store
        .create_user(
            &UserName::parse("alice").unwrap(),
            "$argon2id$x",
            Timestamp(0),
        )
        .unwrap();
    let room = store
        .create_room(
            &NewRoom {
                name: Some(RoomName::parse("bench").unwrap()),
                kind: StoredKind::Public,
                owner: None,
                direct: None,
                encryption: RoomEncryption::Mls,
            },
            Timestamp(0),
        )
        .unwrap()
        .id;
    Fixture {
        store,
        room,
        sender: user.id,
        next_seq: std::cell::Cell::new(1),
        _dir: dir,
    }
}

impl Fixture {
    fn batch(&self, size: usize) -> Vec<Write> {
        (0..size)
            .map(|_| {
                let seq = self.next_seq.get();
                self.next_seq.set(seq + 1);
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&seq.to_le_bytes());
                Write::Append(Append {
                    entry: LogEntry {
                        room: self.room,
                        seq: Seq(seq),
                        timestamp: Timestamp(seq as i64),
                        sender: UserName::parse("alice").unwrap(),
                        device: None,
                        kind: EntryKind::Message {
                            body: vec![0xab; BODY],
                        },
                    },
                    nonce: Some((self.sender, MessageNonce(nonce))),
                    effect: None,
                    group: None,
                })
            })
            .collect()
    }
}

fn append(c: &mut Criterion) {
    for (name, sqlite) in [("sqlite", true), ("memory", false)] {
        let mut group = c.benchmark_group(format!("append/{name}"));
        if sqlite {
            // Every batch is one fsync; keep the run short.
            group.sample_size(20);
        }
        for size in [1usize, 100, 1000] {
            let fixture = fixture(sqlite);
            group.throughput(Throughput::Elements(size as u64));
            group.bench_function(format!("batch of {size}"), |b| {
                b.iter_batched(
                    || fixture.batch(size),
                    |batch| fixture.store.write(black_box(&batch)).unwrap(),
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

fn read(c: &mut Criterion) {
    for (name, sqlite) in [("sqlite", true), ("memory", false)] {
        let fixture = fixture(sqlite);
        for _ in 0..10 {
            let batch = fixture.batch(1000);
            fixture.store.write(&batch).unwrap();
        }
        let mut group = c.benchmark_group(format!("read/{name}"));
        group.throughput(Throughput::Elements(500));
        group.bench_function("500 entries after a cursor", |b| {
            b.iter(|| {
                let entries = fixture
                    .store
                    .entries_after(fixture.room, Seq(5000), 500)
                    .unwrap();
                assert_eq!(black_box(entries).len(), 500);
            });
        });
        // What every room's start-up and every history page begins with.
        group.throughput(Throughput::Elements(1));
        group.bench_function("the latest entry", |b| {
            b.iter(|| {
                let entries = fixture.store.entries_before(fixture.room, None, 1).unwrap();
                assert_eq!(black_box(entries).len(), 1);
            });
        });
        group.finish();
    }
}

criterion_group!(benches, append, read);
criterion_main!(benches);
