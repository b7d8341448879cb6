//! One task per connection: TLS and version handshake, then a read loop that handles
//! requests in order, and a writer task that is the only code writing the socket.
//!
//! The writer drains the connection's bounded queue, coalescing whatever frames are
//! ready into one write (and so one TLS record where they fit). Every failure of the
//! peer (bad TLS, garbage, oversized frames, floods, not reading) ends in a clear
//! error or a disconnect of that one connection, logged, and nothing else waits on it.

use crate::limits::TokenBucket;
use crate::outbound::{self, ConnId, Outbound};
use crate::state::Shared;
use crate::tls::stream::{self, TlsReader, TlsWriter};
use bytes::{Bytes, BytesMut};
use confide_proto::frame::{DecodeError, FrameDecoder};
use confide_proto::handshake::{self, ServerHello, ServerHelloResult};
use confide_proto::{
    ClientFrame, ClientHello, DeviceId, ErrorCode, ProtoError, Request, ServerFrame, UserId,
    UserName,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

mod blobs;
mod delivery;
mod requests;
mod voice;

/// How long the writer keeps trying to deliver final frames to a closing peer.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Who a logged-in connection belongs to.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The account.
    pub id: UserId,
    /// Its name.
    pub name: UserName,
    /// The hash of this connection's session token, for logout.
    pub token_hash: [u8; 32],
}

impl LoggedIn {
    /// The account as room actors see it.
    #[must_use]
    pub fn person(&self) -> crate::room::Person {
        crate::room::Person {
            id: self.id,
            name: self.name.clone(),
        }
    }
}

