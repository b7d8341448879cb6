//! Request handlers for files: creating a blob, uploading it chunk by chunk (resumable),
//! and downloading it.
//!
//! Only the uploader may see or write a blob before it is complete (anyone else is told
//! there is no such blob, so ids cannot be probed); once complete, any current member of
//! its room may read it. The bytes are end-to-end encrypted and never read or logged:
//! only ids, rooms and sizes are.
//!
//! Downloads are windowed: a connection has at most [`MAX_UNSENT_CHUNKS`] chunk replies
//! waiting for its socket, so a client that asks faster than it reads is slowed down
//! instead of filling the server's memory.

use super::{Connection, LoggedIn};
use crate::blobs::{self, BlobError, BlobMeta, BlobRecord, human_bytes};
use crate::outbound::encode;
use crate::state::{internal, now};
use bytes::Bytes;
use confide_proto::{
    BLOB_CHUNK_OVERHEAD, BlobId, ErrorCode, ProtoError, Reply, RequestId, RoomId, ServerFrame,
    blob_chunks,
};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Tries with a new id if a random id is taken (it never should be).
const CREATE_ATTEMPTS: usize = 3;

/// Downloaded chunks one connection may have queued but not yet written to its socket:
/// at most 16 MiB of replies, twice the client core's window of chunks in flight.
pub(super) const MAX_UNSENT_CHUNKS: usize = 16;

/// An encoded reply holding its share of the download window until it is dropped,
/// which the writer does once it has written or copied the frame.
struct WindowedFrame {
    frame: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for WindowedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

fn no_such_blob() -> ProtoError {
    error(ErrorCode::NoSuchBlob, "no such blob")
}

/// A download of a blob that is not (or no longer) there. Its sender sends the message
/// naming it only once the upload is complete, so a member asking for it meets a
/// deleted or expired file; the same answer for an id that never existed reveals
/// nothing more.
fn gone() -> ProtoError {
    error(
        ErrorCode::NoSuchBlob,
        "this file is no longer on the server: its sender deleted it, or it expired",
    )
}

/// The protocol's error for a blob store's answer.
fn refused(err: BlobError) -> ProtoError {
    match err {
        BlobError::NotFound => no_such_blob(),
        BlobError::OutOfOrder { expected } => error(
            ErrorCode::InvalidArgument,
            format!("expected chunk {expected}"),
        ),
        err @ (BlobError::WrongLength { .. } | BlobError::NoChunk { .. }) => {
            error(ErrorCode::InvalidArgument, err.to_string())
        }
        BlobError::Quota { used, quota } => error(
            ErrorCode::FileTooLarge,
            format!(
                "not enough storage: your files take {} of the {} this server allows per account",
                human_bytes(used),
                human_bytes(quota)
            ),
        ),
        err => internal(&err),
    }
}

/// Checks the shape of a new blob; returns its size as plaintext.
fn check_shape(
    size: u64,
    chunk_size: u32,
    limits: &crate::config::Limits,
) -> Result<u64, ProtoError> {
    let bounds = limits.chunk_bytes();
    if !bounds.contains(&chunk_size) {
        return Err(error(
            ErrorCode::InvalidArgument,
            format!(
                "chunk size {chunk_size} is outside the {} to {} bytes this server accepts",
                bounds.start(),
                bounds.end()
            ),
        ));
    }
    let chunks = u64::from(blob_chunks(size, chunk_size));
    if chunks * u64::from(chunk_size) < size {
        // More chunks than a `u32` counts: far beyond any limit.
        return Err(too_large(size, limits.max_file_bytes));
    }
    let overhead = chunks * u64::from(BLOB_CHUNK_OVERHEAD);
    // Every chunk, the last one included, holds at least its authentication tag.
    let last = size.saturating_sub((chunks - 1) * u64::from(chunk_size));
    if size < overhead || last < u64::from(BLOB_CHUNK_OVERHEAD) {
        return Err(error(
            ErrorCode::InvalidArgument,
            format!(
                "a blob of {size} bytes in chunks of {chunk_size} bytes is not encrypted \
                 chunks: each holds a {BLOB_CHUNK_OVERHEAD}-byte tag"
            ),
        ));
    }
    let plaintext = size - overhead;
    if plaintext > limits.max_file_bytes {
        return Err(too_large(plaintext, limits.max_file_bytes));
    }
    Ok(plaintext)
}

fn too_large(size: u64, limit: u64) -> ProtoError {
    let (mut size_text, mut limit_text) = (human_bytes(size), human_bytes(limit));
    if size_text == limit_text {
        // "4.0 KiB exceeds 4.0 KiB" would puzzle anyone: show the bytes as well.
        size_text = format!("{size_text} ({size} bytes)");
        limit_text = format!("{limit_text} ({limit} bytes)");
    }
    error(
        ErrorCode::FileTooLarge,
        format!("file of {size_text} exceeds this server's limit of {limit_text}"),
    )
}

impl Connection {
    /// The blob `id` if `user` uploads it, else [`ErrorCode::NoSuchBlob`].
    async fn own_blob(&self, user: &LoggedIn, id: BlobId) -> Result<BlobRecord, ProtoError> {
        let record = blobs::call(&self.shared.blobs, move |store| store.record(id))
            .await?
            .map_err(refused)?;
        record
            .filter(|record| record.meta.uploader == user.id)
            .ok_or_else(no_such_blob)
    }

