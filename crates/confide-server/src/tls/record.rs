//! TLS 1.3 record protection after the handshake (RFC 8446, section 5), without I/O.
//!
//! rustls does the handshake and keeps the key schedule; once the handshake is over the
//! connection takes the traffic secrets from rustls (see [`super::stream`]) and protects
//! records with them here. Every delivery seals one record, so sealing is the hot path
//! of a fan-out: it writes the header, the payload and the inner content type straight
//! into the caller's buffer and encrypts them in place, with no allocation and one copy
//! of the payload.
//!
//! A [`RecordKey`] is one direction's traffic key, IV and sequence number. The IV is
//! zeroized on drop; rustls zeroizes the key bytes it hands over once the AEAD's key
//! schedule is built from them.

use ring::aead;
use rustls::{AlertDescription, ConnectionTrafficSecrets};
use zeroize::Zeroize as _;

/// A record's header: outer content type, legacy version and length.
pub const HEADER: usize = 5;

/// The most plaintext one record carries.
pub const MAX_PLAINTEXT: usize = 16 * 1024;

/// The longest protected record body TLS 1.3 allows.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

/// The AEAD tag of every TLS 1.3 suite.
const TAG: usize = 16;

/// What a record adds to its payload: header, inner content type and tag.
pub const OVERHEAD: usize = HEADER + 1 + TAG;

/// Inner content types (RFC 8446, 5.1).
pub const ALERT: u8 = 21;
/// The inner type of handshake messages.
pub const HANDSHAKE: u8 = 22;
/// The inner type of application data, and the outer type of every protected record.
pub const APPLICATION_DATA: u8 = 23;

/// The handshake message type of a key update.
pub const KEY_UPDATE: u8 = 24;

/// The legacy version every TLS 1.3 record carries.
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// A key is replaced before its sequence number reaches this, whatever the suite allows
/// (rustls' own soft limit).
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;

/// Why a record cannot be accepted: the alert the peer gets and what the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The alert that tells the peer why.
    pub alert: AlertDescription,
    /// Why, for the log; never carries record contents.
    pub why: &'static str,
}

impl Fault {
    /// A fault with `alert`.
    #[must_use]
    pub const fn new(alert: AlertDescription, why: &'static str) -> Fault {
        Fault { alert, why }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.why)
    }
}

impl std::error::Error for Fault {}

/// One direction's protection: the AEAD key, the IV and the next sequence number.
pub struct RecordKey {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    /// Records sealed under this key before it must be replaced.
    limit: u64,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordKey")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for RecordKey {
    fn drop(&mut self) {
        self.iv.zeroize();
    }
}

