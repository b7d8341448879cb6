//! A simulated user's TLS connection, driven through rustls' unbuffered API.
//!
//! The buffered API (tokio-rustls) costs the bench about 2 µs of CPU per received
//! message on top of plain TCP: rustls' own read buffer, a copy of every record's
//! plaintext into its received-data queue and out again, and the lock of
//! `tokio::io::split`. The bench shares the machine with the server it measures, so that
//! time shows up in the latencies. Here the connection owns its ciphertext buffer, reads
//! the socket once per wake-up in pieces a full record fits in, and decrypts every whole
//! record straight into the caller's buffer.
//!
//! A connection splits into a [`TlsReader`] and a [`TlsWriter`] around one rustls state.
//! Records the reader has to send (the alert after a bad record) are left for the
//! writer, which sends them before its next data or at shutdown; rustls itself puts the
//! answer to a key update the server asked for in front of the next data the writer
//! encrypts. This module knows nothing of Confide's frames and never logs what it
//! carries.

use bytes::BytesMut;
use rustls::ClientConfig;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes read from the socket at a time: a full record (16 KiB of payload plus header,
/// content type and tag) fits, so a large message costs one system call per record.
const READ_SIZE: usize = 16 * 1024 + 512;

/// The most ciphertext kept waiting for the rest of a message: rustls' limit for a
/// handshake message (64 KiB), which may span records, plus a record header.
const MAX_KEPT: usize = 64 * 1024 + 512;

/// Steps of rustls' state machine in one go, a guard against a bug rather than a limit:
/// each step consumes a record (at least 5 bytes) or produces output, and the buffer
/// holds at most `MAX_KEPT + READ_SIZE` bytes.
const MAX_STEPS: usize = 1 << 16;

/// Socket reads that bring no application data in one poll of [`TlsReader::read`]:
/// more than the bytes of the largest record, so only a server sending nothing but
/// handshake messages reaches it.
const MAX_READS: usize = 1 << 16;

/// Payload bytes of one TLS record, and what a record adds to them in TLS 1.3 (header,
/// content type and AEAD tag).
const RECORD_PAYLOAD: usize = 16 * 1024;
const RECORD_OVERHEAD: usize = 5 + 1 + 16;

/// Plaintext taken by one `poll_write`: four full records.
const MAX_SEAL: usize = 4 * RECORD_PAYLOAD;

/// The writer keeps its output buffer between writes up to this capacity.
const KEEP_OUT: usize = RECORD_PAYLOAD + 512;

type Status<'c, 'i> = UnbufferedStatus<'c, 'i, ClientConnectionData>;

/// Opens TLS on `tcp` to `name` with `config` and splits the connection.
///
/// Application data the server sent with its handshake is kept for the reader.
///
/// # Errors
/// `InvalidData` wrapping the [`rustls::Error`] if the server's TLS is wrong (the alert
/// that says why is sent first), `UnexpectedEof` if it closes, or the socket's error.
pub async fn connect(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<(TlsReader, TlsWriter)> {
    let mut conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    let mut input = Input::default();
    let mut out = Vec::new();
    let mut early = BytesMut::new();
    for _ in 0..MAX_STEPS {
        let Status { discard, state } = conn.process_tls_records(input.filled());
        let next = match state {
            Err(err) => Next::Fail(err),
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, &mut out)?;
                Next::Again
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                tcp.write_all(&out).await?;
                out.clear();
                transmit.done();
                Next::Again
            }
            Ok(ConnectionState::ReadTraffic(mut read)) => {
                while let Some(record) = read.next_record() {
                    early.extend_from_slice(record.map_err(tls_error)?.payload);
                }
                Next::Again
            }
            Ok(ConnectionState::BlockedHandshake) => Next::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Next::Done,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                return Err(closed_during_handshake());
            }
            Ok(_) => Next::Fail(rustls::Error::General(
                "unexpected TLS state during the handshake".to_owned(),
            )),
        };
        input.discard(discard);
        match next {
            Next::Again => {}
            Next::Read => {
                let read = tcp.read(input.spare()?).await?;
                if read == 0 {
                    return Err(closed_during_handshake());
                }
                input.end += read;
            }
            Next::Done => {
                if !out.is_empty() {
                    tcp.write_all(&out).await?;
                }
                let (read, write) = tcp.into_split();
                let shared = Arc::new(Mutex::new(State {
                    conn,
                    input,
                    pending: Vec::new(),
                    failed: false,
                    peer_closed: false,
                }));
                let reader = TlsReader {
                    tcp: read,
                    shared: Arc::clone(&shared),
                    early,
                    eof: false,
                };
                let writer = TlsWriter {
                    tcp: write,
                    shared,
                    out: Vec::new(),
                    sent: 0,
                    close_queued: false,
                };
                return Ok((reader, writer));
            }
            Next::Fail(err) => {
                // rustls queued the alert that tells the server why; send it if we can.
                drain_alerts(&mut conn, &mut out);
                if !out.is_empty() {
                    let _ = tcp.write_all(&out).await;
                }
                return Err(tls_error(err));
            }
        }
    }
    Err(io::Error::other("the TLS handshake did not finish"))
}

