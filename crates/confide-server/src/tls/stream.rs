//! TLS on an accepted TCP connection, driven through rustls' unbuffered API.
//!
//! With the buffered API every connection keeps rustls' 4 KiB receive buffer for its
//! whole life. Here the server owns the buffers: ciphertext is read only once the socket
//! is readable, records are decrypted as soon as they are whole, and an idle connection
//! holds no buffer at all. The connection splits into a [`TlsReader`] (the request loop)
//! and a [`TlsWriter`] (the writer task) around one shared rustls state. Records the
//! reader has to send (alerts) are left for the writer, which sends them before anything
//! it encrypts after (the reader's owner says when to: `take_records_waiting`); rustls keeps a key update answering the peer's ahead of the data
//! sealed under the new keys.

use bytes::BytesMut;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes read at a time while a peer sends little.
const SMALL_READ: usize = 4 * 1024;

/// Bytes read at a time after a read filled its space (a peer sending a lot).
const LARGE_READ: usize = 64 * 1024;

/// The most a handshake may buffer before it is refused (rustls' own limit for a
/// handshake message is 64 KiB; a record adds its header).
const MAX_HANDSHAKE_BUFFER: usize = 64 * 1024 + 512;

/// Records the reader left for the writer are kept in a buffer of at most this size.
const KEEP_PENDING: usize = 4 * 1024;

/// Steps of rustls' state machine handled in one go, a guard against a bug rather than a
/// limit: each step consumes input or produces output, so the steps are bounded by the
/// buffer (a 64 KiB read holds at most about 13,000 records, each at least a 5-byte
/// header).
const MAX_STEPS: usize = 1 << 16;

/// Payload bytes of one TLS record, and what a record adds to them (header, content
/// type and AEAD tag in TLS 1.3).
const RECORD_PAYLOAD: usize = 16 * 1024;
const RECORD_OVERHEAD: usize = 5 + 1 + 16;

type Status<'c, 'i> = UnbufferedStatus<'c, 'i, ServerConnectionData>;

/// rustls' state for one connection, shared by its reader and writer.
struct Shared {
    tls: Mutex<State>,
}

struct State {
    conn: UnbufferedServerConnection,
    /// Ciphertext read but not yet processed (a partial record); empty and without an
    /// allocation while the connection is idle. It lives here, not in the reader,
    /// because rustls must be shown the same input on every call, the writer's too: it
    /// keeps the pieces of a handshake message split over records inside that input.
    /// The reader processes every whole record under the same lock it reads under, so
    /// the writer only ever finds partial ones.
    incoming: Vec<u8>,
    used: usize,
    /// Encoded records produced while reading, not yet written.
    pending: Vec<u8>,
    /// rustls failed on this connection: it is not asked anything more.
    failed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves rustls mid-step; the connection is
        // useless then, but its other half must still be able to end cleanly.
        self.tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The peer's TLS was wrong (bad hello, bad certificate message, bad record).
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Performs the server side of a TLS handshake on `tcp`.
///
/// Application data the client sent right behind its handshake is kept for the reader.
///
/// # Errors
/// If the handshake fails; the alert that explains why is sent first when possible.
pub async fn accept(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<(TlsReader, TlsWriter), AcceptError> {
    let mut conn = UnbufferedServerConnection::new(config)?;
    let mut incoming = Vec::new();
    let mut used = 0usize;
    let mut out = Vec::new();
    let mut early = BytesMut::new();
    for _ in 0..MAX_STEPS {
        let Status { discard, state } = conn.process_tls_records(&mut incoming[..used]);
        let next = match state {
            Err(err) => Next::Fail(err),
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, &mut out);
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
                    early.extend_from_slice(record?.payload);
                }
                Next::Again
            }
            Ok(ConnectionState::BlockedHandshake) => Next::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Next::Done,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed during the TLS handshake",
                )
                .into());
            }
            Ok(_) => Next::Fail(rustls::Error::General(
                "unexpected state during the TLS handshake".to_owned(),
            )),
        };
        consume(&mut incoming, &mut used, discard);
        match next {
            Next::Again => {}
            Next::Done => {
                if !out.is_empty() {
                    tcp.write_all(&out).await?;
                }
                let (read, write) = tcp.into_split();
                let shared = Arc::new(Shared {
                    tls: Mutex::new(State {
                        conn,
                        incoming,
                        used,
                        pending: Vec::new(),
                        failed: false,
                    }),
                });
                let reader = TlsReader {
                    tcp: read,
                    shared: Arc::clone(&shared),
                    early,
                    large: false,
                    closed: false,
                    records_waiting: false,
                };
                return Ok((
                    reader,
                    TlsWriter {
                        sink: Arc::new(TlsSink { tcp: write, shared }),
                        out: Vec::new(),
                    },
                ));
            }
            Next::Read => {
                if used >= MAX_HANDSHAKE_BUFFER {
                    return Err(
                        rustls::Error::General("handshake message too large".to_owned()).into(),
                    );
                }
                let want = (used + SMALL_READ).min(MAX_HANDSHAKE_BUFFER);
                if incoming.len() < want {
                    incoming.resize(want, 0);
                }
                let read = tcp.read(&mut incoming[used..]).await?;
                if read == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed during the TLS handshake",
                    )
                    .into());
                }
                used += read;
            }
            Next::Fail(err) => {
                // rustls queued the alert that tells the peer why; send it if we can.
                take_alert(&mut conn, &mut incoming[..used], &mut out);
                if !out.is_empty() {
                    let _ = tcp.write_all(&out).await;
                }
                return Err(err.into());
            }
        }
    }
    Err(rustls::Error::General("the TLS handshake did not finish".to_owned()).into())
}

