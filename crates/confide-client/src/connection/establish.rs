//! Opening one logged-in connection: TCP, TLS with pinning, the version handshake and
//! the login request.
//!
//! Used for the first connection (whose errors [`crate::Client::connect`] returns
//! directly) and for every reconnection. It reads and writes the stream itself only
//! until the login reply; after that the connection's reader and writer tasks own it.
//! It must not touch the profile (the caller records pins and sessions).

use super::tls::{self, TlsFailure};
use crate::address::ServerAddress;
use crate::error::ClientError;
use crate::fingerprint::Fingerprint;
use bytes::BytesMut;
use confide_proto::{
    ClientFrame, ClientHello, ErrorCode, FrameDecoder, MAX_FRAME_LEN, Password, ProtoError, Reply,
    Request, RequestId, ServerFrame, ServerHello, ServerHelloResult, SessionToken, UserId,
    UserName, decode_value, encode_frame,
};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Smallest read the handshake asks for, so reads are never tiny.
const MIN_READ: usize = 8 * 1024;

/// How to log in on a new connection.
#[derive(Debug, Clone)]
pub(crate) enum Login {
    /// Create the account.
    Register {
        username: UserName,
        password: Password,
    },
    /// Log in with the password.
    Password {
        username: UserName,
        password: Password,
    },
    /// Resume with the token; if it is refused, log in with the fallback password.
    Token {
        token: SessionToken,
        fallback: Option<(UserName, Password)>,
    },
}

/// Which certificate to accept.
#[derive(Debug, Clone)]
pub(crate) struct Pin {
    /// The fingerprint to require; `None` accepts any (trust on first use).
    pub expected: Option<Fingerprint>,
    /// Whether `expected` was given by the caller rather than read from the profile.
    pub explicit: bool,
    /// Where the pin is stored, for the error message.
    pub known_servers: PathBuf,
}

/// A logged-in connection, ready to be handed to the reader and writer tasks.
pub(crate) struct Established {
    pub stream: TlsStream<TcpStream>,
    /// Bytes already read past the login reply.
    pub buffer: BytesMut,
    /// Frames that arrived before the login reply.
    pub early_frames: Vec<ServerFrame>,
    pub fingerprint: Fingerprint,
    pub hello: ServerHello,
    pub user_id: UserId,
    pub username: UserName,
    pub token: SessionToken,
    /// The next request id to use on this connection.
    pub next_id: u64,
}

/// Connects, checks the certificate against `pin`, says hello and logs in, all within
/// `timeout`.
pub(crate) async fn establish(
    server: &ServerAddress,
    pin: &Pin,
    software: &str,
    login: &Login,
    timeout: Duration,
) -> Result<Established, ClientError> {
    tokio::time::timeout(timeout, establish_now(server, pin, software, login))
        .await
        .map_err(|_| ClientError::ConnectTimeout {
            server: server.clone(),
            after: timeout,
        })?
}

async fn establish_now(
    server: &ServerAddress,
    pin: &Pin,
    software: &str,
    login: &Login,
) -> Result<Established, ClientError> {
    let (stream, fingerprint) = tls::connect(server, pin.expected)
        .await
        .map_err(|failure| tls_error(server, pin, failure))?;
    let mut io = Handshake {
        server,
        stream,
        buffer: BytesMut::with_capacity(MIN_READ),
        decoder: FrameDecoder::new(MAX_FRAME_LEN),
        early_frames: Vec::new(),
        next_id: 1,
    };

    io.write(&ClientHello::new(software), false).await?;
    let payload = io.read_payload().await?;
    let hello = match decode_value::<ServerHelloResult>(&payload) {
        Ok(ServerHelloResult::Accepted(hello)) => hello,
        Ok(ServerHelloResult::Rejected(rejected)) => {
            return Err(ClientError::Rejected {
                server: server.clone(),
                message: rejected.message,
            });
        }
        Err(err) => {
            return Err(ClientError::Protocol(format!(
                "{server} did not answer the version handshake like a Confide server: {err}"
            )));
        }
    };

    let reply = match login {
        Login::Register { username, password } => {
            io.request(Request::Register {
                username: username.to_string(),
                password: password.clone(),
            })
            .await?
        }
        Login::Password { username, password } => io.login(username, password).await?,
        Login::Token { token, fallback } => {
            match io
                .request(Request::Resume {
                    token: token.clone(),
                })
                .await?
            {
                Err(err) if err.code == ErrorCode::InvalidSession => match fallback {
                    Some((username, password)) => io.login(username, password).await?,
                    None => return Err(ClientError::SessionExpired),
                },
                other => other,
            }
        }
    };
    match reply {
        Ok(Reply::LoggedIn {
            user_id,
            username,
            token,
        }) => Ok(Established {
            stream: io.stream,
            buffer: io.buffer,
            early_frames: io.early_frames,
            fingerprint,
            hello,
            user_id,
            username,
            token,
            next_id: io.next_id,
        }),
        Ok(other) => Err(ClientError::Protocol(format!(
            "unexpected answer to login: {}",
            reply_kind(&other)
        ))),
        Err(err) => Err(ClientError::Server(err)),
    }
}

