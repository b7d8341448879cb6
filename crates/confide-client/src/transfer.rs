//! Files and voice messages: end-to-end encrypted uploads and downloads in chunks,
//! resumable after a dropped connection or a stopped client.
//!
//! Sending a file: hash it (SHA-256), pick a fresh [`FileKey`], reserve a blob on the
//! server (`CreateBlob`, refused before any byte moves if the file is over the server's
//! limit), then seal and upload it chunk by chunk with several chunks in flight
//! (`PutChunk`). The upload's record (blob, key) is kept sealed in the local history, so
//! sending the same file to the same room again resumes at the server's count of chunks
//! (`BlobStatus`). Only when the server holds every chunk does the message with the
//! [`FilePointer`] (key, name, size, type, hash) go out, end-to-end encrypted like text.
//!
//! Receiving: chunks are fetched in order (`GetChunk`), opened and appended to a hidden
//! `.part` file beside the destination; a download that stops keeps its part file and
//! resumes at its last whole chunk. The file gets its real name only after its size and
//! SHA-256 match the sender's, so a damaged file is never left under the chosen name.

use crate::error::ClientError;
use crate::handle::{ClientHandle, SentAck};
use crate::secure::store::UploadRecord;
use crate::secure::{SecureCommand, UploadOp};
use confide_crypto::file::{self, DEFAULT_CHUNK_SIZE, FileError, FileLayout};
use confide_crypto::payload::{FileKey, FilePointer, Payload, VoicePointer};
use confide_proto::{BlobId, BlobInfo, ErrorCode, Reply, Request, RoomId, Target};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// Where the answer to a submitted request arrives.
type Answer = oneshot::Receiver<Result<Reply, ClientError>>;

/// The answer to a submitted request.
async fn settle(answer: Answer) -> Result<Reply, ClientError> {
    answer.await.map_err(|_| ClientError::Closed)?
}

/// Chunks in flight at once in each direction: enough to keep a fast link busy while
/// the other side works on earlier chunks.
const WINDOW: usize = 8;

/// Rounds of "ask the server where we are and carry on" without any progress before a
/// transfer gives up.
const STALLED_ROUNDS: u32 = 4;

/// The pause between rounds, to let a dropped connection come back.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// Bytes read per step while hashing a file.
const HASH_BUFFER: usize = 1024 * 1024;

/// The longest file name kept, in UTF-8 bytes.
const MAX_NAME_BYTES: usize = confide_crypto::payload::MAX_FILE_NAME_BYTES;

/// How far a transfer has come, in plaintext bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferProgress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Called as a transfer moves (at least once per chunk, and once at the start with the
/// bytes already done by an earlier attempt).
pub type Progress = Arc<dyn Fn(TransferProgress) + Send + Sync>;

/// A progress callback that ignores progress.
#[must_use]
pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

/// Why a transfer failed (besides the server or connection failing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A local file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The destination exists and overwriting was not asked for.
    #[error("{} already exists; choose another name or remove it first", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The file to send is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file changed while it was being sent.
    #[error("{} changed while it was being sent; send it again", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The downloaded bytes do not match the size and SHA-256 the sender stated.
    #[error(
        "the downloaded file does not match the sender's SHA-256; it was deleted and \
         nothing was saved"
    )]
    HashMismatch,
    /// A chunk did not decrypt, or the file's layout is invalid.
    #[error("the file cannot be decrypted: {0}")]
    Crypto(#[from] FileError),
    /// The message's blob id is not one.
    #[error("the message names an invalid blob id")]
    BadBlobId,
    /// The server's blob does not have the size the message states.
    #[error("the server's copy of the file does not match the message ({0})")]
    Mismatch(String),
    /// The transfer made no progress over several attempts.
    #[error("the transfer made no progress after {STALLED_ROUNDS} attempts: {0}")]
    Stalled(String),
    /// The file is larger than the caller allows.
    #[error("the file is {size} bytes, more than the {limit} bytes allowed here")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl From<FileError> for ClientError {
    fn from(err: FileError) -> ClientError {
        TransferError::Crypto(err).into()
    }
}

