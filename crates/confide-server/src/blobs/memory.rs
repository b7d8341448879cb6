//! Blobs in memory, for tests: the same rules as the file store, nothing durable.

use super::{BlobError, BlobMeta, BlobRecord, BlobStore, Index, Slot};
use confide_proto::{BlobId, Timestamp, UserId};

/// Blobs kept in memory.
pub struct MemoryBlobStore {
    index: Index<Vec<u8>>,
}

impl std::fmt::Debug for MemoryBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBlobStore").finish_non_exhaustive()
    }
}

impl Default for MemoryBlobStore {
    fn default() -> MemoryBlobStore {
        MemoryBlobStore::new()
    }
}

impl MemoryBlobStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemoryBlobStore {
        MemoryBlobStore {
            index: Index::new(),
        }
    }
}

impl BlobStore for MemoryBlobStore {
    fn create(&self, meta: &BlobMeta, quota: u64) -> Result<BlobRecord, BlobError> {
        self.index
            .reserve(Slot::new(*meta, 0, false, Vec::new()), quota)?;
        Ok(BlobRecord {
            meta: *meta,
            received: 0,
            complete: false,
        })
    }

    fn record(&self, id: BlobId) -> Result<Option<BlobRecord>, BlobError> {
        Ok(self.index.record(id))
    }

    fn put_chunk(&self, id: BlobId, index: u32, data: &[u8]) -> Result<BlobRecord, BlobError> {
        let slot = self.index.get(id).ok_or(BlobError::NotFound)?;
        // Chunks are stored strictly in order, so each goes at the end.
        slot.put(index, data, |bytes, _offset, _last| {
            bytes.extend_from_slice(data);
            Ok(())
        })
    }

    fn chunk(&self, id: BlobId, index: u32) -> Result<Vec<u8>, BlobError> {
        let slot = self.index.get(id).ok_or(BlobError::NotFound)?;
        let state = slot.lock();
        let (offset, len) = slot.chunk_range(&state, index)?;
        let start =
            usize::try_from(offset).map_err(|_| BlobError::Corrupt("offset too large".into()))?;
        let end = start.saturating_add(len);
        state
            .data
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| BlobError::Corrupt(format!("blob {id} is shorter than its size")))
    }

    fn usage(&self, user: UserId) -> Result<u64, BlobError> {
        Ok(self.index.usage(user))
    }

    fn remove(&self, id: BlobId) -> Result<BlobRecord, BlobError> {
        self.index.remove(id, |_, bytes| {
            *bytes = Vec::new();
            Ok(())
        })
    }

    fn expire(
        &self,
        incomplete_before: Option<Timestamp>,
        complete_before: Option<Timestamp>,
    ) -> Result<Vec<BlobRecord>, BlobError> {
        self.index
            .expire(incomplete_before, complete_before, |_, bytes| {
                *bytes = Vec::new();
                Ok(())
            })
    }
}
