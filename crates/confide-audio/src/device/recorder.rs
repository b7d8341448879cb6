//! Recording from the default microphone.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cpal::traits::{DeviceTrait, StreamTrait};

use super::{DeviceThread, Direction, OPEN_TIMEOUT, describe, find_device};
use crate::error::AudioError;
use crate::pcm::{MAX_SAMPLES, Pcm, SAMPLE_RATE, duration_of, sanitize};
use crate::resample::Resampler;

/// Samples used for [`Recorder::level`]: the last 50 ms.
const LEVEL_WINDOW: usize = SAMPLE_RATE as usize / 20;

/// A recording in progress from the default microphone, converted to 48 kHz mono.
///
/// Dropping it stops the recording and discards the samples; [`stop`](Self::stop) returns
/// them. Recording stops growing at [`MAX_DURATION`](crate::MAX_DURATION).
pub struct Recorder {
    captured: Arc<Mutex<Captured>>,
    thread: DeviceThread,
    device_name: String,
}

/// What the audio callback hands over. The callback holds the lock only to append one
/// period of samples, and readers only to copy, so a plain mutex is cheap enough here.
#[derive(Default)]
struct Captured {
    samples: Vec<f32>,
    /// The first error the stream reported (a device unplugged mid-recording, say).
    error: Option<String>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("device_name", &self.device_name)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts recording from the default input device. Blocks until the device is open,
    /// at most a few seconds.
    ///
    /// # Errors
    ///
    /// [`AudioError::NoMicrophone`] with the reason when there is no input device, it offers
    /// no usable configuration, or opening or starting its stream fails.
    pub fn start() -> Result<Recorder, AudioError> {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let thread_captured = Arc::clone(&captured);
        let (thread, device_name) = DeviceThread::start(
            "confide-audio-recorder",
            move || open_stream(thread_captured),
            // Either a stop request or the Recorder being dropped ends the wait.
            |stop| {
                let _ = stop.recv();
            },
        )
        .map_err(AudioError::NoMicrophone)?;
        Ok(Recorder {
            captured,
            thread,
            device_name,
        })
    }

    /// The name of the device being recorded.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// How much audio has been recorded so far.
    pub fn elapsed(&self) -> Duration {
        duration_of(self.lock().samples.len())
    }

    /// Recorded samples from index `start` on: call it with the number of samples already
    /// seen to follow a recording as it grows (for a live waveform, say).
    pub fn samples_from(&self, start: usize) -> Vec<f32> {
        self.lock()
            .samples
            .get(start..)
            .map(<[f32]>::to_vec)
            .unwrap_or_default()
    }

    /// The peak level of the last 50 ms, 0.0 to 1.0, for a level meter.
    pub fn level(&self) -> f32 {
        let captured = self.lock();
        let samples = &captured.samples;
        samples[samples.len().saturating_sub(LEVEL_WINDOW)..]
            .iter()
            .fold(0.0f32, |peak, s| peak.max(s.abs()))
    }

    /// Why the device failed while recording, if it did; the samples before the failure
    /// are kept.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Stops recording and returns what was recorded.
    ///
    /// # Errors
    ///
    /// [`AudioError::NoMicrophone`] if the device failed before delivering any sample.
    pub fn stop(mut self) -> Result<Pcm, AudioError> {
        self.thread.shut_down();
        let captured = std::mem::take(&mut *self.lock());
        match captured.error {
            Some(error) if captured.samples.is_empty() => Err(AudioError::NoMicrophone(error)),
            _ => Ok(Pcm::new(captured.samples)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        // A poisoned lock only means a callback panicked mid-append; the samples are usable.
        self.captured.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens and starts the input stream; runs on the recorder's thread.
fn open_stream(captured: Arc<Mutex<Captured>>) -> Result<(cpal::Stream, String), String> {
    let opened = find_device(Direction::Input)?;
    let config = opened.config.config();
    let converter = Converter::new(
        usize::from(config.channels),
        config.sample_rate,
        captured.clone(),
    );
    let on_error = move |err: cpal::Error| {
        // Overruns lose a few samples but the recording goes on; anything else is kept.
        if err.kind() != cpal::ErrorKind::Xrun {
            let mut captured = captured.lock().unwrap_or_else(PoisonError::into_inner);
            captured
                .error
                .get_or_insert_with(|| format!("the microphone stopped: {err}"));
        }
    };
    let device = &opened.device;
    let built = match opened.config.sample_format() {
        cpal::SampleFormat::F32 => build::<f32>(device, config, converter, on_error),
        cpal::SampleFormat::I16 => build::<i16>(device, config, converter, on_error),
        cpal::SampleFormat::I32 => build::<i32>(device, config, converter, on_error),
        cpal::SampleFormat::F64 => build::<f64>(device, config, converter, on_error),
        cpal::SampleFormat::U16 => build::<u16>(device, config, converter, on_error),
        cpal::SampleFormat::I8 => build::<i8>(device, config, converter, on_error),
        cpal::SampleFormat::U8 => build::<u8>(device, config, converter, on_error),
        other => return Err(format!("unsupported sample format {other}")),
    };
    let stream = built.map_err(|err| describe(Direction::Input, &opened.name, &err))?;
    stream
        .play()
        .map_err(|err| describe(Direction::Input, &opened.name, &err))?;
    Ok((stream, opened.name))
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut converter: Converter,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: cpal::SizedSample,
    f32: cpal::FromSample<T>,
{
    device.build_input_stream(
        config,
        move |data: &[T], _: &cpal::InputCallbackInfo| converter.push(data),
        on_error,
        Some(OPEN_TIMEOUT),
    )
}

/// Turns device samples into 48 kHz mono and appends them to the recording.
struct Converter {
    channels: usize,
    resampler: Resampler,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    captured: Arc<Mutex<Captured>>,
}

impl Converter {
    fn new(channels: usize, device_rate: u32, captured: Arc<Mutex<Captured>>) -> Self {
        Converter {
            channels: channels.max(1),
            resampler: Resampler::new(device_rate, SAMPLE_RATE),
            mono: Vec::new(),
            resampled: Vec::new(),
            captured,
        }
    }

    fn push<T>(&mut self, data: &[T])
    where
        T: Copy,
        f32: cpal::FromSample<T>,
    {
        self.mono.clear();
        for frame in data.chunks_exact(self.channels) {
            let sum: f32 = frame
                .iter()
                .map(|s| <f32 as cpal::FromSample<T>>::from_sample_(*s))
                .sum();
            self.mono.push(sanitize(sum / self.channels as f32));
        }
        self.resampled.clear();
        self.resampler.process(&self.mono, &mut self.resampled);
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        let room = MAX_SAMPLES.saturating_sub(captured.samples.len());
        let take = self.resampled.len().min(room);
        captured.samples.extend_from_slice(&self.resampled[..take]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converter_mixes_and_resamples() {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut converter = Converter::new(2, 48_000, captured.clone());
        converter.push::<i16>(&[16_384, 0, -16_384, -16_384, i16::MAX, i16::MAX]);
        assert_eq!(
            captured.lock().unwrap().samples,
            vec![0.25, -0.5, 32_767.0 / 32_768.0]
        );

        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut converter = Converter::new(1, 16_000, captured.clone());
        for _ in 0..10 {
            converter.push::<f32>(&[0.1; 1600]);
        }
        let len = captured.lock().unwrap().samples.len();
        // 1 s at 16 kHz is 48 000 samples at 48 kHz, less what the resampler still holds back.
        assert!((47_500..=48_000).contains(&len), "{len}");
    }
}
