//! One suite, run against every blob store, then what only the file store does.

use super::*;
use std::path::Path;

const CHUNK: u32 = 1024;
const QUOTA: u64 = 1 << 30;

fn meta(id: u8, uploader: u64, size: u64) -> BlobMeta {
    BlobMeta {
        id: BlobId([id; 16]),
        room: RoomId(7),
        uploader: UserId(uploader),
        size,
        chunk_size: CHUNK,
        created: Timestamp(1000),
    }
}

/// Chunk `index` of a blob as its uploader sends it: recognisable bytes.
fn chunk_bytes(meta: &BlobMeta, index: u32) -> Vec<u8> {
    let len = usize::try_from(meta.chunk_len(index).unwrap()).unwrap();
    (0..len)
        .map(|n| (n as u32).wrapping_mul(31).wrapping_add(index * 7) as u8)
        .collect()
}

fn upload(store: &dyn BlobStore, meta: &BlobMeta, chunks: std::ops::Range<u32>) -> BlobRecord {
    let mut last = None;
    for index in chunks {
        last = Some(
            store
                .put_chunk(meta.id, index, &chunk_bytes(meta, index))
                .unwrap(),
        );
    }
    last.unwrap()
}

fn chunks_round_trip_in_order(store: &dyn BlobStore) {
    // Two full chunks and a short one.
    let blob = meta(1, 1, 2 * u64::from(CHUNK) + 500);
    assert_eq!(blob.chunks(), 3);
    let created = store.create(&blob, QUOTA).unwrap();
    assert_eq!((created.received, created.complete), (0, false));
    let after_one = upload(store, &blob, 0..1);
    assert_eq!((after_one.received, after_one.complete), (1, false));
    assert_eq!(store.record(blob.id).unwrap(), Some(after_one));
    let done = upload(store, &blob, 1..3);
    assert_eq!((done.received, done.complete), (3, true));
    assert_eq!(done.info().chunks(), 3);
    for index in 0..3 {
        assert_eq!(
            store.chunk(blob.id, index).unwrap(),
            chunk_bytes(&blob, index)
        );
    }
    assert!(matches!(
        store.chunk(blob.id, 3),
        Err(BlobError::NoChunk {
            index: 3,
            received: 3
        })
    ));
}

fn an_empty_file_is_one_short_chunk(store: &dyn BlobStore) {
    // An empty file encrypts to one chunk holding only its 16-byte tag.
    let blob = meta(2, 1, 16);
    assert_eq!(blob.chunks(), 1);
    store.create(&blob, QUOTA).unwrap();
    let done = store.put_chunk(blob.id, 0, &[9; 16]).unwrap();
    assert_eq!((done.received, done.complete), (1, true));
    assert_eq!(store.chunk(blob.id, 0).unwrap(), vec![9; 16]);
}

fn resent_chunks_change_nothing(store: &dyn BlobStore) {
    let blob = meta(3, 1, 2 * u64::from(CHUNK));
    store.create(&blob, QUOTA).unwrap();
    upload(store, &blob, 0..1);
    // A resend after a reconnect: acknowledged, not stored again.
    let again = store
        .put_chunk(blob.id, 0, &[0xee; CHUNK as usize])
        .unwrap();
    assert_eq!((again.received, again.complete), (1, false));
    let done = upload(store, &blob, 1..2);
    assert!(done.complete);
    let after = store
        .put_chunk(blob.id, 1, &[0xee; CHUNK as usize])
        .unwrap();
    assert_eq!(after, done);
    // Even a chunk that could never fit is acknowledged once the blob is complete.
    assert_eq!(store.put_chunk(blob.id, 9, b"late").unwrap(), done);
    assert_eq!(store.chunk(blob.id, 0).unwrap(), chunk_bytes(&blob, 0));
    assert_eq!(store.chunk(blob.id, 1).unwrap(), chunk_bytes(&blob, 1));
}

