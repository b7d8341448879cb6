//! The transfers area above the message input: each upload (file or voice message) and
//! download with a progress bar, its rate and the time left, then what became of it.
//!
//! The client core reports progress through a callback on its own tasks; the callback
//! only stores two numbers in a [`Meter`], which the window reads when it draws (it asks
//! for a repaint a few times a second while anything moves), so a fast transfer cannot
//! flood the window with updates.

use confide_client::{Progress, TransferProgress, human_size};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the window redraws while a transfer runs.
const REFRESH: Duration = Duration::from_millis(250);

/// How long a finished transfer stays in the list.
const SHOW_DONE_FOR: Duration = Duration::from_secs(8);

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sending.
    Upload,
    /// Saving.
    Download,
}

/// A transfer's numbers, written by the core's tasks and read by the window.
#[derive(Debug)]
struct Meter {
    done: AtomicU64,
    total: AtomicU64,
    /// The bytes done at the first report (what an earlier attempt did), and when it came,
    /// in milliseconds after the start; `u64::MAX` before it.
    first_done: AtomicU64,
    first_at_ms: AtomicU64,
    started: Instant,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            first_done: AtomicU64::new(u64::MAX),
            first_at_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    fn record(&self, progress: TransferProgress) {
        if self.first_done.load(Ordering::Relaxed) == u64::MAX {
            let at = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.first_at_ms.store(at, Ordering::Relaxed);
            self.first_done.store(progress.done, Ordering::Relaxed);
        }
        self.total.store(progress.total, Ordering::Relaxed);
        self.done.store(progress.done, Ordering::Relaxed);
    }

    /// (done, total, bytes per second since the first report), once reports came.
    fn read(&self) -> Option<(u64, u64, Option<f64>)> {
        let first_done = self.first_done.load(Ordering::Relaxed);
        if first_done == u64::MAX {
            return None;
        }
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let first_at = Duration::from_millis(self.first_at_ms.load(Ordering::Relaxed));
        let seconds = self
            .started
            .elapsed()
            .saturating_sub(first_at)
            .as_secs_f64();
        let moved = done.saturating_sub(first_done);
        let rate = (seconds >= 0.5 && moved > 0).then(|| moved as f64 / seconds);
        Some((done, total, rate))
    }
}

#[derive(Debug)]
enum State {
    Running,
    Done { text: String, at: Instant },
    Failed(String),
}

#[derive(Debug)]
struct Transfer {
    id: u64,
    direction: Direction,
    name: String,
    meter: Arc<Meter>,
    state: State,
}

/// The list of transfers.
#[derive(Debug, Default)]
pub struct Transfers {
    items: Vec<Transfer>,
    next_id: u64,
}

impl Transfers {
    /// An empty list.
    #[must_use]
    pub fn new() -> Transfers {
        Transfers::default()
    }

    /// Adds a running transfer of `name`; answers its id (for [`Transfers::finish`]) and
    /// the callback to hand to the core.
    pub fn start(&mut self, direction: Direction, name: &str) -> (u64, Progress) {
        self.next_id += 1;
        let id = self.next_id;
        let meter = Arc::new(Meter::new());
        self.items.push(Transfer {
            id,
            direction,
            name: name.to_owned(),
            meter: Arc::clone(&meter),
            state: State::Running,
        });
        (id, Arc::new(move |progress| meter.record(progress)))
    }

    /// Marks a transfer finished: `Ok` with what to say, or `Err` with why it failed.
    pub fn finish(&mut self, id: u64, result: Result<String, String>) {
        if let Some(item) = self.items.iter_mut().find(|item| item.id == id) {
            item.state = match result {
                Ok(text) => State::Done {
                    text,
                    at: Instant::now(),
                },
                Err(error) => State::Failed(error),
            };
        }
    }

    /// How many are still running.
    #[must_use]
    pub fn running(&self) -> usize {
        self.items
            .iter()
            .filter(|item| matches!(item.state, State::Running))
            .count()
    }