enum Next {
    Again,
    Read,
    Done,
    Fail(rustls::Error),
}

/// Removes `discard` processed bytes from the front of the input.
fn consume(incoming: &mut [u8], used: &mut usize, discard: usize) {
    if discard > 0 {
        incoming.copy_within(discard..*used, 0);
        *used -= discard;
    }
}

/// Appends one encoded handshake or alert record to `out`.
fn encode_into(encode: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    let start = out.len();
    let mut room = 512;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match encode.encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return;
            }
            Err(EncodeError::InsufficientSize(size)) => room = size.required_size,
            Err(EncodeError::AlreadyEncoded) => break,
        }
    }
    out.truncate(start);
}

/// Appends the fatal alert rustls queued after a failure to `out`. One step only: a
/// further step would read the input again, which after a failure rustls must not do.
fn take_alert(conn: &mut UnbufferedServerConnection, incoming: &mut [u8], out: &mut Vec<u8>) {
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = conn.process_tls_records(incoming).state
    {
        encode_into(&mut encode, out);
    }
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// The receiving half: reads ciphertext and hands out plaintext.
pub struct TlsReader {
    tcp: OwnedReadHalf,
    shared: Arc<Shared>,
    /// Plaintext that arrived with the handshake.
    early: BytesMut,
    /// The last read filled its space: read larger pieces.
    large: bool,
    /// The peer ended its side (close_notify or end of stream).
    closed: bool,
    /// Records were left for the writer since [`TlsReader::take_records_waiting`].
    records_waiting: bool,
}

impl TlsReader {
    /// Whether reading left TLS records for the writer to send (answers to the peer,
    /// which [`TlsWriter::write`] sends first thing, even with no data); clears it.
    pub fn take_records_waiting(&mut self) -> bool {
        std::mem::take(&mut self.records_waiting)
    }

    /// Waits for application data and appends it to `dst`. Returns the number of bytes
    /// appended; 0 means the peer closed the connection.
    ///
    /// # Errors
    /// If the socket fails or the peer's TLS is wrong (the alert is left for the writer).
    pub async fn read(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            dst.extend_from_slice(&early);
            return Ok(early.len());
        }
        let mut got = self.process(dst, false)?;
        loop {
            if got > 0 {
                return Ok(got);
            }
            if self.closed {
                return Ok(0);
            }
            self.tcp.readable().await?;
            got = self.process(dst, true)?;
        }
    }

    /// Reads what the socket has (with `read`, without waiting), then decrypts every
    /// whole record into `dst`, all under the lock: the writer never finds a whole
    /// record unprocessed.
    fn process(&mut self, dst: &mut BytesMut, read: bool) -> io::Result<usize> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        if state.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS connection failed",
            ));
        }
        if read {
            let step = if self.large { LARGE_READ } else { SMALL_READ };
            if state.incoming.len() < state.used + step {
                state.incoming.resize(state.used + step, 0);
            }
            match self.tcp.try_read(&mut state.incoming[state.used..]) {
                Ok(0) => self.closed = true,
                Ok(read) => {
                    self.large = state.used + read == state.incoming.len();
                    state.used += read;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        let mut got = 0;
        let mut flush = false;
        let mut failure = None;
        for _ in 0..MAX_STEPS {
            let Status {
                discard,
                state: step,
            } = state
                .conn
                .process_tls_records(&mut state.incoming[..state.used]);
            let again = match step {
                Ok(ConnectionState::ReadTraffic(mut read)) => {
                    while let Some(record) = read.next_record() {
                        match record {
                            Ok(record) => {
                                got += record.payload.len();
                                dst.extend_from_slice(record.payload);
                            }
                            Err(err) => {
                                failure = Some(err);
                                break;
                            }
                        }
                    }
                    failure.is_none()
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut state.pending);
                    true
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The writer sends them, before anything it encrypts from now on.
                    transmit.done();
                    flush = true;
                    true
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.closed = true;
                    false
                }
                Ok(ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake) => false,
                Ok(_) => {
                    failure = Some(rustls::Error::General(
                        "unexpected TLS state while reading".to_owned(),
                    ));
                    false
                }
                Err(err) => {
                    failure = Some(err);
                    false
                }
            };
            consume(&mut state.incoming, &mut state.used, discard);
            if !again {
                break;
            }
        }
        if state.used == 0 && !state.incoming.is_empty() {
            // Nothing partial is waiting: an idle connection holds no buffer.
            state.incoming = Vec::new();
        }
        if let Some(err) = failure {
            // The writer sends the alert when the connection closes.
            state.failed = true;
            let State {
                conn,
                incoming,
                used,
                pending,
                ..
            } = state;
            take_alert(conn, &mut incoming[..*used], pending);
            return Err(tls_error(err));
        }
        self.records_waiting |= flush;
        Ok(got)
    }
}

