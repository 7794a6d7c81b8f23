//! The shared tier (docs/SHARED.md): single flight, fencing and backoff
//! across hosts, on a Redis 7 server (or Valkey).
//!
//! Readers never talk to Redis: nothing here is called on the read path.
//! A refresh on a host with a shared tier takes the lease with
//! [`SharedTier::take_lease`] (refused while the shared backoff runs),
//! commits with [`SharedTier::commit`] (refused when a newer fence is
//! stored), records failures with [`SharedTier::record_failure`], and a host
//! that did not get the lease waits with [`SharedTier::wait_for`] and copies
//! the result down with [`SharedTier::read_copy`].
//!
//! - `keys`: the key names of one namespace.
//! - `scripts`: the Lua scripts, each run atomically by the server.
//! - `client`: the connection, its timeouts, reconnect backoff and status.
//! - `ops`: the typed operations over the scripts and commands.
//! - `error`: [`SharedError`].

mod client;
mod error;
mod keys;
mod ops;
mod scripts;

pub use client::{SharedTier, TierStatus};
pub use error::SharedError;
pub use keys::Keys;
pub use ops::{Commit, CommitKind, Committed, EpochCheck, Event, Failure, Lease, SharedCopy, Take};
