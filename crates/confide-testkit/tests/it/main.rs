//! Integration tests: real servers over loopback TLS with real SQLite files, driven by
//! raw protocol clients, the client core and the command-line binaries.

mod accounts;
mod cli;
mod client;
mod delivery;
mod durability;
mod e2e;
mod hostile;
mod messaging;
mod protocol;
mod rooms;
