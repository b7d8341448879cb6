//! The Confide client core, shared by every front end (command line, terminal UI,
//! desktop app).
//!
//! [`Client::connect`] opens a TLS connection to a server (pinning its certificate like
//! SSH), logs in and hands back a [`ClientHandle`] for requests and an [`EventStream`] of
//! [`ClientEvent`]s. Behind them a connection actor owns the socket: it reconnects with
//! backoff, resends what was in flight, and syncs so that every room's entries reach the
//! stream exactly once, in order, without gaps, across reconnections and across runs
//! (positions are saved in the [`Profile`]).
//!
//! The [`model`] module holds the pure view models every front end draws from
//! ([`RoomList`], [`Timeline`], [`Presence`], [`Typing`]), updated by the same events.
//!
//! This crate knows no UI library and never prints: front ends decide what to show. It
//! never logs passwords, tokens or message contents.
//!
//! ```no_run
//! # async fn demo() -> Result<(), confide_client::ClientError> {
//! use confide_client::{Auth, Client, ClientConfig, ClientEvent, Profile};
//! use confide_proto::{RoomName, Target};
//!
//! let profile = Profile::open("/tmp/alice")?;
//! let config = ClientConfig::new("127.0.0.1:5555".parse()?, profile, Auth::Resume);
//! let (client, mut events) = Client::connect(config).await?;
//! let lobby = client.room_id(&RoomName::lobby()).await?;
//! client.send_text(Target::Room(lobby), "hello").await?;
//! while let Some(event) = events.next().await {
//!     if let ClientEvent::Entry { entry, .. } = event {
//!         println!("{} wrote in room {}", entry.sender, entry.room);
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod address;
pub mod backoff;
pub mod body;
mod client;
mod config;
mod connection;
mod entry;
mod error;
mod event;
mod fingerprint;
mod handle;
pub mod keys;
pub mod model;
pub mod profile;
pub mod secure;
pub mod sequencer;
pub mod transfer;

pub use address::{AddressError, ServerAddress};
pub use backoff::Backoff;
pub use client::Client;
pub use config::{Auth, ClientConfig};
pub use entry::{Content, Entry, Protection, Unreadable, member_change, summary};
pub use error::ClientError;
pub use event::{ClientEvent, ConnectionState, EventStream};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use handle::{Account, ClientHandle, HistoryPage, RoomKey, SentAck, ServerInfo};
pub use keys::{E2eState, KeyStore, KeyStoreError};
pub use model::{Presence, RoomList, Timeline, Typing};
pub use profile::{Profile, ProfileError, Session};
pub use secure::group::KEY_PACKAGE_STOCK;
pub use secure::{E2eError, Verification};
pub use sequencer::RoomCursors;
pub use transfer::{
    Attachment, Progress, SentFile, TransferError, TransferProgress, human_size, mime_for,
    no_progress, safe_file_name,
};
