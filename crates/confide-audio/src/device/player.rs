//! Playing audio on the default speaker.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, StreamTrait};

use super::{DeviceThread, Direction, OPEN_TIMEOUT, describe, find_device};
use crate::error::AudioError;
use crate::pcm::{Pcm, SAMPLE_RATE};
use crate::resample::resample;

/// How often the playing thread checks whether playback has finished.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Audio playing on the default speaker.
///
/// Dropping it stops playback. [`is_finished`](Self::is_finished) and
/// [`wait`](Self::wait) tell when all samples have been handed to the device.
pub struct Player {
    progress: Arc<Shared>,
    thread: DeviceThread,
    total: Duration,
    device_name: String,
}

/// Progress shared between the audio callback and the [`Player`].
struct Shared {
    state: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Frames handed to the device so far, at the device's rate.
    frames_played: usize,
    /// The device's sample rate, once known.
    device_rate: u32,
    /// Whether playback is over: every sample played, stopped, or failed.
    finished: bool,
    /// Why playback failed, if it did.
    error: Option<String>,
}

impl std::fmt::Debug for Player {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Player")
            .field("device_name", &self.device_name)
            .field("total", &self.total)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

impl Player {
    /// Starts playing 48 kHz mono samples on the default output device. Blocks until the
    /// device is open, at most a few seconds.
    ///
    /// # Errors
    ///
    /// [`AudioError::NoSpeaker`] with the reason when there is no output device, it offers no
    /// usable configuration, or opening or starting its stream fails.
    pub fn play(samples: impl Into<Pcm>) -> Result<Player, AudioError> {
        let pcm: Pcm = samples.into();
        let total = pcm.duration();
        let progress = Arc::new(Shared {
            state: Mutex::new(Progress::default()),
            changed: Condvar::new(),
        });
        let open_progress = Arc::clone(&progress);
        let keep_progress = Arc::clone(&progress);
        let (thread, device_name) = DeviceThread::start(
            "confide-audio-player",
            move || open_stream(pcm, open_progress),
            // Until every sample is played, or a stop request, or the Player is dropped.
            move |stop| {
                loop {
                    match stop.recv_timeout(POLL_INTERVAL) {
                        Err(mpsc::RecvTimeoutError::Timeout) if !keep_progress.finished() => {}
                        _ => break,
                    }
                }
                keep_progress.finish(None);
            },
        )
        .map_err(AudioError::NoSpeaker)?;
        Ok(Player {
            progress,
            thread,
            total,
            device_name,
        })
    }

    /// The name of the device playing.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// How long the whole audio lasts.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// How far playback has got.
    pub fn position(&self) -> Duration {
        let state = self.progress.lock();
        // Frames count at the device's rate, which may differ from the audio's.
        let nanos =
            state.frames_played as u128 * 1_000_000_000 / u128::from(state.device_rate.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.total)
    }

    /// Whether playback is over (all played, stopped, or the device failed).
    pub fn is_finished(&self) -> bool {
        self.progress.finished()
    }

    /// Why playback failed, if the device reported an error while playing.
    pub fn error(&self) -> Option<String> {
        self.progress.lock().error.clone()
    }

    /// Waits until playback is over or `timeout` passes; returns whether it is over.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.progress.lock();
        while !state.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.progress.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Stops playback now.
    pub fn stop(mut self) {
        self.thread.shut_down();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // A poisoned lock only means a callback panicked; the counters are still meaningful.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self) -> bool {
        self.lock().finished
    }

    fn finish(&self, error: Option<String>) {
        let mut state = self.lock();
        state.finished = true;
        if state.error.is_none() {
            state.error = error;
        }
        self.changed.notify_all();
    }
}

/// Writes converted samples into a device buffer, from cpal's audio callback.
pub(super) trait Fill: Send + 'static {
    /// Fills `data` (interleaved frames of the device's channel count).
    fn fill<T: cpal::FromSample<f32>>(&mut self, data: &mut [T]);
}

