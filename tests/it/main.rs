//! The integration tests: one binary, one helper module.
//!
//! - `cache`: the library on its own.
//! - `command_refresher`, `http_refresher`: the refreshers against real
//!   processes and a real HTTP server on 127.0.0.1.
//! - `direct`: the CLI in direct mode with real processes.
//! - `sources`: real-world sources end to end through the CLI.
//! - `daemon`: the real binary serving a temp root on a temp socket.
//! - `hostile`: symlinks, FIFOs, huge payloads and foreign owners in the root.

mod helpers;

mod cache;
mod command_refresher;
mod daemon;
mod direct;
mod hostile;
mod http_refresher;
mod sources;
