//! TLS on an accepted TCP connection: rustls' unbuffered API for the handshake, then
//! the connection's own record protection with the traffic secrets rustls hands over.
//!
//! With the buffered API every connection keeps rustls' 4 KiB receive buffer for its
//! whole life. Here the server owns the buffers: ciphertext is read only once the socket
//! is readable, records are opened as soon as they are whole, and an idle connection
//! holds no buffer at all.
//!
//! Once rustls has finished the handshake, the connection takes the traffic secrets and
//! rustls' key schedule (`dangerous_into_kernel_connection`, the interface meant for
//! kernel TLS) and protects records itself ([`super::record`]). A fan-out seals one
//! record per receiver, and rustls' state machine, its per-record buffer and the copy
//! out of it were most of what the server spent on a delivery besides the system call.
//! The connection splits into a [`TlsReader`] (the request loop), which owns the
//! receiving key, and the sending side ([`TlsSink`], [`TlsWriter`]), which owns the
//! sending key. What TLS 1.3 lets a client send after the handshake is handled as rustls
//! would: a key update replaces the receiving key and, if the client asks, the server
//! answers with its own before the next record it seals; close_notify ends the stream;
//! any other alert ends the connection. A record that fails leaves the alert that says
//! why for the writer, which sends it before anything it seals after (the reader's owner
//! says when: `take_records_waiting`) and then nothing more. The sending key is replaced
//! by a key update before it reaches its suite's limit.

use super::record::{self, Fault, RecordKey};
use bytes::BytesMut;
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, UnbufferedStatus};
use rustls::{AlertDescription, SupportedCipherSuite};
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

type Status<'c, 'i> = UnbufferedStatus<'c, 'i, ServerConnectionData>;

/// What the two halves share: the sending key, and rustls' key schedule for updates.
struct Shared {
    sending: Mutex<Sending>,
    /// rustls' side of the connection after the handshake; locked only to update keys.
    kernel: Mutex<KernelConnection<ServerConnectionData>>,
    /// Records a sending key may protect (the suite's confidentiality limit).
    limit: u64,
}

/// The sending direction, used by whoever writes (the writer task or a direct write,
/// which take turns) and by the reader to answer the client.
struct Sending {
    key: RecordKey,
    /// Records the reader left (an alert, a key update answering the client's), sent
    /// before anything sealed after them.
    pending: Vec<u8>,
    /// A fatal alert was sealed or received: nothing more is sealed.
    failed: bool,
    /// close_notify was sealed: nothing more is.
    closed: bool,
    /// `pending` holds a key update answering the client's: more requests before it is
    /// sent get no answer of their own (RFC 8446, 4.6.3), so a client sending nothing
    /// but key updates cannot make the server hold more than one.
    answer_waiting: bool,
}

impl Sending {
    /// Moves the records the reader left to the end of `out`.
    fn take_pending(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
        self.answer_waiting = false;
        if self.pending.capacity() > KEEP_PENDING {
            self.pending = Vec::new();
        }
    }
}

