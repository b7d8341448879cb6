//! The internal sample format: 48 kHz mono `f32` in `[-1, 1]`.

use std::time::Duration;

/// The sample rate of every [`Pcm`] and of every Opus stream this crate writes, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in one 20 ms frame at [`SAMPLE_RATE`]: the unit of Opus packets and live voice.
pub const FRAME_SAMPLES: usize = 960;

/// The longest audio any decoder, reader or recorder in this crate accepts.
///
/// Thirty minutes is far beyond a voice message yet keeps a decoded message under about
/// 350 MB, so a tiny hostile file cannot claim days of audio and exhaust memory.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 60);

/// [`MAX_DURATION`] in samples at [`SAMPLE_RATE`].
pub const MAX_SAMPLES: usize = 30 * 60 * SAMPLE_RATE as usize;

/// Mono audio at [`SAMPLE_RATE`], every sample finite and within `[-1, 1]`.
///
/// The constructor enforces the range (clamping, and turning NaN into silence), so code
/// that receives a `Pcm` need not check again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pcm {
    samples: Vec<f32>,
}

impl Pcm {
    /// Wraps samples at [`SAMPLE_RATE`], clamping each into `[-1, 1]` (NaN becomes 0).
    pub fn new(mut samples: Vec<f32>) -> Self {
        for sample in &mut samples {
            *sample = sanitize(*sample);
        }
        Pcm { samples }
    }

    /// The samples.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    /// Takes the samples out.
    pub fn into_samples(self) -> Vec<f32> {
        self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample at all.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// How long the audio lasts.
    pub fn duration(&self) -> Duration {
        duration_of(self.samples.len())
    }

    /// How long the audio lasts, in whole milliseconds (rounded down).
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE)
    }
}

impl From<Vec<f32>> for Pcm {
    fn from(samples: Vec<f32>) -> Self {
        Pcm::new(samples)
    }
}

impl AsRef<[f32]> for Pcm {
    fn as_ref(&self) -> &[f32] {
        &self.samples
    }
}

/// The duration of `n_samples` samples at [`SAMPLE_RATE`].
pub(crate) fn duration_of(n_samples: usize) -> Duration {
    let n_samples = n_samples as u64;
    let rate = u64::from(SAMPLE_RATE);
    Duration::from_secs(n_samples / rate)
        + Duration::from_nanos((n_samples % rate) * 1_000_000_000 / rate)
}

/// Clamps a sample into `[-1, 1]`, mapping NaN to silence.
pub(crate) fn sanitize(sample: f32) -> f32 {
    if sample.is_nan() {
        0.0
    } else {
        sample.clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clamps_and_silences_nan() {
        let pcm = Pcm::new(vec![0.5, 2.0, -3.0, f32::NAN, f32::NEG_INFINITY]);
        assert_eq!(pcm.samples(), &[0.5, 1.0, -1.0, 0.0, -1.0]);
    }

    #[test]
    fn durations() {
        let pcm = Pcm::new(vec![0.0; 72_000]);
        assert_eq!(pcm.duration(), Duration::from_millis(1500));
        assert_eq!(pcm.duration_ms(), 1500);
        assert_eq!(
            MAX_SAMPLES as u64,
            MAX_DURATION.as_secs() * u64::from(SAMPLE_RATE)
        );
    }
}
