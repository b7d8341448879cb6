//! The reference relay: the least a chat server can do, to show what this machine can
//! do at all.
//!
//! Plain TCP, no TLS, no accounts, no storage, no acknowledgements. A client's first
//! line names its group (a room); the relay answers `joined`. Every later line a client
//! writes goes to every connection in its group, the writer included (as Confide echoes
//! a message to its sender). Lines that arrive together are forwarded together, and a
//! writer task per connection gathers whatever is queued into one write, which is what
//! any competent relay does; nothing more is done. Loopback only.
//!
//! It must not grow features: every figure of Confide is given as a ratio to it.

use crate::client::{Link, LinkReader};
use anyhow::{Context as _, Result, bail};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The relay's answer to a group line.
pub const JOINED: &[u8] = b"joined";

/// Bytes gathered into one write at most (as Confide's writer).
const MAX_COALESCE: usize = 256 * 1024;

/// A group's members: connection number and its writer's queue.
type Members = Vec<(u64, mpsc::UnboundedSender<Bytes>)>;

/// Every group, by name.
#[derive(Default)]
struct Hub {
    groups: RwLock<HashMap<Bytes, Arc<RwLock<Members>>>>,
}

impl Hub {
    fn group(&self, name: &Bytes) -> Arc<RwLock<Members>> {
        if let Some(group) = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Arc::clone(group);
        }
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(groups.entry(name.clone()).or_default())
    }
}

/// Runs the relay on `listen` until the process is killed.
///
/// # Errors
/// If `listen` is not a loopback address or cannot be bound.
pub async fn serve(listen: SocketAddr) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the reference relay listens on loopback only, not on {listen}");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "confide-bench relay listening on {local}")?;
        stdout.flush()?;
    }
    let hub = Arc::new(Hub::default());
    let mut next_conn = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next_conn += 1;
                tokio::spawn(connection(Arc::clone(&hub), stream, next_conn));
            }
            // Out of file descriptors and the like: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn connection(hub: Arc<Hub>, stream: TcpStream, conn: u64) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let write_task = tokio::spawn(write_loop(writer, rx));
    let mut buf = BytesMut::with_capacity(4096);
    let mut group = None;
    loop {
        buf.reserve(4096);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(end) = buf.iter().rposition(|&byte| byte == b'\n') else {
            continue;
        };
        let mut lines = buf.split_to(end + 1).freeze();
        let members = match &group {
            Some(members) => members,
            None => {
                let Some(first_end) = lines.iter().position(|&byte| byte == b'\n') else {
                    break;
                };
                let name = lines.split_to(first_end + 1).slice(..first_end);
                let members = hub.group(&name);
                members
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((conn, tx.clone()));
                let _ = tx.send(Bytes::from_static(b"joined\n"));
                group.insert(members)
            }
        };
        if lines.is_empty() {
            continue;
        }
        for (_, member) in members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = member.send(lines.clone());
        }
    }
    if let Some(members) = group {
        members
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(other, _)| *other != conn);
    }
    drop(tx);
    let _ = write_task.await;
}

async fn write_loop(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < MAX_COALESCE {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
    }
}

/// Connects to the relay and joins `group`; returns once the relay has said `joined`.
///
/// # Errors
/// If the connection fails or the relay does not answer in time.
pub async fn connect(addr: SocketAddr, group: &str) -> Result<Link> {
    let step = crate::client::STEP_TIMEOUT;
    let mut stream = tokio::time::timeout(step, TcpStream::connect(addr))
        .await
        .context("TCP connect timed out")?
        .context("TCP connect failed")?;
    stream.set_nodelay(true)?;
    stream.write_all(format!("{group}\n").as_bytes()).await?;
    let mut pending = BytesMut::with_capacity(4096);
    let joined = loop {
        if let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            break pending.split_to(end + 1);
        }
        let read = tokio::time::timeout(step, stream.read_buf(&mut pending))
            .await
            .context("the relay did not answer in time")??;
        if read == 0 {
            bail!("the relay closed the connection");
        }
    };
    if &joined[..joined.len() - 1] != JOINED {
        bail!("unexpected answer from the relay");
    }
    let (reader, writer) = stream.into_split();
    Ok(Link {
        reader: LinkReader::Plain(reader),
        writer: Box::new(writer),
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_go_to_every_member_of_the_group_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = Arc::new(Hub::default());
        tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                conn += 1;
                tokio::spawn(connection(Arc::clone(&hub), stream, conn));
            }
        });
        let mut first = connect(addr, "a").await.unwrap();
        let second = connect(addr, "a").await.unwrap();
        let other = connect(addr, "b").await.unwrap();
        first.writer.write_all(b"one\ntwo\n").await.unwrap();
        for mut link in [second, first] {
            let mut got = link.pending;
            while got.len() < 8 {
                let read =
                    tokio::time::timeout(Duration::from_secs(10), link.reader.read(&mut got))
                        .await
                        .unwrap()
                        .unwrap();
                assert!(read > 0, "the relay closed the connection");
            }
            assert_eq!(got.as_ref(), b"one\ntwo\n");
        }
        let mut other_reader = other.reader;
        let mut byte = BytesMut::new();
        let nothing =
            tokio::time::timeout(Duration::from_millis(200), other_reader.read(&mut byte)).await;
        assert!(nothing.is_err(), "another group got a line");
    }

    #[tokio::test]
    async fn only_loopback() {
        let err = serve("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("loopback"));
    }
}