    pub(super) async fn create_blob(
        &self,
        user: &LoggedIn,
        room: RoomId,
        size: u64,
        chunk_size: u32,
    ) -> Result<Reply, ProtoError> {
        let view = self.room(room).await?.view(user.id).await?;
        if view.joined_seq.is_none() {
            return Err(error(ErrorCode::NotMember, "you are not in this room"));
        }
        let limits = &self.shared.config.limits;
        check_shape(size, chunk_size, limits)?;
        let quota = limits.blob_quota_bytes;
        let mut meta = BlobMeta {
            id: BlobId(rand::random()),
            room,
            uploader: user.id,
            size,
            chunk_size,
            created: now(),
        };
        let mut attempts = 0;
        let record = loop {
            let created =
                blobs::call(&self.shared.blobs, move |store| store.create(&meta, quota)).await?;
            match created {
                Ok(record) => break record,
                Err(BlobError::Conflict) if attempts + 1 < CREATE_ATTEMPTS => {
                    attempts += 1;
                    meta.id = BlobId(rand::random());
                }
                Err(BlobError::Quota { used, quota }) => {
                    return Err(error(
                        ErrorCode::FileTooLarge,
                        format!(
                            "not enough storage for this file of {}: your files take {} of \
                             the {} this server allows per account",
                            human_bytes(size),
                            human_bytes(used),
                            human_bytes(quota)
                        ),
                    ));
                }
                Err(err) => return Err(refused(err)),
            }
        };
        tracing::debug!(blob = %meta.id, room = %room, size, chunk_size, "blob created");
        self.shared.events.record(
            "blob_created",
            &[
                ("blob", &meta.id),
                ("room", &room),
                ("size", &size),
                ("user", &user.name),
            ],
        );
        Ok(Reply::Blob(record.info()))
    }

    pub(super) async fn blob_status(
        &self,
        user: &LoggedIn,
        blob: BlobId,
    ) -> Result<Reply, ProtoError> {
        Ok(Reply::Blob(self.own_blob(user, blob).await?.info()))
    }

    /// Deletes one of the user's blobs. Anyone else's is "no such blob", as for
    /// `BlobStatus`, so that ids cannot be probed.
    pub(super) async fn delete_blob(
        &self,
        user: &LoggedIn,
        blob: BlobId,
    ) -> Result<Reply, ProtoError> {
        let uploader = user.id;
        let removed = blobs::call(&self.shared.blobs, move |store| {
            // One blocking call for both steps, as for a chunk: the check reads memory.
            store
                .record(blob)?
                .filter(|record| record.meta.uploader == uploader)
                .ok_or(BlobError::NotFound)?;
            store.remove(blob)
        })
        .await?
        .map_err(refused)?;
        tracing::debug!(blob = %blob, size = removed.meta.size, "blob deleted");
        self.shared.events.record(
            "blob_deleted",
            &[
                ("blob", &blob),
                ("room", &removed.meta.room),
                ("size", &removed.meta.size),
                ("complete", &removed.complete),
                ("user", &user.name),
            ],
        );
        Ok(Reply::Ok)
    }

