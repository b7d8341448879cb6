//! A simulated Confide user's connection: TLS 1.3 with the server's certificate pinned
//! by fingerprint, the version handshake, and requests answered in order during setup.
//!
//! This is a raw protocol client with none of the real client's logic: it decrypts no
//! message bodies (the bench's bodies are plaintext stamps) and keeps only what the
//! workloads need (session token, the last sequence number seen per room). TLS runs on
//! rustls' unbuffered API ([`crate::tls`]); once set up, a connection hands out its
//! reader and writer for the measured phase ([`Session::into_link`]).

use crate::body::Stamp;
use crate::tls::{TlsReader, TlsWriter};
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::BytesMut;
use confide_proto::frame::FrameDecoder;
use confide_proto::{
    ClientFrame, ClientHello, EntryKind, Event, LogEntry, MAX_FRAME_LEN, Password, ProtoError,
    Reply, Request, RequestId, RoomId, Seq, ServerFrame, ServerHelloResult, SessionToken,
    SyncCursor, encode_frame,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// How long one setup step (connect, handshake, one request) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The password of every simulated user.
pub const PASSWORD: &str = "bench password";

/// Most entries asked for in one sync page (the protocol's maximum).
const SYNC_PAGE: u32 = 1000;

/// The name of simulated user `index`.
#[must_use]
pub fn user_name(index: u32) -> String {
    format!("b{index:04}")
}

/// Accepts exactly the certificate whose SHA-256 was printed by the server, and checks
/// the TLS 1.3 handshake signature with it.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if presented == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate does not match the fingerprint it printed".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client configuration that pins `fingerprint`. Session resumption is off:
/// every simulated user is a separate client and pays for a full handshake.
///
/// # Errors
/// If rustls refuses the configuration.
pub fn tls_config(fingerprint: [u8; 32]) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    // After the handshake the bench protects records itself (`tls`).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// A connection in the measured phase: a reader, a writer and bytes already read.
pub struct Link {
    /// Reads from the server.
    pub reader: LinkReader,
    /// Writes to the server.
    pub writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    /// Bytes read during setup that belong to frames not yet handled.
    pub pending: BytesMut,
}

/// The reading side of a [`Link`].
pub enum LinkReader {
    /// Confide, over TLS.
    Tls(TlsReader),
    /// The relay, over plain TCP.
    Plain(OwnedReadHalf),
}

impl LinkReader {
    /// Waits for bytes and appends them to `dst`; returns how many, 0 at the end.
    ///
    /// Cancel safe.
    ///
    /// # Errors
    /// If the connection fails.
    pub async fn read(&mut self, dst: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            LinkReader::Tls(reader) => reader.read(dst).await,
            LinkReader::Plain(reader) => reader.read_buf(dst).await,
        }
    }
}

/// A logged-in (or logging-in) Confide connection used one request at a time.
pub struct Session {
    reader: TlsReader,
    writer: TlsWriter,
    buf: BytesMut,
    decoder: FrameDecoder,
    next_id: u64,
    /// The highest sequence number seen per room, from events and sync replies.
    pub cursors: HashMap<RoomId, Seq>,
    /// Bench messages that arrived while waiting for a response.
    pub stamps: Vec<Stamp>,
}

impl Session {
    /// Opens TLS to `addr` and completes the version handshake.
    ///
    /// # Errors
    /// If the connection, TLS or the hello fails, or takes over [`STEP_TIMEOUT`].
    pub async fn connect(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<Session> {
        let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .context("TCP connect failed")?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?.to_owned();
        let (reader, writer) = tokio::time::timeout(
            STEP_TIMEOUT,
            crate::tls::connect(tcp, Arc::clone(tls), name),
        )
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
        let mut session = Session {
            reader,
            writer,
            buf: BytesMut::with_capacity(4096),
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
            next_id: 1,
            cursors: HashMap::new(),
            stamps: Vec::new(),
        };
        session
            .write_value(&ClientHello::new(concat!(
                "confide-bench ",
                env!("CARGO_PKG_VERSION")
            )))
            .await?;
        let payload = session
            .read_payload()
            .await?
            .context("the server closed the connection before answering the hello")?;
        match confide_proto::decode_value::<ServerHelloResult>(&payload)? {
            ServerHelloResult::Accepted(_) => Ok(session),
            ServerHelloResult::Rejected(rejected) => {
                bail!("the server rejected the hello: {}", rejected.message)
            }
        }
    }

    async fn write_value<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        let mut out = BytesMut::new();
        encode_frame(value, MAX_FRAME_LEN, &mut out)?;
        tokio::time::timeout(STEP_TIMEOUT, async {
            self.writer.write_all(&out).await?;
            self.writer.flush().await
        })
        .await
        .context("write timed out")?
        .context("write failed")
    }

