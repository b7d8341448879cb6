//! Uploaded files ("blobs"): end-to-end encrypted bytes the server keeps for a room,
//! uploaded and downloaded in chunks, behind one trait.
//!
//! Two implementations share one test suite: [`FsBlobStore`] (files under
//! `DATA_DIR/blobs`, the server's) and [`MemoryBlobStore`] (for tests). A blob is
//! created empty with its final size, filled chunk by chunk strictly in order by its
//! uploader, and becomes readable once its last chunk is stored durably; it never
//! changes after that. The store never interprets the bytes: they are ciphertext.
//! Methods are blocking; async code calls them through [`call`].
//!
//! Each blob has a mutex of its own, held while a chunk is checked and written, so two
//! connections of one uploader racing on one blob (after a reconnect) store each chunk
//! once and in its place.

use crate::state::internal;
use confide_proto::{BlobId, BlobInfo, ProtoError, RoomId, Timestamp, UserId, blob_chunks};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod fs;
mod memory;
#[cfg(test)]
mod tests;

pub use fs::FsBlobStore;
pub use memory::MemoryBlobStore;

/// The directory of blobs inside the data directory.
pub const BLOB_DIR: &str = "blobs";

/// How often incomplete uploads are looked for after start.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// A blob operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No such blob (or it was deleted).
    #[error("no such blob")]
    NotFound,
    /// A blob with this id exists.
    #[error("a blob with this id exists")]
    Conflict,
    /// The uploader's blobs would take more than the quota (nothing was stored).
    #[error("storage quota of {quota} bytes exceeded ({used} bytes used)")]
    Quota {
        /// Bytes the uploader's blobs take now.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// A chunk came out of order: the blob needs chunk `expected` next.
    #[error("expected chunk {expected}")]
    OutOfOrder {
        /// The next chunk the blob needs.
        expected: u32,
    },
    /// A chunk has the wrong number of bytes.
    #[error("chunk {index} must have {expected} bytes, not {got}")]
    WrongLength {
        /// The chunk.
        index: u32,
        /// Bytes it must have.
        expected: u64,
        /// Bytes it had.
        got: usize,
    },
    /// The chunk does not exist (past the end, or not uploaded yet).
    #[error("no chunk {index}: the blob has {received} chunks")]
    NoChunk {
        /// The chunk asked for.
        index: u32,
        /// Chunks the blob holds.
        received: u32,
    },
    /// Reading or writing a file failed.
    #[error("blob storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data could not be read back.
    #[error("corrupt blob storage: {0}")]
    Corrupt(String),
}

/// What never changes about a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    /// Its id.
    pub id: BlobId,
    /// The room whose members may download it.
    pub room: RoomId,
    /// Who uploads it.
    pub uploader: UserId,
    /// Total bytes.
    pub size: u64,
    /// Bytes per chunk (the last one may be shorter).
    pub chunk_size: u32,
    /// When the upload started.
    pub created: Timestamp,
}

impl BlobMeta {
    /// How many chunks the blob has (at least one).
    #[must_use]
    pub fn chunks(&self) -> u32 {
        blob_chunks(self.size, self.chunk_size)
    }

    /// Where chunk `index` starts.
    #[must_use]
    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index).saturating_mul(u64::from(self.chunk_size))
    }

    /// How many bytes chunk `index` has, or `None` past the last chunk.
    #[must_use]
    pub fn chunk_len(&self, index: u32) -> Option<u64> {
        if index >= self.chunks() {
            return None;
        }
        let left = self.size.saturating_sub(self.offset(index));
        Some(left.min(u64::from(self.chunk_size)))
    }
}

/// A blob and how much of it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    /// What never changes.
    pub meta: BlobMeta,
    /// Chunks stored, all from the start.
    pub received: u32,
    /// Whether every chunk is stored durably (the blob can be downloaded).
    pub complete: bool,
}

impl BlobRecord {
    /// The blob as the protocol describes it.
    #[must_use]
    pub fn info(&self) -> BlobInfo {
        BlobInfo {
            blob: self.meta.id,
            room: self.meta.room,
            size: self.meta.size,
            chunk_size: self.meta.chunk_size,
            received: self.received,
            complete: self.complete,
        }
    }
}

