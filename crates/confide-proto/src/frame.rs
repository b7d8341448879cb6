//! Length-prefixed framing and the typed codecs for client and server frames.
//!
//! Every frame on the wire is a 4-byte big-endian payload length followed by that many
//! bytes of postcard-encoded payload. The length is checked against the receiver's limit
//! as soon as the 4 header bytes are in, before any buffer of that size is allocated.

use crate::ids::RequestId;
use crate::message::{ClientFrame, Request, ServerFrame};
use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// The largest payload a control frame may have (1 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Why bytes could not be turned into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// A request whose type this version does not know; the id lets the receiver answer.
    #[error("unknown request type {tag}")]
    UnknownRequest {
        /// The request's id.
        id: RequestId,
        /// The unknown discriminant.
        tag: u32,
    },
    /// The payload is not a valid encoding of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Why a value could not be turned into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded payload is over the limit.
    #[error("encoded frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Encoded payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Serialization failed.
    #[error("cannot encode frame: {0}")]
    Serialize(String),
}

/// Appends `value` as one frame (header and payload) to `out`.
///
/// On error `out` is left as it was.
///
/// # Errors
/// [`EncodeError::TooLarge`] if the payload exceeds `max_len`.
pub fn encode_frame<T: Serialize>(
    value: &T,
    max_len: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u32(0);
    if let Err(err) = postcard::serialize_with_flavor(value, Appender(&mut *out)) {
        out.truncate(start);
        return Err(EncodeError::Serialize(err.to_string()));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max_len {
        out.truncate(start);
        return Err(EncodeError::TooLarge { len, max: max_len });
    }
    // The payload length fits in u32 because it is at most `max_len`, which callers keep
    // far below 4 GiB; saturate rather than wrap if a caller does not.
    let header = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Ok(())
}

/// A postcard output that appends to a `BytesMut` a slice at a time.
struct Appender<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Appender<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the payload and the number of bytes
/// the whole frame occupies.
///
/// # Errors
/// [`DecodeError::TooLarge`] as soon as the header announces more than `max_len`.
pub fn decode_frame(buf: &[u8], max_len: usize) -> Result<Option<(&[u8], usize)>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut header_bytes = [0u8; HEADER_LEN];
    header_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(header_bytes) as usize;
    if len > max_len {
        return Err(DecodeError::TooLarge { len, max: max_len });
    }
    let total = HEADER_LEN + len;
    match buf.get(HEADER_LEN..total) {
        Some(payload) => Ok(Some((payload, total))),
        None => Ok(None),
    }
}

/// Splits frames off a growing receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_len: usize,
}

impl FrameDecoder {
    /// A decoder that refuses payloads over `max_len` bytes.
    #[must_use]
    pub fn new(max_len: usize) -> FrameDecoder {
        FrameDecoder { max_len }
    }

    /// Removes and returns the next complete frame's payload from `buf`, if there is one.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`] if the next frame announces more than the limit; the
    /// stream cannot be resynchronised after that and should be closed.
    pub fn next_payload(&self, buf: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
        let total = match decode_frame(buf, self.max_len)? {
            Some((_, total)) => total,
            None => return Ok(None),
        };
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        Ok(Some(frame))
    }

    /// How many more bytes are needed before the next frame is complete (at least 1),
    /// so a reader can reserve that much capacity.
    #[must_use]
    pub fn bytes_wanted(&self, buf: &[u8]) -> usize {
        match buf.get(..HEADER_LEN) {
            None => HEADER_LEN - buf.len(),
            Some(header) => {
                let mut header_bytes = [0u8; HEADER_LEN];
                header_bytes.copy_from_slice(header);
                let len = (u32::from_be_bytes(header_bytes) as usize).min(self.max_len);
                (HEADER_LEN + len).saturating_sub(buf.len()).max(1)
            }
        }
    }
}

fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(payload).map_err(|err| DecodeError::Malformed(err.to_string()))
}

impl ClientFrame {
    /// Decodes a client frame's payload.
    ///
    /// # Errors
    /// [`DecodeError::UnknownRequest`] for a well-formed id followed by a request type this
    /// version does not know, so the server can answer it; otherwise
    /// [`DecodeError::Malformed`].
    pub fn from_payload(payload: &[u8]) -> Result<ClientFrame, DecodeError> {
        let (id, rest) = postcard::take_from_bytes::<RequestId>(payload)
            .map_err(|err| DecodeError::Malformed(err.to_string()))?;
        let (tag, _) = postcard::take_from_bytes::<u32>(rest)
            .map_err(|err| DecodeError::Malformed(err.to_string()))?;
        if tag >= Request::KNOWN_VARIANTS {
            return Err(DecodeError::UnknownRequest { id, tag });
        }
        let request = decode_payload::<Request>(rest)?;
        Ok(ClientFrame { id, request })
    }
}

impl ServerFrame {
    /// Decodes a server frame's payload.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] if the payload is not a server frame.
    pub fn from_payload(payload: &[u8]) -> Result<ServerFrame, DecodeError> {
        decode_payload(payload)
    }
}

/// Decodes any payload type, for the handshake frames.
///
/// # Errors
/// [`DecodeError::Malformed`] if the payload is not a `T`.
pub fn decode_value<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    decode_payload(payload)
}

#[cfg(test)]
mod tests;
