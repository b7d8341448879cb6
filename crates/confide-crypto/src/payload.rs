//! The plaintext of a chat message: one typed, versioned [`Envelope`].
//!
//! Every application message of an MLS group, and every token of a shared-key room,
//! carries exactly one encoded [`Envelope`]; the server only ever sees it encrypted.
//! This module turns envelopes into bytes and back and checks their limits. It does no
//! cryptography and no I/O: the message id and the time are chosen by the caller.
//!
//! # Encoding (format version 1)
//!
//! ```text
//! version (1 byte) | postcard(Envelope) | pad zero bytes | pad (u16, big-endian)
//! ```
//!
//! `pad` is the smallest count (0 to 31) that makes the whole encoding a multiple of
//! [`PADDING_BLOCK`] bytes, so an observer of the ciphertext learns a message's length
//! only to the nearest 32 bytes. Decoding is strict: the length must be a multiple of
//! the block, `pad` below it, the pad bytes zero and the postcard part consumed exactly,
//! so every envelope has one encoding.
//!
//! ```
//! use confide_crypto::payload::{Envelope, MessageId, Payload};
//!
//! # fn main() -> Result<(), confide_crypto::payload::PayloadError> {
//! let envelope = Envelope {
//!     id: MessageId::from_bytes([1; 16]), // random in real use
//!     sent_at_ms: 1_767_225_600_000,
//!     body: Payload::Text { text: "hello".to_owned() },
//! };
//! let bytes = envelope.encode();
//! assert_eq!(bytes.len() % 32, 0);
//! assert_eq!(Envelope::decode(&bytes)?, envelope);
//! # Ok(())
//! # }
//! ```
//!
//! # Compatibility
//!
//! [`Payload`] variants are only ever appended. A client that meets a variant newer than
//! itself gets [`PayloadError::UnknownKind`] and can show "update Confide to see this
//! message". Changing the fields of an existing variant needs a new [`PAYLOAD_VERSION`],
//! because postcard is not self-describing.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The format version written as the first byte of every encoded envelope.
pub const PAYLOAD_VERSION: u8 = 1;

/// Encoded envelopes are padded to a multiple of this many bytes.
pub const PADDING_BLOCK: usize = 32;

/// The largest encoded envelope [`Envelope::decode`] looks at. Every envelope within the
/// field limits below is much smaller (the largest, a text of [`MAX_TEXT_BYTES`], encodes
/// to under 66 KiB); anything longer is rejected before parsing.
pub const MAX_ENCODED_LEN: usize = 96 * 1024;

/// The longest text of a message, reply or edit, in UTF-8 bytes (64 KiB).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The longest reaction emoji, in UTF-8 bytes (enough for long ZWJ sequences).
pub const MAX_EMOJI_BYTES: usize = 64;
/// The longest file name, in UTF-8 bytes (the usual file-system limit).
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// The longest server blob id, in bytes.
pub const MAX_BLOB_ID_BYTES: usize = 128;
/// The longest MIME type, in bytes (RFC 6838 allows 127 for each half).
pub const MAX_MIME_BYTES: usize = 255;
/// The most amplitude buckets in a voice message's waveform.
pub const MAX_WAVEFORM_BUCKETS: usize = 64;
/// The most message ids one receipt may acknowledge.
pub const MAX_RECEIPT_IDS: usize = 1024;

/// The number of [`Payload`] variants this version knows; postcard numbers them from 0
/// in declaration order, so a discriminant at or above this is from a newer client.
/// Raise it when appending a variant (the tests check it against every variant).
const KNOWN_KINDS: u32 = 9;

/// The size of the trailing pad-length field.
const PAD_LEN_FIELD: usize = 2;

/// A message's id: 16 random bytes chosen by the sending client.
///
/// Edits, replies, reactions, deletions and receipts refer to messages by this id. It
/// shows as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId([u8; 16]);