impl RecordKey {
    /// The key for `secrets`, whose next record has sequence number `seq`; it is to be
    /// replaced after `limit` records (the suite's confidentiality limit).
    ///
    /// # Errors
    /// If the suite is not one this module knows (rustls' ring provider offers only
    /// AES-GCM and ChaCha20-Poly1305 for TLS 1.3).
    pub fn new(
        secrets: ConnectionTrafficSecrets,
        seq: u64,
        limit: u64,
    ) -> Result<RecordKey, Fault> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => {
                return Err(Fault::new(
                    AlertDescription::InternalError,
                    "the negotiated cipher suite is not supported",
                ));
            }
        };
        let key = aead::UnboundKey::new(algorithm, key.as_ref()).map_err(|_| {
            Fault::new(
                AlertDescription::InternalError,
                "a traffic key of the wrong size",
            )
        })?;
        let iv = <[u8; aead::NONCE_LEN]>::try_from(iv.as_ref()).map_err(|_| {
            Fault::new(
                AlertDescription::InternalError,
                "a traffic IV of the wrong size",
            )
        })?;
        Ok(RecordKey {
            key: aead::LessSafeKey::new(key),
            iv,
            seq,
            limit: limit.min(SEQ_SOFT_LIMIT),
        })
    }

    /// Whether this key has protected as many records as it may: the sender replaces
    /// it (a key update) before the next one.
    #[must_use]
    pub fn is_used_up(&self) -> bool {
        self.seq >= self.limit
    }

    /// Lets a test reach the limit without sealing millions of records.
    #[cfg(test)]
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The nonce of the next record: the IV with the sequence number XORed into its end.
    fn nonce(&self) -> aead::Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *byte ^= seq;
        }
        aead::Nonce::assume_unique_for_key(nonce)
    }

    /// Takes the sequence number for the record being processed.
    fn next_seq(&mut self) -> Result<(), Fault> {
        // One past the limit is allowed for the key update that replaces the key.
        if self.seq > self.limit || self.seq == u64::MAX {
            return Err(Fault::new(
                AlertDescription::InternalError,
                "a traffic key was used past its limit",
            ));
        }
        self.seq += 1;
        Ok(())
    }

    /// Appends `payload` (at most [`MAX_PLAINTEXT`] bytes) to `out` as one protected
    /// record of inner content type `inner`.
    ///
    /// # Errors
    /// If this key is past its limit or the payload does not fit a record.
    pub fn seal(&mut self, inner: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
        if payload.len() > MAX_PLAINTEXT {
            return Err(Fault::new(
                AlertDescription::InternalError,
                "a record payload larger than TLS allows",
            ));
        }
        let nonce = self.nonce();
        self.next_seq()?;
        let body = payload.len() + 1 + TAG;
        let [high, low] = u16::try_from(body).unwrap_or(u16::MAX).to_be_bytes();
        let start = out.len();
        out.reserve(HEADER + body);
        out.extend_from_slice(&[
            APPLICATION_DATA,
            LEGACY_VERSION[0],
            LEGACY_VERSION[1],
            high,
            low,
        ]);
        out.extend_from_slice(payload);
        out.push(inner);
        let (header, plain) = out[start..].split_at_mut(HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(&*header), plain)
            .map_err(|_| Fault::new(AlertDescription::InternalError, "sealing a record failed"));
        match tag {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(fault) => {
                out.truncate(start);
                Err(fault)
            }
        }
    }

    /// Opens one whole record in place: `header` is its 5 bytes, `body` the protected
    /// rest. Returns the inner content type and the payload (padding removed).
    ///
    /// # Errors
    /// A [`Fault`] with the alert RFC 8446 calls for: the record failed authentication,
    /// was too long, or carried no content type.
    pub fn open<'a>(&mut self, header: &[u8], body: &'a mut [u8]) -> Result<(u8, &'a [u8]), Fault> {
        if body.len() > MAX_CIPHERTEXT {
            return Err(Fault::new(
                AlertDescription::RecordOverflow,
                "a record longer than TLS allows",
            ));
        }
        let nonce = self.nonce();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(header), body)
            .map_err(|_| {
                Fault::new(
                    AlertDescription::BadRecordMac,
                    "a record failed authentication",
                )
            })?;
        self.next_seq()?;
        // The content type is the last byte that is not zero padding.
        let Some(end) = plain.iter().rposition(|&byte| byte != 0) else {
            return Err(Fault::new(
                AlertDescription::UnexpectedMessage,
                "a record without a content type",
            ));
        };
        let inner = plain[end];
        if end > MAX_PLAINTEXT {
            return Err(Fault::new(
                AlertDescription::RecordOverflow,
                "a record longer than TLS allows",
            ));
        }
        Ok((inner, &plain[..end]))
    }
}

/// The length of the protected record that starts `input`, once its header is there:
/// `None` until 5 bytes have arrived.
///
/// # Errors
/// If the record is not a protected one (after the handshake every record is) or is
/// longer than TLS allows.
pub fn record_len(input: &[u8]) -> Result<Option<usize>, Fault> {
    let Some(&[outer, _, _, high, low]) = input.get(..HEADER) else {
        return Ok(None);
    };
    if outer != APPLICATION_DATA {
        return Err(Fault::new(
            AlertDescription::UnexpectedMessage,
            "an unprotected record after the handshake",
        ));
    }
    let len = usize::from(u16::from_be_bytes([high, low]));
    if len > MAX_CIPHERTEXT {
        return Err(Fault::new(
            AlertDescription::RecordOverflow,
            "a record longer than TLS allows",
        ));
    }
    Ok(Some(HEADER + len))
}

