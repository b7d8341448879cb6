//! The files workload: one file of pseudo-random bytes up and down through Confide with
//! the real client core, and the same bytes up and down over plain TLS in the same run.
//!
//! Two users register with `confide-client` (temporary profiles, the server's
//! certificate pinned) and share a private room. Measured for Confide:
//!
//! - upload: `send_file` until it returns, that is until the server holds every chunk
//!   durably and has acknowledged the message that points to the file (this includes
//!   the client's SHA-256 pass over the file before the first chunk);
//! - download: the receiver's `download_file` of the pointer it received (not timed:
//!   the message's delivery), until the copy is checked against the sender's hash,
//!   synced and renamed.
//!
//! The reference ([`crate::tls_copy`]) copies the same file to a TLS server that stores
//! it durably and back to a file beside it, over one TLS 1.3 connection of the same
//! stack. Both copies are compared byte for byte with the original; a difference fails
//! the run. The server's CPU time is read from `/proc` before and after each transfer,
//! and its memory is sampled every [`RSS_EVERY`] while they run.

use super::Ctx;
use crate::body::now_ns;
use crate::procfs;
use crate::report::{FilesReport, RunReport, Transfer, TransferRatios, format_bytes};
use crate::server::TargetKind;
use crate::tls_copy;
use anyhow::{Context as _, Result, anyhow, bail};
use confide_client::{
    Auth, Client, ClientConfig, ClientEvent, ClientHandle, Content, EventStream, Fingerprint,
    Profile, Progress, ServerAddress, TransferProgress,
};
use confide_crypto::file::{self as file_crypto, FileLayout};
use confide_crypto::payload::{FileKey, FilePointer, Payload};
use confide_proto::{Password, RoomId, RoomName, Target, UserName};
use rustls::pki_types::ServerName;
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// How often the server's resident memory is sampled during the transfers.
const RSS_EVERY: Duration = Duration::from_millis(10);

/// How long closing a client may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// A pause between two progress steps at least this long is counted as a stall (the
/// client pauses 500 ms before resuming an interrupted transfer).
const STALL: Duration = Duration::from_millis(400);

/// Runs the files workload.
///
/// # Errors
/// If the users or the reference cannot be set up, a transfer fails or does not finish
/// in time, or a downloaded copy differs from the original.
pub async fn run(ctx: &mut Ctx) -> Result<RunReport> {
    let spec = ctx.spec.clone();
    if ctx.target.kind != TargetKind::Confide {
        bail!("the files workload runs against Confide (its reference is plain TLS)");
    }
    let fingerprint = ctx
        .target
        .fingerprint
        .context("the server printed no certificate fingerprint")?;
    let bytes = spec.file_bytes;
    let mut report = RunReport::new(spec.workload, TargetKind::Confide, 2, 0);
    report.senders = 1;
    report.connections = 2;
    report.expected_deliveries = 1;

    ctx.warm_up().await?;
    let baseline = ctx.target.sample()?;
    let deadline = ctx.measure_deadline();
    let setup_started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("confide-bench-files-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let source = work.path().join("random.bin");
    let seed = now_ns() ^ u64::from(std::process::id()).rotate_left(32);
    let path = source.clone();
    within(
        deadline,
        "writing the file",
        tokio::task::spawn_blocking(move || tls_copy::write_random_file(&path, bytes, seed)),
    )
    .await?
    .context("the file-writing task failed")??;
    let mut pair = Pair::connect(ctx.target.addr, fingerprint, work.path(), deadline).await?;
    report.setup_seconds = setup_started.elapsed().as_secs_f64();

    let plain = plain_tls(&source, work.path(), bytes, deadline).await;
    let measured = match plain {
        Ok(plain) => confide(ctx, &mut pair, &source, work.path(), deadline)
            .await
            .map(|confide| (plain, confide)),
        Err(err) => Err(err.context("the plain TLS reference failed")),
    };
    pair.close().await;
    let (plain, (confide, chunk_bytes, notes)) = measured?;

    report.messages = 1;
    report.acked = Some(1);
    report.deliveries = 1;
    report.measured_seconds = confide.upload_seconds + confide.download_seconds;
    report.server_cpu_seconds =
        confide.server_cpu_upload_seconds + confide.server_cpu_download_seconds;
    report.bench_cpu_seconds =
        confide.client_cpu_upload_seconds + confide.client_cpu_download_seconds;
    let server_end = ctx.target.sample()?;
    report.server_rss_bytes = server_end.rss_bytes;
    report.server_peak_rss_bytes = server_end.peak_rss_bytes;
    report.server_baseline_rss_bytes = baseline.rss_bytes;
    report.bench_rss_bytes = procfs::sample_self()?.rss_bytes;
    report.server_disconnects = ctx.target.disconnect_reasons();
    report.notes = notes;
    report.notes.push(format!(
        "plain TLS reference: in the bench's process on a runtime of its own (threads \
         {}), {} blocks, {} in flight; its server CPU is that of those threads",
        tls_copy::THREAD_NAME,
        format_bytes(tls_copy::BLOCK as f64),
        tls_copy::QUEUE,
    ));
    report.files = Some(FilesReport {
        file_bytes: bytes,
        chunk_bytes,
        vs_plain_tls: TransferRatios::of(&confide, &plain),
        confide,
        plain_tls: plain,
    });
    Ok(report)
}

/// Waits for `work` until `deadline`, naming it if it does not finish.
async fn within<T>(deadline: Instant, what: &str, work: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| anyhow!("{what} did not finish within the run's time bound (--max-seconds)"))
}