impl From<TransferError> for ClientError {
    fn from(err: TransferError) -> ClientError {
        ClientError::Transfer(Box::new(err))
    }
}

/// A file that was sent: the message's acknowledgement and what it points to.
#[derive(Debug, Clone)]
pub struct SentFile {
    /// The message's place in the room's log.
    pub ack: SentAck,
    /// The room it went to.
    pub room: RoomId,
    /// What the message carries (including the file's key: do not log it).
    pub pointer: FilePointer,
}

/// A file or voice message found in the history.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The room it is in.
    pub room: RoomId,
    /// Who sent it.
    pub sender: confide_proto::UserName,
    /// The file.
    pub pointer: FilePointer,
    /// For a voice message, its length and waveform.
    pub voice: Option<(u32, Vec<u8>)>,
}

/// What to upload.
#[derive(Clone)]
enum Source {
    /// A file on disk, read chunk by chunk.
    Path(PathBuf),
    /// Bytes in memory (a recorded voice message).
    Bytes(Arc<Vec<u8>>),
}

impl Source {
    fn read_chunk(&self, layout: FileLayout, index: u32) -> Result<Vec<u8>, TransferError> {
        let offset = layout.offset(index);
        let len = usize::try_from(layout.plain_len(index)?).unwrap_or(usize::MAX);
        match self {
            Source::Path(path) => {
                let file = std::fs::File::open(path).map_err(|source| TransferError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|source| TransferError::Read {
                        path: path.clone(),
                        source,
                    })?;
                Ok(buf)
            }
            Source::Bytes(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                bytes
                    .get(start..start.saturating_add(len))
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| TransferError::Mismatch("chunk past the end".to_owned()))
            }
        }
    }
}

/// A file's size, modification time and SHA-256, read in one pass.
fn fingerprint_file(path: &Path) -> Result<(u64, Option<SystemTime>, [u8; 32]), TransferError> {
    let read_err = |source| TransferError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(TransferError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buf).map_err(read_err)?;
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
        size += read as u64;
    }
    if size != meta.len() {
        return Err(TransferError::Changed {
            path: path.to_owned(),
        });
    }
    Ok((size, meta.modified().ok(), hasher.finalize().into()))
}

/// A name safe to save a file from someone else under: no directories, no control or
/// bidirectional-override characters, no leading dots (hidden files, `..`), at most
/// 255 bytes with the extension kept; `file` if nothing is left.
#[must_use]
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        return "file".to_owned();
    }
    truncate_name(trimmed, MAX_NAME_BYTES)
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Shortens `name` to at most `max` bytes, keeping a short extension.
fn truncate_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    let mut end = max.saturating_sub(ext.len()).min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &stem[..end])
}

/// A size for people: `512 B`, `1.5 KiB`, `100.0 MiB`.
#[must_use]
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)] // a display value
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A MIME type guessed from a file name's extension.
#[must_use]
pub fn mime_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ogg" | "opus" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// The hidden file a download of `blob` to `out` is assembled in.
fn part_path(out: &Path, blob: BlobId) -> PathBuf {
    let name = out
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let hex = blob.to_hex();
    out.with_file_name(format!(".{name}.{}.part", &hex[..12]))
}

/// Whether a transfer error is the server's final word (no point in trying again).
fn is_final(err: &ClientError) -> bool {
    matches!(
        err.code(),
        Some(
            ErrorCode::NoSuchBlob
                | ErrorCode::NotMember
                | ErrorCode::NoSuchRoom
                | ErrorCode::FileTooLarge
                | ErrorCode::InvalidSession
        )
    ) || matches!(err, ClientError::Closed | ClientError::Transfer(_))
}

fn blob_info(reply: Reply) -> Result<BlobInfo, ClientError> {
    match reply {
        Reply::Blob(info) => Ok(info),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer to a blob request: {}",
            crate::connection::reply_kind(&other)
        ))),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| ClientError::Protocol(format!("file task failed: {err}")))?
        .map_err(Into::into)
}

