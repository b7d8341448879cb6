//! WAV input: any common WAV file to 48 kHz mono.
//!
//! Accepts 8, 16, 24 and 32-bit integer samples and 32-bit float samples, with any number
//! of channels (averaged to mono) at any sample rate (converted with [`crate::resample`]).
//! Files longer than [`MAX_DURATION`] are refused before their samples are read.

use std::io::{Read, Seek};
use std::path::Path;

use crate::error::AudioError;
use crate::pcm::{MAX_DURATION, Pcm, SAMPLE_RATE};
use crate::resample::resample;

/// Reads a WAV file held in memory.
///
/// # Errors
///
/// [`AudioError::Wav`] if the bytes are not a supported WAV file (including a file that ends
/// in the middle of its samples), [`AudioError::TooLong`] if it lasts more than
/// [`MAX_DURATION`].
pub fn read_wav(bytes: &[u8]) -> Result<Pcm, AudioError> {
    read_from(std::io::Cursor::new(bytes))
}

/// Reads a WAV file from disk.
///
/// # Errors
///
/// As [`read_wav`], plus [`AudioError::Io`] if the file cannot be opened.
pub fn read_wav_file(path: impl AsRef<Path>) -> Result<Pcm, AudioError> {
    let file = std::fs::File::open(path)?;
    read_from(std::io::BufReader::new(file))
}