/// Locks `mutex`. A panic while holding one of these leaves a key update half done at
/// worst; the connection is useless then, but its other half must still end cleanly.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Appends `plain` to `out` as application data records, replacing the key first
    /// whenever it is used up.
    fn seal(&self, key: &mut RecordKey, plain: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
        for piece in plain.chunks(record::MAX_PLAINTEXT) {
            if key.is_used_up() {
                self.update_sending_key(key, out)?;
            }
            key.seal(record::APPLICATION_DATA, piece, out)?;
        }
        Ok(())
    }

    /// Seals a key update (not asking the client for one) under the current key into
    /// `out`, then goes on with the next key.
    fn update_sending_key(&self, key: &mut RecordKey, out: &mut Vec<u8>) -> Result<(), Fault> {
        key.seal(record::HANDSHAKE, &record::key_update(false), out)?;
        let (seq, secrets) = lock(&self.kernel).update_tx_secret().map_err(|_| {
            Fault::new(
                AlertDescription::InternalError,
                "cannot derive the next sending key",
            )
        })?;
        *key = RecordKey::new(secrets, seq, self.limit)?;
        Ok(())
    }

    /// Leaves `alert` for the writer and stops sealing anything after it.
    fn leave_alert(&self, alert: AlertDescription) {
        let mut sending = lock(&self.sending);
        if !sending.failed && !sending.closed {
            let Sending { key, pending, .. } = &mut *sending;
            // A key past its limit cannot seal the alert; closing says enough then.
            let _ = key.seal(record::ALERT, &[2, u8::from(alert)], pending);
        }
        sending.failed = true;
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
                incoming.truncate(used);
                return split(conn, tcp, incoming, early);
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

/// Takes the traffic secrets from rustls once the handshake is done and splits the
/// connection. `input` holds what the client sent after its handshake (partial records).
fn split(
    conn: UnbufferedServerConnection,
    tcp: TcpStream,
    input: Vec<u8>,
    early: BytesMut,
) -> Result<(TlsReader, TlsWriter), AcceptError> {
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    let SupportedCipherSuite::Tls13(suite) = kernel.negotiated_cipher_suite() else {
        return Err(rustls::Error::General("TLS 1.3 was not negotiated".to_owned()).into());
    };
    let limit = suite.common.confidentiality_limit;
    let (rx_seq, rx_secrets) = secrets.rx;
    let (tx_seq, tx_secrets) = secrets.tx;
    let setup = |fault: Fault| rustls::Error::General(fault.why.to_owned());
    // Receiving, the limit is the client's to keep (rustls clients update their keys).
    let rx = RecordKey::new(rx_secrets, rx_seq, u64::MAX).map_err(setup)?;
    let tx = RecordKey::new(tx_secrets, tx_seq, limit).map_err(setup)?;
    let shared = Arc::new(Shared {
        sending: Mutex::new(Sending {
            key: tx,
            pending: Vec::new(),
            failed: false,
            closed: false,
            answer_waiting: false,
        }),
        kernel: Mutex::new(kernel),
        limit,
    });
    let (read, write) = tcp.into_split();
    let used = input.len();
    let reader = TlsReader {
        tcp: read,
        shared: Arc::clone(&shared),
        rx,
        input,
        used,
        handshake: Vec::new(),
        early,
        large: false,
        closed: false,
        notified: false,
        failed: false,
        records_waiting: false,
    };
    let writer = TlsWriter {
        sink: Arc::new(TlsSink { tcp: write, shared }),
        out: Vec::new(),
    };
    Ok((reader, writer))
}

fn failed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "the TLS connection failed")
}

fn fault_error(fault: Fault) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, fault)
}

/// The receiving half: reads ciphertext and hands out plaintext.
pub struct TlsReader {
    tcp: OwnedReadHalf,
    shared: Arc<Shared>,
    /// The receiving key.
    rx: RecordKey,
    /// Ciphertext read and not yet opened (a partial record); empty and without an
    /// allocation while the connection is idle.
    input: Vec<u8>,
    used: usize,
    /// The start of a key update that spans records.
    handshake: Vec<u8>,
    /// Plaintext that arrived with the handshake.
    early: BytesMut,
    /// The last read filled its space: read larger pieces.
    large: bool,
    /// The peer ended its side (close_notify or end of stream).
    closed: bool,
    /// The peer sent close_notify: what follows it is ignored.
    notified: bool,
    /// A record failed or the client sent a fatal alert; every later read fails too.
    failed: bool,
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