fn chunks_out_of_order_or_of_the_wrong_length_are_refused(store: &dyn BlobStore) {
    let blob = meta(4, 1, u64::from(CHUNK) + 100);
    store.create(&blob, QUOTA).unwrap();
    assert!(matches!(
        store.put_chunk(blob.id, 1, &[0; 100]),
        Err(BlobError::OutOfOrder { expected: 0 })
    ));
    assert!(matches!(
        store.put_chunk(blob.id, 0, &[0; 1000]),
        Err(BlobError::WrongLength {
            index: 0,
            expected: 1024,
            got: 1000
        })
    ));
    upload(store, &blob, 0..1);
    // The last chunk is exactly the remainder.
    assert!(matches!(
        store.put_chunk(blob.id, 1, &[0; CHUNK as usize]),
        Err(BlobError::WrongLength {
            index: 1,
            expected: 100,
            ..
        })
    ));
    let record = store.record(blob.id).unwrap().unwrap();
    assert_eq!((record.received, record.complete), (1, false));
    assert!(
        store
            .put_chunk(BlobId([0xab; 16]), 0, &[0; 16])
            .is_err_and(|err| matches!(err, BlobError::NotFound))
    );
}

fn incomplete_and_unknown_blobs_cannot_be_read(store: &dyn BlobStore) {
    let blob = meta(5, 1, 2 * u64::from(CHUNK));
    store.create(&blob, QUOTA).unwrap();
    upload(store, &blob, 0..1);
    assert!(matches!(store.chunk(blob.id, 0), Err(BlobError::NotFound)));
    assert!(matches!(
        store.chunk(BlobId([0xcd; 16]), 0),
        Err(BlobError::NotFound)
    ));
    assert_eq!(store.record(BlobId([0xcd; 16])).unwrap(), None);
}

fn the_quota_counts_every_blob_of_the_uploader(store: &dyn BlobStore) {
    let quota = 10_000;
    store.create(&meta(6, 1, 6000), quota).unwrap();
    assert!(matches!(
        store.create(&meta(7, 1, 5000), quota),
        Err(BlobError::Quota {
            used: 6000,
            quota: 10_000
        })
    ));
    assert_eq!(store.record(BlobId([7; 16])).unwrap(), None);
    store.create(&meta(8, 1, 4000), quota).unwrap();
    assert_eq!(store.usage(UserId(1)).unwrap(), 10_000);
    // Another user's quota is their own.
    store.create(&meta(9, 2, 5000), quota).unwrap();
    assert_eq!(store.usage(UserId(2)).unwrap(), 5000);
    assert!(matches!(
        store.create(&meta(6, 3, 16), quota),
        Err(BlobError::Conflict)
    ));
}

fn old_incomplete_uploads_are_removed(store: &dyn BlobStore) {
    let old = meta(10, 1, 2 * u64::from(CHUNK));
    let old_complete = BlobMeta {
        id: BlobId([11; 16]),
        ..old
    };
    let recent = BlobMeta {
        id: BlobId([12; 16]),
        created: Timestamp(5000),
        ..old
    };
    for blob in [&old, &old_complete, &recent] {
        store.create(blob, QUOTA).unwrap();
        upload(store, blob, 0..1);
    }
    upload(store, &old_complete, 1..2);
    assert!(store.expire(None, None).unwrap().is_empty());
    let removed = store.expire(Some(Timestamp(2000)), None).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].meta, old);
    assert_eq!(store.record(old.id).unwrap(), None);
    assert!(matches!(
        store.put_chunk(old.id, 1, &chunk_bytes(&old, 1)),
        Err(BlobError::NotFound)
    ));
    assert!(store.record(old_complete.id).unwrap().unwrap().complete);
    assert_eq!(store.record(recent.id).unwrap().unwrap().received, 1);
    assert_eq!(store.usage(UserId(1)).unwrap(), 2 * old.size);
    assert!(
        store
            .expire(Some(Timestamp(2000)), None)
            .unwrap()
            .is_empty()
    );
}

