//! Confide's desktop app: an egui window over the client core.
//!
//! All behaviour lives in `confide-client` (connection, encryption, history, the view
//! models); this crate draws its state and forwards what the user does. The window's
//! thread never waits on the network: requests run as tasks on a runtime owned by
//! [`bridge::Bridge`], and their results are applied at the start of the next frame.

pub mod app;
pub mod audio;
pub mod bridge;
pub mod browser;
pub mod chat;
pub mod emoji;
pub mod export;
pub mod fonts;
pub mod picker;
pub mod start;
pub mod transfers;

pub use app::ConfideApp;