/// What the handshake does after a step of rustls.
enum Next {
    Again,
    Read,
    Done,
    Fail(rustls::Error),
}

/// What reading does after a step of rustls.
enum Step {
    Again,
    Stop,
    Fail(rustls::Error),
}

/// The receiving half: reads ciphertext and hands out plaintext.
pub struct TlsReader {
    tcp: OwnedReadHalf,
    shared: Arc<Mutex<State>>,
    /// Plaintext that came with the handshake.
    early: BytesMut,
    /// The socket reached its end.
    eof: bool,
}

/// The sending half: encrypts application data and writes it.
pub struct TlsWriter {
    tcp: OwnedWriteHalf,
    shared: Arc<Mutex<State>>,
    /// Ciphertext to write, of which `sent` bytes are written.
    out: Vec<u8>,
    sent: usize,
    /// close_notify is in `out` (or the connection could not send it).
    close_queued: bool,
}

/// rustls' state for one connection, shared by its reader and writer (which run as
/// different tasks) behind a `std::sync::Mutex`: it is never held across an await, and
/// each section is one step of rustls or one non-blocking read.
struct State {
    conn: UnbufferedClientConnection,
    /// Ciphertext read and not yet consumed. It lives here, not in the reader, because
    /// rustls must be handed the ciphertext it keeps (a handshake message spanning
    /// records) on every call, the writer's included.
    input: Input,
    /// Records produced while reading (alerts), not yet written.
    pending: Vec<u8>,
    /// rustls failed; only the alert it queued may still be sent.
    failed: bool,
    /// The server sent close_notify.
    peer_closed: bool,
}

/// A ciphertext buffer: bytes `start..end` wait for rustls.
#[derive(Default)]
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn filled(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Drops `discard` bytes rustls is done with. They are only counted here; the rest
    /// moves to the front once, before the next read, rather than after every record.
    fn discard(&mut self, discard: usize) {
        self.start = (self.start + discard).min(self.end);
    }

    /// Room for one read after the bytes kept.
    fn spare(&mut self) -> io::Result<&mut [u8]> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end >= MAX_KEPT {
            return Err(tls_error(rustls::Error::General(
                "a TLS message from the server is too large".to_owned(),
            )));
        }
        // Grown once and then kept: zeroing it on every read would cost more than it
        // holds.
        if self.buf.len() < self.end + READ_SIZE {
            self.buf.resize(self.end + READ_SIZE, 0);
        }
        Ok(&mut self.buf[self.end..])
    }
}

/// Locks the shared state. A panic while holding the lock leaves rustls mid-step; the
/// connection is useless then, but its other half must still be able to end cleanly.
fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TlsReader {
    /// Waits for application data and appends it to `dst`. Returns the number of bytes
    /// appended; 0 means the server closed the connection with close_notify.
    ///
    /// Cancel safe: what was read but not returned stays for the next call.
    ///
    /// # Errors
    /// `InvalidData` if the server's TLS is wrong (the alert is left for the writer),
    /// `UnexpectedEof` if the connection ends without close_notify, or the socket's error.
    pub async fn read(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            dst.extend_from_slice(&early);
            return Ok(early.len());
        }
        std::future::poll_fn(|cx| self.poll_read_into(cx, dst)).await
    }

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        // Reading the socket and handing the ciphertext to rustls is one section under
        // the lock (the read never blocks): the writer must not find whole records rustls
        // has not processed in the shared buffer.
        let mut guard = lock(&self.shared);
        let state = &mut *guard;
        for _ in 0..MAX_READS {
            let got = state.decrypt(dst)?;
            if got > 0 {
                return Poll::Ready(Ok(got));
            }
            if state.peer_closed {
                return Poll::Ready(Ok(0));
            }
            if self.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection without close_notify",
                )));
            }
            let mut spare = ReadBuf::new(state.input.spare()?);
            // A read that does not fill its space tells tokio the socket is drained, so
            // a wake-up costs one system call.
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut spare))?;
            let read = spare.filled().len();
            if read == 0 {
                self.eof = true;
            } else {
                state.input.end += read;
            }
        }
        Poll::Ready(Err(io::Error::other(
            "the server sent no application data in many reads",
        )))
    }
}

