//! The files workload's reference: a plain copy of a file over TLS 1.3 on loopback, with
//! the same rustls stack as Confide (ring provider, TLS 1.3 only, a self-signed rcgen
//! certificate, the bench's pinning client configuration), and none of Confide's work
//! (no end-to-end encryption, no hashing, no chunk requests and answers).
//!
//! The server runs in the bench's process but on a runtime of its own, whose threads
//! (workers and blocking pool) are all named [`THREAD_NAME`], so that its CPU time can
//! be told apart from the client's, and so that the operating system schedules it
//! against the client as it schedules the separate `confide-server` process. One
//! connection, two operations:
//!
//! - `P` + length (u64, big-endian) + bytes: the server writes the bytes to a hidden part
//!   file, makes it durable (`fdatasync`), renames it and syncs the directory, as the
//!   blob store does with an upload's last chunk, then answers `K`.
//! - `G`: the server answers the stored file's length (u64) and its bytes.
//!
//! Disk and network overlap on both sides: a blocking thread reads or writes the file in
//! blocks of [`BLOCK`] bytes while the async side moves the previous ones, with at most
//! [`QUEUE`] blocks between them (the same bytes in flight as Confide's window of eight
//! 256 KiB chunks).

use anyhow::{Context as _, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Bytes per disk read or write, and per write to the TLS stream.
pub const BLOCK: usize = 256 * 1024;

/// Blocks queued between the disk thread and the network.
pub const QUEUE: usize = 8;

/// The name of every thread of the reference server's runtime (at most 15 bytes, the
/// length of a thread name in `/proc`).
pub const THREAD_NAME: &str = "tls-reference";

/// Operation: store the bytes that follow.
pub const PUT: u8 = b'P';
/// Operation: send the stored bytes back.
pub const GET: u8 = b'G';
/// The answer to [`PUT`] once the bytes are durable.
pub const STORED: u8 = b'K';

/// The name the stored file gets once complete.
const STORED_FILE: &str = "stored.bin";

/// The reference server, listening on loopback until it is dropped.
pub struct Reference {
    runtime: Option<tokio::runtime::Runtime>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// SHA-256 of its certificate, for the pinning client configuration.
    pub fingerprint: [u8; 32],
    /// What serving the one connection came to, once it is over.
    done: Option<tokio::task::JoinHandle<Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Reference {
    /// Starts the server with a fresh temporary directory, ready for one connection.
    ///
    /// # Errors
    /// If the certificate, the runtime or the listening socket cannot be made.
    pub fn start() -> Result<Reference> {
        let dir = tempfile::Builder::new()
            .prefix("confide-bench-tls-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let (config, fingerprint) = server_config()?;
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).context("cannot listen on loopback")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(THREAD_NAME)
            // Blocking threads must outlive the measurement to be counted.
            .thread_keep_alive(Duration::from_secs(600))
            .enable_all()
            .build()
            .context("cannot start the reference's runtime")?;
        let store = dir.path().to_owned();
        let done = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = acceptor.accept(tcp).await.context("TLS handshake failed")?;
            serve(tls, &store).await
        });
        Ok(Reference {
            runtime: Some(runtime),
            addr,
            fingerprint,
            done: Some(done),
            _dir: dir,
        })
    }

    /// Waits (at most `limit`) for the server to finish with its connection, which the
    /// client has closed, and says how that went.
    ///
    /// # Errors
    /// If serving failed or did not end in time.
    pub async fn finish(&mut self, limit: Duration) -> Result<()> {
        let Some(done) = self.done.take() else {
            return Ok(());
        };
        tokio::time::timeout(limit, done)
            .await
            .context("the reference server did not finish")?
            .context("the reference server's task failed")?
            .context("the reference server failed")
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Never blocks, so it may run inside the bench's own runtime.
            runtime.shutdown_background();
        }
    }
}

/// TLS 1.3 only, ring, a fresh self-signed certificate: as `confide-server` builds its
/// configuration when it has no certificate file.
pub fn server_config() -> Result<(Arc<rustls::ServerConfig>, [u8; 32])> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .context("cannot generate a self-signed certificate")?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let fingerprint: [u8; 32] = Sha256::digest(cert.as_ref()).into();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .context("the certificate is not accepted")?;
    Ok((Arc::new(config), fingerprint))
}

/// Answers `PUT` and `GET` until the client closes the connection.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut tls: S, dir: &Path) -> Result<()> {
    let stored = dir.join(STORED_FILE);
    loop {
        let mut op = [0u8; 1];
        if tls.read(&mut op).await? == 0 {
            return Ok(());
        }
        match op[0] {
            PUT => {
                let len = tls.read_u64().await?;
                let part = dir.join(format!(".{STORED_FILE}.part"));
                stream_to_file(&mut tls, len, part, stored.clone()).await?;
                tls.write_all(&[STORED]).await?;
                tls.flush().await?;
            }
            GET => {
                let len = std::fs::metadata(&stored)
                    .context("GET before anything was stored")?
                    .len();
                tls.write_u64(len).await?;
                file_to_stream(stored.clone(), len, &mut tls).await?;
            }
            other => bail!("unknown operation {other}"),
        }
    }
}