/// Where a download is written: a part file, appended to in order.
struct PartFile {
    file: std::fs::File,
    path: PathBuf,
    written: u64,
}

impl PartFile {
    /// Opens (or creates) the part file and keeps its whole chunks: returns it with the
    /// hash of what it holds and the index of the next chunk.
    fn open(path: PathBuf, layout: FileLayout) -> Result<(PartFile, Sha256, u32), TransferError> {
        let write_err = |source| TransferError::Write {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_err)?;
        let len = file.metadata().map_err(write_err)?.len();
        let whole = u32::try_from(len / u64::from(layout.chunk_size()))
            .unwrap_or(u32::MAX)
            .min(layout.chunks().saturating_sub(1));
        let keep = layout.offset(whole);
        file.set_len(keep).map_err(write_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_BUFFER];
        let mut left = keep;
        while left > 0 {
            let step = usize::try_from(left.min(HASH_BUFFER as u64)).unwrap_or(HASH_BUFFER);
            file.read_exact(&mut buf[..step]).map_err(write_err)?;
            hasher.update(&buf[..step]);
            left -= step as u64;
        }
        Ok((
            PartFile {
                file,
                path,
                written: keep,
            },
            hasher,
            whole,
        ))
    }

    fn append(&mut self, data: &[u8]) -> Result<(), TransferError> {
        self.file
            .write_all_at(data, self.written)
            .map_err(|source| TransferError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.written += data.len() as u64;
        Ok(())
    }
}

/// Where downloaded plaintext goes.
enum Sink {
    Part(Option<PartFile>),
    Memory(Vec<u8>),
}

impl ClientHandle {
    /// The room a target names (opening the direct conversation for a user).
    ///
    /// # Errors
    /// As [`ClientHandle::request`].
    pub async fn target_room(&self, target: &Target) -> Result<RoomId, ClientError> {
        match target {
            Target::Room(room) => Ok(*room),
            Target::User(name) => {
                let name = confide_proto::UserName::parse(name).map_err(|err| {
                    ClientError::Server(confide_proto::ProtoError::new(
                        ErrorCode::NoSuchUser,
                        format!("no user named {name:?}: {err}"),
                    ))
                })?;
                Ok(self.open_direct(&name).await?.id)
            }
        }
    }

