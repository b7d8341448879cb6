//! Safety numbers: what two people compare, in person or over a call, to be sure that
//! each holds the other's real identity key and no server or attacker sits in between.
//!
//! The scheme follows the idea of Signal's safety numbers, with its own labels:
//!
//! - Each side's fingerprint is SHA-512 over [`FINGERPRINT_LABEL`], the format version,
//!   the length-prefixed identity key and the length-prefixed user name, re-hashed
//!   [`FINGERPRINT_ITERATIONS`] times together with the key (which makes a search for a
//!   colliding key that much dearer). Its first 30 bytes give 30 digits: six 5-byte
//!   chunks, each read as a big-endian integer modulo 100 000.
//! - The safety number is both sides' 30 digits, the side with the smaller fingerprint
//!   first, so both people see the same 60 digits, shown as 12 groups of 5.
//! - For reading aloud there is also a short [emoji sequence](SafetyNumber::emoji),
//!   derived from both fingerprints with SHA-256 under [`EMOJI_LABEL`].
//!
//! The user names are hashed as given: callers must pass the canonical form (the server's
//! user id), or the two sides will see different numbers. This module does no I/O.

use std::fmt;

use sha2::{Digest, Sha256, Sha512};

/// Domain separation for the per-side fingerprints.
pub const FINGERPRINT_LABEL: &[u8] = b"confide safety number fingerprint";
/// Domain separation for the emoji sequence.
pub const EMOJI_LABEL: &[u8] = b"confide safety number emoji";
/// The version of this scheme, hashed into every fingerprint.
pub const SAFETY_NUMBER_VERSION: u16 = 1;
/// How many times each fingerprint is re-hashed.
pub const FINGERPRINT_ITERATIONS: u32 = 5200;
/// How many emoji [`SafetyNumber::emoji`] returns (42 bits).
pub const EMOJI_COUNT: usize = 7;

/// The bytes of a fingerprint that become its 30 digits.
const FINGERPRINT_BYTES: usize = 30;
/// Bytes per 5-digit group.
const CHUNK_BYTES: usize = 5;
/// Groups per side.
const GROUPS_PER_SIDE: usize = FINGERPRINT_BYTES / CHUNK_BYTES;

/// The fixed table the emoji sequence indexes: 64 distinct, single-code-point emoji that
/// render as emoji without a variation selector, each with the name people say aloud.
pub const EMOJI_TABLE: [(&str, &str); 64] = [
    ("🐶", "Dog"),
    ("🐱", "Cat"),
    ("🦁", "Lion"),
    ("🐴", "Horse"),
    ("🦄", "Unicorn"),
    ("🐷", "Pig"),
    ("🐘", "Elephant"),
    ("🐰", "Rabbit"),
    ("🐼", "Panda"),
    ("🐓", "Rooster"),
    ("🐧", "Penguin"),
    ("🐢", "Turtle"),
    ("🐟", "Fish"),
    ("🐙", "Octopus"),
    ("🦋", "Butterfly"),
    ("🐝", "Bee"),
    ("🐌", "Snail"),
    ("🦀", "Crab"),
    ("🐸", "Frog"),
    ("🐻", "Bear"),
    ("🦊", "Fox"),
    ("🐵", "Monkey"),
    ("🦉", "Owl"),
    ("🐳", "Whale"),
    ("🌵", "Cactus"),
    ("🌲", "Tree"),
    ("🌻", "Sunflower"),
    ("🍄", "Mushroom"),
    ("🌹", "Rose"),
    ("🍎", "Apple"),
    ("🍌", "Banana"),
    ("🍇", "Grapes"),
    ("🍓", "Strawberry"),
    ("🍋", "Lemon"),
    ("🥕", "Carrot"),
    ("🍕", "Pizza"),
    ("🍩", "Doughnut"),
    ("🧀", "Cheese"),
    ("🎂", "Cake"),
    ("🎸", "Guitar"),
    ("🎺", "Trumpet"),
    ("🔔", "Bell"),
    ("⚓", "Anchor"),
    ("🔑", "Key"),
    ("🔨", "Hammer"),
    ("💡", "Light bulb"),
    ("📚", "Books"),
    ("🎈", "Balloon"),
    ("🎁", "Gift"),
    ("⚽", "Soccer ball"),
    ("🏀", "Basketball"),
    ("🚲", "Bicycle"),
    ("🚀", "Rocket"),
    ("🚗", "Car"),
    ("⛵", "Sailboat"),
    ("🚂", "Train"),
    ("🌙", "Moon"),
    ("⭐", "Star"),
    ("🔥", "Fire"),
    ("🌈", "Rainbow"),
    ("⛄", "Snowman"),
    ("🎩", "Top hat"),
    ("👑", "Crown"),
    ("🏠", "House"),
];