/// Reads exactly `len` bytes from `reader` into `part` (written by a blocking thread
/// while the next blocks arrive), makes it durable, renames it to `dest` and syncs the
/// directory.
///
/// # Errors
/// If the stream ends early or the file cannot be written.
pub async fn stream_to_file<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: u64,
    part: PathBuf,
    dest: PathBuf,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut file = std::fs::File::create(&part)
            .with_context(|| format!("cannot create {}", part.display()))?;
        let mut written = 0u64;
        while let Some(block) = rx.blocking_recv() {
            file.write_all(&block)
                .with_context(|| format!("cannot write {}", part.display()))?;
            written += block.len() as u64;
        }
        file.sync_data()
            .with_context(|| format!("cannot sync {}", part.display()))?;
        drop(file);
        std::fs::rename(&part, &dest)
            .with_context(|| format!("cannot rename {}", part.display()))?;
        if let Some(parent) = dest.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(written)
    });
    let mut left = len;
    let mut read_error = None;
    while left > 0 {
        let want = usize::try_from(left.min(BLOCK as u64)).unwrap_or(BLOCK);
        let mut block = vec![0u8; want];
        if let Err(err) = reader.read_exact(&mut block).await {
            read_error = Some(err);
            break;
        }
        left -= want as u64;
        if tx.send(block).await.is_err() {
            // The writer failed; its error is the one to report.
            break;
        }
    }
    drop(tx);
    let written = writer.await.context("the writer thread failed")??;
    if let Some(err) = read_error {
        return Err(err).context("the stream ended before the file did");
    }
    if written != len {
        bail!("wrote {written} bytes of {len}");
    }
    Ok(())
}

/// Writes the first `len` bytes of the file at `path` to `writer` (read by a blocking
/// thread while the previous blocks are sent), then flushes.
///
/// # Errors
/// If the file is shorter or cannot be read, or the stream fails.
pub async fn file_to_stream<W: AsyncWrite + Unpin>(
    path: PathBuf,
    len: u64,
    writer: &mut W,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left.min(BLOCK as u64)).unwrap_or(BLOCK);
            let mut block = vec![0u8; want];
            file.read_exact(&mut block)
                .with_context(|| format!("cannot read {}", path.display()))?;
            left -= want as u64;
            if tx.blocking_send(block).is_err() {
                // The stream failed; its error is the one to report.
                break;
            }
        }
        Ok(())
    });
    let mut sent = 0u64;
    while let Some(block) = rx.recv().await {
        writer.write_all(&block).await?;
        sent += block.len() as u64;
    }
    writer.flush().await?;
    reader.await.context("the reader thread failed")??;
    if sent != len {
        bail!("sent {sent} bytes of {len}");
    }
    Ok(())
}

/// Writes `len` pseudo-random bytes (SplitMix64, seeded from `seed`: incompressible,
/// and cheap enough that 100 MiB take a fraction of a second) to `path` and syncs it,
/// so that its write-back does not run during the measurement.
///
/// # Errors
/// If the file cannot be written.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut state = seed;
    let mut block = vec![0u8; 1024 * 1024];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let step = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        file.write_all(&block[..step])
            .with_context(|| format!("cannot write {}", path.display()))?;
        left -= step as u64;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

/// Whether two files hold the same bytes.
///
/// # Errors
/// If either cannot be read.
pub fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let open = |path: &Path| {
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))
    };
    let (mut first, mut second) = (open(a)?, open(b)?);
    if first.metadata()?.len() != second.metadata()?.len() {
        return Ok(false);
    }
    let mut left_buf = vec![0u8; 1024 * 1024];
    let mut right_buf = vec![0u8; 1024 * 1024];
    loop {
        let read = first.read(&mut left_buf)?;
        if read == 0 {
            // Equal lengths: the second is at its end too.
            return Ok(second.read(&mut right_buf[..1])? == 0);
        }
        second
            .read_exact(&mut right_buf[..read])
            .with_context(|| format!("cannot read {}", b.display()))?;
        if left_buf[..read] != right_buf[..read] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client;
    use rustls::pki_types::ServerName;

    #[test]
    fn random_files_are_random_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_random_file(&a, 3 * 1024 * 1024 + 5, 1).unwrap();
        write_random_file(&b, 3 * 1024 * 1024 + 5, 1).unwrap();
        write_random_file(&c, 3 * 1024 * 1024 + 5, 2).unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 3 * 1024 * 1024 + 5);
        assert!(same_contents(&a, &b).unwrap());
        assert!(!same_contents(&a, &c).unwrap());
        let mut bytes = std::fs::read(&a).unwrap();
        // No byte value is much more common than another.
        let mut counts = [0u32; 256];
        for byte in &bytes {
            counts[usize::from(*byte)] += 1;
        }
        let mean = bytes.len() as f64 / 256.0;
        assert!(
            counts
                .iter()
                .all(|&n| (f64::from(n) - mean).abs() < mean * 0.05)
        );
        // One byte changed at the very end is seen.
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        std::fs::write(&b, &bytes).unwrap();
        assert!(!same_contents(&a, &b).unwrap());
        bytes.pop();
        std::fs::write(&b, &bytes).unwrap();
        assert!(!same_contents(&a, &b).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_goes_up_durably_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.bin");
        let len = 2 * BLOCK as u64 + 777;
        write_random_file(&source, len, 9).unwrap();
        let mut reference = Reference::start().unwrap();
        let connector =
            tokio_rustls::TlsConnector::from(client::tls_config(reference.fingerprint).unwrap());
        let tcp = tokio::net::TcpStream::connect(reference.addr)
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap().to_owned();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(&[PUT]).await.unwrap();
        tls.write_u64(len).await.unwrap();
        file_to_stream(source.clone(), len, &mut tls).await.unwrap();
        assert_eq!(tls.read_u8().await.unwrap(), STORED);
        tls.write_all(&[GET]).await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(tls.read_u64().await.unwrap(), len);
        let copy = dir.path().join("copy.bin");
        stream_to_file(&mut tls, len, dir.path().join(".copy.part"), copy.clone())
            .await
            .unwrap();
        assert!(same_contents(&source, &copy).unwrap());
        assert!(!dir.path().join(".copy.part").exists());
        tls.shutdown().await.unwrap();
        drop(tls);
        reference.finish(Duration::from_secs(10)).await.unwrap();
    }
}