/// The sender and the receiver, in a private room.
struct Pair {
    sender: ClientHandle,
    receiver: ClientHandle,
    receiver_events: EventStream,
    room: RoomId,
}

impl Pair {
    /// Registers both users with fresh profiles under `dir` and puts them in a room.
    async fn connect(
        addr: SocketAddr,
        fingerprint: [u8; 32],
        dir: &Path,
        deadline: Instant,
    ) -> Result<Pair> {
        let (sender, _) = within(
            deadline,
            "registering the sender",
            connect_user(addr, fingerprint, &dir.join("sender-profile"), "sender"),
        )
        .await??;
        let connected = within(
            deadline,
            "registering the receiver",
            connect_user(addr, fingerprint, &dir.join("receiver-profile"), "receiver"),
        )
        .await;
        let (receiver, receiver_events) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(err)) | Err(err) => {
                close(&sender).await;
                return Err(err);
            }
        };
        let mut pair = Pair {
            sender,
            receiver,
            receiver_events,
            room: RoomId(0),
        };
        match within(deadline, "setting up the room", pair.share_room()).await {
            Ok(Ok(room)) => {
                pair.room = room;
                Ok(pair)
            }
            Ok(Err(err)) | Err(err) => {
                pair.close().await;
                Err(err)
            }
        }
    }

    async fn share_room(&self) -> Result<RoomId> {
        let name = RoomName::parse("bench-files").map_err(|err| anyhow!("{err}"))?;
        let room = self
            .sender
            .create_room(name.clone(), true)
            .await
            .context("creating the room")?
            .id;
        self.sender
            .invite(room, user("receiver")?)
            .await
            .context("inviting the receiver")?;
        self.receiver.join(name).await.context("joining the room")?;
        Ok(room)
    }

    async fn close(&self) {
        close(&self.sender).await;
        close(&self.receiver).await;
    }
}

fn user(name: &str) -> Result<UserName> {
    UserName::parse(name).map_err(|err| anyhow!("{name}: {err}"))
}

async fn close(client: &ClientHandle) {
    let _ = tokio::time::timeout(CLOSE_LIMIT, client.close()).await;
}

/// A new account `name` with a profile in `profile`, logged in with its keys published.
async fn connect_user(
    addr: SocketAddr,
    fingerprint: [u8; 32],
    profile: &Path,
    name: &str,
) -> Result<(ClientHandle, EventStream)> {
    let server = ServerAddress::new(&addr.ip().to_string(), addr.port())?;
    let auth = Auth::Register {
        username: user(name)?,
        password: Password(format!("{name} bench password")),
    };
    let mut config = ClientConfig::new(server, Profile::open(profile)?, auth)
        .fingerprint(Some(Fingerprint(fingerprint)))
        .sync(true)
        .software(concat!("confide-bench ", env!("CARGO_PKG_VERSION")));
    // The server goes away at the end of the run; a client left behind by a failure
    // must not try to reconnect for ever.
    config.max_reconnect_attempts = Some(3);
    let (client, events) = Client::connect(config)
        .await
        .with_context(|| format!("connecting {name}"))?;
    if let Err(err) = client.keys_published().await {
        close(&client).await;
        return Err(err).with_context(|| format!("publishing the keys of {name}"));
    }
    Ok((client, events))
}

