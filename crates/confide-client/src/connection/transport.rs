//! The socket's two tasks: a reader that turns bytes into [`ServerFrame`]s and a writer
//! that sends encoded frames, coalescing whatever is queued into one write.
//!
//! These tasks are the only code touching a connection's socket after login. The
//! reader reserves at least [`MIN_READ`] bytes before every read, so reads never shrink
//! to a few bytes; the writer drains its queue into one buffer and does one
//! `write_all`, so a burst of frames leaves in few TLS records. They must not interpret
//! frames beyond decoding them: the connection actor does that.

use bytes::BytesMut;
use confide_proto::{FrameDecoder, MAX_FRAME_LEN, ServerFrame};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Smallest free space the reader asks for before each read.
const MIN_READ: usize = 16 * 1024;

/// Frames queued for the writer; the actor waits when it is full.
const OUTGOING_QUEUE: usize = 256;

/// Decoded frames queued for the actor; the reader stops reading when it is full, so a
/// busy actor slows the server down instead of buffering without bound.
const INBOUND_QUEUE: usize = 256;

/// The writer stops adding queued frames to one write beyond this many bytes.
const MAX_COALESCED: usize = 256 * 1024;

/// How long the writer waits for a clean TLS close when the connection is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What the reader reports.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A frame from the server.
    Frame(ServerFrame),
    /// The connection ended; the reason is for logs and people.
    Closed(String),
}

/// A running connection: a queue to the writer and a queue from the reader.
#[derive(Debug)]
pub(crate) struct Transport {
    pub outgoing: mpsc::Sender<BytesMut>,
    pub inbound: mpsc::Receiver<Inbound>,
    reader: JoinHandle<()>,
}

impl Transport {
    /// Starts the reader and writer tasks on `stream`; `buffer` holds bytes already
    /// read from it.
    pub(crate) fn start<S>(stream: S, buffer: BytesMut) -> Transport
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let reader = tokio::spawn(run_reader(read_half, buffer, inbound_tx.clone()));
        tokio::spawn(run_writer(write_half, outgoing_rx, inbound_tx));
        Transport {
            outgoing,
            inbound,
            reader,
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // The reader may be waiting on the socket; stop it. The writer ends by itself
        // once `outgoing` is dropped, after closing TLS cleanly.
        self.reader.abort();
    }
}

async fn run_reader<S: AsyncRead>(
    mut stream: ReadHalf<S>,
    mut buffer: BytesMut,
    inbound: mpsc::Sender<Inbound>,
) {
    let decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let reason = loop {
        match decoder.next_payload(&mut buffer) {
            Ok(Some(payload)) => {
                let frame = match ServerFrame::from_payload(&payload) {
                    Ok(frame) => frame,
                    Err(err) => break format!("malformed frame from the server: {err}"),
                };
                tracing::trace!(len = payload.len(), "frame received");
                if inbound.send(Inbound::Frame(frame)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(err) => break format!("bad frame from the server: {err}"),
        }
        buffer.reserve(decoder.bytes_wanted(&buffer).max(MIN_READ));
        match stream.read_buf(&mut buffer).await {
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(_) => {}
            Err(err) => break format!("read failed: {err}"),
        }
    };
    let _ = inbound.send(Inbound::Closed(reason)).await;
}

async fn run_writer<S: AsyncWrite>(
    mut stream: WriteHalf<S>,
    mut outgoing: mpsc::Receiver<BytesMut>,
    inbound: mpsc::Sender<Inbound>,
) {
    let mut buffer = BytesMut::new();
    while let Some(frame) = outgoing.recv().await {
        buffer.unsplit(frame);
        while buffer.len() < MAX_COALESCED {
            match outgoing.try_recv() {
                Ok(frame) => buffer.unsplit(frame),
                Err(_) => break,
            }
        }
        tracing::trace!(len = buffer.len(), "writing");
        let written = match stream.write_all(&buffer).await {
            Ok(()) => stream.flush().await,
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            // The reader usually notices too; whichever report arrives first counts.
            let _ = inbound.try_send(Inbound::Closed(format!("write failed: {err}")));
            return;
        }
        buffer.clear();
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use confide_proto::{Event, RoomId, Timestamp, encode_frame};

    #[tokio::test]
    async fn frames_flow_both_ways_and_close_is_reported() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut leftover = BytesMut::new();
        let pong = ServerFrame::Response {
            id: confide_proto::RequestId(1),
            result: Ok(confide_proto::Reply::Pong {
                timestamp: Timestamp(5),
            }),
        };
        encode_frame(&pong, MAX_FRAME_LEN, &mut leftover).unwrap();
        let mut transport = Transport::start(client, leftover);

        // Frames that were read during the handshake come out first.
        match transport.inbound.recv().await {
            Some(Inbound::Frame(frame)) => assert_eq!(frame, pong),
            other => panic!("{other:?}"),
        }
        // Many queued frames arrive intact, in order.
        let mut expected = Vec::new();
        for index in 0..50u8 {
            let mut frame = BytesMut::new();
            encode_frame(&vec![index; 100], MAX_FRAME_LEN, &mut frame).unwrap();
            expected.extend_from_slice(&frame);
            transport.outgoing.send(frame).await.unwrap();
        }
        let mut received = vec![0u8; expected.len()];
        server.read_exact(&mut received).await.unwrap();
        assert_eq!(received, expected);

        // A frame written by the server in tiny pieces is reassembled.
        let event = ServerFrame::Event(Event::Presence {
            room: RoomId(3),
            user: confide_proto::UserName::parse("dave").unwrap(),
            online: true,
        });
        let mut bytes = BytesMut::new();
        encode_frame(&event, MAX_FRAME_LEN, &mut bytes).unwrap();
        for byte in bytes.iter() {
            server.write_all(&[*byte]).await.unwrap();
        }
        match transport.inbound.recv().await {
            Some(Inbound::Frame(frame)) => assert_eq!(frame, event),
            other => panic!("{other:?}"),
        }

        drop(server);
        match transport.inbound.recv().await {
            Some(Inbound::Closed(reason)) => assert!(reason.contains("closed"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_from_the_server_closes_with_a_reason() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut transport = Transport::start(client, BytesMut::new());
        server.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        match transport.inbound.recv().await {
            Some(Inbound::Closed(reason)) => assert!(reason.contains("bad frame"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
