//! The one error type of this crate.
//!
//! Messages are lowercase sentences fit to show to a user after a short prefix such as
//! "cannot record: ". Device errors carry the reason cpal or the system gave, because "no
//! microphone" alone does not help anyone fix a missing permission or a busy device.

use std::time::Duration;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The bytes are not a WAV file this crate can read.
    #[error("invalid or unsupported WAV file: {0}")]
    Wav(String),
    /// The audio is longer than the crate accepts.
    #[error("audio is longer than the maximum of {} minutes", .max.as_secs() / 60)]
    TooLong {
        /// The limit that was exceeded.
        max: Duration,
    },
    /// The bytes are not an Ogg stream at all.
    #[error("not an Ogg file: {0}")]
    NotOgg(String),
    /// The Ogg stream holds something other than Opus (for example Vorbis).
    #[error("not an Opus stream: {0}")]
    NotOpus(String),
    /// The Opus stream is malformed (bad header, undecodable packet, bad timestamps).
    #[error("invalid Opus stream: {0}")]
    InvalidOpus(String),
    /// The stream ends before its end-of-stream page: the file was cut short.
    #[error("truncated audio file: {0}")]
    Truncated(String),
    /// The Opus library refused an operation.
    #[error("opus codec error: {0}")]
    Codec(String),
    /// A live frame had the wrong number of samples.
    #[error("a live frame must hold {expected} samples, got {actual}")]
    FrameSize {
        /// Samples a frame must hold ([`crate::FRAME_SAMPLES`]).
        expected: usize,
        /// Samples the frame held.
        actual: usize,
    },
    /// No usable microphone: none present, or the system refused to open it.
    #[error("no usable microphone: {0}")]
    NoMicrophone(String),
    /// No usable speaker: none present, or the system refused to open it.
    #[error("no usable speaker: {0}")]
    NoSpeaker(String),
    /// Reading a file failed.
    #[error("cannot read audio file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<opus::Error> for AudioError {
    fn from(err: opus::Error) -> Self {
        AudioError::Codec(err.to_string())
    }
}
