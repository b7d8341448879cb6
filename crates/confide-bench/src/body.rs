//! The body of every benchmark message, and the clock it is stamped with.
//!
//! The first [`HEADER_LEN`] bytes say when the message was sent (nanoseconds since the
//! bench process's epoch), who sent it and which of its messages it is, as lowercase
//! hex; the rest is padding up to the requested size. The same bytes travel to Confide
//! (as an opaque message body, which is what an MLS ciphertext is to the server) and to
//! the reference relay (as one line), so both carry the same payload.
//!
//! Senders and receivers live in the same process, so one monotonic clock serves both
//! ends and latency needs no clock synchronisation. A body never contains a newline:
//! the relay splits its stream on them.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes of the stamp at the start of every body; the smallest body there is.
pub const HEADER_LEN: usize = 32;

/// The padding byte after the stamp.
const PAD: u8 = b'.';

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the bench process's epoch (the first call).
#[must_use]
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a body says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When it was sent, from [`now_ns`].
    pub sent_ns: u64,
    /// The sending simulated user's index.
    pub sender: u32,
    /// The sender's message number, from 0.
    pub counter: u32,
}

impl Stamp {
    /// Appends a body of `len` bytes (at least [`HEADER_LEN`]) carrying this stamp.
    pub fn write_to(self, len: usize, out: &mut Vec<u8>) {
        out.reserve(len.max(HEADER_LEN));
        put_hex(out, self.sent_ns, 16);
        put_hex(out, u64::from(self.sender), 8);
        put_hex(out, u64::from(self.counter), 8);
        out.resize(out.len() + len.saturating_sub(HEADER_LEN), PAD);
    }

    /// A body of `len` bytes carrying this stamp.
    #[must_use]
    pub fn to_body(self, len: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(len.max(HEADER_LEN));
        self.write_to(len, &mut body);
        body
    }

    /// Reads the stamp at the start of `body`; `None` if it is not a bench body (such as
    /// a message from someone else, or garbage).
    #[must_use]
    pub fn parse(body: &[u8]) -> Option<Stamp> {
        let header = body.get(..HEADER_LEN)?;
        let sent_ns = parse_hex(&header[..16])?;
        let sender = u32::try_from(parse_hex(&header[16..24])?).ok()?;
        let counter = u32::try_from(parse_hex(&header[24..32])?).ok()?;
        Some(Stamp {
            sent_ns,
            sender,
            counter,
        })
    }
}

fn put_hex(out: &mut Vec<u8>, value: u64, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for position in (0..digits).rev() {
        let nibble = (value >> (position * 4)) & 0xf;
        out.push(DIGITS[nibble as usize]);
    }
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &byte in text {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let stamp = Stamp {
            sent_ns: 0x0123_4567_89ab_cdef,
            sender: 42,
            counter: u32::MAX,
        };
        let body = stamp.to_body(256);
        assert_eq!(body.len(), 256);
        assert_eq!(&body[..HEADER_LEN], b"0123456789abcdef0000002affffffff");
        assert!(body[HEADER_LEN..].iter().all(|&byte| byte == PAD));
        assert!(!body.contains(&b'\n'));
        assert_eq!(Stamp::parse(&body), Some(stamp));
    }

    #[test]
    fn short_sizes_keep_the_whole_stamp() {
        let stamp = Stamp {
            sent_ns: 7,
            sender: 1,
            counter: 2,
        };
        let body = stamp.to_body(3);
        assert_eq!(body.len(), HEADER_LEN);
        assert_eq!(Stamp::parse(&body), Some(stamp));
    }

    #[test]
    fn foreign_bodies_are_not_stamps() {
        assert_eq!(Stamp::parse(b"hello"), None);
        assert_eq!(Stamp::parse(&[b'x'; 64]), None);
        // Upper-case hex is not what the bench writes.
        assert_eq!(Stamp::parse(&[b'A'; 32]), None);
    }

    #[test]
    fn clock_moves_forward() {
        let first = now_ns();
        let second = now_ns();
        assert!(second >= first);
    }
}
