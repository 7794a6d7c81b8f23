//! The shared tier in the daemon (only with `[shared]`): its state for
//! `hello`, `status`, `stats` and the metrics, and the epoch watch that
//! re-seeds the tier from the local copies when the server is new (it came
//! back empty or failed over), with no upstream call.
//!
//! The tier is read only through [`Cache::shared_tier`](crate::Cache::shared_tier);
//! without `[shared]` there is none, nothing here runs and nothing connects.

use std::sync::Arc;

use super::state::Daemon;
use crate::protocol::SharedStatus;
use crate::stats::metrics::SharedGauge;

/// The shared tier's state; `None` without `[shared]`.
pub(crate) fn status(d: &Daemon) -> Option<SharedStatus> {
    #[cfg(feature = "shared")]
    {
        d.cache.shared_tier().map(|tier| tier.status().into())
    }
    #[cfg(not(feature = "shared"))]
    {
        let _ = d;
        None
    }
}

/// What the metrics show of the shared tier; `None` without `[shared]`.
pub(crate) fn gauge(d: &Daemon) -> Option<SharedGauge> {
    status(d).map(|s| SharedGauge {
        up: s.up,
        commands: s.commands,
        seeded: s.seeded,
    })
}

/// Starts the epoch watch when the config has `[shared]`.
pub(crate) fn spawn(d: &Arc<Daemon>) {
    #[cfg(feature = "shared")]
    if let Some(tier) = d.cache.shared_tier() {
        d.tracker
            .spawn(super::reseed::run(Arc::clone(d), Arc::clone(tier)));
    }
    #[cfg(not(feature = "shared"))]
    let _ = d;
}