fn tls_error(server: &ServerAddress, pin: &Pin, failure: TlsFailure) -> ClientError {
    match failure {
        TlsFailure::Connect(source) => ClientError::Connect {
            server: server.clone(),
            source,
        },
        TlsFailure::Handshake {
            error,
            presented: Some(presented),
        } => match pin.expected {
            Some(expected) if expected != presented && pin.explicit => {
                ClientError::FingerprintMismatch {
                    server: server.clone(),
                    expected,
                    presented,
                }
            }
            Some(pinned) if pinned != presented => ClientError::FingerprintChanged {
                server: server.clone(),
                pinned,
                presented,
                known_servers: pin.known_servers.clone(),
            },
            _ => ClientError::Tls {
                server: server.clone(),
                source: error,
            },
        },
        TlsFailure::Handshake { error, .. } => ClientError::Tls {
            server: server.clone(),
            source: error,
        },
    }
}

/// A short name for a reply, for error messages.
pub(crate) fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Ok => "ok",
        Reply::LoggedIn { .. } => "logged_in",
        Reply::Sent { .. } => "sent",
        Reply::Synced { .. } => "synced",
        Reply::History { .. } => "history",
        Reply::Rooms(_) => "rooms",
        Reply::Members(_) => "members",
        Reply::Room(_) => "room",
        Reply::Pong { .. } => "pong",
        Reply::Identity { .. } => "identity",
        Reply::KeyPackageStock { .. } => "key_package_stock",
        Reply::KeyPackages(_) => "key_packages",
        Reply::Committed { .. } => "committed",
        Reply::GroupInfo { .. } => "group_info",
        Reply::Welcomes(_) => "welcomes",
        Reply::Blob(_) => "blob",
        Reply::Chunk { .. } => "chunk",
    }
}

/// The stream during the handshake, with its receive buffer.
struct Handshake<'a> {
    server: &'a ServerAddress,
    stream: TlsStream<TcpStream>,
    buffer: BytesMut,
    decoder: FrameDecoder,
    early_frames: Vec<ServerFrame>,
    next_id: u64,
}

impl Handshake<'_> {
    fn lost(&self, source: std::io::Error) -> ClientError {
        ClientError::Connect {
            server: self.server.clone(),
            source,
        }
    }

    /// Writes one frame. With `secret`, the encoded bytes are wiped after writing
    /// (they hold a password or token).
    async fn write<T: Serialize>(&mut self, value: &T, secret: bool) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        encode_frame(value, MAX_FRAME_LEN, &mut out)?;
        let result = self.stream.write_all(&out).await;
        let result = match result {
            Ok(()) => self.stream.flush().await,
            Err(err) => Err(err),
        };
        if secret {
            out.fill(0);
        }
        result.map_err(|err| self.lost(err))
    }

    async fn read_payload(&mut self) -> Result<BytesMut, ClientError> {
        loop {
            match self.decoder.next_payload(&mut self.buffer) {
                Ok(Some(payload)) => return Ok(payload),
                Ok(None) => {}
                Err(err) => {
                    return Err(ClientError::Protocol(format!(
                        "bad frame from {}: {err}",
                        self.server
                    )));
                }
            }
            let wanted = self.decoder.bytes_wanted(&self.buffer).max(MIN_READ);
            self.buffer.reserve(wanted);
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|err| self.lost(err))?;
            if read == 0 {
                return Err(self.lost(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                )));
            }
        }
    }

    /// Sends `request` and waits for its response, keeping any events that arrive
    /// first. A fatal error from the server becomes `Err`.
    async fn request(
        &mut self,
        request: Request,
    ) -> Result<Result<Reply, ProtoError>, ClientError> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let secret = matches!(
            request,
            Request::Register { .. } | Request::Login { .. } | Request::Resume { .. }
        );
        self.write(&ClientFrame { id, request }, secret).await?;
        loop {
            let payload = self.read_payload().await?;
            let frame = ServerFrame::from_payload(&payload).map_err(|err| {
                ClientError::Protocol(format!("bad frame from {}: {err}", self.server))
            })?;
            match frame {
                ServerFrame::Response {
                    id: answered,
                    result,
                } if answered == id => {
                    return Ok(result);
                }
                ServerFrame::Response { id: answered, .. } => {
                    tracing::debug!(id = answered.0, "ignoring response to an unknown request");
                }
                ServerFrame::Event(_) => self.early_frames.push(frame),
                ServerFrame::Fatal(err) => return Err(ClientError::Server(err)),
            }
        }
    }

    async fn login(
        &mut self,
        username: &UserName,
        password: &Password,
    ) -> Result<Result<Reply, ProtoError>, ClientError> {
        self.request(Request::Login {
            username: username.to_string(),
            password: password.clone(),
        })
        .await
    }
}
