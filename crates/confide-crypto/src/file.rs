//! File encryption: a fresh key per file and the file sealed in chunks.
//!
//! A file is cut into chunks of `chunk_size` plaintext bytes (the last one shorter, and
//! an empty file is one empty chunk). Chunk `i` is sealed with ChaCha20-Poly1305 under the
//! file's own [`FileKey`] and the nonce
//!
//! ```text
//! i (u64, big-endian) | 0 0 0 | last (1 if this is the final chunk, else 0)
//! ```
//!
//! which is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) with an
//! empty prefix: the key is used for this one file only, so the counter alone keeps
//! nonces unique. Reordering a chunk changes its counter, and cutting the file short
//! leaves a final chunk sealed as "not last": both fail to open. Each sealed chunk is
//! [`CHUNK_OVERHEAD`] bytes longer than its plaintext, so sealed chunks sit at fixed
//! offsets and a transfer can resume at any chunk.
//!
//! The key, with the file's name, size, type and SHA-256, travels only inside an
//! end-to-end encrypted message ([`crate::payload::FilePointer`]); the server stores the
//! sealed chunks and learns nothing but their sizes.
//!
//! ```
//! use confide_crypto::file::{self, FileLayout};
//! use confide_crypto::payload::FileKey;
//!
//! # fn main() -> Result<(), confide_crypto::file::FileError> {
//! let key = FileKey::from_bytes([7; 32]); // random in real use
//! let layout = FileLayout::new(1025, 1024)?; // two chunks: 1024 bytes and 1 byte
//! let sealed = file::seal_chunk(&key, layout, 1, b"o")?;
//! assert_eq!(file::open_chunk(&key, layout, 1, &sealed)?, b"o");
//! assert!(file::open_chunk(&key, layout, 0, &sealed).is_err());
//! # Ok(())
//! # }
//! ```

use crate::payload::FileKey;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Bytes a sealed chunk adds to its plaintext (the Poly1305 tag).
pub const CHUNK_OVERHEAD: u32 = 16;

/// The plaintext bytes per chunk that clients use unless told otherwise (256 KiB): big
/// enough that per-chunk costs vanish, small enough that a resumed transfer repeats
/// little and a chunk fits easily in one frame.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;

/// The smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 1024;

/// The largest chunk size accepted (so that a sealed chunk fits in a 1 MiB frame).
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024 - 8 * 1024;

/// Associated data of every chunk: binds the ciphertext to this construction.
const AAD: &[u8] = b"confide file chunk v1";

/// Why a file or chunk could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The chunk size is outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes")]
    ChunkSize(u32),
    /// The file has more chunks than a `u32` counts.
    #[error("file too large for its chunk size")]
    TooManyChunks,
    /// The chunk index is past the file's last chunk.
    #[error("chunk {index} is past the last chunk ({count} chunks)")]
    NoSuchChunk {
        /// The index asked for.
        index: u32,
        /// How many chunks the file has.
        count: u32,
    },
    /// The plaintext or sealed chunk does not have the length its place implies.
    #[error("chunk {index} has {actual} bytes where {expected} were expected")]
    ChunkLength {
        /// The chunk.
        index: u32,
        /// Its expected length.
        expected: u64,
        /// Its length.
        actual: u64,
    },
    /// The chunk did not authenticate: wrong key, altered, reordered or truncated.
    #[error("chunk {0} failed to decrypt: altered, out of place or the wrong key")]
    Tampered(u32),
}

/// How a file of `size` plaintext bytes is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLayout {
    size: u64,
    chunk_size: u32,
    chunks: u32,
}

impl FileLayout {
    /// The layout of `size` plaintext bytes in chunks of `chunk_size`.
    ///
    /// # Errors
    /// [`FileError::ChunkSize`] or [`FileError::TooManyChunks`].
    pub fn new(size: u64, chunk_size: u32) -> Result<FileLayout, FileError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(FileError::ChunkSize(chunk_size));
        }
        let chunks = size.div_ceil(u64::from(chunk_size)).max(1);
        let chunks = u32::try_from(chunks).map_err(|_| FileError::TooManyChunks)?;
        Ok(FileLayout {
            size,
            chunk_size,
            chunks,
        })
    }

    /// Plaintext bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Plaintext bytes per chunk (the last chunk may be shorter).
    #[must_use]
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// How many chunks (at least one).
    #[must_use]
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Sealed bytes per chunk (the last sealed chunk may be shorter).
    #[must_use]
    pub fn sealed_chunk_size(&self) -> u32 {
        self.chunk_size + CHUNK_OVERHEAD
    }

    /// Total sealed bytes: what is uploaded.
    #[must_use]
    pub fn sealed_size(&self) -> u64 {
        self.size + u64::from(self.chunks) * u64::from(CHUNK_OVERHEAD)
    }

    /// Where chunk `index` starts in the plaintext.
    #[must_use]
    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Plaintext bytes of chunk `index`.
    ///
    /// # Errors
    /// [`FileError::NoSuchChunk`] past the last chunk.
    pub fn plain_len(&self, index: u32) -> Result<u64, FileError> {
        if index >= self.chunks {
            return Err(FileError::NoSuchChunk {
                index,
                count: self.chunks,
            });
        }
        Ok((self.size - self.offset(index)).min(u64::from(self.chunk_size)))
    }

    /// Whether chunk `index` is the last one.
    #[must_use]
    pub fn is_last(&self, index: u32) -> bool {
        index + 1 == self.chunks
    }
}