/// Opens and starts the default output, with the filler `make` builds for the device's
/// configuration (channels, rate); answers the stream and the device's name. Runs on the
/// thread that keeps the stream.
pub(super) fn start_output<F: Fill>(
    make: impl FnOnce(&cpal::StreamConfig) -> F,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<(cpal::Stream, String), String> {
    let opened = find_device(Direction::Output)?;
    let config = opened.config.config();
    let feeder = make(&config);
    let device = &opened.device;
    let built = match opened.config.sample_format() {
        cpal::SampleFormat::F32 => build::<f32, F>(device, config, feeder, on_error),
        cpal::SampleFormat::I16 => build::<i16, F>(device, config, feeder, on_error),
        cpal::SampleFormat::I32 => build::<i32, F>(device, config, feeder, on_error),
        cpal::SampleFormat::F64 => build::<f64, F>(device, config, feeder, on_error),
        cpal::SampleFormat::U16 => build::<u16, F>(device, config, feeder, on_error),
        cpal::SampleFormat::I8 => build::<i8, F>(device, config, feeder, on_error),
        cpal::SampleFormat::U8 => build::<u8, F>(device, config, feeder, on_error),
        other => return Err(format!("unsupported sample format {other}")),
    };
    let stream = built.map_err(|err| describe(Direction::Output, &opened.name, &err))?;
    stream
        .play()
        .map_err(|err| describe(Direction::Output, &opened.name, &err))?;
    Ok((stream, opened.name))
}

/// Opens and starts the output stream; runs on the player's thread.
fn open_stream(pcm: Pcm, progress: Arc<Shared>) -> Result<(cpal::Stream, String), String> {
    let on_error = {
        let progress = Arc::clone(&progress);
        move |err: cpal::Error| {
            if err.kind() != cpal::ErrorKind::Xrun {
                progress.finish(Some(format!("the speaker stopped: {err}")));
            }
        }
    };
    start_output(
        move |config| Feeder {
            // Whole messages are resampled up front: simpler than streaming, and rarely
            // needed since nearly every output device takes 48 kHz.
            samples: if config.sample_rate == SAMPLE_RATE {
                pcm.into_samples()
            } else {
                resample(pcm.samples(), SAMPLE_RATE, config.sample_rate)
            },
            next: 0,
            channels: usize::from(config.channels).max(1),
            rate: config.sample_rate,
            drained: false,
            progress,
        },
        on_error,
    )
}

fn build<T, F: Fill>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut feeder: F,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: cpal::SizedSample + cpal::FromSample<f32>,
{
    device.build_output_stream(
        config,
        move |data: &mut [T], _: &cpal::OutputCallbackInfo| feeder.fill(data),
        on_error,
        Some(OPEN_TIMEOUT),
    )
}

/// Hands the samples to the device, each one copied to every channel.
struct Feeder {
    samples: Vec<f32>,
    next: usize,
    channels: usize,
    rate: u32,
    /// Set once a callback ran past the end; playback counts as finished one callback
    /// later, when the device has taken the last real samples from its buffer.
    drained: bool,
    progress: Arc<Shared>,
}

impl Fill for Feeder {
    fn fill<T: cpal::FromSample<f32>>(&mut self, data: &mut [T]) {
        for frame in data.chunks_exact_mut(self.channels) {
            let sample = self.samples.get(self.next).copied().unwrap_or(0.0);
            self.next = (self.next + 1).min(self.samples.len());
            for slot in frame {
                *slot = T::from_sample_(sample);
            }
        }
        let at_end = self.next >= self.samples.len();
        let mut state = self.progress.lock();
        state.frames_played = self.next;
        state.device_rate = self.rate;
        if at_end && self.drained && !state.finished {
            state.finished = true;
            self.progress.changed.notify_all();
        }
        self.drained = at_end;
    }
}
