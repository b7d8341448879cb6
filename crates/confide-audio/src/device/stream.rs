//! Playing audio as it arrives (live voice) on the default speaker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::DeviceThread;
use super::player::{Fill, start_output};
use crate::error::AudioError;
use crate::pcm::SAMPLE_RATE;
use crate::resample::Resampler;

/// Audio queued for the device at most (at the device's rate, 1 s at 48 kHz); pushing
/// more drops the oldest, so a listener that fell behind catches up instead of lagging
/// further and further.
const MAX_QUEUED_SECONDS: usize = 1;

/// A speaker that plays samples pushed to it, as they come.
///
/// Between pushes the device plays silence (an underrun, counted). Dropping it stops
/// playback.
pub struct StreamPlayer {
    shared: Arc<Mutex<Queue>>,
    resampler: Mutex<Option<Resampler>>,
    thread: DeviceThread,
    device_name: String,
    device_rate: u32,
}

/// What the pushing side and the audio callback share.
#[derive(Default)]
struct Queue {
    samples: VecDeque<f32>,
    /// The most samples kept (at the device's rate).
    max: usize,
    /// Samples handed to the device that came from pushes.
    played: u64,
    /// Callbacks that ran out of pushed samples part way (silence was played).
    underruns: u64,
    /// Samples dropped because the queue was full.
    dropped: u64,
    /// Why the device stopped, if it did.
    error: Option<String>,
}

impl std::fmt::Debug for StreamPlayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPlayer")
            .field("device_name", &self.device_name)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // A poisoned lock only means a callback panicked; the queue is still usable.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Feeds the device from the shared queue, copying each sample to every channel.
struct Drain {
    shared: Arc<Mutex<Queue>>,
    channels: usize,
}

impl Fill for Drain {
    fn fill<T: cpal::FromSample<f32>>(&mut self, data: &mut [T]) {
        let mut queue = lock(&self.shared);
        let mut short = false;
        for frame in data.chunks_exact_mut(self.channels) {
            let sample = match queue.samples.pop_front() {
                Some(sample) => {
                    queue.played += 1;
                    sample
                }
                None => {
                    short = true;
                    0.0
                }
            };
            for slot in frame {
                *slot = T::from_sample_(sample);
            }
        }
        if short && queue.played > 0 {
            queue.underruns += 1;
        }
    }
}

impl StreamPlayer {
    /// Opens the default output device and starts playing silence until samples are
    /// pushed. Blocks until the device is open, at most a few seconds.
    ///
    /// # Errors
    ///
    /// [`AudioError::NoSpeaker`] with the reason when there is no usable output device.
    pub fn start() -> Result<StreamPlayer, AudioError> {
        let shared = Arc::new(Mutex::new(Queue::default()));
        let thread_shared = Arc::clone(&shared);
        let open = move || {
            let errors = Arc::clone(&thread_shared);
            let on_error = move |err: cpal::Error| {
                if err.kind() != cpal::ErrorKind::Xrun {
                    lock(&errors).error = Some(format!("the speaker stopped: {err}"));
                }
            };
            let mut rate = SAMPLE_RATE;
            let (stream, name) = start_output(
                |config| {
                    rate = config.sample_rate;
                    Drain {
                        shared: thread_shared,
                        channels: usize::from(config.channels).max(1),
                    }
                },
                on_error,
            )?;
            Ok((stream, (name, rate)))
        };
        let (thread, (device_name, device_rate)) = DeviceThread::start(
            "confide-audio-stream",
            open,
            // Until a stop request or the player is dropped.
            |stop| {
                let _ = stop.recv();
            },
        )
        .map_err(AudioError::NoSpeaker)?;
        lock(&shared).max = usize::try_from(device_rate).unwrap_or(usize::MAX) * MAX_QUEUED_SECONDS;
        let resampler =
            (device_rate != SAMPLE_RATE).then(|| Resampler::new(SAMPLE_RATE, device_rate));
        Ok(StreamPlayer {
            shared,
            resampler: Mutex::new(resampler),
            thread,
            device_name,
            device_rate,
        })
    }

    /// Queues 48 kHz mono samples to play after what is queued.
    pub fn push(&self, samples: &[f32]) {
        let mut converted = Vec::new();
        let samples = match self
            .resampler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            Some(resampler) => {
                resampler.process(samples, &mut converted);
                &converted[..]
            }
            None => samples,
        };
        let mut queue = lock(&self.shared);
        queue.samples.extend(samples.iter().map(|s| {
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }));
        let excess = queue.samples.len().saturating_sub(queue.max);
        if excess > 0 {
            queue.samples.drain(..excess);
            queue.dropped += excess as u64;
        }
    }

    /// How much audio is queued, not yet handed to the device.
    pub fn queued(&self) -> Duration {
        let queued = lock(&self.shared).samples.len() as u64;
        Duration::from_micros(queued * 1_000_000 / u64::from(self.device_rate.max(1)))
    }

    /// How many times the device ran out of pushed audio (silence was played).
    pub fn underruns(&self) -> u64 {
        lock(&self.shared).underruns
    }

    /// Pushed samples dropped because more than a second was queued.
    pub fn dropped(&self) -> u64 {
        lock(&self.shared).dropped
    }

    /// Why the device stopped, if it did.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared).error.clone()
    }

    /// The name of the device playing.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Stops playback now (what is queued is not played).
    pub fn stop(mut self) {
        self.thread.shut_down();
    }
}