/// One message as its author wrote it: id, the author's clock and the content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The id the sender chose for this message.
    pub id: MessageId,
    /// The sender's clock when sending, in milliseconds since the Unix epoch. It is the
    /// sender's claim only; the server's order and time are authoritative.
    pub sent_at_ms: u64,
    /// What the message says or does.
    pub body: Payload,
}

/// What a message says or does. Variants are only ever appended (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A plain text message.
    Text {
        /// The text, at most [`MAX_TEXT_BYTES`].
        text: String,
    },
    /// A text message replying to an earlier one.
    Reply {
        /// The message replied to.
        to: MessageId,
        /// The text, at most [`MAX_TEXT_BYTES`].
        text: String,
    },
    /// A new text for one of the sender's earlier messages.
    Edit {
        /// The message edited.
        target: MessageId,
        /// The new text, at most [`MAX_TEXT_BYTES`].
        text: String,
    },
    /// A request to hide one of the sender's earlier messages.
    Delete {
        /// The message deleted.
        target: MessageId,
    },
    /// Adds or removes an emoji reaction to a message.
    Reaction {
        /// The message reacted to.
        target: MessageId,
        /// The emoji, 1 to [`MAX_EMOJI_BYTES`] bytes.
        emoji: String,
        /// `true` to add the reaction, `false` to take it back.
        add: bool,
    },
    /// The sender started or stopped typing. Ephemeral: never stored.
    Typing {
        /// Whether the sender is typing now.
        active: bool,
    },
    /// The sender received or read messages.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// The messages acknowledged, at most [`MAX_RECEIPT_IDS`].
        up_to: Vec<MessageId>,
    },
    /// An encrypted file stored on the server.
    File(FilePointer),
    /// A voice message: an encrypted audio file plus what a player shows before loading.
    Voice(VoicePointer),
}

/// What a [`Payload::Receipt`] acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// The messages reached the sender's device.
    Delivered,
    /// The sender has seen the messages.
    Read,
}

/// Where an encrypted file is and how to decrypt and check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePointer {
    /// The server's id for the encrypted blob, at most [`MAX_BLOB_ID_BYTES`].
    pub blob: String,
    /// The file's name as the sender had it, at most [`MAX_FILE_NAME_BYTES`].
    pub name: String,
    /// The plaintext size in bytes.
    pub size: u64,
    /// The MIME type, at most [`MAX_MIME_BYTES`].
    pub mime: String,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// The key the blob is encrypted under.
    pub key: FileKey,
    /// The plaintext bytes per encrypted chunk.
    pub chunk_size: u32,
}

/// A voice message: the audio file plus its length and a coarse waveform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoicePointer {
    /// The encrypted audio.
    pub file: FilePointer,
    /// The duration in milliseconds.
    pub duration_ms: u32,
    /// Up to [`MAX_WAVEFORM_BUCKETS`] amplitudes, 0 (silence) to 255 (loudest).
    pub waveform: Vec<u8>,
}

/// The symmetric key of one encrypted file. Zeroized on drop; `Debug` shows no bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct FileKey([u8; 32]);

/// Why bytes are not a valid [`Envelope`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The format version byte is not one this client knows.
    #[error("unsupported payload version {0}")]
    UnsupportedVersion(u8),
    /// The payload is of a kind added by a newer client.
    #[error("unknown payload kind {0} (sent by a newer client)")]
    UnknownKind(u32),
    /// The bytes are not a well-formed envelope (truncated, bad padding, bad fields).
    #[error("malformed payload")]
    Malformed,
    /// The encoding is longer than [`MAX_ENCODED_LEN`].
    #[error("payload too large")]
    TooLarge,
    /// A field is longer than its limit.
    #[error("{field} longer than {max}")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its limit (bytes for strings, entries for lists).
        max: usize,
    },
    /// A field that must not be empty is empty.
    #[error("{field} is empty")]
    EmptyField {
        /// The field's name.
        field: &'static str,
    },
}

