//! The `confide` command line, as a library so its parts are unit-tested.
//!
//! [`cli`] describes the arguments, [`commands`] runs each subcommand against a
//! [`confide_client::ClientHandle`], and [`output`] formats what is printed, for people
//! or as JSON lines. `main.rs` only parses, installs logging, runs and maps errors to
//! exit codes. Nothing here keeps or prints passwords or tokens.

pub mod cli;
pub mod commands;
pub mod output;
pub mod password;