impl State {
    /// Decrypts every whole record in the input, appending application data to `dst`;
    /// returns how many bytes it appended.
    fn decrypt(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        if self.failed {
            return Err(failed());
        }
        let mut got = 0;
        for _ in 0..MAX_STEPS {
            let Status {
                discard,
                state: step,
            } = self.conn.process_tls_records(self.input.filled());
            let next = match step {
                Ok(ConnectionState::ReadTraffic(mut read)) => {
                    let mut next = Step::Again;
                    while let Some(record) = read.next_record() {
                        match record {
                            Ok(record) => {
                                got += record.payload.len();
                                dst.extend_from_slice(record.payload);
                            }
                            Err(err) => {
                                next = Step::Fail(err);
                                break;
                            }
                        }
                    }
                    next
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.pending)?;
                    Step::Again
                }
                // The writer sends them, before anything it encrypts from now on.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Step::Again
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Step::Stop
                }
                // No whole record left.
                Ok(ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake) => {
                    Step::Stop
                }
                Ok(_) => Step::Fail(rustls::Error::General(
                    "unexpected TLS state while reading".to_owned(),
                )),
                Err(err) => Step::Fail(err),
            };
            self.input.discard(discard);
            match next {
                Step::Again => {}
                Step::Stop => return Ok(got),
                Step::Fail(err) => {
                    self.failed = true;
                    drain_alerts(&mut self.conn, &mut self.pending);
                    return Err(tls_error(err));
                }
            }
        }
        Err(io::Error::other("the TLS records did not settle"))
    }

    /// Runs rustls until it can encrypt, then has `write` use it; collects records
    /// rustls queued meanwhile into `out`.
    fn with_write_traffic<T>(
        &mut self,
        out: &mut Vec<u8>,
        mut write: impl FnMut(&mut WriteTraffic<'_, ClientConnectionData>, &mut Vec<u8>) -> T,
    ) -> io::Result<T> {
        if self.failed {
            return Err(failed());
        }
        for _ in 0..MAX_STEPS {
            let Status {
                discard,
                state: step,
            } = self.conn.process_tls_records(self.input.filled());
            let done = match step {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    Some(Ok(write(&mut traffic, out)))
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, out).err().map(Err)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                // Seen by the reader first in practice; sending stays possible.
                Ok(ConnectionState::PeerClosed) => None,
                Ok(ConnectionState::Closed) => Some(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS connection is closed",
                ))),
                Ok(_) => Some(Err(io::Error::other("the TLS connection cannot send now"))),
                Err(err) => Some(Err(tls_error(err))),
            };
            // Always nothing: the reader leaves no whole record unprocessed.
            self.input.discard(discard);
            if let Some(done) = done {
                return done;
            }
        }
        Err(io::Error::other("the TLS connection did not settle"))
    }
}

impl TlsWriter {
    /// Writes what is in `out`; releases a large buffer once it is all written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let written = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.sent = 0;
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Appends the reader's records and then `plain`, encrypted, to `out` (empty).
    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.shared);
        self.out.append(&mut state.pending);
        state.with_write_traffic(&mut self.out, |traffic, out| {
            encrypt_into(traffic, plain, out)
        })?
    }

    /// Appends the reader's records and close_notify to `out` (empty).
    fn queue_close_notify(&mut self) {
        let mut state = lock(&self.shared);
        self.out.append(&mut state.pending);
        // Without a way to send, closing the socket is all there is left to do.
        let _ = state.with_write_traffic(&mut self.out, |traffic, out| {
            append_sized(out, 64, |buf| {
                traffic.queue_close_notify(buf).map_err(encrypt_error)
            })
        });
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        plain: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Earlier records go first; until they are out, nothing more is taken.
        ready!(this.poll_drain(cx))?;
        if plain.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = plain.len().min(MAX_SEAL);
        this.seal(&plain[..take])?;
        // Start sending now; what the socket does not take yet goes with the next write
        // or flush.
        if let Poll::Ready(Err(err)) = this.poll_drain(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    /// Sends close_notify (after whatever is waiting) and shuts the socket's sending side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.close_queued {
            this.close_queued = true;
            this.queue_close_notify();
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Why a buffer handed to rustls was not used.
enum Unfit {
    /// It must be at least this large.
    TooSmall(usize),
    /// Not for lack of room.
    Failed(io::Error),
}

/// Appends what `write` puts into a buffer, in a first `guess` of its size or the size
/// rustls asks for then.
fn append_sized(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Unfit>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(Unfit::TooSmall(required)) => room = required,
            Err(Unfit::Failed(err)) => {
                out.truncate(start);
                return Err(err);
            }
        }
    }
    out.truncate(start);
    Err(io::Error::other("cannot size the TLS output"))
}