    async fn upload_record(
        &self,
        digest: [u8; 32],
        op: UploadOp,
    ) -> Result<Option<UploadRecord>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.secure_sender()
            .send(SecureCommand::Upload { digest, op, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends a file to a room or a person: encrypted, uploaded in chunks (resuming an
    /// earlier attempt at the same file to the same room), then announced in an
    /// end-to-end encrypted message.
    ///
    /// # Errors
    /// [`ClientError::Transfer`] for local problems; `FileTooLarge` from the server
    /// before anything is uploaded; as [`ClientHandle::send`].
    pub async fn send_file(
        &self,
        target: Target,
        path: &Path,
        progress: Progress,
    ) -> Result<SentFile, ClientError> {
        let room = self.target_room(&target).await?;
        let name = path
            .file_name()
            .map(|name| safe_file_name(&name.to_string_lossy()))
            .unwrap_or_else(|| "file".to_owned());
        let owned = path.to_owned();
        let (size, modified, sha256) = blocking(move || fingerprint_file(&owned)).await?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut digest = Sha256::new();
        digest.update(b"confide upload v1");
        digest.update(room.0.to_be_bytes());
        digest.update(canonical.as_os_str().as_encoded_bytes());
        digest.update([0]);
        digest.update(size.to_be_bytes());
        digest.update(sha256);
        let digest: [u8; 32] = digest.finalize().into();
        let layout = FileLayout::new(size, DEFAULT_CHUNK_SIZE)?;
        let source = Source::Path(path.to_owned());
        let (blob, key) = self
            .upload(room, layout, source, Some(digest), progress)
            .await?;
        let owned = path.to_owned();
        let (size_now, modified_now) = blocking(move || {
            let meta = std::fs::metadata(&owned).map_err(|source| TransferError::Read {
                path: owned.clone(),
                source,
            })?;
            Ok((meta.len(), meta.modified().ok()))
        })
        .await?;
        self.upload_record(digest, UploadOp::Forget).await?;
        if size_now != size || modified_now != modified {
            return Err(TransferError::Changed {
                path: path.to_owned(),
            }
            .into());
        }
        let pointer = FilePointer {
            blob: blob.to_hex(),
            mime: mime_for(&name).to_owned(),
            name,
            size,
            sha256,
            key,
            chunk_size: layout.chunk_size(),
        };
        let ack = self
            .send(Target::Room(room), Payload::File(pointer.clone()))
            .await?;
        Ok(SentFile { ack, room, pointer })
    }

    /// Sends a voice message: `ogg` is Ogg Opus audio, `duration_ms` its length and
    /// `waveform` up to 64 amplitudes for the player to show.
    ///
    /// # Errors
    /// As [`ClientHandle::send_file`].
    pub async fn send_voice(
        &self,
        target: Target,
        ogg: Vec<u8>,
        duration_ms: u32,
        waveform: Vec<u8>,
        progress: Progress,
    ) -> Result<SentFile, ClientError> {
        let room = self.target_room(&target).await?;
        let size = ogg.len() as u64;
        let sha256: [u8; 32] = Sha256::digest(&ogg).into();
        let layout = FileLayout::new(size, DEFAULT_CHUNK_SIZE)?;
        let (blob, key) = self
            .upload(room, layout, Source::Bytes(Arc::new(ogg)), None, progress)
            .await?;
        let pointer = FilePointer {
            blob: blob.to_hex(),
            name: "voice-message.ogg".to_owned(),
            size,
            mime: "audio/ogg".to_owned(),
            sha256,
            key,
            chunk_size: layout.chunk_size(),
        };
        let voice = VoicePointer {
            file: pointer.clone(),
            duration_ms,
            waveform,
        };
        let ack = self.send(Target::Room(room), Payload::Voice(voice)).await?;
        Ok(SentFile { ack, room, pointer })
    }

    /// Uploads `source` as a new blob of `room`, or resumes the upload recorded under
    /// `resume`; answers the blob and the key it is sealed with.
    async fn upload(
        &self,
        room: RoomId,
        layout: FileLayout,
        source: Source,
        resume: Option<[u8; 32]>,
        progress: Progress,
    ) -> Result<(BlobId, FileKey), ClientError> {
        let mut known = None;
        if let Some(digest) = resume
            && let Some(record) = self.upload_record(digest, UploadOp::Find).await?
            && record.room == room.0
            && record.chunk_size == layout.chunk_size()
        {
            match self
                .request(Request::BlobStatus { blob: record.blob })
                .await
            {
                Ok(reply) => {
                    let info = blob_info(reply)?;
                    if info.size == layout.sealed_size() {
                        known = Some((info, record.key));
                    }
                }
                // Expired or never created: start again.
                Err(err) if err.code() == Some(ErrorCode::NoSuchBlob) => {}
                Err(err) => return Err(err),
            }
        }
        let (mut info, key) = match known {
            Some(known) => known,
            None => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let key = FileKey::from_bytes(bytes);
                let info = blob_info(
                    self.request(Request::CreateBlob {
                        room,
                        size: layout.sealed_size(),
                        chunk_size: layout.sealed_chunk_size(),
                    })
                    .await?,
                )?;
                if let Some(digest) = resume {
                    let record = UploadRecord {
                        room: room.0,
                        blob: info.blob,
                        key: key.clone(),
                        chunk_size: layout.chunk_size(),
                    };
                    self.upload_record(digest, UploadOp::Save(record)).await?;
                }
                (info, key)
            }
        };
        let mut stalled = 0;
        let mut last_error = String::new();
        while !info.complete {
            let before = info.received;
            progress(TransferProgress {
                done: layout.offset(before).min(layout.size()),
                total: layout.size(),
            });
            match self
                .put_chunks(&info, layout, &key, &source, &progress)
                .await
            {
                Ok(done) => info = done,
                Err(ClientError::Transfer(err)) => return Err(ClientError::Transfer(err)),
                Err(err) => {
                    if is_final(&err) {
                        return Err(err);
                    }
                    tracing::debug!(error = %err, "upload interrupted; resuming");
                    last_error = err.to_string();
                    tokio::time::sleep(ROUND_PAUSE).await;
                    // Where the server's copy ends; if even that fails, the round
                    // counts as stalled and the next one asks again.
                    match self.request(Request::BlobStatus { blob: info.blob }).await {
                        Ok(reply) => info = blob_info(reply)?,
                        Err(err) if is_final(&err) => return Err(err),
                        Err(err) => last_error = err.to_string(),
                    }
                }
            }
            if info.received <= before && !info.complete {
                stalled += 1;
                if stalled >= STALLED_ROUNDS {
                    return Err(TransferError::Stalled(last_error).into());
                }
            } else {
                stalled = 0;
            }
        }
        progress(TransferProgress {
            done: layout.size(),
            total: layout.size(),
        });
        Ok((info.blob, key))
    }

    /// Uploads chunks from `info.received` on, several in flight; answers the blob's
    /// state after the last one.
    async fn put_chunks(
        &self,
        info: &BlobInfo,
        layout: FileLayout,
        key: &FileKey,
        source: &Source,
        progress: &Progress,
    ) -> Result<BlobInfo, ClientError> {
        // Submitted in order from this loop (never from tasks of their own, which could
        // reach the connection out of order and be refused as "expected chunk N").
        let mut inflight: VecDeque<Answer> = VecDeque::new();
        let mut latest = *info;
        for index in info.received..layout.chunks() {
            let source = source.clone();
            let key = key.clone();
            let sealed = blocking(move || {
                let plain = source.read_chunk(layout, index)?;
                Ok(file::seal_chunk(&key, layout, index, &plain)?)
            })
            .await?;
            inflight.push_back(
                self.submit(Request::PutChunk {
                    blob: info.blob,
                    index,
                    data: sealed,
                })
                .await?,
            );
            if inflight.len() >= WINDOW
                && let Some(front) = inflight.pop_front()
            {
                latest = blob_info(settle(front).await?)?;
                progress(TransferProgress {
                    done: layout.offset(latest.received).min(layout.size()),
                    total: layout.size(),
                });
            }
        }
        while let Some(front) = inflight.pop_front() {
            latest = blob_info(settle(front).await?)?;
            progress(TransferProgress {
                done: layout.offset(latest.received).min(layout.size()),
                total: layout.size(),
            });
        }
        Ok(latest)
    }

    /// Downloads, decrypts and checks a file, and saves it as `out` (resuming an
    /// earlier attempt's part file). Answers the bytes written.
    ///
    /// # Errors
    /// [`TransferError::Exists`] if `out` exists and `overwrite` is false;
    /// [`TransferError::HashMismatch`] if the bytes are not the sender's (nothing is
    /// saved); `NoSuchBlob` or `NotMember` from the server.
    pub async fn download_file(
        &self,
        pointer: &FilePointer,
        out: &Path,
        overwrite: bool,
        progress: Progress,
    ) -> Result<u64, ClientError> {
        if !overwrite && out.exists() {
            return Err(TransferError::Exists {
                path: out.to_owned(),
            }
            .into());
        }
        let blob = BlobId::from_hex(&pointer.blob).map_err(|_| TransferError::BadBlobId)?;
        let layout = FileLayout::new(pointer.size, pointer.chunk_size)?;
        let part = part_path(out, blob);
        let (part_file, hasher, next) = blocking(move || PartFile::open(part, layout)).await?;
        let part_path = part_file.path.clone();
        let (sink, hasher) = self
            .fetch(
                blob,
                layout,
                pointer,
                Sink::Part(Some(part_file)),
                hasher,
                next,
                progress,
            )
            .await?;
        let digest: [u8; 32] = hasher.finalize().into();
        let Sink::Part(Some(part_file)) = sink else {
            return Err(ClientError::Protocol(
                "download lost its part file".to_owned(),
            ));
        };
        let out = out.to_owned();
        let expected = pointer.sha256;
        let size = pointer.size;
        blocking(move || {
            if digest != expected || part_file.written != size {
                let _ = std::fs::remove_file(&part_path);
                return Err(TransferError::HashMismatch);
            }
            let write_err = |source| TransferError::Write {
                path: out.clone(),
                source,
            };
            part_file.file.sync_all().map_err(write_err)?;
            drop(part_file.file);
            if !overwrite && out.exists() {
                return Err(TransferError::Exists { path: out });
            }
            std::fs::rename(&part_path, &out).map_err(write_err)?;
            if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty())
                && let Ok(dir) = std::fs::File::open(dir)
            {
                let _ = dir.sync_all();
            }
            Ok(size)
        })
        .await
    }

    /// Downloads, decrypts and checks a file into memory (a voice message to play),
    /// refusing files over `max` bytes.
    ///
    /// # Errors
    /// [`TransferError::TooLarge`], [`TransferError::HashMismatch`], or as
    /// [`ClientHandle::download_file`].
    pub async fn download_bytes(
        &self,
        pointer: &FilePointer,
        max: u64,
        progress: Progress,
    ) -> Result<Vec<u8>, ClientError> {
        if pointer.size > max {
            return Err(TransferError::TooLarge {
                size: pointer.size,
                limit: max,
            }
            .into());
        }
        let blob = BlobId::from_hex(&pointer.blob).map_err(|_| TransferError::BadBlobId)?;
        let layout = FileLayout::new(pointer.size, pointer.chunk_size)?;
        let capacity = usize::try_from(pointer.size).unwrap_or(0);
        let (sink, hasher) = self
            .fetch(
                blob,
                layout,
                pointer,
                Sink::Memory(Vec::with_capacity(capacity)),
                Sha256::new(),
                0,
                progress,
            )
            .await?;
        let Sink::Memory(bytes) = sink else {
            return Err(ClientError::Protocol("download lost its buffer".to_owned()));
        };
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != pointer.sha256 || bytes.len() as u64 != pointer.size {
            return Err(TransferError::HashMismatch.into());
        }
        Ok(bytes)
    }

    /// Fetches chunks `next..` into `sink`, resuming after interruptions.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        blob: BlobId,
        layout: FileLayout,
        pointer: &FilePointer,
        mut sink: Sink,
        mut hasher: Sha256,
        mut next: u32,
        progress: Progress,
    ) -> Result<(Sink, Sha256), ClientError> {
        let mut stalled = 0;
        while next < layout.chunks() {
            let before = next;
            progress(TransferProgress {
                done: layout.offset(next).min(layout.size()),
                total: layout.size(),
            });
            let result = self
                .get_chunks(
                    blob,
                    layout,
                    pointer,
                    &mut sink,
                    &mut hasher,
                    &mut next,
                    &progress,
                )
                .await;
            match result {
                Ok(()) => {}
                Err(ClientError::Transfer(err)) => {
                    if matches!(*err, TransferError::Crypto(_) | TransferError::Mismatch(_))
                        && let Sink::Part(Some(part)) = &sink
                    {
                        let _ = std::fs::remove_file(&part.path);
                    }
                    return Err(ClientError::Transfer(err));
                }
                Err(err) if is_final(&err) => {
                    if err.code() == Some(ErrorCode::NoSuchBlob)
                        && let Sink::Part(Some(part)) = &sink
                    {
                        // Deleted or expired on the server: this part can never finish.
                        let _ = std::fs::remove_file(&part.path);
                    }
                    return Err(err);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "download interrupted; resuming");
                    if next <= before {
                        stalled += 1;
                        if stalled >= STALLED_ROUNDS {
                            return Err(TransferError::Stalled(err.to_string()).into());
                        }
                    } else {
                        stalled = 0;
                    }
                    tokio::time::sleep(ROUND_PAUSE).await;
                }
            }
        }
        progress(TransferProgress {
            done: layout.size(),
            total: layout.size(),
        });
        Ok((sink, hasher))
    }