/// The sending side of the socket with the connection's TLS state: shared by the writer
/// task and by whoever writes to an idle connection directly (see `outbound`). It does
/// not order writers; its users take turns.
pub struct TlsSink {
    tcp: OwnedWriteHalf,
    shared: Arc<Shared>,
}

impl TlsSink {
    /// Appends to `out` the records the reader left, then `plain` encrypted (in records
    /// of up to 16 KiB). An empty `plain` appends only the records left.
    ///
    /// # Errors
    /// If the connection can no longer send.
    pub fn seal(&self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        out.append(&mut state.pending);
        if state.pending.capacity() > KEEP_PENDING {
            state.pending = Vec::new();
        }
        if plain.is_empty() {
            return Ok(());
        }
        if state.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection failed",
            ));
        }
        // rustls itself puts records it queued (a key update answering the peer's) in
        // front of the data it encrypts.
        for _ in 0..MAX_STEPS {
            let Status {
                discard,
                state: step,
            } = state
                .conn
                .process_tls_records(&mut state.incoming[..state.used]);
            let next = match step {
                Ok(ConnectionState::WriteTraffic(mut write)) => {
                    Some(encrypt_into(&mut write, plain, out))
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, out);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => None,
                Ok(ConnectionState::Closed) => Some(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS connection is closed",
                ))),
                Ok(_) => Some(Err(io::Error::other("the TLS connection cannot send now"))),
                Err(err) => {
                    state.failed = true;
                    Some(Err(tls_error(err)))
                }
            };
            consume(&mut state.incoming, &mut state.used, discard);
            if let Some(result) = next {
                return result;
            }
        }
        Err(io::Error::other("the TLS connection did not settle"))
    }

    /// Writes as much of `bytes` as the socket takes without waiting; 0 if it takes
    /// nothing now.
    ///
    /// # Errors
    /// If the socket failed.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self.tcp.try_write(bytes) {
            Ok(written) => Ok(written),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// Writes all of `bytes`, waiting for the socket as needed.
    ///
    /// # Errors
    /// If the socket failed.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.tcp.writable().await?;
            match self.tcp.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => bytes = bytes.get(written..).unwrap_or_default(),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Appends close_notify (after the records the reader left) to `out`.
    fn seal_close(&self, out: &mut Vec<u8>) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        out.append(&mut state.pending);
        if state.failed {
            // The fatal alert, if any, was the last record.
            return;
        }
        let Status {
            discard,
            state: step,
        } = state
            .conn
            .process_tls_records(&mut state.incoming[..state.used]);
        if let Ok(ConnectionState::WriteTraffic(mut write)) = step {
            let start = out.len();
            out.resize(start + 64, 0);
            match write.queue_close_notify(&mut out[start..]) {
                Ok(written) => out.truncate(start + written),
                Err(_) => out.truncate(start),
            }
        }
        consume(&mut state.incoming, &mut state.used, discard);
    }

    /// Ends the sending side of the socket (the peer reads the end of the stream).
    fn shutdown(&self) {
        let tcp: &TcpStream = self.tcp.as_ref();
        let _ = rustix::net::shutdown(tcp, rustix::net::Shutdown::Write);
    }
}

