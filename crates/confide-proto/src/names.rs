//! User and room names: validation and the canonical form used for uniqueness.
//!
//! Two names that differ only in letter case or in Unicode normalization (for example
//! a precomposed `é` against `e` plus a combining accent, or a full-width `Ａ`) are the
//! same name. The canonical form is NFKC, lower-cased, then NFKC again; the display
//! form keeps the user's spelling in NFC.

use serde::{Deserialize, Serialize};
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Too short or too long, counted in characters after normalization.
    #[error("must be {min} to {max} characters long, got {len}")]
    Length {
        /// Fewest characters allowed.
        min: usize,
        /// Most characters allowed.
        max: usize,
        /// Characters given.
        len: usize,
    },
    /// A character outside letters, digits, `_`, `-` and `.`.
    #[error("character {0:?} is not allowed (use letters, digits, '_', '-' or '.')")]
    BadCharacter(char),
    /// The first character is not a letter or digit.
    #[error("must start with a letter or a digit")]
    BadStart,
}

fn validate(raw: &str, min: usize, max: usize) -> Result<String, NameError> {
    let trimmed = raw.trim();
    // ASCII text is already in NFC: most names skip the normalization pass (every
    // name in every decoded frame is validated, so this is on the hot path).
    let display: String = if trimmed.is_ascii() {
        trimmed.to_owned()
    } else {
        trimmed.nfc().collect()
    };
    check(&display, min, max)?;
    Ok(display)
}

/// The rules for a name already trimmed and in NFC.
fn check(display: &str, min: usize, max: usize) -> Result<(), NameError> {
    let len = display.chars().count();
    if len < min || len > max {
        return Err(NameError::Length { min, max, len });
    }
    for ch in display.chars() {
        if !(ch.is_alphanumeric() || matches!(ch, '_' | '-' | '.')) {
            return Err(NameError::BadCharacter(ch));
        }
    }
    if !display.chars().next().is_some_and(char::is_alphanumeric) {
        return Err(NameError::BadStart);
    }
    Ok(())
}

fn canonical(display: &str) -> String {
    let folded: String = display.nfkc().collect::<String>().to_lowercase();
    folded.nfkc().collect()
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name {
            display: String,
        }

        impl $name {
            /// Fewest characters a name may have.
            pub const MIN_LEN: usize = $min;
            /// Most characters a name may have.
            pub const MAX_LEN: usize = $max;

            /// Validates `raw` and keeps it, trimmed and in NFC, as the display form.
            ///
            /// # Errors
            /// A [`NameError`] saying which rule the name breaks.
            pub fn parse(raw: &str) -> Result<Self, NameError> {
                validate(raw, $min, $max).map(|display| Self { display })
            }

            /// The name as the user spelled it (NFC).
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.display
            }

            /// The form used to decide whether two names are the same.
            #[must_use]
            pub fn canonical(&self) -> String {
                canonical(&self.display)
            }

            /// Whether `other` is the same name ignoring case and normalization.
            #[must_use]
            pub fn same_as(&self, other: &Self) -> bool {
                self.canonical() == other.canonical()
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(raw: String) -> Result<Self, NameError> {
                // A decoded name is usually already valid as it is: keep its allocation.
                if raw.is_ascii() && raw.trim().len() == raw.len() {
                    check(&raw, $min, $max)?;
                    return Ok(Self { display: raw });
                }
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.display
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.display)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.display)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(raw: &str) -> Result<Self, NameError> {
                Self::parse(raw)
            }
        }
    };
}

name_type!(
    /// An account name: 3 to 32 letters, digits, `_`, `-` or `.`, starting with a letter
    /// or digit. Unique on the server ignoring case and Unicode normalization.
    UserName,
    3,
    32
);

name_type!(
    /// A room name: 1 to 64 letters, digits, `_`, `-` or `.`, starting with a letter or
    /// digit. Unique on the server ignoring case and Unicode normalization.
    RoomName,
    1,
    64
);

impl RoomName {
    /// The room every account belongs to.
    #[must_use]
    pub fn lobby() -> RoomName {
        RoomName {
            display: "lobby".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Decoding (which keeps an already valid ASCII name as it is) and parsing agree.
        #[test]
        fn decoding_and_parsing_agree(raw in "[ a-zA-Z0-9_.\\-\u{e9}\u{301}\u{212b}!]{0,40}") {
            proptest::prop_assert_eq!(UserName::try_from(raw.clone()), UserName::parse(&raw));
            proptest::prop_assert_eq!(RoomName::try_from(raw.clone()), RoomName::parse(&raw));
        }
    }

    #[test]
    fn case_and_normalization_fold_together() {
        let a = UserName::parse("Alice").unwrap();
        let b = UserName::parse("aLICE").unwrap();
        assert!(a.same_as(&b));
        let composed = UserName::parse("Ren\u{e9}e").unwrap();
        let decomposed = UserName::parse("Rene\u{301}e").unwrap();
        assert!(composed.same_as(&decomposed));
        assert_eq!(composed.as_str(), decomposed.as_str());
        let fullwidth = UserName::parse("\u{ff21}lice").unwrap();
        assert!(fullwidth.same_as(&a));
    }

    #[test]
    fn display_form_is_kept() {
        assert_eq!(UserName::parse("  Bob_1 ").unwrap().as_str(), "Bob_1");
    }

    #[test]
    fn rules_are_enforced_with_clear_errors() {
        assert_eq!(
            UserName::parse("ab"),
            Err(NameError::Length {
                min: 3,
                max: 32,
                len: 2
            })
        );
        assert!(matches!(
            UserName::parse(&"x".repeat(33)),
            Err(NameError::Length { .. })
        ));
        assert_eq!(UserName::parse("al ice"), Err(NameError::BadCharacter(' ')));
        assert_eq!(UserName::parse("al/ice"), Err(NameError::BadCharacter('/')));
        assert_eq!(UserName::parse("_alice"), Err(NameError::BadStart));
        assert_eq!(
            UserName::parse("ali\u{0}ce"),
            Err(NameError::BadCharacter('\0'))
        );
        assert!(RoomName::parse("x").is_ok());
        assert_eq!(
            NameError::BadCharacter('/').to_string(),
            "character '/' is not allowed (use letters, digits, '_', '-' or '.')"
        );
    }

    #[test]
    fn deserialize_validates() {
        let bytes = postcard::to_allocvec(&"a b".to_owned()).unwrap();
        assert!(postcard::from_bytes::<UserName>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"carol".to_owned()).unwrap();
        assert_eq!(
            postcard::from_bytes::<UserName>(&bytes).unwrap().as_str(),
            "carol"
        );
    }
}