/// Stored blobs. Every method blocks; call them through [`call`].
pub trait BlobStore: Send + Sync + 'static {
    /// Creates an empty blob, if its uploader's blobs (complete or not) and this one
    /// fit in `quota` bytes; nothing is stored otherwise.
    ///
    /// # Errors
    /// [`BlobError::Quota`], [`BlobError::Conflict`] for an id in use, or a storage
    /// failure.
    fn create(&self, meta: &BlobMeta, quota: u64) -> Result<BlobRecord, BlobError>;

    /// A blob, if it exists.
    ///
    /// # Errors
    /// A storage failure.
    fn record(&self, id: BlobId) -> Result<Option<BlobRecord>, BlobError>;

    /// Stores chunk `index` of an incomplete blob, which must be the next one
    /// (`received`) and have exactly its length; the last chunk completes the blob,
    /// durably, before this returns. A chunk already stored, or any chunk of a complete
    /// blob, changes nothing. Returns the blob as it is afterwards.
    ///
    /// # Errors
    /// [`BlobError::NotFound`], [`BlobError::OutOfOrder`], [`BlobError::WrongLength`],
    /// or a storage failure.
    fn put_chunk(&self, id: BlobId, index: u32, data: &[u8]) -> Result<BlobRecord, BlobError>;

    /// Chunk `index` of a complete blob.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] if the blob is unknown or incomplete,
    /// [`BlobError::NoChunk`] past its end, or a storage failure.
    fn chunk(&self, id: BlobId, index: u32) -> Result<Vec<u8>, BlobError>;

    /// Bytes the blobs of `user` (complete or not) take.
    ///
    /// # Errors
    /// A storage failure.
    fn usage(&self, user: UserId) -> Result<u64, BlobError>;

    /// Deletes a blob, complete or not, and gives its bytes back to its uploader's
    /// quota; returns it as it was. A put or download racing with it finds no blob.
    ///
    /// # Errors
    /// [`BlobError::NotFound`], or a storage failure (the blob is gone from the store
    /// either way; files left behind are removed at the next start).
    fn remove(&self, id: BlobId) -> Result<BlobRecord, BlobError>;

    /// Deletes every incomplete blob created before `incomplete_before` and every
    /// complete one created before `complete_before` (`None`: none of that kind);
    /// returns them.
    ///
    /// # Errors
    /// A storage failure (blobs deleted before it stay deleted).
    fn expire(
        &self,
        incomplete_before: Option<Timestamp>,
        complete_before: Option<Timestamp>,
    ) -> Result<Vec<BlobRecord>, BlobError>;
}

/// How long the server keeps blobs, counted from the start of their upload; `None`
/// keeps them for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Incomplete uploads older than this are deleted.
    pub incomplete: Option<Duration>,
    /// Complete blobs (files people sent) older than this are deleted.
    pub complete: Option<Duration>,
}

impl Retention {
    /// Whether anything ever expires.
    #[must_use]
    pub fn expires(&self) -> bool {
        self.incomplete.is_some() || self.complete.is_some()
    }
}

/// Runs a blocking blob store call off the async threads. The outer error is a failure
/// to run it at all ([`confide_proto::ErrorCode::Internal`]); the inner one is the
/// store's answer, for the caller to turn into the right error code.
///
/// # Errors
/// If the call could not run.
pub async fn call<T, F>(
    blobs: &Arc<dyn BlobStore>,
    call: F,
) -> Result<Result<T, BlobError>, ProtoError>
where
    T: Send + 'static,
    F: FnOnce(&dyn BlobStore) -> Result<T, BlobError> + Send + 'static,
{
    let blobs = Arc::clone(blobs);
    tokio::task::spawn_blocking(move || call(blobs.as_ref()))
        .await
        .map_err(|err| internal(&err))
}

/// Deletes what `retention` says has expired, every hour until `shutdown`.
pub async fn expire_periodically(
    blobs: Arc<dyn BlobStore>,
    retention: Retention,
    events: crate::eventlog::EventLog,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EXPIRY_INTERVAL) => {}
        }
        expire(&blobs, retention, &events).await;
    }
}

/// Deletes what `retention` says has expired now, logging what went.
pub async fn expire(
    blobs: &Arc<dyn BlobStore>,
    retention: Retention,
    events: &crate::eventlog::EventLog,
) {
    let now = crate::state::now().0;
    let cutoff = |age: Duration| {
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Timestamp(now.saturating_sub(age))
    };
    let incomplete = retention.incomplete.map(cutoff);
    let complete = retention.complete.map(cutoff);
    match call(blobs, move |store| store.expire(incomplete, complete)).await {
        Ok(Ok(removed)) => {
            for record in removed {
                events.record(
                    "blob_expired",
                    &[
                        ("blob", &record.meta.id),
                        ("room", &record.meta.room),
                        ("complete", &record.complete),
                        ("received", &record.received),
                    ],
                );
            }
        }
        Ok(Err(err)) => tracing::error!(cause = %err, "cannot delete expired blobs"),
        // `call` has logged why it could not run.
        Err(_) => {}
    }
}