fn read_from<R: Read + Seek>(source: R) -> Result<Pcm, AudioError> {
    let mut reader = hound::WavReader::new(source).map_err(wav_error)?;
    let spec = reader.spec();
    if spec.sample_rate == 0 || spec.channels == 0 {
        return Err(AudioError::Wav(format!(
            "{} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    // The header's frame count bounds the work before any sample is read; the loops below
    // still stop at the limit in case the header understates the length.
    let max_frames = MAX_DURATION.as_secs() * u64::from(spec.sample_rate);
    if u64::from(reader.duration()) > max_frames {
        return Err(AudioError::TooLong { max: MAX_DURATION });
    }
    let channels = usize::from(spec.channels);
    let mut mixer = Mixer::new(channels, max_frames, reader.duration() as usize);
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            for sample in reader.samples::<f32>() {
                mixer.push(sample.map_err(wav_error)?)?;
            }
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for sample in reader.samples::<i32>() {
                mixer.push(sample.map_err(wav_error)? as f32 * scale)?;
            }
        }
        (format, bits) => {
            return Err(AudioError::Wav(format!(
                "{bits}-bit {} samples",
                match format {
                    hound::SampleFormat::Float => "float",
                    hound::SampleFormat::Int => "integer",
                }
            )));
        }
    }
    let mono = mixer.finish();
    Ok(Pcm::new(resample(&mono, spec.sample_rate, SAMPLE_RATE)))
}

/// Averages interleaved channels into mono frames, refusing more than `max_frames`.
struct Mixer {
    channels: usize,
    max_frames: u64,
    channel_idx: usize,
    sum: f32,
    mono: Vec<f32>,
}

impl Mixer {
    fn new(channels: usize, max_frames: u64, expected_frames: usize) -> Self {
        Mixer {
            channels,
            max_frames,
            channel_idx: 0,
            sum: 0.0,
            mono: Vec::with_capacity(expected_frames),
        }
    }

    fn push(&mut self, sample: f32) -> Result<(), AudioError> {
        self.sum += if sample.is_finite() { sample } else { 0.0 };
        self.channel_idx += 1;
        if self.channel_idx == self.channels {
            if self.mono.len() as u64 >= self.max_frames {
                return Err(AudioError::TooLong { max: MAX_DURATION });
            }
            self.mono.push(self.sum / self.channels as f32);
            self.channel_idx = 0;
            self.sum = 0.0;
        }
        Ok(())
    }

    fn finish(self) -> Vec<f32> {
        self.mono
    }
}

fn wav_error(err: hound::Error) -> AudioError {
    AudioError::Wav(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(
        spec: hound::WavSpec,
        frames: usize,
        value: impl Fn(usize, u16) -> f64,
    ) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
        for i in 0..frames {
            for channel in 0..spec.channels {
                let v = value(i, channel);
                match spec.sample_format {
                    hound::SampleFormat::Float => writer.write_sample(v as f32).unwrap(),
                    hound::SampleFormat::Int => {
                        let max = (1i64 << (spec.bits_per_sample - 1)) as f64;
                        let int = (v * max).round().clamp(-max, max - 1.0) as i32;
                        if spec.bits_per_sample == 8 {
                            writer.write_sample(int as i8).unwrap();
                        } else {
                            writer.write_sample(int).unwrap();
                        }
                    }
                }
            }
        }
        writer.finalize().unwrap();
        bytes.into_inner()
    }

    fn spec(channels: u16, sample_rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    #[test]
    fn reads_every_sample_format_at_48k() {
        for (bits, float) in [
            (8, false),
            (16, false),
            (24, false),
            (32, false),
            (32, true),
        ] {
            let bytes = write_wav(spec(1, 48_000, bits, float), 480, |i, _| {
                if i % 2 == 0 { 0.5 } else { -0.25 }
            });
            let pcm = read_wav(&bytes).unwrap();
            assert_eq!(pcm.len(), 480, "{bits}-bit float={float}");
            let tolerance = if bits == 8 { 0.01 } else { 1e-4 };
            assert!(
                (pcm.samples()[0] - 0.5).abs() < tolerance,
                "{bits}-bit: {}",
                pcm.samples()[0]
            );
            assert!(
                (pcm.samples()[1] + 0.25).abs() < tolerance,
                "{bits}-bit: {}",
                pcm.samples()[1]
            );
        }
    }

    #[test]
    fn mixes_channels_to_mono() {
        let bytes = write_wav(spec(3, 48_000, 16, false), 100, |_, c| {
            [0.6, 0.0, -0.3][usize::from(c)]
        });
        let pcm = read_wav(&bytes).unwrap();
        assert_eq!(pcm.len(), 100);
        assert!((pcm.samples()[10] - 0.1).abs() < 1e-3);
    }

    #[test]
    fn resamples_to_48k() {
        let bytes = write_wav(spec(2, 16_000, 16, false), 16_000, |i, _| {
            0.5 * (2.0 * std::f64::consts::PI * 200.0 * i as f64 / 16_000.0).sin()
        });
        let pcm = read_wav(&bytes).unwrap();
        assert_eq!(pcm.len(), 48_000);
        assert_eq!(pcm.duration_ms(), 1000);
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(matches!(
            read_wav(b"definitely not a wav file"),
            Err(AudioError::Wav(_))
        ));
        assert!(matches!(read_wav(&[]), Err(AudioError::Wav(_))));
        let bytes = write_wav(spec(1, 48_000, 16, false), 1000, |_, _| 0.1);
        assert!(matches!(read_wav(&bytes[..30]), Err(AudioError::Wav(_))));
        // Cutting the data chunk short: hound reports the missing samples.
        assert!(matches!(read_wav(&bytes[..1001]), Err(AudioError::Wav(_))));
    }

    #[test]
    fn damaged_headers_never_panic() {
        let valid = write_wav(spec(2, 44_100, 24, false), 64, |i, _| {
            (i as f64 / 64.0) - 0.5
        });
        let mut state = 7u32;
        let mut random = move || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as usize
        };
        for _ in 0..3000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + random() % 4 {
                // Mostly the header, where the lengths and the format live.
                let at = random() % 60.min(bytes.len());
                bytes[at] = random() as u8;
            }
            let _ = read_wav(&bytes);
        }
    }

    #[test]
    fn refuses_files_longer_than_the_limit() {
        // A header that claims an hour of audio at 8 kHz, without the samples.
        let bytes = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 8,
            sample_format: hound::SampleFormat::Int,
        }
        .into_header_for_infinite_file();
        let err = read_wav(&bytes).unwrap_err();
        assert!(matches!(err, AudioError::TooLong { .. }), "{err}");
    }
}
