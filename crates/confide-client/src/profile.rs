//! The profile directory: what the client remembers between runs.
//!
//! A profile holds `known_servers.json` (pinned certificate fingerprints, like SSH's
//! known_hosts), `session.json` (the login token, mode 0600) and `cursors.json` (per
//! account, the last sequence number processed in each room). Several users can keep
//! separate profiles on one machine. Every file is replaced atomically (written to a
//! temporary file, then renamed), and every error names the file involved. This module
//! only reads and writes files: it must not talk to the network or decide policy such
//! as whether to trust a fingerprint.

mod cursors;
mod known_servers;
mod session;

pub use session::Session;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// File names inside the profile directory.
const KNOWN_SERVERS_FILE: &str = "known_servers.json";
const SESSION_FILE: &str = "session.json";
const CURSORS_FILE: &str = "cursors.json";

/// A profile directory. Cheap to clone; it holds only the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    dir: PathBuf,
}

/// Why the profile could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The directory could not be created.
    #[error("cannot create profile directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's contents are not what this version wrote.
    #[error("{} is corrupt ({reason}); fix or delete it", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never contains the file's secrets).
        reason: String,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Profile {
    /// Opens the profile in `dir`, creating the directory (mode 0700) if needed.
    ///
    /// # Errors
    /// [`ProfileError::CreateDir`] if the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Profile, ProfileError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Profile { dir })
    }

    /// The profile directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where pinned server fingerprints are kept.
    #[must_use]
    pub fn known_servers_path(&self) -> PathBuf {
        self.dir.join(KNOWN_SERVERS_FILE)
    }

    /// Where the login session is kept.
    #[must_use]
    pub fn session_path(&self) -> PathBuf {
        self.dir.join(SESSION_FILE)
    }

    /// Where per-room positions are kept.
    #[must_use]
    pub fn cursors_path(&self) -> PathBuf {
        self.dir.join(CURSORS_FILE)
    }
}

/// Creates `dir` and its parents, readable by the owner only (0700).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|source| ProfileError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

/// Reads `path` as JSON; `Ok(None)` if it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ProfileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => zeroize::Zeroizing::new(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProfileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        // serde_json's messages name a position and the expected type, never content.
        .map_err(|err| corrupt(path, err.to_string()))
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ProfileError {
    ProfileError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Serializes `value` and replaces `path` with it atomically.
fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<(), ProfileError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|err| ProfileError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(err),
    })?;
    let mut bytes = zeroize::Zeroizing::new(bytes);
    bytes.push(b'\n');
    write_atomic(path, &bytes, mode)
}

/// Writes `bytes` to a temporary file beside `path` (created with `mode`), flushes it
/// to disk and renames it over `path`, so readers see the old or the new file, never a
/// half-written one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProfileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let write_error = |source| ProfileError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("profile");
    let temp = path.with_file_name(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(write_error(source));
    }
    std::fs::rename(&temp, path).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        write_error(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_a_private_directory() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a/b/profile");
        let profile = Profile::open(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(profile.dir(), dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // Opening again is fine.
        Profile::open(&dir).unwrap();
    }

    #[test]
    fn open_fails_clearly_when_a_file_is_in_the_way() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("file");
        std::fs::write(&path, "x").unwrap();
        let err = Profile::open(&path).unwrap_err();
        assert!(matches!(err, ProfileError::CreateDir { .. }));
        assert!(err.to_string().contains("cannot create profile directory"));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("x.json");
        write_json(&path, &vec![1, 2, 3], 0o600).unwrap();
        write_json(&path, &vec![4], 0o600).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![4]));
        let names: Vec<_> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn missing_files_read_as_none_and_unreadable_ones_name_the_file() {
        let temp = tempfile::tempdir().unwrap();
        assert_eq!(
            read_json::<u32>(&temp.path().join("missing.json")).unwrap(),
            None
        );
        // A directory where a file is expected cannot be read.
        let path = temp.path().join("dir.json");
        std::fs::create_dir(&path).unwrap();
        let err = read_json::<u32>(&path).unwrap_err();
        assert!(matches!(err, ProfileError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("dir.json"));
    }
}