fn a_retention_removes_old_files_too(store: &dyn BlobStore) {
    let old = meta(20, 1, 2 * u64::from(CHUNK));
    let old_incomplete = BlobMeta {
        id: BlobId([21; 16]),
        ..old
    };
    let recent = BlobMeta {
        id: BlobId([22; 16]),
        created: Timestamp(5000),
        ..old
    };
    for blob in [&old, &old_incomplete, &recent] {
        store.create(blob, QUOTA).unwrap();
    }
    upload(store, &old, 0..2);
    upload(store, &recent, 0..2);
    upload(store, &old_incomplete, 0..1);
    // Files only: the incomplete upload is left to its own (here: no) limit.
    let removed = store.expire(None, Some(Timestamp(2000))).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].meta, removed[0].complete), (old, true));
    assert!(matches!(store.chunk(old.id, 0), Err(BlobError::NotFound)));
    assert_eq!(store.record(old.id).unwrap(), None);
    assert_eq!(
        store.record(old_incomplete.id).unwrap().unwrap().received,
        1
    );
    assert_eq!(store.chunk(recent.id, 1).unwrap(), chunk_bytes(&recent, 1));
    assert_eq!(store.usage(UserId(1)).unwrap(), 2 * old.size);
}

fn deleting_a_blob_frees_its_quota(store: &dyn BlobStore) {
    let quota = 3 * u64::from(CHUNK);
    let file = meta(30, 1, 2 * u64::from(CHUNK));
    let upload_going = BlobMeta {
        id: BlobId([31; 16]),
        size: u64::from(CHUNK),
        ..file
    };
    store.create(&file, quota).unwrap();
    upload(store, &file, 0..2);
    store.create(&upload_going, quota).unwrap();
    let next = BlobMeta {
        id: BlobId([32; 16]),
        ..file
    };
    assert!(matches!(
        store.create(&next, quota),
        Err(BlobError::Quota { .. })
    ));
    // A complete file: gone for readers, and its bytes are free again.
    let removed = store.remove(file.id).unwrap();
    assert_eq!((removed.meta, removed.complete), (file, true));
    assert!(matches!(store.chunk(file.id, 0), Err(BlobError::NotFound)));
    assert!(matches!(store.remove(file.id), Err(BlobError::NotFound)));
    assert_eq!(store.usage(UserId(1)).unwrap(), upload_going.size);
    store.create(&next, quota).unwrap();
    // An upload in progress: its next chunk finds nothing to write to.
    assert!(!store.remove(upload_going.id).unwrap().complete);
    assert!(matches!(
        store.put_chunk(upload_going.id, 0, &chunk_bytes(&upload_going, 0)),
        Err(BlobError::NotFound)
    ));
    assert_eq!(store.usage(UserId(1)).unwrap(), next.size);
    assert!(matches!(
        store.remove(BlobId([0xee; 16])),
        Err(BlobError::NotFound)
    ));
}

