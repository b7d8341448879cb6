//! The Confide server.
pub mod store;
