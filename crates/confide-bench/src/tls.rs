//! A simulated user's TLS connection: rustls does the handshake, the bench protects the
//! records after it.
//!
//! The bench shares the machine with the server it measures, so its own CPU time shows
//! up in the latencies. tokio-rustls cost it about 2 µs per received message on top of
//! plain TCP (rustls' read buffer, a copy of every record's plaintext into its
//! received-data queue and out again, the lock of `tokio::io::split`); rustls'
//! unbuffered API still ran its state machine, its deframer and a lock shared by both
//! halves for every record. So once rustls' unbuffered client has finished the
//! handshake, the connection goes on with the traffic secrets rustls hands over
//! ([`UnbufferedClientConnection::dangerous_into_kernel_connection`], the interface
//! meant for kernel TLS): each half owns one direction's record protection (rustls' own
//! AEAD, built from the secret, with its sequence number) and needs no lock. The reader
//! reads the socket once per wake-up in pieces a full record fits in and opens every
//! whole record in place, appending its plaintext to the caller's buffer.
//!
//! What TLS 1.3 sends after the handshake is handled as rustls would: session tickets
//! go to rustls (resumption is off, so they are only checked), a key update from the
//! server replaces the reading keys and, if the server asks, the writer sends its own
//! key update before its next record; close_notify ends the stream. A record that fails
//! leaves an alert for the writer, which sends it before anything else (and then nothing
//! more) or at shutdown. This module knows nothing of Confide's frames and never logs
//! what it carries.

use bytes::BytesMut;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::cipher::{
    InboundOpaqueMessage, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundPlainMessage,
    Tls13AeadAlgorithm,
};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, UnbufferedStatus};
use rustls::{
    AlertDescription, ClientConfig, ConnectionTrafficSecrets, ContentType, HandshakeType,
    ProtocolVersion, SupportedCipherSuite,
};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Steps of rustls' state machine in one go during the handshake, a guard against a bug
/// rather than a limit: each step consumes a record (at least 5 bytes) or produces
/// output, and the buffer holds at most `MAX_KEPT + READ_SIZE` bytes.
const MAX_STEPS: usize = 1 << 16;

/// Socket reads that bring no application data in one poll of [`TlsReader::read`]:
/// more than the bytes of the largest record, so only a server sending nothing but
/// empty records or tickets reaches it.
const MAX_READS: usize = 1 << 16;

/// A record's header: content type, legacy version and length.
const HEADER: usize = 5;

/// Payload bytes of one TLS record, and what a record adds to them in TLS 1.3 (header,
/// content type and AEAD tag).
const RECORD_PAYLOAD: usize = 16 * 1024;
const RECORD_OVERHEAD: usize = HEADER + 1 + 16;

/// The longest protected record body TLS 1.3 allows (RFC 8446, 5.2).
const MAX_CIPHERTEXT: usize = RECORD_PAYLOAD + 256;

/// The longest post-handshake message the reader collects (a session ticket is a few
/// hundred bytes).
const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;

/// Plaintext taken by one `poll_write`: four full records.
const MAX_SEAL: usize = 4 * RECORD_PAYLOAD;

/// The writer keeps its output buffer between writes up to this capacity.
const KEEP_OUT: usize = RECORD_PAYLOAD + 512;

type Status<'c, 'i> = UnbufferedStatus<'c, 'i, ClientConnectionData>;

/// Opens TLS on `tcp` to `name` with `config` and splits the connection.
///
/// `config` must allow secret extraction (`enable_secret_extraction`), as
/// [`crate::client::tls_config`] does. Application data the server sent with its
/// handshake is kept for the reader.
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
                return split(conn, tcp, input, early);
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