    /// Fetches chunks from `*next` on, several in flight, writing each in order.
    #[allow(clippy::too_many_arguments)]
    async fn get_chunks(
        &self,
        blob: BlobId,
        layout: FileLayout,
        pointer: &FilePointer,
        sink: &mut Sink,
        hasher: &mut Sha256,
        next: &mut u32,
        progress: &Progress,
    ) -> Result<(), ClientError> {
        let mut inflight: VecDeque<(u32, Answer)> = VecDeque::new();
        let mut requested = *next;
        let result = async {
            while *next < layout.chunks() {
                while requested < layout.chunks() && inflight.len() < WINDOW {
                    let index = requested;
                    inflight
                        .push_back((index, self.submit(Request::GetChunk { blob, index }).await?));
                    requested += 1;
                }
                let Some((index, answer)) = inflight.pop_front() else {
                    break;
                };
                let reply = settle(answer).await?;
                let Reply::Chunk {
                    data, index: got, ..
                } = reply
                else {
                    return Err(ClientError::Protocol(format!(
                        "unexpected answer to get_chunk: {}",
                        crate::connection::reply_kind(&reply)
                    )));
                };
                if got != index {
                    return Err(TransferError::Mismatch(format!(
                        "asked for chunk {index}, got {got}"
                    ))
                    .into());
                }
                let key = pointer.key.clone();
                let plain = tokio::task::spawn_blocking(move || {
                    file::open_chunk(&key, layout, index, &data)
                })
                .await
                .map_err(|err| ClientError::Protocol(format!("decrypt task failed: {err}")))?
                .map_err(TransferError::from)?;
                hasher.update(&plain);
                match sink {
                    Sink::Memory(bytes) => bytes.extend_from_slice(&plain),
                    Sink::Part(slot) => {
                        let Some(mut part) = slot.take() else {
                            return Err(ClientError::Protocol("part file missing".to_owned()));
                        };
                        let (part, written) = tokio::task::spawn_blocking(move || {
                            let written = part.append(&plain);
                            (part, written)
                        })
                        .await
                        .map_err(|err| {
                            ClientError::Protocol(format!("write task failed: {err}"))
                        })?;
                        *slot = Some(part);
                        written?;
                    }
                }
                *next = index + 1;
                progress(TransferProgress {
                    done: layout.offset(*next).min(layout.size()),
                    total: layout.size(),
                });
            }
            Ok(())
        }
        .await;
        // Answers still on their way are dropped with `inflight`.
        drop(inflight);
        result
    }