fn racing_uploads_of_one_blob_store_each_chunk_once(store: Arc<dyn BlobStore>) {
    // Four connections of the uploader send the same chunks at once, as after a
    // reconnect; a connection that is ahead retries until the chunk before is stored.
    let blob = meta(13, 1, 40 * u64::from(CHUNK) + 333);
    store.create(&blob, QUOTA).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for index in 0..blob.chunks() {
                    let data = chunk_bytes(&blob, index);
                    loop {
                        match store.put_chunk(blob.id, index, &data) {
                            Ok(_) => break,
                            Err(BlobError::OutOfOrder { .. }) => std::thread::yield_now(),
                            Err(err) => panic!("{err}"),
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let record = store.record(blob.id).unwrap().unwrap();
    assert_eq!((record.received, record.complete), (blob.chunks(), true));
    for index in 0..blob.chunks() {
        assert_eq!(
            store.chunk(blob.id, index).unwrap(),
            chunk_bytes(&blob, index)
        );
    }
}

macro_rules! suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn chunks_round_trip_in_order() {
                let (_guard, store) = $make;
                super::chunks_round_trip_in_order(store.as_ref());
            }

            #[test]
            fn an_empty_file_is_one_short_chunk() {
                let (_guard, store) = $make;
                super::an_empty_file_is_one_short_chunk(store.as_ref());
            }

            #[test]
            fn resent_chunks_change_nothing() {
                let (_guard, store) = $make;
                super::resent_chunks_change_nothing(store.as_ref());
            }

            #[test]
            fn chunks_out_of_order_or_of_the_wrong_length_are_refused() {
                let (_guard, store) = $make;
                super::chunks_out_of_order_or_of_the_wrong_length_are_refused(store.as_ref());
            }

            #[test]
            fn incomplete_and_unknown_blobs_cannot_be_read() {
                let (_guard, store) = $make;
                super::incomplete_and_unknown_blobs_cannot_be_read(store.as_ref());
            }

            #[test]
            fn the_quota_counts_every_blob_of_the_uploader() {
                let (_guard, store) = $make;
                super::the_quota_counts_every_blob_of_the_uploader(store.as_ref());
            }

            #[test]
            fn old_incomplete_uploads_are_removed() {
                let (_guard, store) = $make;
                super::old_incomplete_uploads_are_removed(store.as_ref());
            }

            #[test]
            fn a_retention_removes_old_files_too() {
                let (_guard, store) = $make;
                super::a_retention_removes_old_files_too(store.as_ref());
            }

            #[test]
            fn deleting_a_blob_frees_its_quota() {
                let (_guard, store) = $make;
                super::deleting_a_blob_frees_its_quota(store.as_ref());
            }

            #[test]
            fn racing_uploads_of_one_blob_store_each_chunk_once() {
                let (_guard, store) = $make;
                super::racing_uploads_of_one_blob_store_each_chunk_once(store);
            }
        }
    };
}

suite!(memory, {
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::new());
    ((), store)
});
suite!(fs, {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(&dir.path().join("blobs")).unwrap());
    (dir, store)
});

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn fs_lays_out_metadata_and_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    let store = FsBlobStore::open(&path).unwrap();
    let blob = meta(1, 1, u64::from(CHUNK) + 16);
    let hex = blob.id.to_hex();
    store.create(&blob, QUOTA).unwrap();
    assert_eq!(names(&path), [format!("{hex}.meta"), format!("{hex}.part")]);
    let meta_text = std::fs::read_to_string(path.join(format!("{hex}.meta"))).unwrap();
    assert_eq!(
        meta_text,
        "confide-blob 1\nroom=7\nuploader=1\nsize=1040\nchunk_size=1024\ncreated_ms=1000\n"
    );
    upload(&store, &blob, 0..2);
    assert_eq!(names(&path), [format!("{hex}.blob"), format!("{hex}.meta")]);
    let data = std::fs::read(path.join(format!("{hex}.blob"))).unwrap();
    assert_eq!(
        data,
        [chunk_bytes(&blob, 0), chunk_bytes(&blob, 1)].concat()
    );
}

#[test]
fn fs_reopens_complete_and_partial_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    let complete = meta(1, 1, 2 * u64::from(CHUNK));
    let partial = meta(2, 1, 3 * u64::from(CHUNK));
    {
        let store = FsBlobStore::open(&path).unwrap();
        store.create(&complete, QUOTA).unwrap();
        upload(&store, &complete, 0..2);
        store.create(&partial, QUOTA).unwrap();
        upload(&store, &partial, 0..2);
    }
    let store = FsBlobStore::open(&path).unwrap();
    assert_eq!(
        store.record(complete.id).unwrap(),
        Some(BlobRecord {
            meta: complete,
            received: 2,
            complete: true
        })
    );
    assert_eq!(
        store.chunk(complete.id, 1).unwrap(),
        chunk_bytes(&complete, 1)
    );
    assert_eq!(store.record(partial.id).unwrap().unwrap().received, 2);
    assert_eq!(
        store.usage(UserId(1)).unwrap(),
        complete.size + partial.size
    );
    // The upload resumes where it stopped.
    assert!(upload(&store, &partial, 2..3).complete);
    assert_eq!(
        store.chunk(partial.id, 0).unwrap(),
        chunk_bytes(&partial, 0)
    );
}