fn nonce(index: u32, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&u64::from(index).to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::from(bytes)
}

fn cipher(key: &FileKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(key.as_bytes()))
}

/// Seals chunk `index` of a file laid out as `layout`.
///
/// # Errors
/// [`FileError::NoSuchChunk`], or [`FileError::ChunkLength`] if `plain` is not exactly
/// the chunk's length.
pub fn seal_chunk(
    key: &FileKey,
    layout: FileLayout,
    index: u32,
    plain: &[u8],
) -> Result<Vec<u8>, FileError> {
    let expected = layout.plain_len(index)?;
    if plain.len() as u64 != expected {
        return Err(FileError::ChunkLength {
            index,
            expected,
            actual: plain.len() as u64,
        });
    }
    cipher(key)
        .encrypt(
            &nonce(index, layout.is_last(index)),
            Payload {
                msg: plain,
                aad: AAD,
            },
        )
        .map_err(|_| FileError::Tampered(index))
}

/// Opens chunk `index` of a file laid out as `layout`.
///
/// # Errors
/// [`FileError::NoSuchChunk`], [`FileError::ChunkLength`] for a sealed chunk of the
/// wrong length, [`FileError::Tampered`] if it does not authenticate.
pub fn open_chunk(
    key: &FileKey,
    layout: FileLayout,
    index: u32,
    sealed: &[u8],
) -> Result<Vec<u8>, FileError> {
    let expected = layout.plain_len(index)? + u64::from(CHUNK_OVERHEAD);
    if sealed.len() as u64 != expected {
        return Err(FileError::ChunkLength {
            index,
            expected,
            actual: sealed.len() as u64,
        });
    }
    cipher(key)
        .decrypt(
            &nonce(index, layout.is_last(index)),
            Payload {
                msg: sealed,
                aad: AAD,
            },
        )
        .map_err(|_| FileError::Tampered(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> FileKey {
        FileKey::from_bytes([byte; 32])
    }

    #[test]
    fn layouts_count_chunks_and_sizes() {
        let empty = FileLayout::new(0, 1024).unwrap();
        assert_eq!(empty.chunks(), 1);
        assert_eq!(empty.plain_len(0), Ok(0));
        assert_eq!(empty.sealed_size(), 16);
        let exact = FileLayout::new(2048, 1024).unwrap();
        assert_eq!(exact.chunks(), 2);
        assert_eq!(exact.plain_len(1), Ok(1024));
        assert!(exact.is_last(1) && !exact.is_last(0));
        let ragged = FileLayout::new(2049, 1024).unwrap();
        assert_eq!(ragged.chunks(), 3);
        assert_eq!(ragged.plain_len(2), Ok(1));
        assert_eq!(ragged.sealed_size(), 2049 + 48);
        assert_eq!(
            ragged.plain_len(3),
            Err(FileError::NoSuchChunk { index: 3, count: 3 })
        );
        assert_eq!(FileLayout::new(1, 10), Err(FileError::ChunkSize(10)));
        assert_eq!(
            FileLayout::new(u64::MAX, MIN_CHUNK_SIZE),
            Err(FileError::TooManyChunks)
        );
    }

    #[test]
    fn chunks_round_trip_and_bind_their_place() {
        let layout = FileLayout::new(2500, 1024).unwrap();
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let sealed: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let start = layout.offset(i) as usize;
                let end = start + layout.plain_len(i).unwrap() as usize;
                seal_chunk(&key(1), layout, i, &data[start..end]).unwrap()
            })
            .collect();
        let opened: Vec<u8> = sealed
            .iter()
            .enumerate()
            .flat_map(|(i, chunk)| open_chunk(&key(1), layout, i as u32, chunk).unwrap())
            .collect();
        assert_eq!(opened, data);

        // Swapped chunks of equal length fail.
        assert_eq!(
            open_chunk(&key(1), layout, 1, &sealed[0]),
            Err(FileError::Tampered(1))
        );
        // The wrong key fails.
        assert_eq!(
            open_chunk(&key(2), layout, 0, &sealed[0]),
            Err(FileError::Tampered(0))
        );
        // A flipped bit fails.
        let mut altered = sealed[2].clone();
        altered[0] ^= 1;
        assert_eq!(
            open_chunk(&key(1), layout, 2, &altered),
            Err(FileError::Tampered(2))
        );
    }

    #[test]
    fn a_truncated_file_does_not_open_as_complete() {
        // Two full chunks sealed as a 2048-byte file; presented as the end of a shorter
        // file, the second chunk was not sealed as last and so does not open.
        let long = FileLayout::new(3000, 1024).unwrap();
        let data = vec![9u8; 1024];
        let middle = seal_chunk(&key(3), long, 1, &data).unwrap();
        let short = FileLayout::new(2048, 1024).unwrap();
        assert_eq!(
            open_chunk(&key(3), short, 1, &middle),
            Err(FileError::Tampered(1))
        );
    }

    #[test]
    fn wrong_lengths_are_refused_before_crypto() {
        let layout = FileLayout::new(1500, 1024).unwrap();
        assert!(matches!(
            seal_chunk(&key(1), layout, 0, &[0; 10]),
            Err(FileError::ChunkLength { index: 0, .. })
        ));
        assert!(matches!(
            open_chunk(&key(1), layout, 1, &[0; 10]),
            Err(FileError::ChunkLength { index: 1, .. })
        ));
    }
}
