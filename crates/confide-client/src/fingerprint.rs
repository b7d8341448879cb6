//! Server certificate fingerprints: the SHA-256 of the end-entity certificate's DER.
//!
//! This is what the client pins (like SSH's known_hosts), so it has one display form,
//! `AB:CD:...` (64 uppercase hex digits in colon-separated pairs), and a lenient parser
//! for what people paste. It must not make any trust decision itself: comparing with
//! the pinned value is the TLS verifier's job.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a server's end-entity certificate (DER).
///
/// A fingerprint is public information, so it is compared with plain `==`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

/// Why text could not be read as a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// Not 64 hex digits once colons and the `SHA256:` prefix are removed.
    #[error("a fingerprint has 64 hex digits, got {0}")]
    Length(usize),
    /// A character that is neither a hex digit nor a colon.
    #[error("character {0:?} is not a hex digit")]
    BadCharacter(char),
}

impl Fingerprint {
    /// The fingerprint of a certificate given as DER bytes.
    #[must_use]
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The raw digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts `AB:CD:..`, `abcd..` or either prefixed with `SHA256:` (any case), with
    /// surrounding whitespace.
    fn from_str(raw: &str) -> Result<Fingerprint, FingerprintError> {
        let trimmed = raw.trim();
        let without_prefix = match (trimmed.get(..7), trimmed.get(7..)) {
            (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("sha256:") => rest,
            _ => trimmed,
        };
        let mut digits = Vec::with_capacity(64);
        for ch in without_prefix.trim().chars() {
            match ch {
                ':' => {}
                ch if ch.is_ascii_hexdigit() => digits.push(ch),
                other => return Err(FingerprintError::BadCharacter(other)),
            }
        }
        if digits.len() != 64 {
            return Err(FingerprintError::Length(digits.len()));
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
            let text: String = pair.iter().collect();
            *byte = u8::from_str_radix(&text, 16)
                .map_err(|_| FingerprintError::BadCharacter(pair[0]))?;
        }
        Ok(Fingerprint(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fingerprint {
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(37).wrapping_add(0xa0);
        }
        Fingerprint(bytes)
    }

    #[test]
    fn display_is_uppercase_colon_pairs() {
        let text = sample().to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("A0:C5:EA:"));
        assert!(
            text.chars()
                .all(|ch| ch == ':' || ch.is_ascii_digit() || ch.is_ascii_uppercase())
        );
    }

    #[test]
    fn parse_round_trips_in_every_accepted_form() {
        let fingerprint = sample();
        let display = fingerprint.to_string();
        let plain = display.replace(':', "");
        for text in [
            display.clone(),
            display.to_lowercase(),
            plain.clone(),
            plain.to_lowercase(),
            format!("SHA256:{display}"),
            format!("sha256:{plain}"),
            format!("  SHA256: {display}\n"),
        ] {
            assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint), "{text:?}");
        }
    }

    #[test]
    fn bad_input_is_explained() {
        assert_eq!(
            "AB:CD".parse::<Fingerprint>(),
            Err(FingerprintError::Length(4))
        );
        assert_eq!("".parse::<Fingerprint>(), Err(FingerprintError::Length(0)));
        let mut text = sample().to_string();
        text.replace_range(0..1, "G");
        assert_eq!(
            text.parse::<Fingerprint>(),
            Err(FingerprintError::BadCharacter('G'))
        );
        let too_long = format!("{}:00", sample());
        assert_eq!(
            too_long.parse::<Fingerprint>(),
            Err(FingerprintError::Length(66))
        );
        assert_eq!(
            FingerprintError::Length(4).to_string(),
            "a fingerprint has 64 hex digits, got 4"
        );
    }

    #[test]
    fn of_der_is_sha256() {
        // SHA-256 of the empty string.
        assert_eq!(
            Fingerprint::of_der(b"").to_string().replace(':', ""),
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        );
    }
}
