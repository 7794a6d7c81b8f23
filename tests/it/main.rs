//! The integration tests: one binary, one helper module.
//!
//! - `cache`, `invalidate`: the library on its own.
//! - `command_refresher`, `http_refresher`: the refreshers against real
//!   processes and a real HTTP server on 127.0.0.1.
//! - `config_safety`: prune needs a config file; an unset `${VAR}` disables
//!   only its source.
//! - `direct`: the CLI in direct mode with real processes.
//! - `full_disk`: no space or no inodes on a small tmpfs (as root).
//! - `sidecar`: damaged or missing sidecars, revisions, dates in the future.
//! - `sources`: real-world sources end to end through the CLI.
//! - `daemon`: the real binary serving a temp root on a temp socket.
//! - `secrets`: no form of a secret in any output, log or file at trace.
//! - `orphans`: a holder that dies leaves no refresher running.
//! - `hostile`: symlinks, FIFOs, huge payloads and foreign owners in the root.
//! - `fizeau`: fizeau's real Go package on the same root (needs Go).
//! - `fizeau_cooldown`: a failed refresh leaves fizeau's failure cooldown.
//! - `fizeau_rounds`: every kind of process refreshing one stale source at
//!   once runs one refresher per round (needs Go).
//! - `progress`: `refresh` prints each line as it finishes; `--json` output.
//! - `systemd_credentials`: the API-key drop-in verifies with the units.
//! - `examples`: the example configs check; each reader reads a filled root.
//! - `guards`: empty or shrunken refreshes refused; a changed definition
//!   is stale at once.
//! - `completions`: shell completions (loaded by a real bash) and the man page.
//! - `upgrade`: a format 1 root upgraded in place to format 2.
//! - `metrics`: `GET /metrics` over HTTP, checked by promtool.
//! - `offline`: offline switches, forced refreshes refused, seed files.
//! - `shared_marker`: fizeau's marker and payloads, acted out without Go.
//! - `shared`: the shared tier's scripts against a real `redis-server`.

// They run the `discocache` binary, which needs the `cli` feature.
#![cfg(feature = "cli")]

mod helpers;

mod cache;
mod command_refresher;
mod completions;
mod config_safety;
mod daemon;
mod definition;
mod direct;
mod examples;
mod fizeau;
mod fizeau_cooldown;
mod fizeau_rounds;
mod full_disk;
mod guards;
mod hostile;
mod http_refresher;
mod invalidate;
mod metrics;
mod offline;
mod orphans;
mod progress;
mod secrets;
#[cfg(feature = "shared")]
mod shared;
mod shared_marker;
mod sidecar;
mod sources;
mod systemd_credentials;
mod upgrade;