/// A size for people: "512 bytes", "1.5 KiB", "120.0 MiB", "10.0 GiB".
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return if bytes == 1 {
            "1 byte".to_owned()
        } else {
            format!("{bytes} bytes")
        };
    }
    // Precision is irrelevant here: one decimal is shown.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// The state both stores keep in memory for every blob, with a mutex per blob so that
/// puts to one blob are serialised while others proceed. `T` is what the store keeps
/// beside the counters (the bytes, for the memory store).
///
/// `std::sync::Mutex` is right for both levels: the index lock is held for a map
/// lookup, and a blob's lock only inside blocking calls (a file write or fsync of that
/// one blob), never across an await.
struct Index<T> {
    inner: Mutex<IndexInner<T>>,
}

struct IndexInner<T> {
    blobs: HashMap<BlobId, Arc<Slot<T>>>,
    usage: HashMap<UserId, u64>,
}

struct Slot<T> {
    meta: BlobMeta,
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    received: u32,
    complete: bool,
    /// Set, under the blob's lock, when the blob is deleted, so that a put that found
    /// the slot before the deletion stores nothing.
    removed: bool,
    data: T,
}

/// What a put must do, decided under the blob's lock.
enum PutStep {
    /// Nothing to store: answer with the record.
    Done(BlobRecord),
    /// Store the chunk at `offset`; `last` if it completes the blob.
    Store { offset: u64, last: bool },
}