impl MessageId {
    /// Wraps 16 bytes, which the sender should draw from a cryptographic RNG.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the 32 hex digits the id shows as (either case); `None` otherwise.
    #[must_use]
    pub fn from_hex(text: &str) -> Option<MessageId> {
        let text = text.trim();
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (slot, index) in bytes.iter_mut().zip((0..32).step_by(2)) {
            *slot = u8::from_str_radix(text.get(index..index + 2)?, 16).ok()?;
        }
        Some(MessageId(bytes))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl Envelope {
    /// Encodes the envelope: version byte, postcard, padding (see the module docs).
    ///
    /// This does not check the field limits; call [`Envelope::validate`] first when the
    /// envelope comes from user input, since [`Envelope::decode`] rejects what breaks
    /// them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PAYLOAD_VERSION];
        // Serializing into a Vec only fails for types serde cannot express, which ours
        // are not; should it ever happen, the bare version byte fails to decode.
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        pad(out)
    }

    /// Decodes and validates an envelope made by [`Envelope::encode`].
    ///
    /// # Errors
    ///
    /// [`PayloadError::TooLarge`] past [`MAX_ENCODED_LEN`], before anything else;
    /// [`PayloadError::UnsupportedVersion`] for another format version;
    /// [`PayloadError::UnknownKind`] for a payload kind added by a newer client;
    /// [`PayloadError::Malformed`] for anything else not produced by `encode`; and
    /// the errors of [`Envelope::validate`].
    pub fn decode(bytes: &[u8]) -> Result<Envelope, PayloadError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(PayloadError::TooLarge);
        }
        let (&version, rest) = bytes.split_first().ok_or(PayloadError::Malformed)?;
        if version != PAYLOAD_VERSION {
            return Err(PayloadError::UnsupportedVersion(version));
        }
        let body = unpad(rest, bytes.len())?;

        // Read the header and the payload's discriminant first, so that a kind from a
        // newer client is told apart from garbage (postcard reports both alike).
        let ((_, _, kind), _) = postcard::take_from_bytes::<(MessageId, u64, u32)>(body)
            .map_err(|_| PayloadError::Malformed)?;
        if kind >= KNOWN_KINDS {
            return Err(PayloadError::UnknownKind(kind));
        }
        let (envelope, trailing) =
            postcard::take_from_bytes::<Envelope>(body).map_err(|_| PayloadError::Malformed)?;
        if !trailing.is_empty() {
            return Err(PayloadError::Malformed);
        }
        envelope.validate()?;
        Ok(envelope)
    }

    /// Checks the field limits that [`Envelope::decode`] enforces.
    ///
    /// # Errors
    ///
    /// [`PayloadError::FieldTooLong`] or [`PayloadError::EmptyField`] naming the field.
    pub fn validate(&self) -> Result<(), PayloadError> {
        self.body.validate()
    }
}

impl Payload {
    /// Whether the server should relay this payload without storing it: only typing
    /// notifications, which are worthless later.
    pub fn is_ephemeral(&self) -> bool {
        matches!(self, Payload::Typing { .. })
    }

    /// A short lowercase name of the variant, for logs and metrics (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Text { .. } => "text",
            Payload::Reply { .. } => "reply",
            Payload::Edit { .. } => "edit",
            Payload::Delete { .. } => "delete",
            Payload::Reaction { .. } => "reaction",
            Payload::Typing { .. } => "typing",
            Payload::Receipt { .. } => "receipt",
            Payload::File(_) => "file",
            Payload::Voice(_) => "voice",
        }
    }

    fn validate(&self) -> Result<(), PayloadError> {
        match self {
            Payload::Text { text } | Payload::Reply { text, .. } | Payload::Edit { text, .. } => {
                at_most("text", text.len(), MAX_TEXT_BYTES)
            }
            Payload::Reaction { emoji, .. } => {
                if emoji.is_empty() {
                    return Err(PayloadError::EmptyField { field: "emoji" });
                }
                at_most("emoji", emoji.len(), MAX_EMOJI_BYTES)
            }
            Payload::Receipt { up_to, .. } => at_most("up_to", up_to.len(), MAX_RECEIPT_IDS),
            Payload::File(file) => file.validate(),
            Payload::Voice(voice) => {
                voice.file.validate()?;
                at_most("waveform", voice.waveform.len(), MAX_WAVEFORM_BUCKETS)
            }
            Payload::Delete { .. } | Payload::Typing { .. } => Ok(()),
        }
    }
}

