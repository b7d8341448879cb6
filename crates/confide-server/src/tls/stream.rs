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
    /// Encoded records produced while reading, not yet written.
    pending: Vec<u8>,
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
                        pending: Vec::new(),
                    }),
                });
                let reader = TlsReader {
                    tcp: read,
                    shared: Arc::clone(&shared),
                    incoming,
                    used,
                    early,
                    large: false,
                    closed: false,
                    records_waiting: false,
                };
                return Ok((
                    reader,
                    TlsWriter {
                        tcp: write,
                        shared,
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
                drain_alerts(&mut conn, &mut out);
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

/// Collects records rustls queued after a failure (the fatal alert) into `out`.
fn drain_alerts(conn: &mut UnbufferedServerConnection, out: &mut Vec<u8>) {
    for _ in 0..16 {
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => encode_into(&mut encode, out),
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// The receiving half: reads ciphertext and hands out plaintext.
pub struct TlsReader {
    tcp: OwnedReadHalf,
    shared: Arc<Shared>,
    /// Ciphertext read but not yet processed (a partial record); empty and without an
    /// allocation while the connection is idle.
    incoming: Vec<u8>,
    used: usize,
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
        loop {
            let got = self.decrypt(dst)?;
            if got > 0 {
                return Ok(got);
            }
            if self.closed {
                return Ok(0);
            }
            if self.used == 0 && !self.incoming.is_empty() {
                // Nothing partial is waiting: an idle connection holds no buffer.
                self.incoming = Vec::new();
            }
            self.tcp.readable().await?;
            let step = if self.large { LARGE_READ } else { SMALL_READ };
            if self.incoming.len() < self.used + step {
                self.incoming.resize(self.used + step, 0);
            }
            match self.tcp.try_read(&mut self.incoming[self.used..]) {
                Ok(0) => self.closed = true,
                Ok(read) => {
                    self.large = self.used + read == self.incoming.len();
                    self.used += read;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Decrypts every whole record in the input into `dst`.
    fn decrypt(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let mut got = 0;
        let mut flush = false;
        let mut failure = None;
        for _ in 0..MAX_STEPS {
            let Status {
                discard,
                state: step,
            } = state
                .conn
                .process_tls_records(&mut self.incoming[..self.used]);
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
            consume(&mut self.incoming, &mut self.used, discard);
            if !again {
                break;
            }
        }
        if let Some(err) = failure {
            // The writer sends the alert when the connection closes.
            drain_alerts(&mut state.conn, &mut state.pending);
            return Err(tls_error(err));
        }
        self.records_waiting |= flush;
        Ok(got)
    }
}

/// The sending half: encrypts application data and writes it.
pub struct TlsWriter {
    tcp: OwnedWriteHalf,
    shared: Arc<Shared>,
    /// Ciphertext being written; released when the writer runs out of work.
    out: Vec<u8>,
}

impl TlsWriter {
    /// Encrypts `plain` (in records of up to 16 KiB) and writes it, after any records
    /// the reader left. An empty `plain` writes only those.
    ///
    /// # Errors
    /// If the socket fails or the connection can no longer send.
    pub async fn write(&mut self, plain: &[u8]) -> io::Result<()> {
        self.seal(plain)?;
        let written = if self.out.is_empty() {
            Ok(())
        } else {
            self.tcp.write_all(&self.out).await
        };
        self.out.clear();
        written
    }

    /// Frees the output buffer (called when there is nothing more to send for now).
    pub fn release_buffers(&mut self) {
        self.out = Vec::new();
    }

    /// Sends close_notify (after whatever is pending) and shuts the socket's sending side.
    pub async fn close(&mut self) {
        {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            self.out.append(&mut state.pending);
            if let Ok(ConnectionState::WriteTraffic(mut write)) =
                state.conn.process_tls_records(&mut []).state
            {
                let start = self.out.len();
                self.out.resize(start + 64, 0);
                match write.queue_close_notify(&mut self.out[start..]) {
                    Ok(written) => self.out.truncate(start + written),
                    Err(_) => self.out.truncate(start),
                }
            }
        }
        if !self.out.is_empty() {
            let _ = self.tcp.write_all(&self.out).await;
        }
        self.out = Vec::new();
        let _ = self.tcp.shutdown().await;
    }

    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        self.out.append(&mut state.pending);
        if state.pending.capacity() > KEEP_PENDING {
            state.pending = Vec::new();
        }
        if plain.is_empty() {
            return Ok(());
        }
        // rustls itself puts records it queued (a key update answering the peer's) in
        // front of the data it encrypts.
        for _ in 0..MAX_STEPS {
            match state.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::WriteTraffic(mut write)) => {
                    return encrypt_into(&mut write, plain, &mut self.out);
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.out);
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::PeerClosed) => {}
                Ok(ConnectionState::Closed) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the TLS connection is closed",
                    ));
                }
                Ok(_) => {
                    return Err(io::Error::other("the TLS connection cannot send now"));
                }
                Err(err) => return Err(tls_error(err)),
            }
        }
        Err(io::Error::other("the TLS connection did not settle"))
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
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::time::Duration;
    use tokio_rustls::client::TlsStream;

    const LIMIT: Duration = Duration::from_secs(20);

    /// A server half and a real rustls client, connected over loopback.
    async fn pair() -> (
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
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
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
        assert_eq!((reader.incoming.capacity(), reader.used), (0, 0));
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