/// The safety number of a pair of users: the same for both of them, and different as
/// soon as either identity key or user name differs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber {
    /// The two sides' fingerprints, smaller first.
    fingerprints: [[u8; FINGERPRINT_BYTES]; 2],
}

impl SafetyNumber {
    /// Computes the safety number of `a` and `b`, each a (canonical user name, identity
    /// public key) pair. The order of `a` and `b` does not matter.
    pub fn compute(a: (&str, &[u8]), b: (&str, &[u8])) -> SafetyNumber {
        let mut fingerprints = [fingerprint(a.0, a.1), fingerprint(b.0, b.1)];
        fingerprints.sort_unstable();
        SafetyNumber { fingerprints }
    }

    /// The 12 five-digit groups, each below 100 000, in display order.
    pub fn groups(&self) -> [u32; 2 * GROUPS_PER_SIDE] {
        let mut groups = [0; 2 * GROUPS_PER_SIDE];
        let chunks = self
            .fingerprints
            .iter()
            .flat_map(|side| side.chunks_exact(CHUNK_BYTES));
        for (group, chunk) in groups.iter_mut().zip(chunks) {
            let value = chunk
                .iter()
                .fold(0_u64, |acc, &byte| (acc << 8) | u64::from(byte));
            // Below 100 000, so it fits.
            *group = u32::try_from(value % 100_000).unwrap_or(0);
        }
        groups
    }

    /// The 60 digits without spaces, for comparing with what someone typed or scanned.
    pub fn digits(&self) -> String {
        self.groups()
            .iter()
            .map(|group| format!("{group:05}"))
            .collect()
    }

    /// A sequence of [`EMOJI_COUNT`] emoji from [`EMOJI_TABLE`], for reading aloud.
    pub fn emoji(&self) -> Vec<&'static str> {
        self.emoji_with_names()
            .into_iter()
            .map(|(symbol, _)| symbol)
            .collect()
    }

    /// The same sequence as [`SafetyNumber::emoji`], each with its name.
    pub fn emoji_with_names(&self) -> Vec<(&'static str, &'static str)> {
        let mut hash = Sha256::new();
        hash.update(EMOJI_LABEL);
        hash.update(SAFETY_NUMBER_VERSION.to_be_bytes());
        hash.update(self.fingerprints[0]);
        hash.update(self.fingerprints[1]);
        let digest = hash.finalize();
        // 256 is a multiple of 64, so each byte's low six bits index the table uniformly.
        digest
            .iter()
            .take(EMOJI_COUNT)
            .map(|&byte| EMOJI_TABLE[usize::from(byte & 0x3f)])
            .collect()
    }
}