/// The writer task's half: encrypts application data and writes it, waiting for the
/// socket as needed.
pub struct TlsWriter {
    sink: Arc<TlsSink>,
    /// Ciphertext being written; released when the writer runs out of work.
    out: Vec<u8>,
}

impl TlsWriter {
    /// The shared sending side, for writing to the connection directly while this
    /// writer is idle.
    #[must_use]
    pub fn sink(&self) -> Arc<TlsSink> {
        Arc::clone(&self.sink)
    }

    /// Encrypts `plain` (in records of up to 16 KiB) and writes it, after any records
    /// the reader left. An empty `plain` writes only those.
    ///
    /// # Errors
    /// If the socket fails or the connection can no longer send.
    pub async fn write(&mut self, plain: &[u8]) -> io::Result<()> {
        let sealed = self.sink.seal(plain, &mut self.out);
        let written = match sealed {
            Ok(()) if self.out.is_empty() => Ok(()),
            Ok(()) => self.sink.write_all(&self.out).await,
            Err(err) => Err(err),
        };
        self.out.clear();
        written
    }

    /// Writes ciphertext sealed earlier (what a direct write could not finish).
    ///
    /// # Errors
    /// If the socket fails.
    pub async fn write_sealed(&mut self, sealed: &[u8]) -> io::Result<()> {
        self.sink.write_all(sealed).await
    }

    /// Frees the output buffer (called when there is nothing more to send for now).
    pub fn release_buffers(&mut self) {
        self.out = Vec::new();
    }

    /// Sends close_notify (after whatever is pending) and shuts the socket's sending side.
    pub async fn close(&mut self) {
        self.sink.seal_close(&mut self.out);
        if !self.out.is_empty() {
            let _ = self.sink.write_all(&self.out).await;
        }
        self.out = Vec::new();
        self.sink.shutdown();
    }
}