/// Per-connection state used by request handlers.
pub struct Connection {
    shared: Arc<Shared>,
    conn: ConnId,
    peer: SocketAddr,
    out: Outbound,
    user: Option<LoggedIn>,
    /// The device this connection said it belongs to (`SetDevice`).
    device: Option<DeviceId>,
    inflight: Arc<Semaphore>,
    /// Downloaded chunks queued but not yet written to the socket (see
    /// `connection::blobs`).
    unsent_chunks: Arc<Semaphore>,
    close_after_reply: bool,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Io(std::io::Error),
    Fatal(ProtoError),
    TooSlow,
    Shutdown,
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    shared: Arc<Shared>,
    tls_config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let conn = shared.next_conn();
    let span = tracing::info_span!("conn", conn, peer = %peer);
    async move {
        shared.events.record("connect", &[("conn", &conn), ("peer", &peer)]);
        let _ = stream.set_nodelay(true);
        let limits = &shared.config.limits;
        // Boxed: the handshake's state is large and only needed briefly; inline, it would
        // size every connection's task for the connection's whole life.
        let handshake = Box::pin(tokio::time::timeout(limits.handshake_timeout(), async {
            let (mut reader, mut writer) = stream::accept(stream, tls_config).await.map_err(|err| format!("TLS handshake failed: {err}"))?;
            let version = hello(&mut reader, &mut writer, &shared).await?;
            Ok::<_, String>((reader, writer, version))
        }));
        let (reader, writer) = tokio::select! {
            result = handshake => match result {
                Ok(Ok((reader, writer, version))) => {
                    tracing::debug!(version, "handshake complete");
                    (reader, writer)
                }
                Ok(Err(reason)) => {
                    tracing::warn!(%reason, "handshake failed");
                    shared.events.record("handshake_failed", &[("conn", &conn), ("peer", &peer), ("reason", &reason.replace(' ', "_"))]);
                    return;
                }
                Err(_) => {
                    tracing::warn!("handshake timed out");
                    shared.events.record("handshake_failed", &[("conn", &conn), ("peer", &peer), ("reason", &"timeout")]);
                    return;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let kill = CancellationToken::new();
        let (out, queue) = Outbound::new(conn, shared.config.limits.outbound_queue, kill.clone(), Some(writer.sink()));
        let write_task = tokio::spawn(outbound::write_loop(writer, queue).in_current_span());
        let mut connection = Connection {
            inflight: Arc::new(Semaphore::new(shared.config.limits.max_inflight_sends.max(1))),
            unsent_chunks: Arc::new(Semaphore::new(blobs::MAX_UNSENT_CHUNKS)),
            shared: Arc::clone(&shared),
            conn,
            peer,
            out,
            user: None,
            device: None,
            close_after_reply: false,
        };
        let end = connection.read_loop(reader, &kill, &shutdown).await;
        let reason = match &end {
            End::PeerClosed => "closed".to_owned(),
            End::Io(err) => format!("io_error:{}", err.kind()),
            End::Fatal(err) => format!("{:?}", err.code),
            End::TooSlow => "too_slow".to_owned(),
            End::Shutdown => "shutdown".to_owned(),
        };
        match &end {
            End::Fatal(err) => {
                tracing::warn!(code = ?err.code, message = %err.message, "closing connection");
                connection.out.send(&ServerFrame::Fatal(err.clone()));
            }
            End::TooSlow => tracing::warn!("disconnected: client too slow to read"),
            End::Shutdown => {
                connection.out.send(&ServerFrame::Fatal(ProtoError::new(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down; reconnect later",
                )));
            }
            End::Io(err) => tracing::debug!(cause = %err, "connection error"),
            End::PeerClosed => tracing::debug!("peer closed"),
        }
        Box::pin(connection.leave()).await;
        // Let the writer flush what is queued (the final error included), then stop;
        // a peer that does not read gets a short grace period, no more.
        kill.cancel();
        connection.out.stop_writer();
        let mut write_task = write_task;
        if tokio::time::timeout(CLOSE_GRACE, &mut write_task).await.is_err() {
            write_task.abort();
        }
        shared.events.record("disconnect", &[("conn", &conn), ("reason", &reason)]);
    }
    .instrument(span)
    .await;
}

async fn hello(
    reader: &mut TlsReader,
    writer: &mut TlsWriter,
    shared: &Shared,
) -> Result<u32, String> {
    let decoder = FrameDecoder::new(4096);
    let mut buf = BytesMut::with_capacity(256);
    let payload = loop {
        match decoder.next_payload(&mut buf) {
            Ok(Some(payload)) => break payload,
            Ok(None) => {}
            Err(err) => return Err(format!("bad hello: {err}")),
        }
        match reader.read(&mut buf).await {
            Ok(0) => return Err("closed during handshake".to_owned()),
            Ok(_) => {}
            Err(err) => return Err(format!("read failed during handshake: {err}")),
        }
    };
    let hello: ClientHello =
        confide_proto::decode_value(&payload).map_err(|err| format!("bad hello: {err}"))?;
    let limits = &shared.config.limits;
    // Version 2 changed the shape of `RoomInfo`, `LogEntry` and `CreateRoom`, which a
    // version 1 client could not decode; it is told to upgrade instead.
    let version = confide_proto::PROTOCOL_VERSION;
    let (answer, result) = match handshake::check_hello(&hello, version, version) {
        Ok(version) => (
            ServerHelloResult::Accepted(ServerHello {
                version,
                software: format!("confide-server {}", env!("CARGO_PKG_VERSION")),
                max_frame: limits.max_frame_bytes,
                max_body: limits.max_body_bytes,
            }),
            Ok(version),
        ),
        Err(rejected) => {
            let reason = rejected.message.clone();
            (ServerHelloResult::Rejected(rejected), Err(reason))
        }
    };
    let mut frame = BytesMut::new();
    confide_proto::encode_frame(&answer, 4096, &mut frame).map_err(|err| err.to_string())?;
    writer
        .write(&frame)
        .await
        .map_err(|err| format!("write failed during handshake: {err}"))?;
    result
}

impl Connection {
    async fn read_loop(
        &mut self,
        mut reader: TlsReader,
        kill: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> End {
        let limits = self.shared.config.limits.clone();
        let decoder = FrameDecoder::new(limits.max_frame_bytes as usize);
        let mut buf = BytesMut::new();
        let started = Instant::now();
        let mut requests =
            TokenBucket::new(limits.requests_per_second, limits.request_burst, started);
        let mut messages =
            TokenBucket::new(limits.messages_per_second, limits.message_burst, started);
        // File chunks and live voice have allowances of their own: a 100 MiB file is
        // hundreds of chunks and a call a steady stream of frames, which should neither
        // be held to the pace of other requests nor use up their allowance.
        let mut chunks = TokenBucket::new(
            limits.chunk_requests_per_second,
            limits.chunk_request_burst,
            started,
        );
        let mut voice = TokenBucket::new(
            limits.voice_frames_per_second,
            limits.voice_frame_burst,
            started,
        );
        let mut violations = 0u32;
        let mut last_frame = tokio::time::Instant::now();
        loop {
            loop {
                let payload = match decoder.next_payload(&mut buf) {
                    Ok(Some(payload)) => payload,
                    Ok(None) => break,
                    Err(DecodeError::TooLarge { len, max }) => {
                        return End::Fatal(ProtoError::new(
                            ErrorCode::FrameTooLarge,
                            format!("frame of {len} bytes exceeds the limit of {max} bytes"),
                        ));
                    }
                    Err(err) => {
                        return End::Fatal(ProtoError::new(ErrorCode::Malformed, err.to_string()));
                    }
                };
                last_frame = tokio::time::Instant::now();
                let frame = match ClientFrame::from_payload(&payload) {
                    Ok(frame) => frame,
                    Err(DecodeError::UnknownRequest { id, tag }) => {
                        tracing::warn!(tag, "unknown request type");
                        self.out.send(&ServerFrame::Response {
                            id,
                            result: Err(ProtoError::new(
                                ErrorCode::UnknownRequest,
                                format!("request type {tag} is not supported by this server"),
                            )),
                        });
                        continue;
                    }
                    Err(err) => {
                        return End::Fatal(ProtoError::new(ErrorCode::Malformed, err.to_string()));
                    }
                };
                let now = Instant::now();
                let account_ok = || match &self.user {
                    Some(user) => self.shared.account_rates.take(user.id, now),
                    None => true,
                };
                let allowed = match frame.request {
                    Request::PutChunk { .. } | Request::GetChunk { .. } => chunks.take(now),
                    Request::SendVoice { .. } => voice.take(now),
                    // Ephemeral messages count as messages: they reach as many people.
                    Request::Send { .. } | Request::SendEphemeral { .. } => {
                        requests.take(now) && messages.take(now) && account_ok()
                    }
                    _ => requests.take(now),
                };
                if !allowed {
                    violations += 1;
                    if violations > limits.max_rate_violations {
                        return End::Fatal(ProtoError::new(
                            ErrorCode::RateLimited,
                            "too many requests over the rate limit; disconnected",
                        ));
                    }
                    self.out.send(&ServerFrame::Response {
                        id: frame.id,
                        result: Err(ProtoError::new(
                            ErrorCode::RateLimited,
                            "slow down: too many requests; this one was not processed",
                        )),
                    });
                    continue;
                }
                violations = 0;
                tracing::trace!(id = frame.id.0, kind = frame.request.kind(), "request");
                // Boxed for the same reason: an idle connection should not carry the
                // state of the largest request handler.
                Box::pin(self.handle(frame)).await;
                if self.close_after_reply {
                    return End::PeerClosed;
                }
                if kill.is_cancelled() {
                    return End::TooSlow;
                }
            }
            let deadline = if self.user.is_some() {
                last_frame + limits.idle_timeout()
            } else {
                tokio::time::Instant::from_std(started) + limits.login_timeout()
            };
            if buf.is_empty() && buf.capacity() > 0 {
                // Nothing partial is waiting: an idle connection holds no buffer.
                buf = BytesMut::new();
            }
            tokio::select! {
                () = kill.cancelled() => return End::TooSlow,
                () = shutdown.cancelled() => return End::Shutdown,
                () = tokio::time::sleep_until(deadline) => {
                    let what = if self.user.is_some() { "no traffic for too long" } else { "did not log in in time" };
                    return End::Fatal(ProtoError::new(ErrorCode::Timeout, what));
                }
                read = reader.read(&mut buf) => match read {
                    Ok(0) => return End::PeerClosed,
                    Ok(_) => {
                        if reader.take_records_waiting() {
                            // An empty frame: the writer sends the TLS records first.
                            self.out.push(Bytes::new());
                        }
                    }
                    Err(err) => return End::Io(err),
                },
            }
        }
    }

    /// Unsubscribes from every room and goes offline.
    async fn leave(&mut self) {
        let Some(user) = self.user.take() else { return };
        self.shared.sessions.remove(user.id, self.conn);
        let user_id = user.id;
        let rooms =
            crate::state::blocking(&self.shared.store, move |store| store.rooms_of(user_id))
                .await
                .unwrap_or_default();
        for (room, _) in rooms {
            if let Some(handle) = self.shared.rooms.resident(room) {
                handle.unsubscribe(user.id, self.conn).await;
            }
        }
        self.shared
            .events
            .record("logout", &[("conn", &self.conn), ("user", &user.name)]);
    }
}