/// Appends one handshake or alert record to `out`.
fn encode_into(
    encode: &mut EncodeTlsData<'_, ClientConnectionData>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    append_sized(out, 1024, |buf| match encode.encode(buf) {
        Ok(written) => Ok(written),
        Err(EncodeError::InsufficientSize(size)) => Err(Unfit::TooSmall(size.required_size)),
        Err(EncodeError::AlreadyEncoded) => Ok(0),
    })
}

/// Appends `plain` as encrypted records to `out`, after any records rustls had queued.
fn encrypt_into(
    traffic: &mut WriteTraffic<'_, ClientConnectionData>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    // Enough for the data; rustls asks for more when it has records queued.
    let records = plain.len().div_ceil(RECORD_PAYLOAD).max(1);
    append_sized(out, plain.len() + records * RECORD_OVERHEAD, |buf| {
        traffic.encrypt(plain, buf).map_err(encrypt_error)
    })
}

fn encrypt_error(err: EncryptError) -> Unfit {
    match err {
        EncryptError::InsufficientSize(size) => Unfit::TooSmall(size.required_size),
        other => Unfit::Failed(io::Error::other(other)),
    }
}

/// Collects the records rustls queued on failing (the alert that says why) into `out`.
///
/// rustls is asked only while it has records queued, which it hands out before looking
/// at any input: the input still holds the record that failed, and running that again
/// would fail again.
fn drain_alerts(conn: &mut UnbufferedClientConnection, out: &mut Vec<u8>) {
    for _ in 0..16 {
        if !conn.wants_write() {
            return;
        }
        let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            conn.process_tls_records(&mut []).state
        else {
            return;
        };
        if encode_into(&mut encode, out).is_err() {
            return;
        }
    }
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

fn closed_during_handshake() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection during the TLS handshake",
    )
}

fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the TLS connection failed earlier",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;
    use tokio_rustls::server::TlsStream;

    /// Bounds every test.
    const LIMIT: Duration = Duration::from_secs(30);

    async fn bounded<T>(work: impl Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, work)
            .await
            .expect("the test took too long")
    }

    /// Our client halves, with the bench's pinning configuration, and a real rustls
    /// server (tokio-rustls) over loopback.
    /// Sends `sent` to a server that echoes it, in pieces of `piece` bytes (with a
    /// `pause` after each), then ends the stream; reads concurrently until the end and
    /// checks that everything came back unchanged.
    async fn echoed_whole(
        mut reader: TlsReader,
        mut writer: TlsWriter,
        sent: Vec<u8>,
        piece: usize,
        pause: Option<Duration>,
    ) {
        let up = sent.clone();
        let sender = tokio::spawn(async move {
            for part in up.chunks(piece) {
                writer.write_all(part).await.unwrap();
                writer.flush().await.unwrap();
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
            writer.shutdown().await.unwrap();
        });
        let mut got = BytesMut::new();
        while reader.read(&mut got).await.unwrap() > 0 {}
        assert_eq!(got.as_ref(), sent.as_slice());
        sender.await.unwrap();
    }

    async fn pair() -> (TlsReader, TlsWriter, TlsStream<TcpStream>) {
        pair_with(|_| {}).await
    }

    /// [`pair`], with the server's configuration changed by `adjust`.
    async fn pair_with(
        adjust: impl FnOnce(&mut rustls::ServerConfig),
    ) -> (TlsReader, TlsWriter, TlsStream<TcpStream>) {
        let (server_config, fingerprint) = crate::tls_copy::server_config().unwrap();
        let mut server_config = Arc::unwrap_or_clone(server_config);
        adjust(&mut server_config);
        let server_config = Arc::new(server_config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(server_config)
                .accept(tcp)
                .await
                .unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let config = crate::client::tls_config(fingerprint).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let (reader, writer) = connect(tcp, config, name).await.unwrap();
        (reader, writer, server.await.unwrap())
    }

    /// Reads until `len` bytes arrived.
    async fn read_exactly(reader: &mut TlsReader, len: usize) -> BytesMut {
        let mut got = BytesMut::new();
        while got.len() < len {
            let read = reader.read(&mut got).await.unwrap();
            assert!(read > 0, "closed after {} of {len} bytes", got.len());
        }
        assert_eq!(got.len(), len, "more than was sent");
        got
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn small_and_large_writes_arrive_intact_both_ways() {
        bounded(async {
            let (mut reader, mut writer, mut server) = pair().await;
            for len in [1, 300, 16 * 1024, 16 * 1024 + 1, 100_000, 300 * 1024] {
                let down = pattern(len, 7);
                server.write_all(&down).await.unwrap();
                server.flush().await.unwrap();
                assert_eq!(read_exactly(&mut reader, len).await.as_ref(), down);

                let up = pattern(len, 99);
                writer.write_all(&up).await.unwrap();
                writer.flush().await.unwrap();
                let mut got = vec![0; len];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, up);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn reading_and_writing_at_once_from_two_tasks() {
        bounded(async {
            let (reader, writer, server) = pair().await;
            // The server echoes everything back.
            let (mut from_client, mut to_client) = tokio::io::split(server);
            let echo = tokio::spawn(async move {
                tokio::io::copy(&mut from_client, &mut to_client)
                    .await
                    .unwrap();
                to_client.shutdown().await.unwrap();
            });
            echoed_whole(reader, writer, pattern(300 * 1024, 3), 7000, None).await;
            echo.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn handshake_messages_split_across_records_and_reads() {
        bounded(async {
            let (server_config, fingerprint) = crate::tls_copy::server_config().unwrap();
            let mut server_config = Arc::unwrap_or_clone(server_config);
            // Records of 32 bytes: every handshake message, the tickets sent after the
            // handshake included, spans several.
            server_config.max_fragment_size = Some(32);
            let server_config = Arc::new(server_config);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server_addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = tokio_rustls::TlsAcceptor::from(server_config)
                    .accept(tcp)
                    .await
                    .unwrap();
                let (mut from_client, mut to_client) = tokio::io::split(tls);
                tokio::io::copy(&mut from_client, &mut to_client)
                    .await
                    .unwrap();
                to_client.shutdown().await.unwrap();
            });
            // The server's bytes reach the client a few at a time, so the reader keeps
            // parts of records and of handshake messages while the writer sends.
            let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let proxy_addr = proxy_listener.local_addr().unwrap();
            let proxy = tokio::spawn(async move {
                let (client_side, _) = proxy_listener.accept().await.unwrap();
                let server_side = TcpStream::connect(server_addr).await.unwrap();
                client_side.set_nodelay(true).unwrap();
                server_side.set_nodelay(true).unwrap();
                let (mut client_read, mut client_write) = client_side.into_split();
                let (mut server_read, mut server_write) = server_side.into_split();
                let up = tokio::spawn(async move {
                    tokio::io::copy(&mut client_read, &mut server_write)
                        .await
                        .unwrap();
                    server_write.shutdown().await.unwrap();
                });
                let mut piece = [0u8; 16];
                loop {
                    let read = server_read.read(&mut piece).await.unwrap();
                    if read == 0 {
                        break;
                    }
                    client_write.write_all(&piece[..read]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                client_write.shutdown().await.unwrap();
                up.await.unwrap();
            });
            let tcp = TcpStream::connect(proxy_addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let config = crate::client::tls_config(fingerprint).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let (reader, writer) = connect(tcp, config, name).await.unwrap();
            let pause = Some(Duration::from_millis(1));
            echoed_whole(reader, writer, pattern(3000, 11), 10, pause).await;
            server.await.unwrap();
            proxy.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn close_notify_reads_as_the_end_both_ways() {
        bounded(async {
            let (mut reader, mut writer, mut server) = pair().await;
            server.write_all(b"last words").await.unwrap();
            server.shutdown().await.unwrap();
            assert_eq!(read_exactly(&mut reader, 10).await.as_ref(), b"last words");
            let mut rest = BytesMut::new();
            assert_eq!(reader.read(&mut rest).await.unwrap(), 0);
            assert_eq!(reader.read(&mut rest).await.unwrap(), 0, "still the end");

            writer.write_all(b"bye").await.unwrap();
            writer.shutdown().await.unwrap();
            let mut tail = Vec::new();
            let read = server.read_to_end(&mut tail).await;
            assert!(
                read.is_ok(),
                "the server saw {read:?} instead of close_notify"
            );
            assert_eq!(tail, b"bye");
        })
        .await;
    }

    #[tokio::test]
    async fn an_end_without_close_notify_is_an_error() {
        bounded(async {
            let (mut reader, _writer, server) = pair().await;
            let (tcp, _) = server.into_inner();
            drop(tcp);
            let mut got = BytesMut::new();
            let err = reader.read(&mut got).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        })
        .await;
    }

    #[tokio::test]
    async fn a_forged_record_is_an_error_and_the_server_gets_an_alert() {
        bounded(async {
            let (mut reader, mut writer, mut server) = pair().await;
            server.write_all(b"genuine").await.unwrap();
            server.flush().await.unwrap();
            assert_eq!(read_exactly(&mut reader, 7).await.as_ref(), b"genuine");
            let (mut tcp, _) = server.into_inner();
            // An application data record whose body fails authentication.
            let mut record = vec![23, 3, 3, 0, 40];
            record.extend_from_slice(&[0x5a; 40]);
            tcp.write_all(&record).await.unwrap();
            let mut got = BytesMut::new();
            let err = reader.read(&mut got).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            assert!(got.is_empty());
            assert!(reader.read(&mut got).await.is_err(), "still failed");
            assert!(writer.write_all(b"more").await.is_err());
            // Shutting down sends the alert rustls queued, then the end of the stream.
            writer.shutdown().await.unwrap();
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await.unwrap();
            assert!(answer.len() > 5, "no alert: {answer:?}");
            assert_eq!(answer[0], 23, "an encrypted alert record");
        })
        .await;
    }

    #[tokio::test]
    async fn data_flows_after_key_updates_the_server_starts() {
        bounded(async {
            // The server's receiving sequence number tells whether the client updated.
            let (mut reader, mut writer, mut server) =
                pair_with(|config| config.enable_secret_extraction = true).await;
            for round in 0..3u8 {
                // The server updates its keys and asks the client to update its own:
                // the client must answer before data sealed under its new keys.
                server.get_mut().1.refresh_traffic_keys().unwrap();
                let down = pattern(2000, round);
                server.write_all(&down).await.unwrap();
                server.flush().await.unwrap();
                assert_eq!(read_exactly(&mut reader, down.len()).await.as_ref(), down);

                let up = pattern(1000, round.wrapping_add(50));
                writer.write_all(&up).await.unwrap();
                writer.flush().await.unwrap();
                let mut got = vec![0; up.len()];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, up, "round {round}");
            }
            // One record came under the client's newest keys: it answered every update.
            let secrets = server.into_inner().1.dangerous_extract_secrets().unwrap();
            assert_eq!(secrets.rx.0, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn a_server_that_is_not_tls_is_refused() {
        bounded(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut hello = [0u8; 5];
                tcp.read_exact(&mut hello).await.unwrap();
                tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    .await
                    .unwrap();
                // Keep the socket open until the client gives up.
                let mut rest = Vec::new();
                let _ = tcp.read_to_end(&mut rest).await;
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let config = crate::client::tls_config([0; 32]).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let Err(err) = connect(tcp, config, name).await else {
                panic!("the handshake succeeded");
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            server.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn a_certificate_that_is_not_pinned_is_refused() {
        bounded(async {
            let (server_config, fingerprint) = crate::tls_copy::server_config().unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio_rustls::TlsAcceptor::from(server_config)
                    .accept(tcp)
                    .await
                    .map(|_| ())
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut other = fingerprint;
            other[0] ^= 1;
            let config = crate::client::tls_config(other).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let Err(err) = connect(tcp, config, name).await else {
                panic!("the handshake succeeded");
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            // The server was told why (an alert), not left waiting.
            assert!(server.await.unwrap().is_err());
        })
        .await;
    }
}
