//! A TCP relay between a client and a server on loopback that a test can pause and cut,
//! to reproduce a connection lost at an exact moment (after the server stored
//! something, before its answer arrived). It copies bytes and understands nothing, so
//! TLS runs end to end through it.

use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The proxy; it stops when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    hold: Arc<watch::Sender<bool>>,
    /// Client bytes still to pass before replies are held, if armed.
    arm: Arc<Mutex<Option<usize>>>,
    /// Cancelled to cut the current connections; replaced for later ones.
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    /// A proxy on `127.0.0.1:0` to `server`.
    pub async fn start(server: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the proxy")?;
        let addr = listener.local_addr()?;
        let (hold, _) = watch::channel(false);
        let proxy = Proxy {
            addr,
            hold: Arc::new(hold),
            arm: Arc::new(Mutex::new(None)),
            cut: Arc::new(Mutex::new(CancellationToken::new())),
            stop: CancellationToken::new(),
        };
        tokio::spawn(accept(
            listener,
            server,
            Arc::clone(&proxy.hold),
            Arc::clone(&proxy.arm),
            Arc::clone(&proxy.cut),
            proxy.stop.clone(),
        ));
        Ok(proxy)
    }

    /// Stops (`true`) or resumes passing on what the server sends; what the client
    /// sends always passes.
    pub fn hold_replies(&self, hold: bool) {
        *self.arm.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.hold.send_replace(hold);
    }

    /// Holds what the server sends from the moment the client has sent `bytes` more
    /// (the hold begins before those bytes reach the server, so no answer to them gets
    /// through). Lets a client make its small requests first and be cut off in the
    /// middle of a large one.
    pub fn hold_replies_after(&self, bytes: usize) {
        *self.arm.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
    }

    /// Closes every connection open now, dropping what was held; later connections pass
    /// (and are held if replies are still held).
    pub fn cut(&self) {
        let mut current = self.cut.lock().unwrap_or_else(PoisonError::into_inner);
        current.cancel();
        *current = CancellationToken::new();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancel();
    }
}

async fn accept(
    listener: TcpListener,
    server: SocketAddr,
    hold: Arc<watch::Sender<bool>>,
    arm: Arc<Mutex<Option<usize>>>,
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => return,
            },
        };
        let token = cut.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let hold = Arc::clone(&hold);
        let arm = Arc::clone(&arm);
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(server).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = upstream.into_split();
            let held = hold.subscribe();
            let up = copy(client_read, server_write, Direction::Up { hold, arm });
            let down = copy(server_read, client_write, Direction::Down(held));
            // Either direction ending, or a cut, closes both.
            tokio::select! {
                () = token.cancelled() => {}
                () = up => {}
                () = down => {}
            }
        });
    }
}

enum Direction {
    /// Client to server: counts bytes for an armed hold.
    Up {
        hold: Arc<watch::Sender<bool>>,
        arm: Arc<Mutex<Option<usize>>>,
    },
    /// Server to client: passes nothing on while held.
    Down(watch::Receiver<bool>),
}

/// Copies until either side ends.
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut direction: Direction,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Checked between reading and passing on, so nothing read while replies are
        // held gets through (a cut drops it).
        match &mut direction {
            Direction::Down(held) => {
                if held.wait_for(|hold| !*hold).await.is_err() {
                    return;
                }
            }
            Direction::Up { hold, arm } => {
                let mut armed = arm.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(left) = armed.as_mut() {
                    if read >= *left {
                        *armed = None;
                        hold.send_replace(true);
                    } else {
                        *left -= read;
                    }
                }
            }
        }
        if to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
}