impl FilePointer {
    fn validate(&self) -> Result<(), PayloadError> {
        at_most("blob", self.blob.len(), MAX_BLOB_ID_BYTES)?;
        at_most("name", self.name.len(), MAX_FILE_NAME_BYTES)?;
        at_most("mime", self.mime.len(), MAX_MIME_BYTES)
    }
}

impl FileKey {
    /// Wraps 32 bytes, which should come from a cryptographic RNG.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for FileKey {
    /// Compares in constant time.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for FileKey {}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

fn at_most(field: &'static str, len: usize, max: usize) -> Result<(), PayloadError> {
    if len > max {
        return Err(PayloadError::FieldTooLong { field, max });
    }
    Ok(())
}

/// Appends zero bytes and the 2-byte pad count so the length is a multiple of the block.
fn pad(mut content: Vec<u8>) -> Vec<u8> {
    let unpadded = content.len() + PAD_LEN_FIELD;
    let pad = (PADDING_BLOCK - unpadded % PADDING_BLOCK) % PADDING_BLOCK;
    content.resize(content.len() + pad, 0);
    // `pad` is below PADDING_BLOCK (32), so it always fits the u16 field.
    content.extend_from_slice(&u16::try_from(pad).unwrap_or(0).to_be_bytes());
    content
}

/// Strips the padding from `rest` (the encoding after its version byte, `total` bytes
/// long in all) and returns the postcard part.
fn unpad(rest: &[u8], total: usize) -> Result<&[u8], PayloadError> {
    if !total.is_multiple_of(PADDING_BLOCK) {
        return Err(PayloadError::Malformed);
    }
    let (content, pad_field) = rest
        .split_last_chunk::<PAD_LEN_FIELD>()
        .ok_or(PayloadError::Malformed)?;
    let pad = usize::from(u16::from_be_bytes(*pad_field));
    if pad >= PADDING_BLOCK || pad > content.len() {
        return Err(PayloadError::Malformed);
    }
    let (body, padding) = content.split_at(content.len() - pad);
    if padding.iter().any(|&byte| byte != 0) {
        return Err(PayloadError::Malformed);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> MessageId {
        MessageId::from_bytes([n; 16])
    }

    fn file_pointer() -> FilePointer {
        FilePointer {
            blob: "blob-7f3a".to_owned(),
            name: "holiday photo.jpg".to_owned(),
            size: 1_234_567,
            mime: "image/jpeg".to_owned(),
            sha256: [0xab; 32],
            key: FileKey::from_bytes([0x42; 32]),
            chunk_size: 64 * 1024,
        }
    }

    fn every_variant() -> Vec<Payload> {
        vec![
            Payload::Text {
                text: "hello, world".to_owned(),
            },
            Payload::Reply {
                to: id(1),
                text: "yes!".to_owned(),
            },
            Payload::Edit {
                target: id(2),
                text: "hello, world (edited)".to_owned(),
            },
            Payload::Delete { target: id(3) },
            Payload::Reaction {
                target: id(4),
                emoji: "👍🏽".to_owned(),
                add: true,
            },
            Payload::Typing { active: true },
            Payload::Receipt {
                kind: ReceiptKind::Read,
                up_to: vec![id(5), id(6)],
            },
            Payload::File(file_pointer()),
            Payload::Voice(VoicePointer {
                file: file_pointer(),
                duration_ms: 12_500,
                waveform: (0..64).map(|n| n * 4).collect(),
            }),
        ]
    }

    fn envelope(body: Payload) -> Envelope {
        Envelope {
            id: id(0xee),
            sent_at_ms: 1_767_225_600_000,
            body,
        }
    }

    /// Hand-builds an encoding from raw postcard bytes, padding included.
    fn encode_raw(version: u8, postcard_part: &[u8]) -> Vec<u8> {
        let mut content = vec![version];
        content.extend_from_slice(postcard_part);
        pad(content)
    }

    #[test]
    fn every_variant_round_trips() {
        let variants = every_variant();
        assert_eq!(variants.len(), usize::try_from(KNOWN_KINDS).unwrap());
        for body in variants {
            let envelope = envelope(body);
            let bytes = envelope.encode();
            assert_eq!(bytes[0], PAYLOAD_VERSION);
            assert_eq!(
                Envelope::decode(&bytes).unwrap(),
                envelope,
                "{}",
                envelope.body.kind()
            );
        }
    }

    #[test]
    fn discriminants_follow_declaration_order() {
        // The UnknownKind check relies on postcard numbering variants 0, 1, 2, ...
        for (expected, body) in every_variant().into_iter().enumerate() {
            let bytes = postcard::to_allocvec(&body).unwrap();
            assert_eq!(usize::from(bytes[0]), expected, "{}", body.kind());
        }
    }

    #[test]
    fn kinds_are_distinct_and_only_typing_is_ephemeral() {
        let variants = every_variant();
        let mut kinds: Vec<_> = variants.iter().map(Payload::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), variants.len());
        for body in &variants {
            assert_eq!(body.is_ephemeral(), body.kind() == "typing");
        }
    }

    #[test]
    fn encodings_are_padded_to_the_block() {
        for len in 0..200 {
            let bytes = envelope(Payload::Text {
                text: "x".repeat(len),
            })
            .encode();
            assert_eq!(bytes.len() % PADDING_BLOCK, 0, "text of {len} bytes");
            let pad = usize::from(u16::from_be_bytes([
                bytes[bytes.len() - 2],
                bytes[bytes.len() - 1],
            ]));
            assert!(pad < PADDING_BLOCK);
        }
        // Texts a few bytes apart mostly share one length.
        let short = envelope(Payload::Text {
            text: "hi".to_owned(),
        })
        .encode();
        let longer = envelope(Payload::Text {
            text: "hello".to_owned(),
        })
        .encode();
        assert_eq!(short.len(), longer.len());
    }

    #[test]
    fn unknown_version_is_reported() {
        let mut bytes = envelope(Payload::Typing { active: false }).encode();
        bytes[0] = 2;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(PayloadError::UnsupportedVersion(2))
        );
        bytes[0] = 0;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(PayloadError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn unknown_kind_from_a_newer_client_is_reported() {
        let mut postcard_part = postcard::to_allocvec(&(id(1), 5_u64)).unwrap();
        // Discriminant 9 (the next variant to be added), then a field we cannot read.
        postcard_part.extend_from_slice(&[9, 3, b'n', b'e', b'w']);
        let bytes = encode_raw(PAYLOAD_VERSION, &postcard_part);
        assert_eq!(Envelope::decode(&bytes), Err(PayloadError::UnknownKind(9)));

        // A large discriminant (a multi-byte varint) too.
        let mut postcard_part = postcard::to_allocvec(&(id(1), 5_u64)).unwrap();
        postcard_part.extend_from_slice(&postcard::to_allocvec(&300_u32).unwrap());
        let bytes = encode_raw(PAYLOAD_VERSION, &postcard_part);
        assert_eq!(
            Envelope::decode(&bytes),
            Err(PayloadError::UnknownKind(300))
        );
    }

    #[test]
    fn truncated_input_is_malformed() {
        let bytes = envelope(Payload::File(file_pointer())).encode();
        assert_eq!(Envelope::decode(&[]), Err(PayloadError::Malformed));
        for len in 1..bytes.len() {
            assert_eq!(
                Envelope::decode(&bytes[..len]),
                Err(PayloadError::Malformed),
                "{len}"
            );
        }
        // Cut at a block boundary, with a plausible pad field restored, still fails.
        let mut cut = bytes[..bytes.len() - PADDING_BLOCK].to_vec();
        let end = cut.len();
        cut[end - 2..].copy_from_slice(&[0, 0]);
        assert_eq!(Envelope::decode(&cut), Err(PayloadError::Malformed));
    }

    #[test]
    fn bad_padding_is_malformed() {
        let good = envelope(Payload::Text {
            text: "abc".to_owned(),
        })
        .encode();
        let len = good.len();
        let pad = usize::from(good[len - 1]);
        assert!(pad > 0, "this text is expected to need padding");

        let mut nonzero = good.clone();
        nonzero[len - 3] = 1;
        assert_eq!(Envelope::decode(&nonzero), Err(PayloadError::Malformed));

        let mut too_big = good.clone();
        too_big[len - 2..].copy_from_slice(&32_u16.to_be_bytes());
        assert_eq!(Envelope::decode(&too_big), Err(PayloadError::Malformed));

        let mut trailing = good.clone();
        trailing[len - 2..].copy_from_slice(&u16::try_from(pad - 1).unwrap().to_be_bytes());
        assert_eq!(Envelope::decode(&trailing), Err(PayloadError::Malformed));

        let mut extra_block = good;
        extra_block.extend_from_slice(&[0; PADDING_BLOCK]);
        assert_eq!(Envelope::decode(&extra_block), Err(PayloadError::Malformed));
    }

    #[test]
    fn limits_are_enforced() {
        let text = |len| Payload::Text {
            text: "a".repeat(len),
        };
        assert!(Envelope::decode(&envelope(text(MAX_TEXT_BYTES)).encode()).is_ok());
        assert_eq!(
            Envelope::decode(&envelope(text(MAX_TEXT_BYTES + 1)).encode()),
            Err(PayloadError::FieldTooLong {
                field: "text",
                max: MAX_TEXT_BYTES
            })
        );
        assert_eq!(
            Envelope::decode(&envelope(text(MAX_ENCODED_LEN)).encode()),
            Err(PayloadError::TooLarge)
        );

        let reaction = |emoji: String| Payload::Reaction {
            target: id(1),
            emoji,
            add: false,
        };
        assert_eq!(
            envelope(reaction("🎉".repeat(17))).validate(),
            Err(PayloadError::FieldTooLong {
                field: "emoji",
                max: MAX_EMOJI_BYTES
            })
        );
        assert_eq!(
            Envelope::decode(&envelope(reaction(String::new())).encode()),
            Err(PayloadError::EmptyField { field: "emoji" })
        );

        let mut file = file_pointer();
        file.name = "n".repeat(MAX_FILE_NAME_BYTES + 1);
        assert_eq!(
            Envelope::decode(&envelope(Payload::File(file)).encode()),
            Err(PayloadError::FieldTooLong {
                field: "name",
                max: MAX_FILE_NAME_BYTES
            })
        );

        let voice = Payload::Voice(VoicePointer {
            file: file_pointer(),
            duration_ms: 1,
            waveform: vec![7; MAX_WAVEFORM_BUCKETS + 1],
        });
        assert_eq!(
            Envelope::decode(&envelope(voice).encode()),
            Err(PayloadError::FieldTooLong {
                field: "waveform",
                max: MAX_WAVEFORM_BUCKETS
            })
        );

        let receipt = |n| Payload::Receipt {
            kind: ReceiptKind::Delivered,
            up_to: vec![id(9); n],
        };
        assert!(Envelope::decode(&envelope(receipt(MAX_RECEIPT_IDS)).encode()).is_ok());
        assert_eq!(
            Envelope::decode(&envelope(receipt(MAX_RECEIPT_IDS + 1)).encode()),
            Err(PayloadError::FieldTooLong {
                field: "up_to",
                max: MAX_RECEIPT_IDS
            })
        );
    }

    #[test]
    fn file_key_debug_redacts() {
        let key = FileKey::from_bytes([0x42; 32]);
        assert_eq!(format!("{key:?}"), "FileKey(..)");
        let debug = format!("{:?}", envelope(Payload::File(file_pointer())));
        assert!(debug.contains("FileKey(..)"));
        assert!(!debug.contains("66"), "no key byte (0x42 = 66) in {debug}");
    }

    #[test]
    fn message_id_shows_as_hex() {
        let id = MessageId::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff]);
        assert_eq!(id.to_string(), "000102030405060708090a0b0c0d0eff");
        assert_eq!(
            format!("{id:?}"),
            "MessageId(000102030405060708090a0b0c0d0eff)"
        );
    }