    pub(super) async fn put_chunk(
        &self,
        user: &LoggedIn,
        blob: BlobId,
        index: u32,
        data: Vec<u8>,
    ) -> Result<Reply, ProtoError> {
        let uploader = user.id;
        let len = data.len();
        let (before, after) = blobs::call(&self.shared.blobs, move |store| {
            // One blocking call for both steps: the uploader check reads memory only.
            let record = store
                .record(blob)?
                .filter(|record| record.meta.uploader == uploader)
                .ok_or(BlobError::NotFound)?;
            Ok((record, store.put_chunk(blob, index, &data)?))
        })
        .await?
        .map_err(refused)?;
        tracing::trace!(blob = %blob, index, len, received = after.received, "chunk");
        if after.complete && !before.complete {
            tracing::debug!(blob = %blob, size = after.meta.size, "blob complete");
            self.shared.events.record(
                "blob_complete",
                &[
                    ("blob", &blob),
                    ("room", &after.meta.room),
                    ("size", &after.meta.size),
                ],
            );
        }
        Ok(Reply::Blob(after.info()))
    }

    /// Answers `GetChunk` by queueing the reply itself: the frame carries a permit of
    /// the connection's download window, released once the writer has taken it.
    pub(super) async fn get_chunk(
        &mut self,
        id: RequestId,
        blob: BlobId,
        index: u32,
    ) -> Result<(), ProtoError> {
        let Some(user) = self.user.clone() else {
            return Err(error(ErrorCode::NotLoggedIn, "log in first"));
        };
        let record = blobs::call(&self.shared.blobs, move |store| store.record(blob))
            .await?
            .map_err(refused)?
            .filter(|record| record.complete)
            .ok_or_else(gone)?;
        let room = self
            .shared
            .rooms
            .open(record.meta.room)
            .await?
            .ok_or_else(gone)?;
        if room.view(user.id).await?.joined_seq.is_none() {
            return Err(error(
                ErrorCode::NotMember,
                "you are not in the room this file was shared in",
            ));
        }
        // Waiting here stops this connection's reading, as for messages awaiting their
        // commit: a client that asks for chunks faster than it reads them holds at most
        // the window in the server's memory. One that stops reading altogether is
        // disconnected after the idle timeout.
        let window = Arc::clone(&self.unsent_chunks).acquire_owned();
        let permit =
            match tokio::time::timeout(self.shared.config.limits.idle_timeout(), window).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(internal(&"the download window closed")),
                Err(_) => {
                    self.close_after_reply = true;
                    return Err(error(
                        ErrorCode::TooSlow,
                        "downloaded chunks are not being read; disconnected",
                    ));
                }
            };
        let data = blobs::call(&self.shared.blobs, move |store| store.chunk(blob, index))
            .await?
            .map_err(|err| match err {
                BlobError::NotFound => gone(),
                err => refused(err),
            })?;
        let frame = ServerFrame::Response {
            id,
            result: Ok(Reply::Chunk { blob, index, data }),
        };
        let frame = encode(&frame).ok_or_else(|| internal(&"cannot encode a chunk"))?;
        self.out.push(Bytes::from_owner(WindowedFrame {
            frame,
            _permit: permit,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    #[test]
    fn the_plaintext_size_is_checked_against_the_limit() {
        let limits = Limits::default();
        // 100 MiB of plaintext in 256 KiB chunks: exactly the limit.
        let chunk = 256 * 1024;
        let chunks = (100 * 1024 * 1024_u64).div_ceil(u64::from(chunk - 16));
        let size = 100 * 1024 * 1024 + 16 * chunks;
        assert_eq!(
            check_shape(size, chunk, &limits).unwrap(),
            100 * 1024 * 1024
        );
        let over = check_shape(size + 1, chunk, &limits).unwrap_err();
        assert_eq!(over.code, ErrorCode::FileTooLarge);
        let big = 120 * 1024 * 1024 + 16 * (120 * 1024 * 1024_u64).div_ceil(u64::from(chunk - 16));
        assert_eq!(
            check_shape(big, chunk, &limits).unwrap_err().message,
            "file of 120.0 MiB exceeds this server's limit of 100.0 MiB"
        );
    }

    #[test]
    fn blobs_must_be_whole_encrypted_chunks_of_a_bounded_size() {
        let limits = Limits::default();
        // An empty file: one chunk holding only its tag.
        assert_eq!(check_shape(16, 4096, &limits).unwrap(), 0);
        for (size, chunk) in [(15, 4096), (4096 + 5, 4096), (0, 4096)] {
            let err = check_shape(size, chunk, &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{size} {chunk}");
        }
        for chunk in [0, 1023, 1 << 20] {
            let err = check_shape(4096, chunk, &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(err.message.contains("chunk size"), "{}", err.message);
        }
        assert!(check_shape(1 << 20, (1 << 20) - 4096, &limits).is_ok());
        // A size whose chunk count does not fit is over any limit, not a panic.
        let err = check_shape(u64::MAX, 1024, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::FileTooLarge);
    }
}