/// Process CPU seconds of the bench and of the server, read together.
struct Clock {
    bench: f64,
    server: f64,
}

impl Clock {
    fn read(ctx: &Ctx) -> Result<Clock> {
        Ok(Clock {
            bench: procfs::sample_self()?.cpu_seconds,
            server: ctx.target.sample()?.cpu_seconds,
        })
    }
}

/// The file through Confide: the sender uploads it, the receiver downloads what the
/// message points to. Answers the transfer, the chunk size and notes.
async fn confide(
    ctx: &Ctx,
    pair: &mut Pair,
    source: &Path,
    dir: &Path,
    deadline: Instant,
) -> Result<(Transfer, u32, Vec<String>)> {
    let pid = ctx.target.pid();
    let out = dir.join("confide-copy.bin");
    let peak = PeakRss::start(pid);

    let threads_start = procfs::thread_cpu(pid)?;
    let start = Clock::read(ctx)?;
    let up_steps = Steps::default();
    let started = Instant::now();
    let sent = within(
        deadline,
        "the upload",
        pair.sender
            .send_file(Target::Room(pair.room), source, up_steps.progress()),
    )
    .await?
    .context("send_file failed")?;
    let upload_ended = Instant::now();
    let upload_seconds = (upload_ended - started).as_secs_f64();
    let uploaded = Clock::read(ctx)?;
    let threads_uploaded = procfs::thread_cpu(pid)?;

    let pointer = within(
        deadline,
        "the file message's delivery",
        next_file(&mut pair.receiver_events, pair.room, &sent.pointer.blob),
    )
    .await??;

    let threads_download = procfs::thread_cpu(pid)?;
    let download = Clock::read(ctx)?;
    let down_steps = Steps::default();
    let download_started = Instant::now();
    let written = within(
        deadline,
        "the download",
        pair.receiver
            .download_file(&pointer, &out, false, down_steps.progress()),
    )
    .await?
    .context("download_file failed")?;
    let download_ended = Instant::now();
    let download_seconds = (download_ended - download_started).as_secs_f64();
    let downloaded = Clock::read(ctx)?;
    let threads_downloaded = procfs::thread_cpu(pid)?;
    let peak_rss = peak.stop().await;

    let size = pointer.size;
    if written != size {
        bail!("download_file wrote {written} bytes of {size}");
    }
    check_copy(source, &out, deadline, "Confide").await?;
    let mut transfer = Transfer::timed(size, upload_seconds, download_seconds);
    transfer.server_cpu_upload_seconds = (uploaded.server - start.server).max(0.0);
    transfer.server_cpu_download_seconds = (downloaded.server - download.server).max(0.0);
    transfer.client_cpu_upload_seconds = (uploaded.bench - start.bench).max(0.0);
    transfer.client_cpu_download_seconds = (downloaded.bench - download.bench).max(0.0);
    transfer.server_peak_rss_bytes = Some(peak_rss);
    transfer.verified = true;
    let mut notes = vec![
        up_steps.describe("upload", started, upload_ended),
        down_steps.describe("download", download_started, download_ended),
        format!(
            "server threads during the upload: {}",
            super::messages::threads_summary(&procfs::thread_cpu_delta(
                &threads_start,
                &threads_uploaded
            ))
        ),
        format!(
            "server threads during the download: {}",
            super::messages::threads_summary(&procfs::thread_cpu_delta(
                &threads_download,
                &threads_downloaded
            ))
        ),
    ];
    remove(&out);
    let (path, chunk) = (source.to_owned(), pointer.chunk_size);
    let work = within(
        deadline,
        "timing the client's work",
        tokio::task::spawn_blocking(move || client_work(&path, chunk)),
    )
    .await?
    .context("the timing task failed")??;
    notes.push(work);
    Ok((transfer, pointer.chunk_size, notes))
}