    #[test]
    fn message_ids_parse_from_what_they_show() {
        let id = MessageId::from_bytes([0x3c; 16]);
        assert_eq!(MessageId::from_hex(&id.to_string()), Some(id));
        assert_eq!(
            MessageId::from_hex(&id.to_string().to_uppercase()),
            Some(id)
        );
        assert_eq!(MessageId::from_hex("3c3c"), None);
        assert_eq!(MessageId::from_hex(&"+1".repeat(16)), None);
        assert_eq!(MessageId::from_hex(&"é".repeat(16)), None);
    }

    fn any_message_id() -> impl Strategy<Value = MessageId> {
        any::<[u8; 16]>().prop_map(MessageId::from_bytes)
    }

    fn any_file_pointer() -> impl Strategy<Value = FilePointer> {
        (
            ".{0,30}",
            ".{0,60}",
            any::<u64>(),
            "[a-z]{1,10}/[a-z0-9.+-]{1,20}",
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u32>(),
        )
            .prop_map(
                |(blob, name, size, mime, sha256, key, chunk_size)| FilePointer {
                    blob,
                    name,
                    size,
                    mime,
                    sha256,
                    key: FileKey::from_bytes(key),
                    chunk_size,
                },
            )
    }

    fn any_payload() -> impl Strategy<Value = Payload> {
        let ids = || proptest::collection::vec(any_message_id(), 0..20);
        prop_oneof![
            ".{0,300}".prop_map(|text| Payload::Text { text }),
            (any_message_id(), ".{0,100}").prop_map(|(to, text)| Payload::Reply { to, text }),
            (any_message_id(), ".{0,100}")
                .prop_map(|(target, text)| Payload::Edit { target, text }),
            any_message_id().prop_map(|target| Payload::Delete { target }),
            (any_message_id(), ".{1,16}", any::<bool>())
                .prop_map(|(target, emoji, add)| Payload::Reaction { target, emoji, add }),
            any::<bool>().prop_map(|active| Payload::Typing { active }),
            (any::<bool>(), ids()).prop_map(|(read, up_to)| Payload::Receipt {
                kind: if read {
                    ReceiptKind::Read
                } else {
                    ReceiptKind::Delivered
                },
                up_to,
            }),
            any_file_pointer().prop_map(Payload::File),
            (
                any_file_pointer(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..=64)
            )
                .prop_map(|(file, duration_ms, waveform)| Payload::Voice(
                    VoicePointer {
                        file,
                        duration_ms,
                        waveform,
                    }
                )),
        ]
    }

    proptest! {
        #[test]
        fn random_envelopes_round_trip_padded(
            message_id in any_message_id(),
            sent_at_ms in any::<u64>(),
            body in any_payload(),
        ) {
            let envelope = Envelope { id: message_id, sent_at_ms, body };
            let bytes = envelope.encode();
            prop_assert_eq!(bytes.len() % PADDING_BLOCK, 0);
            prop_assert_eq!(Envelope::decode(&bytes), Ok(envelope));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes);
        }

        #[test]
        fn random_bodies_behind_a_valid_header_never_panic(
            postcard_part in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = Envelope::decode(&encode_raw(PAYLOAD_VERSION, &postcard_part));
        }

        #[test]
        fn corrupted_encodings_never_panic_and_stay_canonical(
            body in any_payload(),
            index in any::<prop::sample::Index>(),
            flip in 1..=255_u8,
        ) {
            let mut bytes = envelope(body).encode();
            let at = index.index(bytes.len());
            bytes[at] ^= flip;
            // Whatever still decodes must re-encode to the very same bytes.
            if let Ok(decoded) = Envelope::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
