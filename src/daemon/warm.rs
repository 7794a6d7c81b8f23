//! Keeping sources warm: one task per configured source refreshes it ahead
//! of expiry (at `refresh_ahead` of its ttl, jittered), honours the failure
//! backoff recorded in its sidecar, and takes a refresh permit, so that at
//! most `max_concurrent_refreshes` run at once. Reads never wait for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::state::{Daemon, blocking, lock};
use crate::config::SourceConfig;
use crate::error::Error;
use crate::source::SourceId;

/// The shortest pause between two attempts of one source.
const MIN_PAUSE: Duration = Duration::from_millis(100);

/// The jitter around `refresh_ahead`: ±5 %.
const JITTER: f64 = 0.05;

#[derive(Debug)]
struct Handle {
    stop: CancellationToken,
    wake: Arc<Notify>,
}

/// The warm-keeping task of every configured source.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    tasks: Mutex<HashMap<SourceId, Handle>>,
}

impl Registry {
    /// Makes the task of a source look at it again now (after a change on
    /// disk, a reload or an invalidation).
    pub fn wake(&self, id: &SourceId) {
        if let Some(handle) = lock(&self.tasks).get(id) {
            handle.wake.notify_one();
        }
    }
}

/// Starts a task for every configured source that has none, stops the
/// tasks of sources no longer configured, and wakes the others (their
/// policy may have changed). Returns the sources added and removed.
pub(crate) fn sync(daemon: &Arc<Daemon>) -> (Vec<SourceId>, Vec<SourceId>) {
    let wanted: BTreeSet<SourceId> = daemon
        .config()
        .sources
        .iter()
        .map(|s| s.id.clone())
        .collect();
    let mut tasks = lock(&daemon.warm.tasks);
    let removed: Vec<SourceId> = tasks
        .keys()
        .filter(|id| !wanted.contains(*id))
        .cloned()
        .collect();
    for id in &removed {
        if let Some(handle) = tasks.remove(id) {
            handle.stop.cancel();
        }
        daemon.seeded(id);
    }
    let mut added = Vec::new();
    for id in wanted {
        if let Some(handle) = tasks.get(&id) {
            handle.wake.notify_one();
            continue;
        }
        let handle = Handle {
            stop: daemon.shutdown.child_token(),
            wake: Arc::new(Notify::new()),
        };
        let task = keep_warm(
            Arc::clone(daemon),
            id.clone(),
            handle.stop.clone(),
            Arc::clone(&handle.wake),
        );
        daemon.tracker.spawn(task);
        tasks.insert(id.clone(), handle);
        added.push(id);
    }
    (added, removed)
}

/// The loop of one source: sleep until due (or woken), refresh, repeat.
async fn keep_warm(daemon: Arc<Daemon>, id: SourceId, stop: CancellationToken, wake: Arc<Notify>) {
    let mut jitter = draw_jitter();
    loop {
        let Some(sc) = daemon.source(&id) else { return };
        let wait = until_due(&daemon, &sc, jitter).await;
        if !wait.is_zero() {
            // Not due now: nothing to seed (it has data, or is backing off).
            daemon.seeded(&id);
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = daemon.permit() => permit,
        };
        // Someone may have refreshed it while we waited for the permit.
        let result = match until_due(&daemon, &sc, jitter).await.is_zero() {
            true => Some(daemon.run_refresh(&sc).await),
            false => None,
        };
        drop(permit);
        daemon.seeded(&id);
        jitter = draw_jitter();
        let pause = match result {
            Some(Err(Error::RefreshFailed { .. } | Error::Timeout { .. })) | Some(Ok(_)) | None => {
                MIN_PAUSE
            }
            // A file error is not recorded in the sidecar: back off here.
            Some(Err(_)) => sc.policy.backoff_base.max(MIN_PAUSE),
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// A factor around 1 that spreads the refreshes of sources with equal ttls.
fn draw_jitter() -> f64 {
    1.0 - JITTER + 2.0 * JITTER * fastrand::f64()
}

/// How long until a source is due: at once without data; else at
/// `refresh_ahead × jitter` of its ttl after its last success; never before
/// its `next_retry_at`.
async fn until_due(daemon: &Daemon, sc: &SourceConfig, jitter: f64) -> Duration {
    let ahead = (daemon.config().daemon.refresh_ahead * jitter).min(1.0);
    let (cache, id) = (daemon.cache.clone(), sc.id.clone());
    let ttl = sc.policy.ttl;
    let due = blocking(move || {
        let modified = std::fs::metadata(cache.layout().payload(&id))
            .and_then(|m| m.modified())
            .ok();
        let retry = cache.meta(&id)?.and_then(|m| m.next_retry_at);
        Ok(due_at(modified, ttl, ahead, retry.map(|t| t.system_time())))
    })
    .await;
    match due {
        Ok(due) => due.duration_since(SystemTime::now()).unwrap_or_default(),
        Err(e) => {
            tracing::warn!("{}: cannot read its state: {e}", sc.id);
            sc.policy.backoff_base.max(MIN_PAUSE)
        }
    }
}

/// When a source is due, from its payload's mtime and its backoff.
fn due_at(
    modified: Option<SystemTime>,
    ttl: Duration,
    ahead: f64,
    retry: Option<SystemTime>,
) -> SystemTime {
    let due = modified.map_or(SystemTime::UNIX_EPOCH, |m| m + ttl.mul_f64(ahead));
    retry.map_or(due, |r| due.max(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_a_fraction_of_the_ttl_after_the_last_success() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let due = due_at(Some(t), Duration::from_secs(100), 0.8, None);
        assert_eq!(due, t + Duration::from_secs(80));
    }

    #[test]
    fn no_data_is_due_at_once_unless_backing_off() {
        assert_eq!(
            due_at(None, Duration::from_secs(100), 0.8, None),
            SystemTime::UNIX_EPOCH
        );
        let retry = SystemTime::now() + Duration::from_secs(30);
        assert_eq!(
            due_at(None, Duration::from_secs(100), 0.8, Some(retry)),
            retry
        );
    }

    #[test]
    fn jitter_stays_within_five_percent() {
        for _ in 0..1000 {
            let j = draw_jitter();
            assert!((0.95..=1.05).contains(&j), "{j}");
        }
    }
}
