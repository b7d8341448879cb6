//! Integration tests: real servers over loopback TLS with real SQLite files, driven by
//! raw protocol clients, the client core and the command-line binaries.

mod accounts;
mod blobs;
mod cli;
mod client;
mod delivery;
mod durability;
mod e2e;
mod files;
mod hostile;
mod live;
mod messaging;
mod protocol;
mod rooms;
mod support;
mod voice;
