//! Confide's end-to-end cryptography, sans-I/O.
//!
//! - [`device`]: one device's keys and MLS groups (openmls with the RustCrypto provider).
//! - [`identity`] and [`trust`]: identity keys, signed device lists, pinning.
//! - [`ds`]: what the server may read and check of MLS messages without a key: their
//!   framing (group, epoch, kind), and commits against a public copy of the group.
//! - [`at_rest`]: sealing the device state for storage.
//! - [`file`]: files sealed in chunks under a fresh key per file.
//! - [`payload`]: the one typed, versioned plaintext that travels inside MLS.
//! - [`safety`]: safety numbers and emoji for comparing identity keys.
//! - [`shared_key`]: Fernet shared-key rooms, compatible with the original programs.
//! - [`voice`]: live voice frames under keys exported from the MLS epoch.
//!
//! Nothing here opens files or sockets or reads clocks: callers pass bytes, time and
//! randomness in and get bytes out.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod at_rest;
pub mod device;
pub mod ds;
pub mod file;
pub mod identity;
pub mod payload;
pub mod safety;
pub mod shared_key;
pub mod trust;
pub mod voice;

pub use device::{CIPHERSUITE, CryptoError, Device, GroupMember, Incoming, PreparedCommit};
pub use identity::{DeviceList, DeviceRecord, IdentityError, MemberId, SignedDeviceList};
pub use trust::{Contact, TrustChange, TrustStore};
