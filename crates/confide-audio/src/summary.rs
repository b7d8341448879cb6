//! What a UI shows for a voice message: its length and a small waveform.

use crate::pcm::{Pcm, SAMPLE_RATE};

/// The most waveform buckets a summary holds: enough for a chat bubble, small on the wire.
pub const MAX_WAVEFORM_BUCKETS: usize = 64;

/// Loudness range drawn by the waveform, below the loudest bucket, in dB. Speech varies by
/// about this much between vowels and pauses, so pauses show as dips, not as nothing.
const DYNAMIC_RANGE_DB: f32 = 40.0;
/// Buckets quieter than this (RMS, in dBFS) draw as silence, whatever the loudest is, so a
/// silent recording does not show its noise floor blown up to full height.
const SILENCE_DBFS: f32 = -60.0;

/// Duration and waveform of a voice message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoiceSummary {
    /// Length of the audio in milliseconds.
    pub duration_ms: u64,
    /// Loudness of consecutive equal slices of the audio, 0 (silence) to 255 (the loudest
    /// slice), on a logarithmic scale like hearing.
    pub waveform: Vec<u8>,
}

impl VoiceSummary {
    /// Summarises 48 kHz mono samples into at most [`MAX_WAVEFORM_BUCKETS`] buckets (more
    /// are capped; zero gives an empty waveform). Each bucket is the RMS of its slice
    /// relative to the loudest slice, mapped from −40 dB…0 dB onto 0…255.
    pub fn new(samples: &[f32], buckets: usize) -> Self {
        let buckets = buckets.min(MAX_WAVEFORM_BUCKETS);
        let duration_ms = samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE);
        let rms: Vec<f32> = (0..buckets)
            .map(|idx| {
                let start = idx * samples.len() / buckets;
                let end = (idx + 1) * samples.len() / buckets;
                let slice = &samples[start..end];
                if slice.is_empty() {
                    return 0.0;
                }
                let energy: f64 = slice.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
                (energy / slice.len() as f64).sqrt() as f32
            })
            .collect();
        let loudest = rms.iter().copied().fold(0.0f32, f32::max);
        let silence = 10f32.powf(SILENCE_DBFS / 20.0);
        let waveform = rms
            .iter()
            .map(|&level| {
                if level < silence || !level.is_finite() {
                    return 0;
                }
                let below_loudest_db = 20.0 * (level / loudest).log10();
                let height = (1.0 + below_loudest_db / DYNAMIC_RANGE_DB).clamp(0.0, 1.0);
                (height * 255.0).round() as u8
            })
            .collect();
        VoiceSummary {
            duration_ms,
            waveform,
        }
    }
}

impl Pcm {
    /// The [`VoiceSummary`] of this audio with `buckets` waveform buckets.
    pub fn summary(&self, buckets: usize) -> VoiceSummary {
        VoiceSummary::new(self.samples(), buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_quiet_and_silent_parts() {
        let mut samples = vec![0.5f32; 48_000];
        samples.extend(vec![0.005f32; 48_000]); // 40 dB quieter
        samples.extend(vec![0.05f32; 48_000]); // 20 dB quieter
        samples.extend(vec![0.0f32; 48_000]);
        let summary = VoiceSummary::new(&samples, 4);
        assert_eq!(summary.duration_ms, 4000);
        assert_eq!(summary.waveform[0], 255);
        assert_eq!(summary.waveform[1], 0);
        assert!(
            (120..=135).contains(&summary.waveform[2]),
            "{:?}",
            summary.waveform
        );
        assert_eq!(summary.waveform[3], 0);
    }

    #[test]
    fn quiet_speech_still_fills_the_height() {
        // Quiet but real audio is normalised to its loudest part.
        let samples: Vec<f32> = (0..48_000)
            .map(|i| 0.02 * ((i as f32) * 0.05).sin())
            .collect();
        let summary = VoiceSummary::new(&samples, 8);
        assert!(
            summary.waveform.iter().all(|&v| v > 240),
            "{:?}",
            summary.waveform
        );
    }

    #[test]
    fn bucket_counts() {
        assert_eq!(
            VoiceSummary::new(&[0.5; 10], 200).waveform.len(),
            MAX_WAVEFORM_BUCKETS
        );
        assert!(VoiceSummary::new(&[0.5; 10], 0).waveform.is_empty());
        let tiny = VoiceSummary::new(&[0.5; 3], 10);
        assert_eq!(tiny.waveform.len(), 10);
        assert_eq!(tiny.waveform.iter().filter(|&&v| v == 255).count(), 3);
        assert_eq!(VoiceSummary::new(&[], 10).waveform, vec![0; 10]);
        assert_eq!(Pcm::new(vec![0.1; 4800]).summary(5).duration_ms, 100);
    }
}