#[test]
fn fs_cuts_a_torn_chunk_and_completes_a_finished_part() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    let torn = meta(1, 1, 3 * u64::from(CHUNK));
    let finished = meta(2, 1, u64::from(CHUNK) + 20);
    {
        let store = FsBlobStore::open(&path).unwrap();
        store.create(&torn, QUOTA).unwrap();
        upload(&store, &torn, 0..1);
        store.create(&finished, QUOTA).unwrap();
        upload(&store, &finished, 0..1);
    }
    // A crash in the middle of writing a chunk, and one after writing the last chunk
    // but before the blob was marked complete.
    let append = |id: BlobId, bytes: &[u8]| {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path.join(format!("{}.part", id.to_hex())))
            .unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
    };
    append(torn.id, &[1; 100]);
    append(finished.id, &chunk_bytes(&finished, 1));
    let store = FsBlobStore::open(&path).unwrap();
    assert_eq!(store.record(torn.id).unwrap().unwrap().received, 1);
    let part = path.join(format!("{}.part", torn.id.to_hex()));
    assert_eq!(std::fs::metadata(part).unwrap().len(), u64::from(CHUNK));
    assert!(store.record(finished.id).unwrap().unwrap().complete);
    assert_eq!(
        store.chunk(finished.id, 1).unwrap(),
        chunk_bytes(&finished, 1)
    );
    assert!(upload(&store, &torn, 1..3).complete);
}

#[test]
fn fs_removes_files_without_metadata_and_leaves_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    drop(FsBlobStore::open(&path).unwrap());
    let orphan = BlobId([0x42; 16]).to_hex();
    for name in [
        format!("{orphan}.part"),
        format!("{orphan}.blob"),
        format!("{orphan}.meta.tmp"),
        "notes.txt".to_owned(),
    ] {
        std::fs::write(path.join(name), b"x").unwrap();
    }
    let store = FsBlobStore::open(&path).unwrap();
    assert_eq!(names(&path), ["notes.txt"]);
    assert_eq!(store.record(BlobId([0x42; 16])).unwrap(), None);
}

#[test]
fn fs_deletes_the_files_of_expired_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    let store = FsBlobStore::open(&path).unwrap();
    let blob = meta(1, 1, 2 * u64::from(CHUNK));
    store.create(&blob, QUOTA).unwrap();
    upload(&store, &blob, 0..1);
    assert_eq!(store.expire(Some(Timestamp(2000)), None).unwrap().len(), 1);
    assert!(names(&path).is_empty());
}

#[test]
fn fs_deletes_the_files_of_deleted_blobs_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blobs");
    let store = FsBlobStore::open(&path).unwrap();
    let (file, partial) = (
        meta(1, 1, 2 * u64::from(CHUNK)),
        meta(2, 1, 2 * u64::from(CHUNK)),
    );
    for blob in [&file, &partial] {
        store.create(blob, QUOTA).unwrap();
        upload(&store, blob, 0..1);
    }
    upload(&store, &file, 1..2);
    store.remove(file.id).unwrap();
    store.remove(partial.id).unwrap();
    assert!(names(&path).is_empty());
    drop(store);
    let reopened = FsBlobStore::open(&path).unwrap();
    assert_eq!(reopened.record(file.id).unwrap(), None);
    assert_eq!(reopened.usage(UserId(1)).unwrap(), 0);
}

#[test]
fn sizes_are_shown_in_human_units() {
    assert_eq!(human_bytes(1), "1 byte");
    assert_eq!(human_bytes(1023), "1023 bytes");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(120 * 1024 * 1024), "120.0 MiB");
    assert_eq!(human_bytes(100 * 1024 * 1024), "100.0 MiB");
    assert_eq!(human_bytes(10 << 30), "10.0 GiB");
}