    /// Reads what the socket has (with `read`, without waiting), then opens every whole
    /// record, appending application data to `dst`.
    fn process(&mut self, dst: &mut BytesMut, read: bool) -> io::Result<usize> {
        if self.failed {
            return Err(failed());
        }
        if read && !self.closed {
            let step = if self.large { LARGE_READ } else { SMALL_READ };
            if self.input.len() < self.used + step {
                self.input.resize(self.used + step, 0);
            }
            match self.tcp.try_read(&mut self.input[self.used..]) {
                Ok(0) => self.closed = true,
                Ok(read) => {
                    self.large = self.used + read == self.input.len();
                    self.used += read;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        let opened = self.open_records(dst);
        if self.used == 0 && !self.input.is_empty() {
            // Nothing partial is waiting: an idle connection holds no buffer.
            self.input = Vec::new();
        }
        match opened {
            Ok(got) => Ok(got),
            Err(Some(fault)) => {
                self.failed = true;
                self.shared.leave_alert(fault.alert);
                self.records_waiting = true;
                Err(fault_error(fault))
            }
            Err(None) => {
                // The client ended TLS with a fatal alert: nothing is sent back.
                self.failed = true;
                lock(&self.shared.sending).failed = true;
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client ended TLS with an alert",
                ))
            }
        }
    }

    /// Opens the whole records in the input, appending application data to `dst`, and
    /// removes them from the input. Stops at close_notify. `Err(None)` is the client's
    /// fatal alert.
    fn open_records(&mut self, dst: &mut BytesMut) -> Result<usize, Option<Fault>> {
        let mut got = 0;
        let mut start = 0;
        let result = loop {
            if self.notified {
                // Anything after close_notify is ignored.
                start = self.used;
                break Ok(());
            }
            let rest = &mut self.input[start..self.used];
            let len = match record::record_len(rest) {
                Ok(Some(len)) if len <= rest.len() => len,
                Ok(_) => break Ok(()),
                Err(fault) => break Err(Some(fault)),
            };
            let (header, body) = rest[..len].split_at_mut(record::HEADER);
            let (inner, payload) = match self.rx.open(header, body) {
                Ok(opened) => opened,
                Err(fault) => break Err(Some(fault)),
            };
            start += len;
            if !self.handshake.is_empty() && inner != record::HANDSHAKE {
                break Err(Some(Fault::new(
                    AlertDescription::UnexpectedMessage,
                    "a record inside a handshake message",
                )));
            }
            match inner {
                record::APPLICATION_DATA => {
                    got += payload.len();
                    dst.extend_from_slice(payload);
                }
                record::HANDSHAKE if !payload.is_empty() => {
                    self.handshake.extend_from_slice(payload);
                    if let Err(fault) = self.post_handshake() {
                        break Err(Some(fault));
                    }
                }
                record::ALERT => match payload {
                    [_, 0] => {
                        self.notified = true;
                        self.closed = true;
                    }
                    // user_canceled: a warning, close_notify follows.
                    [1, 90] => {}
                    [_, _] => break Err(None),
                    _ => {
                        break Err(Some(Fault::new(
                            AlertDescription::DecodeError,
                            "a malformed alert",
                        )));
                    }
                },
                _ => {
                    break Err(Some(Fault::new(
                        AlertDescription::UnexpectedMessage,
                        "a record of an unexpected content type",
                    )));
                }
            }
        };
        if start > 0 {
            self.input.copy_within(start..self.used, 0);
            self.used -= start;
        }
        result.map(|()| got)
    }

    /// Handles the handshake message collected so far: after the handshake, a client
    /// may only send key updates.
    fn post_handshake(&mut self) -> Result<(), Fault> {
        let Some(&[kind, a, b, c]) = self.handshake.get(..4) else {
            return Ok(());
        };
        if kind != record::KEY_UPDATE {
            return Err(Fault::new(
                AlertDescription::UnexpectedMessage,
                "a handshake message other than a key update after the handshake",
            ));
        }
        if [a, b, c] != [0, 0, 1] {
            return Err(Fault::new(
                AlertDescription::DecodeError,
                "a malformed key update",
            ));
        }
        let requested = match self.handshake.get(4..) {
            None | Some([]) => return Ok(()),
            Some([0]) => false,
            Some([1]) => true,
            Some([_]) => {
                return Err(Fault::new(
                    AlertDescription::IllegalParameter,
                    "a malformed key update",
                ));
            }
            // What follows a key update is under the new key: it must end its record.
            Some(_) => {
                return Err(Fault::new(
                    AlertDescription::UnexpectedMessage,
                    "a key update that does not end its record",
                ));
            }
        };
        self.handshake = Vec::new();
        let next = lock(&self.shared.kernel).update_rx_secret();
        let (seq, secrets) = next.map_err(|_| {
            Fault::new(
                AlertDescription::InternalError,
                "cannot derive the next receiving key",
            )
        })?;
        self.rx = RecordKey::new(secrets, seq, u64::MAX)?;
        if requested {
            let mut guard = lock(&self.shared.sending);
            let sending = &mut *guard;
            if !sending.failed && !sending.closed && !sending.answer_waiting {
                // The answer goes out before anything sealed under the new key.
                let Sending { key, pending, .. } = sending;
                self.shared.update_sending_key(key, pending)?;
                sending.answer_waiting = true;
                self.records_waiting = true;
            }
        }
        Ok(())
    }
}

/// The sending side of the socket with the connection's sending key: shared by the
/// writer task and by whoever writes to an idle connection directly (see `outbound`).
/// It does not order writers; its users take turns.
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
        let mut guard = lock(&self.shared.sending);
        let sending = &mut *guard;
        if !plain.is_empty() && (sending.failed || sending.closed) {
            // What the reader left (the alert saying why) stays for the close.
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection can no longer send",
            ));
        }
        sending.take_pending(out);
        if plain.is_empty() {
            return Ok(());
        }
        out.reserve(plain.len() + plain.len().div_ceil(record::MAX_PLAINTEXT) * record::OVERHEAD);
        let start = out.len();
        self.shared
            .seal(&mut sending.key, plain, out)
            .map_err(|fault| {
                // Nothing half sealed goes out; nothing more is sealed after.
                out.truncate(start);
                sending.failed = true;
                fault_error(fault)
            })
    }
    /// Writes as much of `bytes` as the socket takes without waiting; 0 if it takes
    /// nothing now.
    ///
    /// # Errors
    /// If the socket failed.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        // Straight to the (non-blocking) socket rather than through tokio's readiness
        // state, which a fan-out would otherwise load for every receiver. A socket that
        // is full here is found full again by the writer task, which then waits.
        let tcp: &TcpStream = self.tcp.as_ref();
        match rustix::net::send(tcp, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(written) => Ok(written),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(0),
            Err(err) => Err(err.into()),
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
        let mut guard = lock(&self.shared.sending);
        let sending = &mut *guard;
        sending.take_pending(out);
        if sending.failed || sending.closed {
            // The fatal alert, if any, was the last record.
            return;
        }
        sending.closed = true;
        // A key past its limit cannot seal it; closing the socket says enough then.
        let _ = sending.key.seal(
            record::ALERT,
            &[1, u8::from(AlertDescription::CloseNotify)],
            out,
        );
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
        if sealed.is_err() {
            // The connection can no longer send data, but the alert that says why
            // still goes out (the writer may end without closing after this).
            self.out.clear();
            let _ = self.sink.seal(&[], &mut self.out);
        }
        let written = if self.out.is_empty() {
            Ok(())
        } else {
            self.sink.write_all(&self.out).await
        };
        self.out.clear();
        sealed.and(written)
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
    use tokio_rustls::client::TlsStream;

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
            client_to_server(&mut client, &mut reader, &pattern(len, 7)).await;
            server_to_client(&mut writer, &mut client, &pattern(len, 99)).await;
        }
        // Idle again: waiting for more holds no buffer on either side.
        let mut more = BytesMut::new();
        let waited = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut more)).await;
        assert!(waited.is_err(), "nothing was sent");
        assert_eq!((reader.input.capacity(), reader.used), (0, 0));
        writer.release_buffers();
        assert_eq!(writer.out.capacity(), 0);
    }

    /// The client sends `data`; the server's reader gets it.
    async fn client_to_server(
        client: &mut TlsStream<TcpStream>,
        reader: &mut TlsReader,
        data: &[u8],
    ) {
        client.write_all(data).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(read_exactly(reader, data.len()).await.as_ref(), data);
    }

    /// The server's writer sends `data`; the client gets it.
    async fn server_to_client(
        writer: &mut TlsWriter,
        client: &mut TlsStream<TcpStream>,
        data: &[u8],
    ) {
        writer.write(data).await.unwrap();
        let mut got = vec![0; data.len()];
        tokio::time::timeout(LIMIT, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn key_updates_asked_for_while_the_server_is_silent_get_one_answer() {
        let (mut reader, mut writer, mut client, _dir) = pair().await;
        for _ in 0..50 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
        }
        client_to_server(&mut client, &mut reader, b"after").await;
        assert!(reader.take_records_waiting());
        {
            let sending = lock(&reader.shared.sending);
            // One key update record: header, message, content type and tag.
            assert_eq!(sending.pending.len(), record::OVERHEAD + 5);
        }
        // The client follows the one update to the data after it, twice over.
        for round in 0..2u8 {
            server_to_client(&mut writer, &mut client, &pattern(700, round)).await;
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client_to_server(&mut client, &mut reader, b"again").await;
        }
    }

    #[tokio::test]
    async fn a_key_update_the_client_asks_for_is_answered_before_more_data() {
        let (mut reader, mut writer, mut client, _dir) = pair().await;
        for round in 0..3u8 {
            // The client asks the server to update its keys too; the server's answer
            // must reach the client before data sealed under the server's new keys.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client_to_server(&mut client, &mut reader, &pattern(1000, round)).await;
            let back = pattern(2000, round.wrapping_add(50));
            server_to_client(&mut writer, &mut client, &back).await;
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

    /// A server half and a client that takes over its record layer: the raw socket and
    /// the client's traffic secrets, to send records rustls would not.
    async fn raw_pair() -> (
        TlsReader,
        TlsWriter,
        TcpStream,
        rustls::ExtractedSecrets,
        tempfile::TempDir,
    ) {
        let (reader, writer, client, dir) = pair().await;
        let (tcp, conn) = client.into_inner();
        let secrets = conn.dangerous_extract_secrets().unwrap();
        (reader, writer, tcp, secrets, dir)
    }

    /// Reads what the server sends until it ends its side, and opens it as the client
    /// with the server's traffic secret from `rx`: every record but session tickets.
    async fn server_records(
        tcp: &mut TcpStream,
        rx: (u64, rustls::ConnectionTrafficSecrets),
    ) -> Vec<(rustls::ContentType, Vec<u8>)> {
        let mut answer = Vec::new();
        tokio::time::timeout(LIMIT, tcp.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let (seq, receiving) = rx;
        open_records(receiving, seq, &mut answer)
            .into_iter()
            .filter(|(kind, _)| *kind != rustls::ContentType::Handshake)
            .collect()
    }

    /// Seals `pieces` as the client in TLS 1.3 records, one record per piece of its
    /// content type, with the client's extracted traffic keys.
    fn client_records(
        secrets: rustls::ConnectionTrafficSecrets,
        first_seq: u64,
        pieces: &[(rustls::ContentType, &[u8])],
    ) -> Vec<Vec<u8>> {
        use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
        let (aead, key, iv) = aead_of(secrets);
        let mut encrypter = aead.encrypter(key, iv);
        pieces
            .iter()
            .zip(first_seq..)
            .map(|((content, piece), seq)| {
                let plain = OutboundPlainMessage {
                    typ: *content,
                    version: rustls::ProtocolVersion::TLSv1_2,
                    payload: OutboundChunks::Single(piece),
                };
                encrypter.encrypt(plain, seq).unwrap().encode()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_handshake_message_split_over_records_does_not_break_sending() {
        let (mut reader, mut writer, mut tcp, secrets, _dir) = raw_pair().await;
        let (seq, sending) = secrets.tx;
        // A key update (type 24, one byte of body: no update requested) in two records.
        let handshake = rustls::ContentType::Handshake;
        let records = client_records(
            sending,
            seq,
            &[(handshake, &[24, 0]), (handshake, &[0, 1, 0])],
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
        // The data in order, then close_notify.
        let opened = server_records(&mut tcp, secrets.rx).await;
        let data: Vec<u8> = opened
            .iter()
            .filter(|(kind, _)| *kind == rustls::ContentType::ApplicationData)
            .flat_map(|(_, data)| data.iter().copied())
            .collect();
        assert_eq!(data, b"directwrittenafter");
        let last = opened.last().unwrap();
        assert_eq!(*last, (rustls::ContentType::Alert, vec![1, 0]));
    }

    /// Sends `records` (built from the client's sending secrets and sequence number) on a
    /// fresh connection, expects the reader to fail, and returns the records the server
    /// sent back (tickets left out) until its writer ended, opened as the client.
    async fn answer_to(
        records: impl FnOnce(rustls::ConnectionTrafficSecrets, u64) -> Vec<Vec<u8>>,
    ) -> Vec<(rustls::ContentType, Vec<u8>)> {
        let (mut reader, mut writer, mut tcp, secrets, _dir) = raw_pair().await;
        let (seq, sending) = secrets.tx;
        for record in records(sending, seq) {
            tcp.write_all(&record).await.unwrap();
        }
        let mut got = BytesMut::new();
        let result = tokio::time::timeout(LIMIT, async {
            loop {
                match reader.read(&mut got).await {
                    Ok(0) => break Ok(0),
                    Ok(_) => {}
                    Err(err) => break Err(err),
                }
            }
        })
        .await
        .unwrap();
        assert!(result.is_err(), "the records were accepted: {result:?}");
        // A writer with data to send finds the connection failed: it sends the alert
        // and nothing else, and ends without closing (dropping its socket half).
        assert!(
            writer.write(b"after the failure").await.is_err(),
            "nothing is sealed after a failure"
        );
        drop(writer);
        server_records(&mut tcp, secrets.rx).await
    }

    /// The alert `answer_to` found, and that it was the last record.
    fn fatal_alert(answer: &[(rustls::ContentType, Vec<u8>)]) -> AlertDescription {
        match answer {
            [(rustls::ContentType::Alert, alert)] if alert.len() == 2 && alert[0] == 2 => {
                AlertDescription::from(alert[1])
            }
            other => panic!("not one fatal alert: {other:?}"),
        }
    }

    #[tokio::test]
    async fn records_a_client_may_not_send_are_answered_with_the_right_alert() {
        use rustls::ContentType::{Alert, ApplicationData, Handshake};
        type Build = fn(rustls::ConnectionTrafficSecrets, u64) -> Vec<Vec<u8>>;
        let cases: [(&str, Build, AlertDescription); 6] = [
            (
                "a session ticket from the client",
                |keys, seq| client_records(keys, seq, &[(Handshake, &[4, 0, 0, 1, 0])]),
                AlertDescription::UnexpectedMessage,
            ),
            (
                "application data inside a split key update",
                |keys, seq| {
                    client_records(keys, seq, &[(Handshake, &[24, 0]), (ApplicationData, b"x")])
                },
                AlertDescription::UnexpectedMessage,
            ),
            (
                "a key update with more in its record",
                |keys, seq| client_records(keys, seq, &[(Handshake, &[24, 0, 0, 1, 0, 24])]),
                AlertDescription::UnexpectedMessage,
            ),
            (
                "a key update with a bad request byte",
                |keys, seq| client_records(keys, seq, &[(Handshake, &[24, 0, 0, 1, 7])]),
                AlertDescription::IllegalParameter,
            ),
            (
                "an alert of three bytes",
                |keys, seq| client_records(keys, seq, &[(Alert, &[2, 40, 0])]),
                AlertDescription::DecodeError,
            ),
            (
                "an unprotected handshake record",
                |_, _| vec![vec![22, 3, 3, 0, 4, 24, 0, 0, 1]],
                AlertDescription::UnexpectedMessage,
            ),
        ];
        for (what, build, expected) in cases {
            let answer = answer_to(build).await;
            assert_eq!(fatal_alert(&answer), expected, "{what}");
        }
    }

    #[tokio::test]
    async fn a_fatal_alert_from_the_client_is_not_answered() {
        let answer = answer_to(|keys, seq| {
            client_records(keys, seq, &[(rustls::ContentType::Alert, &[2, 40])])
        })
        .await;
        assert!(answer.is_empty(), "the server answered {answer:?}");
    }

    #[tokio::test]
    async fn empty_records_are_taken_and_close_notify_ends_reading_but_not_sending() {
        use rustls::ContentType::{Alert, ApplicationData};
        let (mut reader, mut writer, mut tcp, secrets, _dir) = raw_pair().await;
        let (seq, sending) = secrets.tx;
        let records = client_records(
            sending,
            seq,
            &[
                (ApplicationData, b""),
                (ApplicationData, b"one"),
                (ApplicationData, b""),
                (Alert, &[1, 0]),
                (ApplicationData, b"late"),
            ],
        );
        tcp.write_all(&records.concat()).await.unwrap();
        assert_eq!(read_exactly(&mut reader, 3).await.as_ref(), b"one");
        let mut rest = BytesMut::new();
        let read = tokio::time::timeout(LIMIT, reader.read(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (read, rest.as_ref()),
            (0, &b""[..]),
            "what follows close_notify"
        );
        // The server's side stays open until it closes it.
        writer.write(b"still here").await.unwrap();
        writer.close().await;
        assert_eq!(
            server_records(&mut tcp, secrets.rx).await,
            [
                (ApplicationData, b"still here".to_vec()),
                (Alert, vec![1, 0]),
            ]
        );
    }

    #[tokio::test]
    async fn the_sending_key_is_replaced_when_it_reaches_its_limit() {
        let (_reader, mut writer, mut client, _dir) = pair().await;
        lock(&writer.sink.shared.sending).key.set_limit(3);
        // More records than the limit, in one write and in several.
        let big = pattern(5 * record::MAX_PLAINTEXT + 10, 3);
        server_to_client(&mut writer, &mut client, &big).await;
        for round in 0..4u8 {
            server_to_client(&mut writer, &mut client, &pattern(100, round)).await;
        }
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