/// The client's own work on the file, alone on one thread, for comparison with the
/// transfer times: the SHA-256 pass, sealing every chunk, opening every chunk.
fn client_work(path: &Path, chunk_size: u32) -> Result<String> {
    let size = std::fs::metadata(path)?.len();
    let layout = FileLayout::new(size, chunk_size).map_err(|err| anyhow!("{err}"))?;
    let key = FileKey::from_bytes([7; 32]);
    let mut file = std::fs::File::open(path)?;
    let (mut hashing, mut sealing, mut opening) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut hasher = Sha256::new();
    let mut plain = vec![0u8; chunk_size as usize];
    for index in 0..layout.chunks() {
        let len = usize::try_from(layout.plain_len(index).map_err(|err| anyhow!("{err}"))?)?;
        let plain = plain
            .get_mut(..len)
            .context("a chunk longer than the chunk size")?;
        file.read_exact(plain)?;
        let step = std::time::Instant::now();
        hasher.update(&*plain);
        hashing += step.elapsed();
        let step = std::time::Instant::now();
        let sealed =
            file_crypto::seal_chunk(&key, layout, index, plain).map_err(|err| anyhow!("{err}"))?;
        sealing += step.elapsed();
        let step = std::time::Instant::now();
        let opened = file_crypto::open_chunk(&key, layout, index, &sealed)
            .map_err(|err| anyhow!("{err}"))?;
        opening += step.elapsed();
        if opened.len() != len {
            bail!("chunk {index} did not open to its plaintext");
        }
    }
    let _ = hasher.finalize();
    Ok(format!(
        "client work alone on one thread (file in the page cache): SHA-256 {:.2} s, sealing \
         the chunks {:.2} s, opening them {:.2} s",
        hashing.as_secs_f64(),
        sealing.as_secs_f64(),
        opening.as_secs_f64(),
    ))
}

/// When a transfer reported progress, to see where its time went.
#[derive(Clone, Default)]
struct Steps {
    seen: Arc<Mutex<Vec<(Instant, u64)>>>,
}

impl Steps {
    fn progress(&self) -> Progress {
        let seen = Arc::clone(&self.seen);
        Arc::new(move |step: TransferProgress| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((Instant::now(), step.done));
        })
    }

    /// Where the time between `started` and `ended` went: before the first chunk
    /// (the SHA-256 pass and `CreateBlob` for an upload), the chunks, after the last one
    /// (the message for an upload; the check, sync and rename for a download), and any
    /// stalls between chunks.
    fn describe(&self, what: &str, started: Instant, ended: Instant) -> String {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // The first step reports where the transfer starts, before any chunk moved.
        let (Some(&(first, _)), Some(&(last, _))) = (seen.first(), seen.last()) else {
            return format!("{what}: no progress was reported");
        };
        let mut longest = Duration::ZERO;
        let mut stalls = 0;
        for pair in seen.windows(2) {
            if let [(earlier, _), (later, _)] = pair {
                let gap = *later - *earlier;
                longest = longest.max(gap);
                if gap >= STALL {
                    stalls += 1;
                }
            }
        }
        format!(
            "{what}: {:.2} s before the first chunk, {:.2} s of chunks, {:.2} s after the \
             last; longest pause between chunks {:.0} ms, stalls of {} ms or more: {stalls}",
            (first - started).as_secs_f64(),
            (last - first).as_secs_f64(),
            (ended - last).as_secs_f64(),
            longest.as_secs_f64() * 1e3,
            STALL.as_millis(),
        )
    }
}

/// The receiver's next message in `room` carrying the file stored as `blob`.
async fn next_file(events: &mut EventStream, room: RoomId, blob: &str) -> Result<FilePointer> {
    loop {
        let event = events
            .next()
            .await
            .context("the receiver's client stopped before the file message arrived")?;
        let ClientEvent::Entry { entry, .. } = event else {
            continue;
        };
        if entry.room != room {
            continue;
        }
        match entry.content {
            Content::Message { envelope, .. } => {
                if let Payload::File(pointer) = envelope.body
                    && pointer.blob == blob
                {
                    return Ok(pointer);
                }
            }
            Content::Unreadable(why) => {
                bail!("the receiver could not read a message in the room: {why:?}")
            }
            _ => {}
        }
    }
}

