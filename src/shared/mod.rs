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
//! - `flight`: [`fly`], one refresh across hosts over the operations,
//!   called by the refresh path (src/cache/shared.rs) after its host-wide
//!   claim.
//! - `ops`: the typed operations over the scripts and commands.
//! - `types`: what they take and return.
//! - `error`: [`SharedError`].

mod client;
mod error;
mod flight;
mod keys;
mod ops;
mod scripts;
mod types;

pub use client::{SharedTier, TierStatus};
pub use error::SharedError;
pub(crate) use flight::LEASE_GRACE;
pub use flight::{Flight, Produced, Refused, SharedValidators, fly};
pub use keys::Keys;
/// `cache` with every refresh going through the shared tier of `settings`
/// (the config's `[shared]`); `cache` as it is without one. Does not
/// connect: the first refresh does.
///
/// # Errors
///
/// [`SharedError::Redis`] when the URL does not parse.
pub fn attach(
    cache: crate::Cache,
    settings: Option<&crate::config::SharedSettings>,
) -> Result<crate::Cache, SharedError> {
    Ok(match settings {
        Some(settings) => {
            let tier = SharedTier::new(settings.clone())?;
            tracing::info!("shared tier {}", settings.redacted_url());
            cache.with_shared(std::sync::Arc::new(tier))
        }
        None => cache,
    })
}

pub use types::{
    Commit, CommitKind, Committed, EpochCheck, Event, Failure, Lease, SharedCopy, Take,
};
