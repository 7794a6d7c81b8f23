//! discocache keeps slow "discovery" data (model lists from HTTP APIs, what a
//! CLI prints, local tool inventories) as one JSON file per source under a
//! cache root, and serves it instantly to every process on the machine.
//!
//! Reads never wait for a refresh; at most one refresh per source runs
//! host-wide; a crash at any instant loses nothing and blocks nothing; failing
//! sources keep serving their last good data and back off.
//!
//! The public API: [`Cache`] (with [`Source`], [`SourceId`], [`Policy`],
//! [`Entry`], [`Refreshed`] and the other outcomes), the [`refresher`]
//! types, [`Error`], [`config`] loading, and the daemon's `client` and
//! [`protocol`] types. Everything else is internal.
//!
//! # Features
//!
//! `cli` (default) builds the `discocache` binary and the modules only it
//! needs: `cli`, `client`, `daemon`, `server` and `logging`, with their
//! dependencies (clap, notify, sd-notify, tracing-subscriber, ...). A
//! program that embeds the cache sets `default-features = false`; the
//! async calls then need a tokio runtime of the program's own.
//!
//! # Layout
//!
//! - `source`: `tier/name` validation and the per-source [`Policy`].
//! - `fizeau`: fizeau's short lock and shared marker, for on-disk format 2.
//! - `claim`: the shared marker claimed, waited for and released under
//!   fizeau's short lock.
//! - `upgrade`: the root's format; a format 1 root upgraded in place.
//! - `adopt`: payloads written by others get a revision and a sha256.
//! - `layout`: where every file of a source lives (pure, no IO).
//! - `meta`: the `.meta.json` sidecar and the `.refreshing` marker.
//! - `beneath`: opening files under the root without following symlinks.
//! - `store`: atomic durable writes and lock-free reads.
//! - [`lock`]: the per-source `flock` that owns a refresh.
//! - `backoff`: jittered exponential retry delays.
//! - `freshness`: the one judge of fresh / stale / expired and of retry times.
//! - `singleflight`: one refresh per source per process, shared by callers.
//! - `seed`: a source's seed file, committed as its first payload.
//! - [`refresh`]: the refresh state machine (claim, run, commit, wait).
//! - [`cache`]: the public [`Cache`] handle tying the above together.
//! - `prune`: recovery of crash leftovers and removal of unknown sources.
//! - `plan`: what a `get` does about refreshing (daemon and CLI alike).
//! - [`refresher`]: command, HTTP and file refreshers.
//! - [`config`]: the TOML config.
//! - [`protocol`]: socket protocol v1: typed requests, answers, framing.
//! - `client`: a blocking, typed client for the socket.
//! - `cli`: the `discocache` command line.
//! - `daemon`: `discocache serve`: warm keeping, watchers, signals, systemd.
//! - `server`: the Unix socket server (connection cap, idle timeout, peer check).
//! - [`stats`]: counters, persistence and Prometheus metrics.
//! - `logging`: the one stderr log set-up, with the HTTP client's own logs muted.
//! - `shared` (feature `shared`, default): the Redis shared tier's client
//!   and scripts; not yet wired into refreshes (docs/SHARED.md).
//! - [`error`]: the library's [`Error`].

mod adopt;
mod backoff;
mod beneath;
pub mod cache;
mod claim;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod client;
pub mod config;
#[cfg(feature = "cli")]
mod daemon;
pub mod error;
#[allow(dead_code)] // parts serve only tests or later steps (the failure record)
mod fizeau;
mod freshness;
// Parts of these serve only the daemon and the command line.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod layout;
pub mod lock;
#[cfg(feature = "cli")]
mod logging;
mod meta;
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod plan;
pub mod protocol;
mod prune;
pub mod refresh;
pub mod refresher;
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod seed;
#[cfg(feature = "cli")]
mod server;
#[cfg(feature = "shared")]
pub mod shared;
mod singleflight;
pub mod source;
pub mod stats;
mod store;
mod upgrade;

pub use cache::{Background, Cache, Ensured, Entry, Invalidated, RefreshState, Source};
pub use layout::Layout;
pub use meta::{Meta, Timestamp};
pub use prune::{Pruned, Recovered};
pub use refresh::Refreshed;

pub use error::{Error, Result};
pub use refresher::{FetchContext, FetchError, Fetched, Refresher, Validators};
pub use source::{Guard, InvalidSource, OnDown, Policy, SourceId};
