//! A raw protocol client: TLS plus frames, with no client-core logic, so tests can
//! send exactly the bytes they want and see exactly what the server answers.

use crate::TIMEOUT;
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::BytesMut;
use confide_proto::frame::FrameDecoder;
use confide_proto::{
    ClientFrame, ClientHello, Event, MAX_FRAME_LEN, MessageNonce, Password, ProtoError, Reply,
    Request, RequestId, RoomId, ServerFrame, ServerHelloResult, Target, encode_frame,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Accepts whatever certificate the test server presents (tests pin nothing at this
/// level) but still checks the handshake signature.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connector for tests.
pub fn connector() -> Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Opens TLS to `addr` without sending anything else.
pub async fn tls(addr: SocketAddr) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?.to_owned();
    Ok(tokio::time::timeout(TIMEOUT, connector()?.connect(name, tcp)).await??)
}

/// A connection that speaks frames.
pub struct RawClient {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
    decoder: FrameDecoder,
    next_id: u64,
    /// Events received while waiting for responses.
    pub events: VecDeque<Event>,
    /// Responses that arrived while waiting for another one (acknowledgements of
    /// messages come after their commit, so other answers may overtake them).
    responses: HashMap<RequestId, Result<Reply, ProtoError>>,
    /// What the server said in its hello.
    pub hello: ServerHelloResult,
}

impl RawClient {
    /// Connects and completes the version handshake.
    pub async fn connect(addr: SocketAddr) -> Result<RawClient> {
        RawClient::connect_with_hello(addr, ClientHello::new("confide-testkit")).await
    }

    /// Connects and sends `hello` (which may be wrong on purpose).
    pub async fn connect_with_hello(addr: SocketAddr, hello: ClientHello) -> Result<RawClient> {
        let stream = tls(addr).await?;
        let mut client = RawClient {
            stream,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
            next_id: 1,
            events: VecDeque::new(),
            responses: HashMap::new(),
            hello: ServerHelloResult::Rejected(confide_proto::HelloRejected {
                min_version: 0,
                max_version: 0,
                message: String::new(),
            }),
        };
        client.write_value(&hello).await?;
        let payload = client
            .read_payload(TIMEOUT)
            .await?
            .context("closed before the hello answer")?;
        client.hello = confide_proto::decode_value(&payload)?;
        Ok(client)
    }

    async fn write_value<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        let mut out = BytesMut::new();
        encode_frame(value, MAX_FRAME_LEN, &mut out)?;
        self.write_bytes(&out).await
    }

    /// Writes raw bytes inside TLS.
    pub async fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn read_payload(&mut self, wait: Duration) -> Result<Option<BytesMut>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(payload) = self.decoder.next_payload(&mut self.buf)? {
                return Ok(Some(payload));
            }
            self.buf
                .reserve(self.decoder.bytes_wanted(&self.buf).max(4096));
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => bail!("timed out waiting for a frame"),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                // A reset after the server closes counts as closed.
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(None);
                }
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Ok(Err(err)) => return Err(err.into()),
            }
        }
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Option<ServerFrame>> {
        match self.read_payload(wait).await? {
            Some(payload) => Ok(Some(ServerFrame::from_payload(&payload)?)),
            None => Ok(None),
        }
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send_request(&mut self, request: Request) -> Result<RequestId> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.write_value(&ClientFrame { id, request }).await?;
        Ok(id)
    }

    /// Waits for the response to `id`, keeping events that arrive meanwhile.
    pub async fn response(&mut self, id: RequestId) -> Result<Result<Reply, ProtoError>> {
        if let Some(result) = self.responses.remove(&id) {
            return Ok(result);
        }
        loop {
            match self.next_frame(TIMEOUT).await? {
                Some(ServerFrame::Response { id: got, result }) if got == id => return Ok(result),
                Some(ServerFrame::Response { id: other, result }) => {
                    if self.responses.insert(other, result).is_some() {
                        bail!("two responses to {other:?}");
                    }
                }
                Some(ServerFrame::Event(event)) => self.events.push_back(event),
                Some(ServerFrame::Fatal(err)) => bail!("fatal error from the server: {err}"),
                None => bail!("the server closed the connection"),
            }
        }
    }

    /// Sends a request and waits for its response.
    pub async fn request(&mut self, request: Request) -> Result<Result<Reply, ProtoError>> {
        let id = self.send_request(request).await?;
        self.response(id).await
    }

    /// Sends a request that must succeed.
    pub async fn ok(&mut self, request: Request) -> Result<Reply> {
        self.request(request)
            .await?
            .map_err(|err| anyhow!("request failed: {err}"))
    }

    /// Registers `name` with a fixed test password and returns the token.
    pub async fn register(&mut self, name: &str) -> Result<confide_proto::SessionToken> {
        let reply = self
            .ok(Request::Register {
                username: name.to_owned(),
                password: Password(format!("{name} password")),
            })
            .await?;
        match reply {
            Reply::LoggedIn { token, .. } => Ok(token),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// Logs in `name` with the fixed test password.
    pub async fn login(&mut self, name: &str) -> Result<Result<Reply, ProtoError>> {
        self.request(Request::Login {
            username: name.to_owned(),
            password: Password(format!("{name} password")),
        })
        .await
    }

    /// Sends a text message and waits for its acknowledgement.
    pub async fn say(&mut self, target: Target, text: &str) -> Result<Result<Reply, ProtoError>> {
        self.request(Request::Send {
            target,
            nonce: random_nonce(),
            body: text.as_bytes().to_vec(),
        })
        .await
    }

    /// The next event, from those already received or from the wire.
    pub async fn next_event(&mut self, wait: Duration) -> Result<Event> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        match self.next_frame(wait).await? {
            Some(ServerFrame::Event(event)) => Ok(event),
            Some(other) => bail!("expected an event, got {other:?}"),
            None => bail!("the server closed the connection"),
        }
    }

    /// The id of the lobby, from the room list.
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
                .context("no lobby"),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// Waits until the server closes the connection, returning the fatal error it sent
    /// first, if any.
    pub async fn closed(&mut self, wait: Duration) -> Result<Option<ProtoError>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut fatal = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(Some(ServerFrame::Fatal(err))) => fatal = Some(err),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(fatal),
                Err(err) if fatal.is_some() && err.to_string().contains("timed out") => {
                    bail!("sent {fatal:?} but did not close")
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// A random message nonce.
#[must_use]
pub fn random_nonce() -> MessageNonce {
    MessageNonce(rand::random())
}
