//! Blobs as files in one directory (`DATA_DIR/blobs`): per blob a metadata file
//! `<id>.meta`, and its bytes in `<id>.part` while uploading, `<id>.blob` once complete.
//!
//! Crash safety: the metadata is written to a temporary file, synced and renamed before
//! the blob's id is handed out. Chunks are written in place and not synced one by one
//! (an upload cut off by a crash resumes from what the disk kept). After the last chunk
//! the data is synced, `.part` renamed to `.blob` and the directory synced, and only
//! then is the blob complete. Opening rebuilds the in-memory index from the files: a
//! `.part` is cut back to whole chunks, one holding every chunk is completed, and files
//! without metadata are removed.

use super::{BlobError, BlobMeta, BlobRecord, BlobStore, Index, Slot};
use confide_proto::{BlobId, RoomId, Timestamp, UserId};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

const META: &str = "meta";
const META_TMP: &str = "meta.tmp";
const PART: &str = "part";
const BLOB: &str = "blob";

/// The first line of every metadata file (its format's version).
const META_HEADER: &str = "confide-blob 1";

/// Blobs stored as files.
pub struct FsBlobStore {
    dir: PathBuf,
    index: Index<()>,
}

impl std::fmt::Debug for FsBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBlobStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The files found for one id.
#[derive(Default)]
struct Found {
    meta: bool,
    meta_tmp: bool,
    part: bool,
    blob: bool,
}

impl FsBlobStore {
    /// Opens (creating it if needed, readable by its owner only) a directory of blobs,
    /// and repairs what an interrupted run left behind.
    ///
    /// # Errors
    /// If the directory cannot be created or read, or a repair fails.
    pub fn open(dir: &Path) -> Result<FsBlobStore, BlobError> {
        if !dir.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir)?;
        }
        let store = FsBlobStore {
            dir: dir.to_path_buf(),
            index: Index::new(),
        };
        let mut changed = false;
        for (id, found) in store.scan()? {
            changed |= store.restore(id, &found)?;
        }
        if changed {
            store.sync_dir()?;
        }
        Ok(store)
    }

    fn path(&self, id: BlobId, extension: &str) -> PathBuf {
        self.dir.join(format!("{}.{extension}", id.to_hex()))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// The files of the directory, by blob id. Files that are not ours are left alone.
    fn scan(&self) -> Result<HashMap<BlobId, Found>, BlobError> {
        let mut found: HashMap<BlobId, Found> = HashMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let parsed = name.to_str().and_then(|name| {
                let (stem, extension) = name.split_once('.')?;
                let id = BlobId::from_hex(stem).ok()?;
                (id.to_hex() == stem).then_some((id, extension))
            });
            let Some((id, extension)) = parsed else {
                tracing::warn!(file = ?name, "unexpected file among blobs, left alone");
                continue;
            };
            let files = found.entry(id).or_default();
            match extension {
                META => files.meta = true,
                META_TMP => files.meta_tmp = true,
                PART => files.part = true,
                BLOB => files.blob = true,
                _ => tracing::warn!(file = ?name, "unexpected file among blobs, left alone"),
            }
        }
        Ok(found)
    }

    /// Indexes one blob's files, repairing them; returns whether the directory changed.
    fn restore(&self, id: BlobId, found: &Found) -> Result<bool, BlobError> {
        let mut changed = false;
        if found.meta_tmp {
            // Metadata never renamed into place: the blob was never announced.
            remove(&self.path(id, META_TMP))?;
            changed = true;
        }
        if !found.meta {
            if found.part || found.blob {
                tracing::warn!(blob = %id, "removing blob data without metadata");
                remove(&self.path(id, PART))?;
                remove(&self.path(id, BLOB))?;
                changed = true;
            }
            return Ok(changed);
        }
        let text = fs::read_to_string(self.path(id, META))?;
        let meta = match decode_meta(id, &text) {
            Ok(meta) => meta,
            Err(reason) => {
                tracing::error!(blob = %id, %reason, "unreadable blob metadata; blob left out");
                return Ok(changed);
            }
        };
        if found.blob {
            let len = fs::metadata(self.path(id, BLOB))?.len();
            if len != meta.size {
                tracing::error!(
                    blob = %id,
                    len,
                    size = meta.size,
                    "complete blob has the wrong length; blob left out"
                );
                return Ok(changed);
            }
            if found.part {
                remove(&self.path(id, PART))?;
                changed = true;
            }
            self.index.load(Slot::new(meta, meta.chunks(), true, ()));
            return Ok(changed);
        }
        let part_path = self.path(id, PART);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)?;
        changed |= !found.part;
        let len = file.metadata()?.len();
        if len >= meta.size {
            // Every chunk was written but the upload was not marked complete: finish it.
            file.set_len(meta.size)?;
            file.sync_data()?;
            fs::rename(&part_path, self.path(id, BLOB))?;
            self.index.load(Slot::new(meta, meta.chunks(), true, ()));
            return Ok(true);
        }
        let chunk = u64::from(meta.chunk_size.max(1));
        let whole = len / chunk;
        if whole * chunk != len {
            // A chunk cut off mid-write: keep only whole chunks.
            file.set_len(whole * chunk)?;
            file.sync_data()?;
        }
        let received = u32::try_from(whole)
            .map_err(|_| BlobError::Corrupt(format!("blob {id} has too many chunks")))?;
        self.index.load(Slot::new(meta, received, false, ()));
        Ok(changed)
    }

    /// Deletes a blob's files, durably. Metadata first: if a data file outlives a
    /// crash, it is an orphan that the next start removes.
    fn delete_files(&self, meta: &BlobMeta) -> Result<(), BlobError> {
        remove(&self.path(meta.id, META))?;
        remove(&self.path(meta.id, PART))?;
        remove(&self.path(meta.id, BLOB))?;
        self.sync_dir()?;
        Ok(())
    }

    /// Writes a new blob's metadata and empty data file, durably.
    fn write_new(&self, meta: &BlobMeta) -> io::Result<()> {
        let tmp = self.path(meta.id, META_TMP);
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(encode_meta(meta).as_bytes())?;
        file.sync_all()?;
        drop(file);
        File::create_new(self.path(meta.id, PART))?;
        fs::rename(&tmp, self.path(meta.id, META))?;
        self.sync_dir()
    }
}

