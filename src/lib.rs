//! discocache keeps slow "discovery" data (model lists from HTTP APIs, what a
//! CLI prints, local tool inventories) as one JSON file per source under a
//! cache root, and serves it instantly to every process on the machine.
//!
//! Reads never wait for a refresh; at most one refresh per source runs
//! host-wide; a crash at any instant loses nothing and blocks nothing; failing
//! sources keep serving their last good data and back off.
//!
//! # Layout
//!
//! - [`source`]: `tier/name` validation and the per-source [`Policy`].
//! - [`layout`]: where every file of a source lives (pure, no IO).
//! - [`meta`]: the `.meta.json` sidecar and the `.refreshing` marker.
//! - [`beneath`]: opening files under the root without following symlinks.
//! - [`store`]: atomic durable writes and lock-free reads.
//! - [`lock`]: the per-source `flock` that owns a refresh.
//! - [`backoff`]: jittered exponential retry delays.
//! - [`singleflight`]: one refresh per source per process, shared by callers.
//! - [`refresh`]: the refresh state machine (claim, run, commit, wait).
//! - [`cache`]: the public [`Cache`] handle tying the above together.
//! - [`prune`]: recovery of crash leftovers and removal of unknown sources.
//! - [`refresher`]: command, HTTP and file refreshers.
//! - [`config`]: the TOML config.
//! - [`cli`]: the `discocache` command line.
//! - [`protocol`]: socket protocol v1 types and framing.
//! - [`daemon`]: `discocache serve`: warm keeping, watchers, signals, systemd.
//! - [`server`]: the Unix socket server (connection cap, idle timeout, peer check).
//! - [`client`]: a blocking client for the socket.
//! - [`stats`]: counters, persistence and Prometheus metrics.
//! - [`error`]: the library's [`Error`].

pub mod backoff;
pub mod beneath;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod layout;
pub mod lock;
pub mod meta;
pub mod protocol;
pub mod prune;
pub mod refresh;
pub mod refresher;
pub mod server;
pub mod singleflight;
pub mod source;
pub mod stats;
pub mod store;

pub use cache::{Background, Cache, Ensured, Entry, RefreshState, Source};
pub use meta::{Meta, Timestamp};
pub use refresh::Refreshed;

pub use error::{Error, Result};
pub use refresher::{FetchContext, FetchError, Fetched, Refresher, Validators};
pub use source::{InvalidSource, Policy, SourceId};