/// Takes the traffic secrets from rustls once the handshake is done and splits the
/// connection into its two halves. `input` holds what was read after the handshake.
fn split(
    conn: UnbufferedClientConnection,
    tcp: TcpStream,
    input: Input,
    early: BytesMut,
) -> io::Result<(TlsReader, TlsWriter)> {
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    let SupportedCipherSuite::Tls13(suite) = kernel.negotiated_cipher_suite() else {
        return Err(tls_error(rustls::Error::General(
            "the server did not negotiate TLS 1.3".to_owned(),
        )));
    };
    let aead = suite.aead_alg;
    let (rx_seq, rx_secrets) = secrets.rx;
    let (tx_seq, tx_secrets) = secrets.tx;
    let rx = Opener::new(aead, rx_secrets, rx_seq)?;
    let tx = Sealer::new(aead, tx_secrets, tx_seq)?;
    let shared = Arc::new(Shared {
        attention: AtomicBool::new(false),
        control: Mutex::new(Control {
            kernel,
            aead,
            update_tx: false,
            alert: None,
            failed: false,
        }),
    });
    let (read, write) = tcp.into_split();
    let reader = TlsReader {
        tcp: read,
        input,
        rx,
        shared: Arc::clone(&shared),
        handshake: Vec::new(),
        early,
        eof: false,
        peer_closed: false,
        failed: false,
    };
    let writer = TlsWriter {
        tcp: write,
        tx,
        shared,
        out: Vec::new(),
        sent: 0,
        close_queued: false,
        failed: false,
    };
    Ok((reader, writer))
}

/// What the handshake does after a step of rustls.
enum Next {
    Again,
    Read,
    Done,
    Fail(rustls::Error),
}

/// The key and IV of a traffic secret, whatever its AEAD.
fn key_and_iv(
    secrets: ConnectionTrafficSecrets,
) -> io::Result<(rustls::crypto::cipher::AeadKey, rustls::crypto::cipher::Iv)> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(tls_error(rustls::Error::General(
            "the negotiated AEAD cannot be used outside rustls".to_owned(),
        ))),
    }
}

/// The reading direction's protection: rustls' AEAD for the server's current traffic
/// secret and the sequence number of the next record.
struct Opener {
    aead: Box<dyn MessageDecrypter>,
    seq: u64,
}

impl Opener {
    fn new(
        aead: &'static dyn Tls13AeadAlgorithm,
        secrets: ConnectionTrafficSecrets,
        seq: u64,
    ) -> io::Result<Opener> {
        let (key, iv) = key_and_iv(secrets)?;
        Ok(Opener {
            aead: aead.decrypter(key, iv),
            seq,
        })
    }
}

/// The sending direction's protection.
struct Sealer {
    aead: Box<dyn MessageEncrypter>,
    seq: u64,
}

impl Sealer {
    fn new(
        aead: &'static dyn Tls13AeadAlgorithm,
        secrets: ConnectionTrafficSecrets,
        seq: u64,
    ) -> io::Result<Sealer> {
        let (key, iv) = key_and_iv(secrets)?;
        Ok(Sealer {
            aead: aead.encrypter(key, iv),
            seq,
        })
    }

    /// Appends `payload` as one protected record of inner type `typ` to `out`.
    fn seal(&mut self, typ: ContentType, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let seq = self.seq;
        self.seq = seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("the TLS sending sequence number is exhausted"))?;
        let plain = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let record = self.aead.encrypt(plain, seq).map_err(tls_error)?.encode();
        if out.is_empty() {
            *out = record;
        } else {
            out.extend_from_slice(&record);
        }
        Ok(())
    }
}

/// What the two halves tell each other, rarely: the reader took a key update or failed.
struct Shared {
    /// Set when `control` holds something for the writer; it looks before each record.
    attention: AtomicBool,
    control: Mutex<Control>,
}

struct Control {
    /// rustls' side of the connection after the handshake: the key schedule for updates
    /// and the checks of session tickets.
    kernel: KernelConnection<ClientConnectionData>,
    aead: &'static dyn Tls13AeadAlgorithm,
    /// The server asked for a key update: the writer sends one before its next record.
    update_tx: bool,
    /// The alert the reader's failure calls for, not yet sent.
    alert: Option<AlertDescription>,
    /// The connection failed: the writer sends the alert and nothing else.
    failed: bool,
}

/// Locks the control block. A panic while holding it leaves at worst a key update half
/// done; the connection is useless then, but its other half must still end cleanly.
fn lock(control: &Mutex<Control>) -> MutexGuard<'_, Control> {
    control
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The receiving half: reads ciphertext and hands out plaintext.
pub struct TlsReader {
    tcp: OwnedReadHalf,
    /// Ciphertext read and not yet opened.
    input: Input,
    rx: Opener,
    shared: Arc<Shared>,
    /// The start of a post-handshake message that spans records.
    handshake: Vec<u8>,
    /// Plaintext that came with the handshake.
    early: BytesMut,
    /// The socket reached its end.
    eof: bool,
    /// The server sent close_notify.
    peer_closed: bool,
    /// A record failed; every later read fails too.
    failed: bool,
}