/// Appends `plain` as encrypted records to `out`, after any records rustls had queued.
fn encrypt_into(
    write: &mut WriteTraffic<'_, ServerConnectionData>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let start = out.len();
    // Enough for the data; rustls asks for more when it has records queued.
    let records = plain.len().div_ceil(RECORD_PAYLOAD).max(1);
    let mut room = plain.len() + records * RECORD_OVERHEAD;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write.encrypt(plain, &mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(size)) => room = size.required_size,
            Err(err) => {
                out.truncate(start);
                return Err(io::Error::other(err.to_string()));
            }
        }
    }
    out.truncate(start);
    Err(io::Error::other("cannot size the TLS output"))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::time::Duration;
    use tokio_rustls::client::TlsStream;

    /// Bound on every step of these tests.
    pub const LIMIT: Duration = Duration::from_secs(20);

    /// A server half and a real rustls client, connected over loopback.
    pub async fn pair() -> (
        TlsReader,
        TlsWriter,
        TlsStream<TcpStream>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::tls::load_or_create(dir.path(), None, None).unwrap();
        let pem = std::fs::read(dir.path().join(crate::tls::CERT_FILE)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Lets tests take over the client's record layer to send records rustls would not.
        client_config.enable_secret_extraction = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, identity.config).await
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = tokio::time::timeout(LIMIT, connector.connect(name, tcp))
            .await
            .unwrap()
            .unwrap();
        let (reader, writer) = tokio::time::timeout(LIMIT, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        (reader, writer, client, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{LIMIT, pair};
    use super::*;
    use std::time::Duration;

    /// Reads from the server half until `len` bytes arrived.
    async fn read_exactly(reader: &mut TlsReader, len: usize) -> BytesMut {
        let mut got = BytesMut::new();
        while got.len() < len {
            let read = tokio::time::timeout(LIMIT, reader.read(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert!(read > 0, "closed after {} of {len} bytes", got.len());
        }
        got
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn small_and_large_writes_arrive_intact_both_ways() {
        let (mut reader, mut writer, mut client, _dir) = pair().await;
        for len in [1, 300, 16 * 1024, 16 * 1024 + 1, 300 * 1024] {
            let sent = pattern(len, 7);
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
            assert_eq!(read_exactly(&mut reader, len).await.as_ref(), sent);

            let back = pattern(len, 99);
            writer.write(&back).await.unwrap();
            let mut got = vec![0; len];
            tokio::time::timeout(LIMIT, client.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, back);
        }
        // Idle again: waiting for more holds no buffer on either side.
        let mut more = BytesMut::new();
        let waited = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut more)).await;
        assert!(waited.is_err(), "nothing was sent");
        {
            let state = reader.shared.lock();
            assert_eq!((state.incoming.capacity(), state.used), (0, 0));
        }
        writer.release_buffers();
        assert_eq!(writer.out.capacity(), 0);
    }

    #[tokio::test]
    async fn a_key_update_the_client_asks_for_is_answered_before_more_data() {
        let (mut reader, mut writer, mut client, _dir) = pair().await;
        for round in 0..3u8 {
            // The client asks the server to update its keys too; the server's answer
            // must reach the client before data sealed under the server's new keys.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            let sent = pattern(1000, round);
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
            assert_eq!(read_exactly(&mut reader, sent.len()).await.as_ref(), sent);
            let back = pattern(2000, round.wrapping_add(50));
            writer.write(&back).await.unwrap();
            let mut got = vec![0; back.len()];
            tokio::time::timeout(LIMIT, client.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, back, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_clean_close_reads_as_the_end() {
        let (mut reader, mut writer, mut client, _dir) = pair().await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_exactly(&mut reader, 10).await.as_ref(), b"last words");
        let mut rest = BytesMut::new();
        let read = tokio::time::timeout(LIMIT, reader.read(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, 0);
        writer.close().await;
        let mut tail = Vec::new();
        let read = tokio::time::timeout(LIMIT, client.read_to_end(&mut tail))
            .await
            .unwrap();
        assert!(
            read.is_ok(),
            "the client saw {read:?} instead of close_notify"
        );
    }

    #[tokio::test]
    async fn garbage_after_the_handshake_is_an_error_and_the_peer_gets_an_alert() {
        let (mut reader, mut writer, client, _dir) = pair().await;
        let (mut tcp, _) = client.into_inner();
        // A record header for application data with a body that fails authentication.
        let mut record = vec![23, 3, 3, 0, 40];
        record.extend_from_slice(&[0x5a; 40]);
        tcp.write_all(&record).await.unwrap();
        let mut got = BytesMut::new();
        let result = tokio::time::timeout(LIMIT, reader.read(&mut got))
            .await
            .unwrap();
        assert!(result.is_err(), "garbage read as {result:?}");
        // The writer sends the alert rustls queued.
        writer.write(&[]).await.unwrap();
        let mut answer = [0u8; 5];
        tokio::time::timeout(LIMIT, tcp.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer[0], 23, "an encrypted alert record");
    }

    fn aead_of(
        secrets: rustls::ConnectionTrafficSecrets,
    ) -> (
        &'static dyn rustls::crypto::cipher::Tls13AeadAlgorithm,
        rustls::crypto::cipher::AeadKey,
        rustls::crypto::cipher::Iv,
    ) {
        use rustls::ConnectionTrafficSecrets as Secrets;
        use rustls::crypto::ring::cipher_suite;
        let (suite, key, iv) = match secrets {
            Secrets::Aes128Gcm { key, iv } => (cipher_suite::TLS13_AES_128_GCM_SHA256, key, iv),
            Secrets::Aes256Gcm { key, iv } => (cipher_suite::TLS13_AES_256_GCM_SHA384, key, iv),
            Secrets::Chacha20Poly1305 { key, iv } => {
                (cipher_suite::TLS13_CHACHA20_POLY1305_SHA256, key, iv)
            }
            _ => panic!("unexpected cipher suite"),
        };
        (suite.tls13().unwrap().aead_alg, key, iv)
    }

    /// Opens every TLS 1.3 record in `stream` as the client, from sequence number
    /// `first_seq`: the content type and plaintext of each.
    fn open_records(
        secrets: rustls::ConnectionTrafficSecrets,
        first_seq: u64,
        stream: &mut [u8],
    ) -> Vec<(rustls::ContentType, Vec<u8>)> {
        use rustls::crypto::cipher::InboundOpaqueMessage;
        let (aead, key, iv) = aead_of(secrets);
        let mut decrypter = aead.decrypter(key, iv);
        let mut opened = Vec::new();
        let mut rest = stream;
        for seq in first_seq.. {
            let Some(header) = rest.get(..5) else { break };
            assert_eq!(header[..3], [23, 3, 3], "an encrypted TLS 1.3 record");
            let len = usize::from(header[3]) << 8 | usize::from(header[4]);
            let (record, tail) = rest.split_at_mut(5 + len);
            let message = InboundOpaqueMessage::new(
                rustls::ContentType::ApplicationData,
                rustls::ProtocolVersion::TLSv1_2,
                &mut record[5..],
            );
            let plain = decrypter.decrypt(message, seq).unwrap();
            opened.push((plain.typ, plain.payload.to_vec()));
            rest = tail;
        }
        assert!(rest.is_empty(), "a partial record");
        opened
    }

    /// Seals `message` as the client in TLS 1.3 records of `content`, one record per
    /// piece, with the client's extracted traffic keys.
    fn client_records(
        secrets: rustls::ConnectionTrafficSecrets,
        first_seq: u64,
        content: rustls::ContentType,
        pieces: &[&[u8]],
    ) -> Vec<Vec<u8>> {
        use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
        let (aead, key, iv) = aead_of(secrets);
        let mut encrypter = aead.encrypter(key, iv);
        pieces
            .iter()
            .zip(first_seq..)
            .map(|(piece, seq)| {
                let plain = OutboundPlainMessage {
                    typ: content,
                    version: rustls::ProtocolVersion::TLSv1_2,
                    payload: OutboundChunks::Single(piece),
                };
                encrypter.encrypt(plain, seq).unwrap().encode()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_handshake_message_split_over_records_does_not_break_sending() {
        let (mut reader, mut writer, client, _dir) = pair().await;
        let (mut tcp, conn) = client.into_inner();
        let secrets = conn.dangerous_extract_secrets().unwrap();
        let (seq, sending) = secrets.tx;
        // A key update (type 24, one byte of body: no update requested) in two records.
        let records = client_records(
            sending,
            seq,
            rustls::ContentType::Handshake,
            &[&[24, 0], &[0, 1, 0]],
        );
        tcp.write_all(&records[0]).await.unwrap();
        // The reader takes in the first piece; no application data arrives.
        let mut got = BytesMut::new();
        let waited = tokio::time::timeout(Duration::from_millis(200), reader.read(&mut got)).await;
        assert!(waited.is_err() && got.is_empty());
        // Sending with half a handshake message held by rustls (once a panic in rustls),
        // directly and through the writer.
        let sink = writer.sink();
        let mut sealed = Vec::new();
        sink.seal(b"direct", &mut sealed).unwrap();
        assert_eq!(sink.try_write(&sealed).unwrap(), sealed.len());
        writer.write(b"written").await.unwrap();
        // The rest of the key update; sending still works after it.
        tcp.write_all(&records[1]).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), reader.read(&mut got)).await;
        assert!(waited.is_err() && got.is_empty());
        writer.write(b"after").await.unwrap();
        writer.close().await;
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, tcp.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        // The data in order, then close_notify (after session tickets the client had not
        // read yet).
        let (seq, receiving) = secrets.rx;
        let opened = open_records(receiving, seq, &mut answer);
        let data: Vec<u8> = opened
            .iter()
            .filter(|(kind, _)| *kind == rustls::ContentType::ApplicationData)
            .flat_map(|(_, data)| data.iter().copied())
            .collect();
        assert_eq!(data, b"directwrittenafter");
        let last = opened.last().unwrap();
        assert_eq!(*last, (rustls::ContentType::Alert, vec![1, 0]));
    }

    #[tokio::test]
    async fn a_client_that_is_not_tls_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::tls::load_or_create(dir.path(), None, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, identity.config).await.map(|_| ())
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let result = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
        assert!(matches!(result, Err(AcceptError::Tls(_))), "{result:?}");
    }
}