/// Removes a file that may not exist.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn encode_meta(meta: &BlobMeta) -> String {
    format!(
        "{META_HEADER}\nroom={}\nuploader={}\nsize={}\nchunk_size={}\ncreated_ms={}\n",
        meta.room.0, meta.uploader.0, meta.size, meta.chunk_size, meta.created.0
    )
}

fn decode_meta(id: BlobId, text: &str) -> Result<BlobMeta, String> {
    let mut lines = text.lines();
    if lines.next() != Some(META_HEADER) {
        return Err("unknown format".to_owned());
    }
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for line in lines {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("bad line {line:?}"))?;
        fields.insert(key, value);
    }
    fn field<T: std::str::FromStr>(fields: &HashMap<&str, &str>, key: &str) -> Result<T, String> {
        fields
            .get(key)
            .ok_or_else(|| format!("{key} missing"))?
            .parse()
            .map_err(|_| format!("{key} is not a number"))
    }
    Ok(BlobMeta {
        id,
        room: RoomId(field(&fields, "room")?),
        uploader: UserId(field(&fields, "uploader")?),
        size: field(&fields, "size")?,
        chunk_size: field(&fields, "chunk_size")?,
        created: Timestamp(field(&fields, "created_ms")?),
    })
}

impl BlobStore for FsBlobStore {
    fn create(&self, meta: &BlobMeta, quota: u64) -> Result<BlobRecord, BlobError> {
        self.index.reserve(Slot::new(*meta, 0, false, ()), quota)?;
        if let Err(err) = self.write_new(meta) {
            for extension in [META_TMP, META, PART] {
                let _ = remove(&self.path(meta.id, extension));
            }
            self.index.forget(meta);
            return Err(err.into());
        }
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
        let size = slot.meta.size;
        slot.put(index, data, |(), offset, last| {
            let part = self.path(id, PART);
            // Never created here: a missing file means the blob was completed or
            // deleted behind the index's back, and a new file would hold zeros.
            let file = OpenOptions::new().write(true).open(&part)?;
            if let Err(err) = file.write_all_at(data, offset) {
                // Drop whatever part of the chunk made it, so a retry starts clean.
                let _ = file.set_len(offset);
                return Err(err.into());
            }
            if last {
                file.set_len(size)?;
                file.sync_data()?;
                fs::rename(&part, self.path(id, BLOB))?;
                self.sync_dir()?;
            }
            Ok(())
        })
    }

    fn chunk(&self, id: BlobId, index: u32) -> Result<Vec<u8>, BlobError> {
        let slot = self.index.get(id).ok_or(BlobError::NotFound)?;
        // A complete blob never changes again, so it is read without its lock.
        let (offset, len) = slot.chunk_range(&slot.lock(), index)?;
        let file = match File::open(self.path(id, BLOB)) {
            // Deleted since its range was checked.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            opened => opened?,
        };
        let mut data = vec![0; len];
        file.read_exact_at(&mut data, offset)?;
        Ok(data)
    }

    fn usage(&self, user: UserId) -> Result<u64, BlobError> {
        Ok(self.index.usage(user))
    }

    fn remove(&self, id: BlobId) -> Result<BlobRecord, BlobError> {
        self.index.remove(id, |meta, ()| self.delete_files(meta))
    }

    fn expire(
        &self,
        incomplete_before: Option<Timestamp>,
        complete_before: Option<Timestamp>,
    ) -> Result<Vec<BlobRecord>, BlobError> {
        self.index
            .expire(incomplete_before, complete_before, |meta, ()| {
                self.delete_files(meta)
            })
    }
}