impl<T> Slot<T> {
    fn new(meta: BlobMeta, received: u32, complete: bool, data: T) -> Slot<T> {
        Slot {
            meta,
            state: Mutex::new(SlotState {
                received,
                complete,
                removed: false,
                data,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where chunk `index` of this blob lies (offset and length), if the blob is complete
    /// and still there; `state` is the slot's state, locked by the caller.
    fn chunk_range(&self, state: &SlotState<T>, index: u32) -> Result<(u64, usize), BlobError> {
        if !state.complete || state.removed {
            return Err(BlobError::NotFound);
        }
        let len = self.meta.chunk_len(index).ok_or(BlobError::NoChunk {
            index,
            received: self.meta.chunks(),
        })?;
        let len = usize::try_from(len).map_err(|_| BlobError::Corrupt("chunk too large".into()))?;
        Ok((self.meta.offset(index), len))
    }

    fn record(&self, state: &SlotState<T>) -> BlobRecord {
        BlobRecord {
            meta: self.meta,
            received: state.received,
            complete: state.complete,
        }
    }

    /// Checks a chunk against the blob's state (the caller holds the lock).
    fn step(&self, state: &SlotState<T>, index: u32, len: usize) -> Result<PutStep, BlobError> {
        if state.removed {
            return Err(BlobError::NotFound);
        }
        if state.complete || index < state.received {
            return Ok(PutStep::Done(self.record(state)));
        }
        if index > state.received {
            return Err(BlobError::OutOfOrder {
                expected: state.received,
            });
        }
        let expected = self.meta.chunk_len(index).ok_or(BlobError::OutOfOrder {
            expected: state.received,
        })?;
        if u64::try_from(len).ok() != Some(expected) {
            return Err(BlobError::WrongLength {
                index,
                expected,
                got: len,
            });
        }
        Ok(PutStep::Store {
            offset: self.meta.offset(index),
            last: index + 1 == self.meta.chunks(),
        })
    }

    /// Runs a put: `store` writes the chunk (and, for the last one, makes the blob
    /// durable) while the blob's lock is held.
    fn put(
        &self,
        index: u32,
        data: &[u8],
        store: impl FnOnce(&mut T, u64, bool) -> Result<(), BlobError>,
    ) -> Result<BlobRecord, BlobError> {
        let mut state = self.lock();
        match self.step(&state, index, data.len())? {
            PutStep::Done(record) => Ok(record),
            PutStep::Store { offset, last } => {
                store(&mut state.data, offset, last)?;
                state.received += 1;
                state.complete = last;
                Ok(self.record(&state))
            }
        }
    }
}

impl<T> Index<T> {
    fn new() -> Index<T> {
        Index {
            inner: Mutex::new(IndexInner {
                blobs: HashMap::new(),
                usage: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IndexInner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a blob found in storage, whatever the quota.
    fn load(&self, slot: Slot<T>) {
        let mut inner = self.lock();
        let used = inner.usage.entry(slot.meta.uploader).or_default();
        *used = used.saturating_add(slot.meta.size);
        inner.blobs.insert(slot.meta.id, Arc::new(slot));
    }

    /// Adds a new blob if it fits in its uploader's quota.
    fn reserve(&self, slot: Slot<T>, quota: u64) -> Result<Arc<Slot<T>>, BlobError> {
        let mut inner = self.lock();
        if inner.blobs.contains_key(&slot.meta.id) {
            return Err(BlobError::Conflict);
        }
        let used = inner.usage.get(&slot.meta.uploader).copied().unwrap_or(0);
        if used.saturating_add(slot.meta.size) > quota {
            return Err(BlobError::Quota { used, quota });
        }
        inner
            .usage
            .insert(slot.meta.uploader, used.saturating_add(slot.meta.size));
        let slot = Arc::new(slot);
        inner.blobs.insert(slot.meta.id, Arc::clone(&slot));
        Ok(slot)
    }

    /// Drops a blob and gives its bytes back to its uploader's quota.
    fn forget(&self, meta: &BlobMeta) {
        let mut inner = self.lock();
        if inner.blobs.remove(&meta.id).is_none() {
            return;
        }
        if let Some(used) = inner.usage.get_mut(&meta.uploader) {
            *used = used.saturating_sub(meta.size);
            if *used == 0 {
                inner.usage.remove(&meta.uploader);
            }
        }
    }

    fn get(&self, id: BlobId) -> Option<Arc<Slot<T>>> {
        self.lock().blobs.get(&id).cloned()
    }

    fn usage(&self, user: UserId) -> u64 {
        self.lock().usage.get(&user).copied().unwrap_or(0)
    }

    fn record(&self, id: BlobId) -> Option<BlobRecord> {
        let slot = self.get(id)?;
        let state = slot.lock();
        Some(slot.record(&state))
    }

    /// Deletes one blob if `wanted` says so of its state: marks it removed under its
    /// own lock (so that a put or read racing with this finds no blob), lets `delete`
    /// remove its storage, then drops it from the index. `None` if it was removed
    /// already or is not wanted.
    fn remove_slot(
        &self,
        slot: &Slot<T>,
        wanted: impl FnOnce(&SlotState<T>) -> bool,
        delete: &mut impl FnMut(&BlobMeta, &mut T) -> Result<(), BlobError>,
    ) -> Result<Option<BlobRecord>, BlobError> {
        let mut state = slot.lock();
        if state.removed || !wanted(&state) {
            return Ok(None);
        }
        state.removed = true;
        let record = slot.record(&state);
        // Forgotten even if deleting fails: the blob is unusable either way, and the
        // files left behind are orphans that the next start removes.
        let deleted = delete(&slot.meta, &mut state.data);
        self.forget(&slot.meta);
        deleted?;
        Ok(Some(record))
    }

    /// Deletes the blob `id`.
    fn remove(
        &self,
        id: BlobId,
        mut delete: impl FnMut(&BlobMeta, &mut T) -> Result<(), BlobError>,
    ) -> Result<BlobRecord, BlobError> {
        let slot = self.get(id).ok_or(BlobError::NotFound)?;
        self.remove_slot(&slot, |_| true, &mut delete)?
            .ok_or(BlobError::NotFound)
    }

    /// Deletes every incomplete blob created before `incomplete_before`, and every
    /// complete one created before `complete_before`.
    fn expire(
        &self,
        incomplete_before: Option<Timestamp>,
        complete_before: Option<Timestamp>,
        mut delete: impl FnMut(&BlobMeta, &mut T) -> Result<(), BlobError>,
    ) -> Result<Vec<BlobRecord>, BlobError> {
        let Some(oldest_kept) = incomplete_before.max(complete_before) else {
            return Ok(Vec::new());
        };
        let candidates: Vec<Arc<Slot<T>>> = self
            .lock()
            .blobs
            .values()
            .filter(|slot| slot.meta.created < oldest_kept)
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for slot in candidates {
            let created = slot.meta.created;
            let expired = |state: &SlotState<T>| {
                let cutoff = if state.complete {
                    complete_before
                } else {
                    incomplete_before
                };
                cutoff.is_some_and(|cutoff| created < cutoff)
            };
            if let Some(record) = self.remove_slot(&slot, expired, &mut delete)? {
                removed.push(record);
            }
        }
        Ok(removed)
    }
}