    /// Draws the list (nothing when empty): running ones with a progress bar, finished
    /// ones for a few seconds, failed ones until dismissed.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let now = Instant::now();
        self.items.retain(|item| match &item.state {
            State::Done { at, .. } => now.duration_since(*at) < SHOW_DONE_FOR,
            _ => true,
        });
        if self.items.is_empty() {
            return;
        }
        if self.running() > 0 {
            ui.ctx().request_repaint_after(REFRESH);
        } else {
            ui.ctx().request_repaint_after(SHOW_DONE_FOR);
        }
        let mut dismissed = None;
        for item in &self.items {
            ui.horizontal(|ui| {
                let verb = match item.direction {
                    Direction::Upload => "⬆",
                    Direction::Download => "⬇",
                };
                match &item.state {
                    State::Running => {
                        ui.label(format!("{verb} {}", item.name));
                        let (fraction, text) = describe(item.meter.read());
                        ui.add(
                            egui::ProgressBar::new(fraction)
                                .desired_width(160.0)
                                .animate(fraction == 0.0),
                        );
                        ui.weak(text);
                    }
                    State::Done { text, .. } => {
                        ui.label(format!("✔ {text}"));
                    }
                    State::Failed(error) => {
                        ui.colored_label(
                            ui.visuals().error_fg_color,
                            format!("✖ {}: {error}", item.name),
                        );
                        if ui.small_button("Dismiss").clicked() {
                            dismissed = Some(item.id);
                        }
                    }
                }
            });
        }
        if let Some(id) = dismissed {
            self.items.retain(|item| item.id != id);
        }
    }
}

/// The bar's fraction and the words beside it.
fn describe(read: Option<(u64, u64, Option<f64>)>) -> (f32, String) {
    let Some((done, total, rate)) = read else {
        return (0.0, "preparing…".to_owned());
    };
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64) as f32
    };
    let mut text = format!("{} of {}", human_size(done), human_size(total));
    if let Some(rate) = rate {
        text.push_str(&format!(", {}/s", human_size(rate as u64)));
        let left = total.saturating_sub(done) as f64 / rate;
        text.push_str(&format!(", {}", time_left(left)));
    }
    (fraction, text)
}

/// "5 s left", "2 min 5 s left", "1 h 3 min left".
fn time_left(seconds: f64) -> String {
    let seconds = seconds.ceil().max(0.0) as u64;
    if seconds < 60 {
        format!("{seconds} s left")
    } else if seconds < 3600 {
        format!("{} min {} s left", seconds / 60, seconds % 60)
    } else {
        format!("{} h {} min left", seconds / 3600, seconds % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_sizes_rate_and_time_left() {
        assert_eq!(describe(None), (0.0, "preparing…".to_owned()));
        let (fraction, text) = describe(Some((1024 * 1024, 4 * 1024 * 1024, None)));
        assert!((fraction - 0.25).abs() < 1e-6);
        assert_eq!(text, "1.0 MiB of 4.0 MiB");
        let (_, text) = describe(Some((1024 * 1024, 4 * 1024 * 1024, Some(1024.0 * 1024.0))));
        assert_eq!(text, "1.0 MiB of 4.0 MiB, 1.0 MiB/s, 3 s left");
        assert_eq!(describe(Some((0, 0, None))).0, 1.0);
    }

    #[test]
    fn time_left_reads_well() {
        assert_eq!(time_left(0.2), "1 s left");
        assert_eq!(time_left(125.0), "2 min 5 s left");
        assert_eq!(time_left(3780.0), "1 h 3 min left");
    }

    #[test]
    fn a_transfer_runs_then_finishes_or_fails() {
        let mut transfers = Transfers::new();
        let (first, progress) = transfers.start(Direction::Upload, "a.txt");
        let (second, _) = transfers.start(Direction::Download, "b.txt");
        progress(TransferProgress {
            done: 10,
            total: 100,
        });
        assert_eq!(
            transfers.items[0].meter.read().map(|r| (r.0, r.1)),
            Some((10, 100))
        );
        assert_eq!(transfers.running(), 2);
        transfers.finish(first, Ok("sent a.txt".to_owned()));
        transfers.finish(second, Err("no".to_owned()));
        assert_eq!(transfers.running(), 0);
        assert!(matches!(transfers.items[1].state, State::Failed(_)));
    }
}
