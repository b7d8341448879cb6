//! Message bodies: how text becomes the opaque bytes the server stores.
//!
//! For now a body is the UTF-8 text itself. End-to-end encryption will replace this
//! module's insides, so every front end goes through these two functions and nothing
//! else may assume that a body is plain text. This module must not log bodies.

/// The bytes to send for a text message.
#[must_use]
pub fn encode_text(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// The text of a received body; invalid UTF-8 becomes U+FFFD rather than an error, so
/// one bad message never hides the others.
#[must_use]
pub fn decode_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for text in ["", "hello", "h\u{e9}llo \u{1f600}", "line one\nline two"] {
            assert_eq!(decode_text(&encode_text(text)), text);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        assert_eq!(decode_text(b"ok \xff!"), "ok \u{fffd}!");
    }
}