    /// Deletes a file this user uploaded from the server: nobody can download it
    /// afterwards, and its bytes no longer count against the account's storage. Call it
    /// after deleting the message that carries it ([`ClientHandle::delete`]), so that
    /// nobody is shown a file that is gone. Returns `false` if the server had no such
    /// file (deleted before, expired, or uploaded by someone else).
    ///
    /// # Errors
    /// [`TransferError::BadBlobId`], or the request failing.
    pub async fn delete_blob(&self, pointer: &FilePointer) -> Result<bool, ClientError> {
        let blob = BlobId::from_hex(&pointer.blob).map_err(|_| TransferError::BadBlobId)?;
        match self.request(Request::DeleteBlob { blob }).await {
            Ok(Reply::Ok) => Ok(true),
            Ok(other) => Err(ClientError::Protocol(format!(
                "unexpected answer to deleting a file: {}",
                crate::connection::reply_kind(&other)
            ))),
            Err(err) if err.code() == Some(ErrorCode::NoSuchBlob) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The file or voice message with id `id`, looked up in the decrypted history of
    /// every room (the newest [`crate::handle::SEARCH_DEPTH`] entries of each).
    ///
    /// # Errors
    /// As [`ClientHandle::history`].
    pub async fn find_attachment(
        &self,
        id: confide_crypto::payload::MessageId,
    ) -> Result<Option<Attachment>, ClientError> {
        for room in self.rooms().await? {
            if !matches!(room.membership, confide_proto::Membership::Joined) {
                continue;
            }
            let mut before = None;
            let mut seen = 0;
            while seen < crate::handle::SEARCH_DEPTH {
                let page = self.history(room.id, before, 500).await?;
                let Some(first) = page.entries.first() else {
                    break;
                };
                before = Some(first.seq);
                seen += page.entries.len();
                for entry in page.entries.iter().rev() {
                    let crate::entry::Content::Message { envelope, .. } = &entry.content else {
                        continue;
                    };
                    if envelope.id != id {
                        continue;
                    }
                    let found = match &envelope.body {
                        Payload::File(pointer) => Some((pointer.clone(), None)),
                        Payload::Voice(voice) => Some((
                            voice.file.clone(),
                            Some((voice.duration_ms, voice.waveform.clone())),
                        )),
                        _ => None,
                    };
                    if let Some((pointer, voice)) = found {
                        return Ok(Some(Attachment {
                            room: room.id,
                            sender: entry.sender.clone(),
                            pointer,
                            voice,
                        }));
                    }
                }
                if !page.more {
                    break;
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_others_lose_paths_controls_and_leading_dots() {
        assert_eq!(safe_file_name("report.pdf"), "report.pdf");
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_file_name("/abs/path/x.txt"), "x.txt");
        assert_eq!(safe_file_name(".bashrc"), "bashrc");
        assert_eq!(safe_file_name(".."), "file");
        assert_eq!(safe_file_name(""), "file");
        assert_eq!(safe_file_name("dir/"), "file");
        assert_eq!(safe_file_name("a\nb\u{7}c.txt"), "abc.txt");
        assert_eq!(safe_file_name("evil\u{202e}gpj.exe"), "evilgpj.exe");
        assert_eq!(safe_file_name("  spaced  "), "spaced");
        let long = format!("{}.tar.gz", "é".repeat(300));
        let safe = safe_file_name(&long);
        assert!(safe.len() <= 255, "{}", safe.len());
        assert!(safe.ends_with(".gz"));
        assert!(safe.starts_with('é'));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(100 * 1024 * 1024), "100.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn mime_types_follow_extensions() {
        assert_eq!(mime_for("a.PDF"), "application/pdf");
        assert_eq!(mime_for("voice.ogg"), "audio/ogg");
        assert_eq!(mime_for("noext"), "application/octet-stream");
    }

    #[test]
    fn part_files_are_hidden_beside_the_destination() {
        let part = part_path(Path::new("/tmp/x/report.pdf"), BlobId([0xab; 16]));
        assert_eq!(part, Path::new("/tmp/x/.report.pdf.abababababab.part"));
    }

    #[test]
    fn part_files_keep_only_whole_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".f.part");
        std::fs::write(&path, vec![5u8; 2500]).unwrap();
        let layout = FileLayout::new(5000, 1024).unwrap();
        let (part, hasher, next) = PartFile::open(path.clone(), layout).unwrap();
        assert_eq!(next, 2);
        assert_eq!(part.written, 2048);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2048);
        let expected: [u8; 32] = Sha256::digest(vec![5u8; 2048]).into();
        assert_eq!(<[u8; 32]>::from(hasher.finalize()), expected);
        // A part file holding the whole file still refetches the last chunk, so the
        // file is checked end to end before it is renamed.
        std::fs::write(&path, vec![5u8; 5000]).unwrap();
        let (_, _, next) = PartFile::open(path, layout).unwrap();
        assert_eq!(next, 4);
    }
}