/// The key update message: `requested` asks the peer to update its keys too.
#[must_use]
pub fn key_update(requested: bool) -> [u8; 5] {
    [KEY_UPDATE, 0, 0, 1, u8::from(requested)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn secrets(seed: u8) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([seed; 32]),
            iv: Iv::from([seed.wrapping_add(1); 12]),
        }
    }

    /// Opens every record in `stream` with `key`.
    fn open_all(key: &mut RecordKey, stream: &mut [u8]) -> Result<Vec<(u8, Vec<u8>)>, Fault> {
        let mut opened = Vec::new();
        let mut rest = stream;
        while let Some(len) = record_len(rest)? {
            let (record, tail) = rest.split_at_mut(len);
            let (header, body) = record.split_at_mut(HEADER);
            let (inner, payload) = key.open(header, body)?;
            opened.push((inner, payload.to_vec()));
            rest = tail;
        }
        assert!(rest.is_empty());
        Ok(opened)
    }

    #[test]
    fn records_sealed_open_in_order_and_sequence_numbers_matter() {
        let mut sealer = RecordKey::new(secrets(1), 7, u64::MAX).unwrap();
        let mut out = Vec::new();
        sealer.seal(APPLICATION_DATA, b"first", &mut out).unwrap();
        sealer
            .seal(HANDSHAKE, &key_update(false), &mut out)
            .unwrap();
        sealer.seal(APPLICATION_DATA, b"", &mut out).unwrap();
        sealer
            .seal(APPLICATION_DATA, &[9; MAX_PLAINTEXT], &mut out)
            .unwrap();
        assert_eq!(out.len(), b"first".len() + 5 + MAX_PLAINTEXT + 4 * OVERHEAD);
        let mut copy = out.clone();
        let mut opener = RecordKey::new(secrets(1), 7, u64::MAX).unwrap();
        let opened = open_all(&mut opener, &mut copy).unwrap();
        assert_eq!(
            opened,
            [
                (APPLICATION_DATA, b"first".to_vec()),
                (HANDSHAKE, key_update(false).to_vec()),
                (APPLICATION_DATA, Vec::new()),
                (APPLICATION_DATA, vec![9; MAX_PLAINTEXT]),
            ]
        );
        // Another sequence number, or another key, does not open them.
        for mut wrong in [
            RecordKey::new(secrets(1), 8, u64::MAX).unwrap(),
            RecordKey::new(secrets(2), 7, u64::MAX).unwrap(),
        ] {
            let mut copy = out.clone();
            let fault = open_all(&mut wrong, &mut copy).unwrap_err();
            assert_eq!(fault.alert, AlertDescription::BadRecordMac);
        }
    }

    #[test]
    fn a_changed_byte_anywhere_fails_authentication() {
        let mut sealer = RecordKey::new(secrets(3), 0, u64::MAX).unwrap();
        let mut out = Vec::new();
        sealer.seal(APPLICATION_DATA, b"hello", &mut out).unwrap();
        // The header is authenticated too (its length byte only where it stays whole).
        for index in [1, 2, HEADER, HEADER + 3, out.len() - 1] {
            let mut copy = out.clone();
            copy[index] ^= 0x40;
            let mut opener = RecordKey::new(secrets(3), 0, u64::MAX).unwrap();
            let fault = open_all(&mut opener, &mut copy).unwrap_err();
            assert_eq!(fault.alert, AlertDescription::BadRecordMac, "byte {index}");
        }
    }

    #[test]
    fn padding_is_removed_and_a_record_of_only_padding_is_refused() {
        // Sealed by hand, as a peer that pads would.
        let seal_raw = |key: &mut RecordKey, plain: &[u8]| {
            let mut out = vec![APPLICATION_DATA, 3, 3, 0, 0];
            let len = u16::try_from(plain.len() + TAG).unwrap().to_be_bytes();
            out[3..5].copy_from_slice(&len);
            out.extend_from_slice(plain);
            let (header, body) = out.split_at_mut(HEADER);
            let tag = key
                .key
                .seal_in_place_separate_tag(key.nonce(), aead::Aad::from(&*header), body)
                .unwrap();
            key.seq += 1;
            out.extend_from_slice(tag.as_ref());
            out
        };
        let mut sealer = RecordKey::new(secrets(4), 0, u64::MAX).unwrap();
        let mut opener = RecordKey::new(secrets(4), 0, u64::MAX).unwrap();
        let mut padded = seal_raw(&mut sealer, b"hi\x17\0\0\0\0");
        let opened = open_all(&mut opener, &mut padded).unwrap();
        assert_eq!(opened, [(APPLICATION_DATA, b"hi".to_vec())]);
        let mut empty = seal_raw(&mut sealer, &[0; 8]);
        let fault = open_all(&mut opener, &mut empty).unwrap_err();
        assert_eq!(fault.alert, AlertDescription::UnexpectedMessage);
        // A payload longer than a record may be, even if it fits the ciphertext limit.
        let mut long = vec![1u8; MAX_PLAINTEXT + 1];
        long.push(APPLICATION_DATA);
        let mut long = seal_raw(&mut sealer, &long);
        let fault = open_all(&mut opener, &mut long).unwrap_err();
        assert_eq!(fault.alert, AlertDescription::RecordOverflow);
    }

    #[test]
    fn headers_are_checked_before_anything_is_opened() {
        assert_eq!(record_len(&[23, 3, 3, 0]), Ok(None));
        assert_eq!(record_len(&[23, 3, 3, 0, 40, 1]), Ok(Some(45)));
        for outer in [20, 21, 22, 24] {
            let fault = record_len(&[outer, 3, 3, 0, 40]).unwrap_err();
            assert_eq!(fault.alert, AlertDescription::UnexpectedMessage);
        }
        let [high, low] = u16::try_from(MAX_CIPHERTEXT + 1).unwrap().to_be_bytes();
        let fault = record_len(&[23, 3, 3, high, low]).unwrap_err();
        assert_eq!(fault.alert, AlertDescription::RecordOverflow);
    }

    proptest::proptest! {
        #[test]
        fn whatever_arrives_is_opened_or_refused_without_a_panic(
            pieces in proptest::collection::vec(
                (
                    proptest::prelude::any::<[u8; HEADER]>(),
                    proptest::prelude::any::<bool>(),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                ),
                0..4,
            ),
            seq in proptest::prelude::any::<u64>(),
        ) {
            // Records with a header as a peer would send it or arbitrary, and any body.
            let mut stream = Vec::new();
            for (mut header, plausible, body) in pieces {
                if plausible {
                    header[..3].copy_from_slice(&[APPLICATION_DATA, 3, 3]);
                    let len = u16::try_from(body.len()).unwrap().to_be_bytes();
                    header[3..].copy_from_slice(&len);
                }
                stream.extend_from_slice(&header);
                stream.extend_from_slice(&body);
            }
            let mut key = RecordKey::new(secrets(6), seq, u64::MAX).unwrap();
            let mut rest = &mut stream[..];
            // Each step takes a whole record or stops: bounded by the input.
            while let Ok(Some(len)) = record_len(rest) {
                let Some(record) = rest.get_mut(..len) else { break };
                let (header, body) = record.split_at_mut(HEADER);
                if key.open(header, body).is_err() {
                    break;
                }
                rest = &mut rest[len..];
            }
        }

        #[test]
        fn sealed_records_open_to_what_was_sealed_and_any_changed_bit_is_refused(
            pieces in proptest::collection::vec(
                (
                    proptest::sample::select(vec![ALERT, HANDSHAKE, APPLICATION_DATA]),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                ),
                1..6,
            ),
            seq in 0u64..1 << 40,
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut sealer = RecordKey::new(secrets(7), seq, u64::MAX).unwrap();
            let mut out = Vec::new();
            for (inner, payload) in &pieces {
                sealer.seal(*inner, payload, &mut out).unwrap();
            }
            let mut copy = out.clone();
            let mut opener = RecordKey::new(secrets(7), seq, u64::MAX).unwrap();
            let opened = open_all(&mut opener, &mut copy).unwrap();
            proptest::prop_assert_eq!(&opened, &pieces);
            let index = flip.index(out.len());
            out[index] ^= 1 << bit;
            let mut opener = RecordKey::new(secrets(7), seq, u64::MAX).unwrap();
            let mut rest = &mut out[..];
            let mut refused = false;
            while !rest.is_empty() {
                match record_len(rest) {
                    Ok(Some(len)) if len <= rest.len() => {
                        let (record, tail) = rest.split_at_mut(len);
                        let (header, body) = record.split_at_mut(HEADER);
                        if opener.open(header, body).is_err() {
                            refused = true;
                            break;
                        }
                        rest = tail;
                    }
                    // A changed length leaves a partial record, or a header refused.
                    _ => {
                        refused = true;
                        break;
                    }
                }
            }
            proptest::prop_assert!(refused, "a changed bit at {} went unnoticed", index);
        }
    }

    #[test]
    fn a_key_is_used_up_at_its_limit_and_refuses_past_the_update() {
        let mut key = RecordKey::new(secrets(5), 0, 2).unwrap();
        let mut out = Vec::new();
        key.seal(APPLICATION_DATA, b"a", &mut out).unwrap();
        assert!(!key.is_used_up());
        key.seal(APPLICATION_DATA, b"b", &mut out).unwrap();
        assert!(key.is_used_up());
        // The key update that replaces it still goes out under it; nothing after.
        key.seal(HANDSHAKE, &key_update(false), &mut out).unwrap();
        let before = out.len();
        assert!(key.seal(APPLICATION_DATA, b"c", &mut out).is_err());
        assert_eq!(out.len(), before, "a refused record leaves nothing behind");
        assert!(format!("{key:?}").contains("seq"));
        assert!(!format!("{key:?}").contains("iv"));
    }
}
