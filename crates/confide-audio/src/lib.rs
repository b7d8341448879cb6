//! Confide's audio: voice messages and live voice, without any UI or network.
//!
//! Every piece of this crate speaks one internal format: **48 kHz mono `f32` samples in
//! `[-1, 1]`** ([`Pcm`], [`SAMPLE_RATE`]). Whatever comes in (a WAV file, an Ogg Opus file,
//! a microphone running at 44.1 kHz in stereo) is converted to it at the edge, and whatever
//! goes out is produced from it.
//!
//! The pieces:
//!
//! - [`wav`]: reads common WAV files (8/16/24/32-bit integer, 32-bit float, any channel
//!   count, any sample rate) into [`Pcm`], mixing down to mono and resampling with the
//!   windowed-sinc [`resample`] module.
//! - [`ogg_opus`]: voice messages as Ogg Opus files (RFC 7845), both ways. Files made here
//!   play in standard tools, and files made by standard tools (`opusenc`) decode here.
//! - [`live`]: live voice, 20 ms frames to Opus packets and back, with packet-loss
//!   concealment when a packet never arrives.
//! - [`summary`]: what a UI shows for a voice message: its duration and a small waveform.
//! - [`compare`]: normalised cross-correlation ([`correlation`], [`best_alignment`]), so
//!   tests (here and in other crates) can check that decoded audio still resembles what
//!   was recorded.
//! - [`device`]: the default microphone ([`Recorder`]) and speaker ([`Player`]) through
//!   cpal, and [`availability`] to tell a UI whether either is usable and, if not, why.
//!
//! What this crate must not do: touch the network, encrypt, know about rooms or messages,
//! or panic on hostile input. Decoders are bounded ([`MAX_DURATION`]) so a small file cannot
//! claim hours of audio and exhaust memory, and every failure is an [`AudioError`].
//!
//! A machine without a sound card is normal here (servers, CI): device functions then return
//! [`AudioError::NoMicrophone`] or [`AudioError::NoSpeaker`] with a reason a UI can show.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod compare;
pub mod device;
pub mod error;
pub mod live;
pub mod ogg_opus;
pub mod pcm;
pub mod resample;
pub mod summary;
pub mod wav;

pub use compare::{Alignment, best_alignment, correlation};
pub use device::{Availability, DeviceStatus, Player, Recorder, StreamPlayer, availability};
pub use error::AudioError;
pub use live::{LiveDecoder, LiveEncoder};
pub use ogg_opus::{decode_ogg_opus, encode_ogg_opus};
pub use pcm::{FRAME_SAMPLES, MAX_DURATION, MAX_SAMPLES, Pcm, SAMPLE_RATE};
pub use summary::{MAX_WAVEFORM_BUCKETS, VoiceSummary};
pub use wav::{read_wav, read_wav_file};
