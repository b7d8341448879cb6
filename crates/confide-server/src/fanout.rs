//! Writing one stored entry to many receivers at once.
//!
//! At chat rates the persister commits one entry at a time, and each of its receivers'
//! connections is idle. Rather than wake a writer task per receiver, the fan-out writes
//! to their sockets itself ([`Outbound::write_or_push`]), and with many receivers it
//! shares the work with helper threads, one per further core, so a large room is not
//! served by one core alone. It returns only when every receiver has its frame (written
//! or queued), so what the persister does next (acknowledgements, notices to the room)
//! follows the entry on every connection, as it does when frames are only queued.

use crate::outbound::Outbound;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;

/// Receivers below this many are written by the calling thread alone.
const SHARE_FROM: usize = 64;

/// Helper threads at most, whatever the machine.
const MAX_HELPERS: usize = 7;

/// One helper's part of a fan-out.
struct Part {
    frame: Bytes,
    receivers: Arc<[Outbound]>,
    range: Range<usize>,
}

/// The fan-out: the calling thread's buffer and its helpers.
pub struct FanOut {
    scratch: Vec<u8>,
    helpers: Vec<mpsc::Sender<Part>>,
    done: mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FanOut {
    /// A fan-out with one helper thread per core beyond the first (none on one core, or
    /// if the threads cannot be started).
    #[must_use]
    pub fn new() -> FanOut {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        FanOut::with_helpers(cores.saturating_sub(1).min(MAX_HELPERS))
    }

    /// A fan-out with `count` helper threads.
    #[must_use]
    pub fn with_helpers(count: usize) -> FanOut {
        let (done_tx, done) = mpsc::channel();
        let mut helpers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = mpsc::channel::<Part>();
            let done_tx = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("confide-fanout{index}"))
                .spawn(move || help(&rx, &done_tx));
            match spawned {
                Ok(thread) => {
                    helpers.push(tx);
                    threads.push(thread);
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "cannot start a fan-out helper");
                    break;
                }
            }
        }
        FanOut {
            scratch: Vec::new(),
            helpers,
            done,
            threads,
        }
    }

    /// Writes (or queues) `frame` for every receiver, sharing the work when there are
    /// many; returns once all of them have it.
    pub fn deliver(&mut self, frame: &Bytes, receivers: &Arc<[Outbound]>) {
        let count = receivers.len();
        let parts = if count < SHARE_FROM {
            1
        } else {
            (self.helpers.len() + 1).min(count)
        };
        let size = count.div_ceil(parts.max(1));
        let mut sent = 0;
        for (index, helper) in self.helpers.iter().enumerate().take(parts - 1) {
            let start = (index + 1) * size;
            let part = Part {
                frame: frame.clone(),
                receivers: Arc::clone(receivers),
                range: start..(start + size).min(count),
            };
            if helper.send(part).is_ok() {
                sent += 1;
            } else {
                // The helper is gone: do its part here.
                let range = start..(start + size).min(count);
                write_all(
                    frame,
                    receivers.get(range).unwrap_or_default(),
                    &mut self.scratch,
                );
            }
        }
        write_all(
            frame,
            receivers.get(..size.min(count)).unwrap_or_default(),
            &mut self.scratch,
        );
        for _ in 0..sent {
            // A helper answers for every part, even one that panicked halfway.
            if self.done.recv().is_err() {
                break;
            }
        }
    }

    /// Writes (or queues) `frame` for one receiver.
    pub fn deliver_one(&mut self, frame: &Bytes, receiver: &Outbound) {
        receiver.write_or_push(frame, &mut self.scratch);
    }
}

impl Default for FanOut {
    fn default() -> Self {
        FanOut::new()
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        self.helpers.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn write_all(frame: &Bytes, receivers: &[Outbound], scratch: &mut Vec<u8>) {
    for out in receivers {
        out.write_or_push(frame, scratch);
    }
}

fn help(parts: &mpsc::Receiver<Part>, done: &mpsc::Sender<()>) {
    let mut scratch = Vec::new();
    while let Ok(part) = parts.recv() {
        let receivers = part.receivers.get(part.range.clone()).unwrap_or_default();
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_all(&part.frame, receivers, &mut scratch);
        }));
        if written.is_err() {
            tracing::error!("a fan-out helper failed halfway through its part");
            scratch = Vec::new();
        }
        if done.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{Outgoing, Taken};
    use tokio_util::sync::CancellationToken;

    fn receivers(count: usize) -> (Arc<[Outbound]>, Vec<Outgoing>) {
        let mut outs = Vec::with_capacity(count);
        let mut queues = Vec::with_capacity(count);
        for conn in 0..count {
            let (out, queue) = Outbound::new(conn as u64, 16, CancellationToken::new(), None);
            outs.push(out);
            queues.push(queue);
        }
        (outs.into(), queues)
    }

    #[test]
    fn every_receiver_gets_each_frame_once_and_in_order_with_or_without_helpers() {
        for helpers in [0, 1, 3] {
            let mut fan_out = FanOut::with_helpers(helpers);
            for count in [0, 1, SHARE_FROM - 1, SHARE_FROM, 1000] {
                let (outs, mut queues) = receivers(count);
                fan_out.deliver(&Bytes::from_static(b"one"), &outs);
                fan_out.deliver(&Bytes::from_static(b"two"), &outs);
                for (conn, queue) in queues.iter_mut().enumerate() {
                    let mut taken = Taken::default();
                    assert!(
                        queue.try_take_all(&mut taken),
                        "{helpers} helpers, {count} receivers: {conn} got nothing"
                    );
                    assert_eq!(
                        Vec::from(taken.frames),
                        ["one", "two"],
                        "{helpers} helpers, {count} receivers, receiver {conn}"
                    );
                }
            }
        }
    }
}
