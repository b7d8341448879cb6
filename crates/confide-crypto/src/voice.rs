//! Live voice frames: Opus packets sealed under keys exported from the room's MLS epoch.
//!
//! Push-to-talk audio is too frequent for MLS application messages (each would move
//! the sender's ratchet), so each sender derives a stream key from the group's current
//! epoch with the MLS exporter (RFC 9420 §8.5):
//!
//! ```text
//! key = MLS-Exporter(VOICE_LABEL, context(room, user, device, stream), 32)
//! ```
//!
//! where `stream` is 16 random bytes the sender picks when it starts talking, so that a
//! restarted client never reuses a nonce. Frames are sealed with ChaCha20-Poly1305:
//!
//! ```text
//! frame  = version (1) | epoch (u64) | stream (16) | counter (u64) | ciphertext
//! nonce  = counter (u64, big-endian) | 0 0 0 0
//! aad    = the 33 header bytes
//! plain  = postcard(VoiceFrame)
//! ```
//!
//! Only members of the epoch can derive a key, so the server relays frames it cannot
//! read. A frame is authenticated as coming from some member of the epoch; the sender's
//! name is the one the server attests, bound into the key derivation (so a frame
//! relabelled with another sender fails), but another member could still forge a frame
//! for someone else. That is the same trust as SFrame without signatures; see
//! SECURITY.md.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The MLS exporter label of live voice keys.
pub const VOICE_LABEL: &str = "confide live voice v1";

/// The format version, the first byte of every frame.
pub const VOICE_VERSION: u8 = 1;

/// Header bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 8 + 16 + 8;

/// The most Opus packets in one frame.
pub const MAX_PACKETS: usize = 10;

/// The largest Opus packet accepted (RFC 6716 allows up to 1275 bytes per frame).
pub const MAX_PACKET_BYTES: usize = 1500;

/// Why a voice frame could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceError {
    /// Too short, or an unknown version.
    #[error("not a voice frame")]
    Malformed,
    /// Too many or too large packets.
    #[error("voice frame over the limits ({MAX_PACKETS} packets of {MAX_PACKET_BYTES} bytes)")]
    TooLarge,
    /// It did not authenticate: wrong key, sender, epoch or altered.
    #[error("voice frame failed to decrypt")]
    Tampered,
}

/// The clear part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceHeader {
    /// The MLS epoch whose exporter made the key.
    pub epoch: u64,
    /// The sender's stream (random per talk session).
    pub stream: [u8; 16],
    /// Counts up from 0 within the stream.
    pub counter: u64,
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceFrame {
    /// The sender's clock when the first sample was captured, in milliseconds since the
    /// Unix epoch (for measuring capture-to-playback latency).
    pub captured_at_ms: u64,
    /// Opus packets, 20 ms each, in order.
    pub packets: Vec<Vec<u8>>,
}

/// A stream's key. Zeroized on drop; `Debug` shows no bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VoiceKey([u8; 32]);

impl VoiceKey {
    /// Wraps the exporter's output.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> VoiceKey {
        VoiceKey(bytes)
    }
}

impl fmt::Debug for VoiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VoiceKey(..)")
    }
}

/// The exporter context of a stream key: binds room, sender and stream.
#[must_use]
pub fn key_context(room: u64, user: &str, device: u64, stream: &[u8; 16]) -> Vec<u8> {
    let mut context = Vec::with_capacity(8 + 2 + user.len() + 8 + 16);
    context.extend_from_slice(&room.to_be_bytes());
    context.extend_from_slice(&u16::try_from(user.len()).unwrap_or(u16::MAX).to_be_bytes());
    context.extend_from_slice(user.as_bytes());
    context.extend_from_slice(&device.to_be_bytes());
    context.extend_from_slice(stream);
    context
}

fn header_bytes(header: &VoiceHeader) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    bytes[0] = VOICE_VERSION;
    bytes[1..9].copy_from_slice(&header.epoch.to_be_bytes());
    bytes[9..25].copy_from_slice(&header.stream);
    bytes[25..33].copy_from_slice(&header.counter.to_be_bytes());
    bytes
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(bytes)
}

fn check_limits(frame: &VoiceFrame) -> Result<(), VoiceError> {
    if frame.packets.len() > MAX_PACKETS || frame.packets.iter().any(|p| p.len() > MAX_PACKET_BYTES)
    {
        return Err(VoiceError::TooLarge);
    }
    Ok(())
}