    async fn read_payload(&mut self) -> Result<Option<BytesMut>> {
        loop {
            if let Some(payload) = self.decoder.next_payload(&mut self.buf)? {
                return Ok(Some(payload));
            }
            self.buf
                .reserve(self.decoder.bytes_wanted(&self.buf).max(4096));
            let read = tokio::time::timeout(STEP_TIMEOUT, self.reader.read(&mut self.buf))
                .await
                .context("timed out waiting for the server")?;
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(err) => return Err(err).context("read failed"),
            }
        }
    }

    /// Sends `request` and waits for its response, noting events that arrive meanwhile.
    ///
    /// # Errors
    /// If the connection fails or the server sends a fatal error.
    pub async fn request(&mut self, request: Request) -> Result<Result<Reply, ProtoError>> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.write_value(&ClientFrame { id, request }).await?;
        loop {
            let payload = self
                .read_payload()
                .await?
                .context("the server closed the connection")?;
            match ServerFrame::from_payload(&payload)? {
                ServerFrame::Response { id: got, result } if got == id => return Ok(result),
                ServerFrame::Response { .. } => {}
                ServerFrame::Event(Event::Entry(entry)) => self.note_entry(&entry),
                ServerFrame::Event(_) => {}
                ServerFrame::Fatal(err) => bail!("the server ended the connection: {err}"),
            }
        }
    }

    async fn ok(&mut self, request: Request) -> Result<Reply> {
        let kind = request.kind();
        self.request(request)
            .await?
            .map_err(|err| anyhow!("{kind} failed: {err}"))
    }

    fn note_entry(&mut self, entry: &LogEntry) {
        let cursor = self.cursors.entry(entry.room).or_default();
        *cursor = (*cursor).max(entry.seq);
        if let EntryKind::Message { body } = &entry.kind
            && let Some(stamp) = Stamp::parse(body)
        {
            self.stamps.push(stamp);
        }
    }

    /// Creates account `name` and logs in; returns the session token.
    ///
    /// # Errors
    /// If the server refuses.
    pub async fn register(&mut self, name: &str) -> Result<SessionToken> {
        let reply = self
            .ok(Request::Register {
                username: name.to_owned(),
                password: Password(PASSWORD.to_owned()),
            })
            .await?;
        match reply {
            Reply::LoggedIn { token, .. } => Ok(token),
            other => bail!("unexpected answer to register: {other:?}"),
        }
    }

    /// Logs in again with a token from an earlier login.
    ///
    /// # Errors
    /// If the server refuses.
    pub async fn resume(&mut self, token: SessionToken) -> Result<()> {
        match self.ok(Request::Resume { token }).await? {
            Reply::LoggedIn { .. } => Ok(()),
            other => bail!("unexpected answer to resume: {other:?}"),
        }
    }

    /// The lobby's id.
    ///
    /// # Errors
    /// If the server has no lobby.
    pub async fn lobby(&mut self) -> Result<RoomId> {
        match self.ok(Request::ListRooms).await? {
            Reply::Rooms(rooms) => rooms
                .into_iter()
                .find(|room| {
                    room.name
                        .as_ref()
                        .is_some_and(|name| name.as_str() == "lobby")
                })
                .map(|room| room.id)
                .context("the server has no lobby"),
            other => bail!("unexpected answer to list rooms: {other:?}"),
        }
    }

    /// Joins public room `name`, creating it if nobody has yet.
    ///
    /// # Errors
    /// If the server refuses both.
    pub async fn join_or_create(&mut self, name: &str) -> Result<RoomId> {
        // Whoever comes first creates the room; the others join. Two that race to
        // create it are sorted out by `RoomExists`.
        for _ in 0..3 {
            let join = self
                .request(Request::Join {
                    name: name.to_owned(),
                })
                .await?;
            match join {
                Ok(Reply::Room(room)) => return Ok(room.id),
                Ok(other) => bail!("unexpected answer to join: {other:?}"),
                Err(err) if err.code == confide_proto::ErrorCode::NoSuchRoom => {}
                Err(err) => bail!("join failed: {err}"),
            }
            let create = self
                .request(Request::CreateRoom {
                    name: name.to_owned(),
                    private: false,
                    // No group is ever created, so the room relays the tool's plain
                    // bodies as before.
                    encryption: confide_proto::RoomEncryption::Mls,
                })
                .await?;
            match create {
                Ok(Reply::Room(room)) => return Ok(room.id),
                Ok(other) => bail!("unexpected answer to create room: {other:?}"),
                Err(err) if err.code == confide_proto::ErrorCode::RoomExists => {}
                Err(err) => bail!("create room failed: {err}"),
            }
        }
        bail!("could not join or create room {name}")
    }

    /// Syncs from the current cursors until the server has nothing more; returns how
    /// many pages it took.
    ///
    /// # Errors
    /// If a sync fails.
    pub async fn sync_all(&mut self) -> Result<u32> {
        let mut pages = 0;
        loop {
            let cursors = self
                .cursors
                .iter()
                .map(|(&room, &seen)| SyncCursor { room, seen })
                .collect();
            let reply = self
                .ok(Request::Sync {
                    cursors,
                    limit: SYNC_PAGE,
                })
                .await?;
            pages += 1;
            let Reply::Synced { entries, more, .. } = reply else {
                bail!("unexpected answer to sync");
            };
            for entry in &entries {
                self.note_entry(entry);
            }
            if !more {
                return Ok(pages);
            }
            if entries.is_empty() {
                bail!("the server said more entries wait but sent none");
            }
        }
    }

    /// Hands out the connection's reader and writer for the measured phase. Request ids
    /// after this must not collide with the ones used so far, which stay below
    /// [`Session::next_request_id`].
    #[must_use]
    pub fn into_link(self) -> Link {
        Link {
            reader: LinkReader::Tls(self.reader),
            writer: Box::new(self.writer),
            pending: self.buf,
        }
    }

    /// Closes the connection cleanly (TLS close_notify), so the server sees a close and
    /// not an error.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer.shutdown()).await;
    }

    /// The next request id this session would use.
    #[must_use]
    pub fn next_request_id(&self) -> u64 {
        self.next_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_valid() {
        for index in [0, 7, 9999, 10_000, 123_456] {
            let name = user_name(index);
            assert!(confide_proto::UserName::parse(&name).is_ok(), "{name}");
        }
        assert_eq!(user_name(1), "b0001");
    }
}
