//! The periodic reconcile: counts the sources with data on disk, looks at
//! every source again (catching changes the watcher missed), and persists
//! the counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::notify;
use super::state::{Daemon, blocking};
use crate::layout::FileKind;
use crate::prune;

/// Reconciles now, then every `reconcile_interval`, until shutdown.
pub(crate) async fn run(d: Arc<Daemon>) {
    loop {
        once(&d).await;
        let every = d.config().daemon.reconcile_interval;
        tokio::select! {
            () = d.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One reconcile. A failure is recorded as the daemon's last error (and
/// cleared by the next success, unless the config is what failed).
pub(crate) async fn once(d: &Daemon) {
    let started = Instant::now();
    let layout = d.cache.layout().clone();
    // One scan gives both the counts and the sources on disk.
    let counted = blocking(move || {
        let mut by_tier: BTreeMap<String, u64> = BTreeMap::new();
        let mut on_disk = Vec::new();
        for (id, files) in prune::scan(&layout)? {
            if files.iter().any(|(_, kind)| *kind == FileKind::Payload) {
                *by_tier.entry(id.tier().to_owned()).or_default() += 1;
            }
            on_disk.push(id);
        }
        Ok((by_tier, on_disk))
    })
    .await;
    let on_disk = match counted {
        Ok((by_tier, on_disk)) => {
            d.stats.reconciled(by_tier, started.elapsed());
            if super::mutex::lock(&d.config_error).is_none() {
                d.stats.set_error(None);
            }
            on_disk
        }
        Err(e) => {
            tracing::warn!("reconcile failed: {e}");
            d.stats.set_error(Some(format!("reconcile failed: {e}")));
            Vec::new()
        }
    };
    d.observe_with(on_disk).await;
    if let Err(e) = d.stats.persist() {
        tracing::warn!("cannot persist the counters: {e}");
    }
    notify::report(&d.stats);
}