/// The sending half: encrypts application data and writes it.
pub struct TlsWriter {
    tcp: OwnedWriteHalf,
    tx: Sealer,
    shared: Arc<Shared>,
    /// Ciphertext to write, of which `sent` bytes are written.
    out: Vec<u8>,
    sent: usize,
    /// close_notify is in `out` (or the connection could not send it).
    close_queued: bool,
    /// The connection failed: nothing more is sealed.
    failed: bool,
}

/// A ciphertext buffer: bytes `start..end` wait to be used.
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

    /// Drops `discard` bytes that were used. They are only counted here; the rest moves
    /// to the front once, before the next read, rather than after every record.
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
        for _ in 0..MAX_READS {
            let got = self.open_records(dst)?;
            if got > 0 {
                return Poll::Ready(Ok(got));
            }
            if self.peer_closed {
                return Poll::Ready(Ok(0));
            }
            if self.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection without close_notify",
                )));
            }
            let mut spare = ReadBuf::new(self.input.spare()?);
            // A read that does not fill its space tells tokio the socket is drained, so
            // a wake-up costs one system call.
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut spare))?;
            let read = spare.filled().len();
            if read == 0 {
                self.eof = true;
            } else {
                self.input.end += read;
            }
        }
        Poll::Ready(Err(io::Error::other(
            "the server sent no application data in many reads",
        )))
    }

    /// Opens every whole record in the input, appending application data to `dst`;
    /// returns how many bytes it appended. Stops at close_notify.
    fn open_records(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        if self.failed {
            return Err(failed());
        }
        let mut got = 0;
        while !self.peer_closed {
            let filled = self.input.filled();
            let Some(&[outer, _, _, high, low]) = filled.get(..HEADER) else {
                break;
            };
            let len = usize::from(u16::from_be_bytes([high, low]));
            if outer != u8::from(ContentType::ApplicationData) {
                return Err(self.fail(
                    AlertDescription::UnexpectedMessage,
                    "the server sent an unprotected record after the handshake",
                ));
            }
            if len > MAX_CIPHERTEXT {
                return Err(self.fail(
                    AlertDescription::RecordOverflow,
                    "the server sent a record longer than TLS allows",
                ));
            }
            let Some(body) = filled.get_mut(HEADER..HEADER + len) else {
                break;
            };
            let record = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                body,
            );
            let Ok(plain) = self.rx.aead.decrypt(record, self.rx.seq) else {
                return Err(self.fail(
                    AlertDescription::BadRecordMac,
                    "a record from the server failed authentication",
                ));
            };
            let (inner, payload) = (plain.typ, plain.payload);
            if payload.len() > RECORD_PAYLOAD {
                return Err(self.fail(
                    AlertDescription::RecordOverflow,
                    "the server sent a record longer than TLS allows",
                ));
            }
            match inner {
                ContentType::ApplicationData => {
                    got += payload.len();
                    dst.extend_from_slice(payload);
                }
                ContentType::Handshake => {
                    if self.handshake.len() + payload.len() > MAX_HANDSHAKE_MESSAGE + 4 {
                        return Err(self.fail(
                            AlertDescription::DecodeError,
                            "a TLS message from the server is too large",
                        ));
                    }
                    self.handshake.extend_from_slice(payload);
                }
                ContentType::Alert => {
                    if payload == [1, 0] || payload == [2, 0] {
                        self.peer_closed = true;
                    } else {
                        let described = payload
                            .get(1)
                            .map(|code| format!("{:?}", AlertDescription::from(*code)));
                        self.failed = true;
                        self.stop_writer();
                        return Err(tls_error(rustls::Error::General(format!(
                            "the server sent the TLS alert {}",
                            described.as_deref().unwrap_or("(malformed)")
                        ))));
                    }
                }
                _ => {
                    return Err(self.fail(
                        AlertDescription::UnexpectedMessage,
                        "the server sent an unexpected TLS record",
                    ));
                }
            }
            self.rx.seq = self.rx.seq.wrapping_add(1);
            self.input.discard(HEADER + len);
            if inner == ContentType::Handshake {
                self.post_handshake()?;
            }
        }
        Ok(got)
    }

    /// Handles the whole messages collected in `handshake`: session tickets and key
    /// updates, the only handshake messages TLS 1.3 sends a client after the handshake.
    fn post_handshake(&mut self) -> io::Result<()> {
        while let Some(&[kind, a, b, c]) = self.handshake.get(..4) {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(self.fail(
                    AlertDescription::DecodeError,
                    "a TLS message from the server is too large",
                ));
            }
            if self.handshake.len() < 4 + len {
                return Ok(());
            }
            let shared = Arc::clone(&self.shared);
            let mut control = lock(&shared.control);
            match HandshakeType::from(kind) {
                HandshakeType::NewSessionTicket => {
                    let ticket = self.handshake.get(4..4 + len).unwrap_or_default();
                    if let Err(err) = control.kernel.handle_new_session_ticket(ticket) {
                        drop(control);
                        return Err(self.fail(AlertDescription::DecodeError, &err.to_string()));
                    }
                }
                HandshakeType::KeyUpdate => {
                    // A key update ends its record: what follows is under the new keys.
                    let request = match self.handshake.get(4..) {
                        Some([request @ (0 | 1)]) => *request,
                        _ => {
                            drop(control);
                            return Err(self.fail(
                                AlertDescription::DecodeError,
                                "a malformed TLS key update from the server",
                            ));
                        }
                    };
                    let (seq, secrets) = control.kernel.update_rx_secret().map_err(tls_error)?;
                    self.rx = Opener::new(control.aead, secrets, seq)?;
                    if request == 1 {
                        control.update_tx = true;
                        shared.attention.store(true, Ordering::Release);
                    }
                }
                _ => {
                    drop(control);
                    return Err(self.fail(
                        AlertDescription::UnexpectedMessage,
                        "the server sent an unexpected TLS handshake message",
                    ));
                }
            }
            drop(control);
            self.handshake.drain(..4 + len);
        }
        Ok(())
    }

    /// Marks the connection failed, leaves `alert` for the writer to send, and returns
    /// the error that says why.
    fn fail(&mut self, alert: AlertDescription, why: &str) -> io::Error {
        self.failed = true;
        let mut control = lock(&self.shared.control);
        control.alert.get_or_insert(alert);
        control.failed = true;
        self.shared.attention.store(true, Ordering::Release);
        tls_error(rustls::Error::General(why.to_owned()))
    }

    /// The server ended the connection with an alert: the writer sends nothing more.
    fn stop_writer(&self) {
        lock(&self.shared.control).failed = true;
        self.shared.attention.store(true, Ordering::Release);
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

    /// Does what the reader left for the writer: an alert (after which nothing more is
    /// sent) or the key update the server asked for.
    fn attend(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(failed());
        }
        if !self.shared.attention.load(Ordering::Acquire) {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let mut control = lock(&shared.control);
        shared.attention.store(false, Ordering::Relaxed);
        if let Some(alert) = control.alert.take() {
            self.tx
                .seal(ContentType::Alert, &[2, u8::from(alert)], &mut self.out)?;
        }
        if control.failed {
            self.failed = true;
            return Err(failed());
        }
        if std::mem::take(&mut control.update_tx) {
            // KeyUpdate, update_not_requested, under the old keys; then the new ones.
            self.tx.seal(
                ContentType::Handshake,
                &[u8::from(HandshakeType::KeyUpdate), 0, 0, 1, 0],
                &mut self.out,
            )?;
            let (seq, secrets) = control.kernel.update_tx_secret().map_err(tls_error)?;
            self.tx = Sealer::new(control.aead, secrets, seq)?;
        }
        Ok(())
    }

    /// Appends `plain` as protected records to `out` (empty), after what the reader
    /// left for the writer.
    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        self.attend()?;
        self.out
            .reserve(plain.len() + plain.len().div_ceil(RECORD_PAYLOAD) * RECORD_OVERHEAD);
        for piece in plain.chunks(RECORD_PAYLOAD) {
            self.tx
                .seal(ContentType::ApplicationData, piece, &mut self.out)?;
        }
        Ok(())
    }

    /// Appends the reader's alert, or close_notify, to `out` (empty).
    fn queue_close_notify(&mut self) {
        // Without a way to send, closing the socket is all there is left to do.
        if self.attend().is_ok() {
            let _ = self.tx.seal(
                ContentType::Alert,
                &[1, u8::from(AlertDescription::CloseNotify)],
                &mut self.out,
            );
        }
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