impl fmt::Display for SafetyNumber {
    /// Twelve groups of five digits separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, group) in self.groups().iter().enumerate() {
            if idx > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{group:05}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

/// One side's fingerprint (see the module docs).
fn fingerprint(user: &str, identity_key: &[u8]) -> [u8; FINGERPRINT_BYTES] {
    let mut hash = Sha512::new();
    hash.update(FINGERPRINT_LABEL);
    hash.update(SAFETY_NUMBER_VERSION.to_be_bytes());
    hash.update(length_prefix(identity_key.len()));
    hash.update(identity_key);
    hash.update(length_prefix(user.len()));
    hash.update(user.as_bytes());
    let mut digest = hash.finalize();
    for _ in 0..FINGERPRINT_ITERATIONS {
        let mut hash = Sha512::new();
        hash.update(digest);
        hash.update(identity_key);
        digest = hash.finalize();
    }
    let mut fingerprint = [0; FINGERPRINT_BYTES];
    for (out, byte) in fingerprint.iter_mut().zip(digest) {
        *out = byte;
    }
    fingerprint
}

/// A field's length as 8 big-endian bytes, so that no two different inputs hash alike.
fn length_prefix(len: usize) -> [u8; 8] {
    u64::try_from(len).unwrap_or(u64::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const ALICE_KEY: [u8; 32] = [0xa1; 32];
    const BOB_KEY: [u8; 32] = [0xb0; 32];

    fn alice_and_bob() -> SafetyNumber {
        SafetyNumber::compute(("alice", &ALICE_KEY), ("bob", &BOB_KEY))
    }

    #[test]
    fn both_sides_see_the_same_number() {
        let from_alice = alice_and_bob();
        let from_bob = SafetyNumber::compute(("bob", &BOB_KEY), ("alice", &ALICE_KEY));
        assert_eq!(from_alice, from_bob);
        assert_eq!(from_alice.to_string(), from_bob.to_string());
        assert_eq!(from_alice.emoji(), from_bob.emoji());
    }

    #[test]
    fn any_change_of_key_or_name_changes_the_number() {
        let original = alice_and_bob();
        let mut other_key = ALICE_KEY;
        other_key[31] ^= 1;
        let changed = [
            SafetyNumber::compute(("alice", &other_key), ("bob", &BOB_KEY)),
            SafetyNumber::compute(("alice", &ALICE_KEY), ("bob", &other_key)),
            SafetyNumber::compute(("alicf", &ALICE_KEY), ("bob", &BOB_KEY)),
            SafetyNumber::compute(("alice", &ALICE_KEY), ("Bob", &BOB_KEY)),
            // Moving bytes between name and key must not collide either.
            SafetyNumber::compute(("alice\u{a1}", &ALICE_KEY[1..]), ("bob", &BOB_KEY)),
        ];
        for number in &changed {
            assert_ne!(number, &original);
            assert_ne!(number.to_string(), original.to_string());
        }
        // The half of the unchanged side stays put: it is a per-side fingerprint.
        let alice_digits = fingerprint_digits("alice", &ALICE_KEY);
        assert!(original.digits().contains(&alice_digits));
        assert!(changed[1].digits().contains(&alice_digits));
    }

    fn fingerprint_digits(user: &str, key: &[u8]) -> String {
        // A number of a user with themself is their fingerprint twice.
        SafetyNumber::compute((user, key), (user, key)).digits()[..30].to_owned()
    }

    #[test]
    fn digits_are_twelve_groups_of_five() {
        let shown = alice_and_bob().to_string();
        let groups: Vec<&str> = shown.split(' ').collect();
        assert_eq!(groups.len(), 12);
        for group in groups {
            assert_eq!(group.len(), 5);
            assert!(group.bytes().all(|byte| byte.is_ascii_digit()));
        }
        assert_eq!(alice_and_bob().digits(), shown.replace(' ', ""));
        assert!(
            alice_and_bob()
                .groups()
                .iter()
                .all(|&group| group < 100_000)
        );
    }

    #[test]
    fn emoji_come_from_the_table() {
        let table: HashSet<&str> = EMOJI_TABLE.iter().map(|(symbol, _)| *symbol).collect();
        for (user, key) in [("alice", [1_u8; 32]), ("carol", [2; 32]), ("dave", [3; 32])] {
            let number = SafetyNumber::compute((user, &key), ("bob", &BOB_KEY));
            let emoji = number.emoji();
            assert_eq!(emoji.len(), EMOJI_COUNT);
            assert!(emoji.iter().all(|symbol| table.contains(symbol)));
            let names: Vec<_> = number
                .emoji_with_names()
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            assert_eq!(names, emoji);
        }
    }

    #[test]
    fn emoji_table_is_distinct_and_single_code_points() {
        let symbols: HashSet<&str> = EMOJI_TABLE.iter().map(|(symbol, _)| *symbol).collect();
        let names: HashSet<String> = EMOJI_TABLE
            .iter()
            .map(|(_, name)| name.to_lowercase())
            .collect();
        assert_eq!(symbols.len(), 64);
        assert_eq!(names.len(), 64);
        for (symbol, name) in EMOJI_TABLE {
            assert_eq!(symbol.chars().count(), 1, "{name}");
            assert!(!name.is_empty());
        }
    }

    #[test]
    fn known_answer() {
        // Computed once, and checked against an independent implementation in Python
        // (hashlib) written from the module docs.
        let number = alice_and_bob();
        assert_eq!(
            number.to_string(),
            "10868 81025 19596 79369 51804 04817 65835 38758 83954 02639 69118 95695"
        );
        assert_eq!(
            number.emoji(),
            vec!["🍄", "🎁", "🎸", "🥕", "🐱", "🐱", "⚽"]
        );
        assert_eq!(
            number.emoji_with_names()[..2],
            [("🍄", "Mushroom"), ("🎁", "Gift")]
        );
    }
}
