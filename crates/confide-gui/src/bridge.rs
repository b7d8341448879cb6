//! Between the window's thread and the client core: the core is async (tokio) and the
//! window draws frames, so the app starts requests here as tasks on a small runtime,
//! and everything that comes back (answers, client events) waits in a queue that the
//! window drains at the start of each frame. Each arrival asks egui for a new frame.

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

/// Owns the runtime the client core runs on, and the queue of what came back.
pub struct Bridge<U> {
    runtime: tokio::runtime::Runtime,
    sender: mpsc::Sender<U>,
    receiver: mpsc::Receiver<U>,
    // Set on the first frame; tasks ask it for a repaint when they deliver something.
    waker: Arc<OnceLock<egui::Context>>,
}

/// What a task uses to deliver its result.
#[derive(Clone)]
pub struct Delivery<U> {
    sender: mpsc::Sender<U>,
    waker: Arc<OnceLock<egui::Context>>,
}

impl<U> Delivery<U> {
    /// Queues `update` for the window and wakes it. Returns `false` once the window
    /// is gone.
    pub fn send(&self, update: U) -> bool {
        let sent = self.sender.send(update).is_ok();
        if let Some(ctx) = self.waker.get() {
            ctx.request_repaint();
        }
        sent
    }
}

impl<U: Send + 'static> Bridge<U> {
    /// Starts the runtime (two worker threads: the machine's chat needs are small).
    ///
    /// # Errors
    /// If the runtime cannot start (no threads).
    pub fn new() -> std::io::Result<Bridge<U>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("confide-core")
            .enable_all()
            .build()?;
        let (sender, receiver) = mpsc::channel();
        Ok(Bridge {
            runtime,
            sender,
            receiver,
            waker: Arc::new(OnceLock::new()),
        })
    }

    /// Remembers the window's context, to wake it when something arrives.
    pub fn attach(&self, ctx: &egui::Context) {
        let _ = self.waker.set(ctx.clone());
    }

    /// A handle for tasks to deliver results with.
    #[must_use]
    pub fn delivery(&self) -> Delivery<U> {
        Delivery {
            sender: self.sender.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs `task` on the runtime; whatever it returns is delivered (if anything).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = Option<U>> + Send + 'static,
    {
        let delivery = self.delivery();
        self.runtime.spawn(async move {
            if let Some(update) = task.await {
                delivery.send(update);
            }
        });
    }

    /// Runs a long task (an event pump) that delivers as it goes.
    pub fn spawn_with<F, Fut>(&self, task: F)
    where
        F: FnOnce(Delivery<U>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(task(self.delivery()));
    }

    /// Everything delivered since the last call, oldest first (at most `limit`, so that
    /// one frame never stalls on a flood).
    pub fn drain(&self, limit: usize) -> Vec<U> {
        self.receiver.try_iter().take(limit).collect()
    }

    /// Runs a future to completion on the runtime from the window's thread (for
    /// shutdown only: it blocks the frame).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