/// Reads a frame's header without decrypting it (to pick the key).
///
/// # Errors
/// [`VoiceError::Malformed`].
pub fn parse_header(bytes: &[u8]) -> Result<VoiceHeader, VoiceError> {
    let header = bytes.get(..HEADER_LEN).ok_or(VoiceError::Malformed)?;
    if header[0] != VOICE_VERSION {
        return Err(VoiceError::Malformed);
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&header[1..9]);
    let mut stream = [0u8; 16];
    stream.copy_from_slice(&header[9..25]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&header[25..33]);
    Ok(VoiceHeader {
        epoch: u64::from_be_bytes(epoch),
        stream,
        counter: u64::from_be_bytes(counter),
    })
}

/// Seals a frame under its stream's key.
///
/// # Errors
/// [`VoiceError::TooLarge`].
pub fn seal(
    key: &VoiceKey,
    header: &VoiceHeader,
    frame: &VoiceFrame,
) -> Result<Vec<u8>, VoiceError> {
    check_limits(frame)?;
    let plain = postcard::to_allocvec(frame).map_err(|_| VoiceError::TooLarge)?;
    let head = header_bytes(header);
    let sealed = ChaCha20Poly1305::new(Key::from_slice(&key.0))
        .encrypt(
            &nonce(header.counter),
            Payload {
                msg: &plain,
                aad: &head,
            },
        )
        .map_err(|_| VoiceError::TooLarge)?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a frame with its stream's key.
///
/// # Errors
/// [`VoiceError::Malformed`], [`VoiceError::Tampered`] or [`VoiceError::TooLarge`].
pub fn open(key: &VoiceKey, bytes: &[u8]) -> Result<(VoiceHeader, VoiceFrame), VoiceError> {
    let header = parse_header(bytes)?;
    let plain = ChaCha20Poly1305::new(Key::from_slice(&key.0))
        .decrypt(
            &nonce(header.counter),
            Payload {
                msg: &bytes[HEADER_LEN..],
                aad: &bytes[..HEADER_LEN],
            },
        )
        .map_err(|_| VoiceError::Tampered)?;
    let frame: VoiceFrame = postcard::from_bytes(&plain).map_err(|_| VoiceError::Malformed)?;
    check_limits(&frame)?;
    Ok((header, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> VoiceFrame {
        VoiceFrame {
            captured_at_ms: 1_767_225_600_000,
            packets: vec![vec![1, 2, 3], vec![4; 80]],
        }
    }

    fn header(counter: u64) -> VoiceHeader {
        VoiceHeader {
            epoch: 7,
            stream: [9; 16],
            counter,
        }
    }

    #[test]
    fn frames_round_trip_and_show_their_header() {
        let key = VoiceKey::from_bytes([1; 32]);
        let sealed = seal(&key, &header(3), &frame()).unwrap();
        assert_eq!(parse_header(&sealed).unwrap(), header(3));
        assert_eq!(open(&key, &sealed).unwrap(), (header(3), frame()));
    }

    #[test]
    fn altered_frames_and_wrong_keys_fail() {
        let key = VoiceKey::from_bytes([1; 32]);
        let sealed = seal(&key, &header(3), &frame()).unwrap();
        assert_eq!(
            open(&VoiceKey::from_bytes([2; 32]), &sealed),
            Err(VoiceError::Tampered)
        );
        // A changed counter (a replay under another number) fails.
        let mut moved = sealed.clone();
        moved[32] ^= 1;
        assert_eq!(open(&key, &moved), Err(VoiceError::Tampered));
        let mut body = sealed.clone();
        let last = body.len() - 1;
        body[last] ^= 1;
        assert_eq!(open(&key, &body), Err(VoiceError::Tampered));
        assert_eq!(open(&key, &sealed[..10]), Err(VoiceError::Malformed));
        let mut version = sealed;
        version[0] = 9;
        assert_eq!(open(&key, &version), Err(VoiceError::Malformed));
    }

    #[test]
    fn limits_hold_both_ways() {
        let key = VoiceKey::from_bytes([1; 32]);
        let big = VoiceFrame {
            captured_at_ms: 0,
            packets: vec![vec![0; MAX_PACKET_BYTES + 1]],
        };
        assert_eq!(seal(&key, &header(0), &big), Err(VoiceError::TooLarge));
        let many = VoiceFrame {
            captured_at_ms: 0,
            packets: vec![vec![0; 1]; MAX_PACKETS + 1],
        };
        assert_eq!(seal(&key, &header(0), &many), Err(VoiceError::TooLarge));
    }

    #[test]
    fn contexts_separate_senders_and_streams() {
        let a = key_context(1, "alice", 5, &[0; 16]);
        assert_ne!(a, key_context(1, "alicf", 5, &[0; 16]));
        assert_ne!(a, key_context(1, "alice", 6, &[0; 16]));
        assert_ne!(a, key_context(1, "alice", 5, &[1; 16]));
        assert_ne!(a, key_context(2, "alice", 5, &[0; 16]));
    }
}
