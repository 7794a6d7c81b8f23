//! The epoch watch: checks the shared tier's epoch every few seconds
//! (backing off while the tier is down) and, when the server is new (it
//! came back empty, or failed over to an empty replica), writes every
//! opted-in local copy to it with [`SharedTier::seed`]: no lease, no
//! upstream call, and a copy the store already holds as new or newer is
//! kept (the seed script compares the origin's fetch times), so nothing
//! goes backwards. Also seeds once at start when the tier is empty.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::state::{Daemon, blocking, cache_source};
use crate::cache::Entry;
use crate::config::SourceConfig;
use crate::shared::{Commit, CommitKind, EpochCheck, SharedError, SharedTier};

/// How often the epoch is checked while the tier is up.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The first wait after a failed check.
const DOWN_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between checks while the tier is down.
const DOWN_CAP: Duration = Duration::from_secs(8);

/// Checks the epoch until the daemon shuts down.
pub(crate) async fn run(d: Arc<Daemon>, tier: Arc<SharedTier>) {
    let mut watch = Watch::default();
    loop {
        let wait = match tier.check_epoch().await {
            Ok(check) => {
                watch.up(&d, &tier, check).await;
                CHECK_EVERY
            }
            Err(e) => watch.down(&e),
        };
        tokio::select! {
            () = d.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// What the watch remembers between checks.
#[derive(Debug, Default)]
struct Watch {
    /// The epoch every local copy was offered to (or found in place).
    settled: Option<String>,
    /// A seed was cut short (the tier went down): do it again.
    unfinished: bool,
    /// Checks failed in a row.
    failures: u32,
}

impl Watch {
    /// A check answered: seeds when the epoch is new to this daemon.
    async fn up(&mut self, d: &Daemon, tier: &SharedTier, check: EpochCheck) {
        if self.failures > 0 {
            tracing::info!(
                "shared tier {} is up again, epoch {}",
                tier.status().url,
                check.epoch
            );
        }
        self.failures = 0;
        if !self.due(&check) {
            self.settled = Some(check.epoch);
            return;
        }
        match seed_all(d, tier).await {
            Ok(seeded) => {
                tracing::info!(
                    "shared tier {}: epoch {} is new; seeded {} of {} local copies ({} kept: the shared copy was as new or newer)",
                    tier.status().url,
                    check.epoch,
                    seeded.written,
                    seeded.offered,
                    seeded.offered - seeded.written,
                );
                self.settled = Some(check.epoch);
                self.unfinished = false;
            }
            Err(e) => {
                tracing::warn!("seeding the shared tier was cut short: {e}");
                self.unfinished = true;
            }
        }
    }

    /// Whether `check` calls for a seed: an epoch other than the one
    /// settled on, or (before any was) an epoch this check created (an
    /// empty server at start) or a seed left unfinished.
    fn due(&self, check: &EpochCheck) -> bool {
        match self.settled.as_deref() {
            Some(seen) => seen != check.epoch,
            None => check.created || self.unfinished,
        }
    }

    /// A check failed: logs the first failure and backs off.
    fn down(&mut self, e: &SharedError) -> Duration {
        if self.failures == 0 {
            tracing::warn!("{e}; reads go on from the local files");
        } else {
            tracing::debug!("{e}");
        }
        self.failures = self.failures.saturating_add(1);
        down_delay(self.failures)
    }
}

/// The wait after `failures` failed checks in a row (1-based).
fn down_delay(failures: u32) -> Duration {
    let doubled = DOWN_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(8));
    doubled.min(DOWN_CAP)
}

/// How many local copies were offered to the tier and how many written.
#[derive(Debug, Default)]
struct Seeded {
    offered: usize,
    written: usize,
}

/// Offers the local copy of every configured source that goes through the
/// shared tier (not opted out, not disabled), one at a time.
async fn seed_all(d: &Daemon, tier: &SharedTier) -> Result<Seeded, SharedError> {
    let config = d.config();
    let mut seeded = Seeded::default();
    for sc in config.sources.iter().filter(|sc| opted_in(sc)) {
        let Some(entry) = local_copy(d, sc).await else {
            continue;
        };
        seeded.offered += 1;
        if seed_one(tier, sc, &entry).await?.is_some() {
            seeded.written += 1;
        }
    }
    Ok(seeded)
}

fn opted_in(sc: &SourceConfig) -> bool {
    sc.shared && sc.disabled.is_none()
}

/// The local payload with its sidecar; `None` when there is none or it
/// cannot be read (logged).
async fn local_copy(d: &Daemon, sc: &SourceConfig) -> Option<Entry> {
    let (cache, source) = (d.cache.clone(), cache_source(sc));
    match blocking(move || cache.read_with_meta(&source)).await {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(
                "{}: cannot read the local copy to seed the shared tier: {e}",
                sc.id
            );
            None
        }
    }
}

/// Writes one local copy, dated by its payload's mtime (the origin's time).
async fn seed_one(
    tier: &SharedTier,
    sc: &SourceConfig,
    entry: &Entry,
) -> Result<Option<u64>, SharedError> {
    let validators = entry.meta.as_ref().map(|m| &m.validators);
    let sha256 = hex::encode(Sha256::digest(&entry.data));
    let fetched_at = entry
        .fetched_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let copy = Commit {
        kind: CommitKind::Fetched,
        fetched_at_ms: i64::try_from(fetched_at.as_millis()).unwrap_or(i64::MAX),
        payload: &entry.data,
        sha256: &sha256,
        etag: validators.and_then(|v| v.etag.as_deref()),
        last_modified: validators.and_then(|v| v.last_modified.as_deref()),
    };
    let written = tier.seed(&sc.id, &copy).await?;
    match written {
        Some(fence) => tracing::debug!("{}: seeded the shared tier, fence {fence}", sc.id),
        None => tracing::debug!("{}: the shared copy is as new or newer; kept", sc.id),
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(epoch: &str, created: bool) -> EpochCheck {
        EpochCheck {
            epoch: epoch.into(),
            created,
            changed: false,
        }
    }

    #[test]
    fn seeds_an_empty_server_at_start_and_every_new_epoch_after() {
        let mut watch = Watch::default();
        // At start: a server that already had an epoch is left as it is.
        assert!(!watch.due(&check("e1", false)));
        // An empty one (this check created the epoch) is seeded.
        assert!(watch.due(&check("e1", true)));
        watch.settled = Some("e1".into());
        assert!(!watch.due(&check("e1", false)));
        // Wiped, then re-created by this host or by another one.
        assert!(watch.due(&check("e2", true)));
        assert!(watch.due(&check("e2", false)));
        // A seed cut short before any epoch was settled is done again.
        let unfinished = Watch {
            unfinished: true,
            ..Watch::default()
        };
        assert!(unfinished.due(&check("e1", false)));
    }

    #[test]
    fn a_down_tier_is_checked_less_and_less_often_up_to_the_cap() {
        assert_eq!(down_delay(1), DOWN_FIRST);
        assert_eq!(down_delay(2), DOWN_FIRST * 2);
        assert!(down_delay(3) > down_delay(2));
        assert_eq!(down_delay(40), DOWN_CAP);
    }
}
