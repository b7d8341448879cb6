//! The `confide` command line, as a library so its parts are unit-tested.
//!
//! [`cli`] describes the arguments, [`commands`] runs each subcommand against a
//! [`confide_client::ClientHandle`], [`output`] formats what is printed, for people
//! or as JSON lines, and [`tui`] is the interactive terminal UI of `confide chat`.
//! `main.rs` only parses, installs logging, runs and maps errors to exit codes.
//! Nothing here keeps or prints passwords or tokens.

pub mod cli;
pub mod commands;
pub mod output;
pub mod password;
pub mod tui;