/// The same file over plain TLS: up to the reference server, which stores it durably,
/// and back down to a file that is synced and renamed as a download is.
async fn plain_tls(source: &Path, dir: &Path, bytes: u64, deadline: Instant) -> Result<Transfer> {
    let mut reference = tls_copy::Reference::start()?;
    let connector =
        tokio_rustls::TlsConnector::from(crate::client::tls_config(reference.fingerprint)?);
    let tcp = within(
        deadline,
        "connecting to the reference",
        tokio::net::TcpStream::connect(reference.addr),
    )
    .await??;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?.to_owned();
    let mut tls = within(
        deadline,
        "the reference's TLS handshake",
        connector.connect(name, tcp),
    )
    .await??;
    let out = dir.join("plain-copy.bin");
    let own = std::process::id();
    let reference_cpu = || -> Result<f64> {
        Ok(procfs::thread_cpu(own)?
            .get(tls_copy::THREAD_NAME)
            .copied()
            .unwrap_or(0.0))
    };

    let server_start = reference_cpu()?;
    let bench_start = procfs::sample_self()?.cpu_seconds;
    let started = Instant::now();
    within(deadline, "the plain TLS upload", async {
        tls.write_all(&[tls_copy::PUT]).await?;
        tls.write_u64(bytes).await?;
        tls_copy::file_to_stream(source.to_owned(), bytes, &mut tls).await?;
        match tls.read_u8().await? {
            tls_copy::STORED => Ok(()),
            other => Err(anyhow!("the reference answered {other} to the upload")),
        }
    })
    .await??;
    let upload_seconds = started.elapsed().as_secs_f64();
    let server_uploaded = reference_cpu()?;
    let bench_uploaded = procfs::sample_self()?.cpu_seconds;

    let started = Instant::now();
    let part: PathBuf = dir.join(".plain-copy.bin.part");
    within(deadline, "the plain TLS download", async {
        tls.write_all(&[tls_copy::GET]).await?;
        tls.flush().await?;
        let len = tls.read_u64().await?;
        if len != bytes {
            bail!("the reference holds {len} bytes, not {bytes}");
        }
        tls_copy::stream_to_file(&mut tls, len, part, out.clone()).await
    })
    .await??;
    let download_seconds = started.elapsed().as_secs_f64();
    let server_downloaded = reference_cpu()?;
    let bench_downloaded = procfs::sample_self()?.cpu_seconds;

    let _ = within(deadline, "closing the reference connection", tls.shutdown()).await;
    drop(tls);
    reference.finish(Duration::from_secs(5)).await?;
    drop(reference);
    check_copy(source, &out, deadline, "the plain TLS").await?;
    remove(&out);

    let mut transfer = Transfer::timed(bytes, upload_seconds, download_seconds);
    transfer.server_cpu_upload_seconds = (server_uploaded - server_start).max(0.0);
    transfer.server_cpu_download_seconds = (server_downloaded - server_uploaded).max(0.0);
    // The bench's CPU less the reference server's threads: the client's.
    transfer.client_cpu_upload_seconds =
        ((bench_uploaded - bench_start) - (server_uploaded - server_start)).max(0.0);
    transfer.client_cpu_download_seconds =
        ((bench_downloaded - bench_uploaded) - (server_downloaded - server_uploaded)).max(0.0);
    transfer.verified = true;
    Ok(transfer)
}

/// Fails unless `copy` holds exactly the bytes of `source`.
async fn check_copy(source: &Path, copy: &Path, deadline: Instant, whose: &str) -> Result<()> {
    let (a, b) = (source.to_owned(), copy.to_owned());
    let same = within(
        deadline,
        "comparing the copy",
        tokio::task::spawn_blocking(move || tls_copy::same_contents(&a, &b)),
    )
    .await?
    .context("the comparing task failed")??;
    if !same {
        bail!("{whose} download differs from the original file");
    }
    Ok(())
}

/// Removes a copy that has been checked (the temporary directory goes at the end of the
/// run anyway; this only frees the space sooner).
fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Samples a process's resident memory until stopped and keeps the highest value.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let seen = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(sample) = procfs::sample(pid) {
                    seen.fetch_max(sample.rss_bytes, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(RSS_EVERY) => {}
                }
            }
        });
        PeakRss { peak, stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}
