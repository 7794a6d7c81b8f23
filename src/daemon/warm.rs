//! Keeping sources warm: one scheduler task over a due-time queue
//! ([`queue`]) refreshes every configured source ahead of expiry (at
//! `refresh_ahead` of its ttl, jittered), honours the failure backoff
//! recorded in its sidecar, and takes a refresh permit per refresh, so that
//! at most `max_concurrent_refreshes` run at once. Due times are read from
//! disk in batches, one blocking call per batch. Reads never wait for it.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::configured::Configured;
use super::mutex::lock;
use super::queue::{Pending, Queue, Timing};
use super::registry::draw_jitter;
use super::state::{Daemon, blocking};
use crate::cache::Cache;
use crate::config::{Config, SourceConfig};
use crate::error::Error;
use crate::source::SourceId;

/// The shortest pause between two attempts of one source.
const MIN_PAUSE: Duration = Duration::from_millis(100);

/// Most sources looked at in one blocking call: large enough that a start
/// with 10,000 sources takes 20 calls, small enough that wakes and permits
/// are served in between.
const BATCH: usize = 512;

/// Keeps every configured source not kept yet, drops the sources no longer
/// configured, and wakes the others (their policy may have changed). Starts
/// the scheduler on first use. Returns the sources added and removed.
pub(crate) fn sync(daemon: &Arc<Daemon>) -> (Vec<SourceId>, Vec<SourceId>) {
    let config = daemon.config();
    let (added, removed) = update(&mut lock(&daemon.warm.queue), &config, Instant::now());
    for id in &removed {
        daemon.seeded(id);
    }
    daemon.warm.kick.notify_one();
    if !daemon.warm.started.swap(true, Ordering::SeqCst) {
        daemon.tracker.spawn(schedule(Arc::clone(daemon)));
    }
    (added, removed)
}

/// Brings the queue in line with a config.
fn update(queue: &mut Queue, config: &Config, now: Instant) -> (Vec<SourceId>, Vec<SourceId>) {
    let wanted: std::collections::HashSet<&SourceId> =
        config.sources.iter().map(|s| &s.id).collect();
    let removed: Vec<SourceId> = queue
        .ids()
        .filter(|id| !wanted.contains(id))
        .cloned()
        .collect();
    for id in &removed {
        queue.remove(id);
    }
    let mut added = Vec::new();
    for sc in &config.sources {
        if queue.contains(&sc.id) {
            queue.set_timing(&sc.id, timing(sc));
            queue.wake(&sc.id, now);
        } else {
            queue.insert(sc.id.clone(), timing(sc), draw_jitter(), now);
            added.push(sc.id.clone());
        }
    }
    (added, removed)
}

fn timing(sc: &SourceConfig) -> Timing {
    Timing {
        ttl: sc.policy.ttl,
        backoff: sc.policy.backoff_base.max(MIN_PAUSE),
        backoff_cap: sc.policy.backoff_cap,
    }
}

/// The scheduler: looks at the sources whose time has come, starts a
/// refresh of a due source whenever a permit is free, sleeps until the
/// next time or a wake.
async fn schedule(daemon: Arc<Daemon>) {
    let warm = &daemon.warm;
    while !daemon.shutdown.is_cancelled() {
        if daemon.offline() {
            // Nothing is refreshed; a reload that turns it off kicks.
            tokio::select! {
                () = daemon.shutdown.cancelled() => return,
                () = warm.kick.notified() => continue,
            }
        }
        let looks = lock(&warm.queue).take_due(Instant::now(), BATCH);
        if !looks.is_empty() {
            examine(&daemon, looks).await;
            continue;
        }
        let (next, ready) = {
            let queue = lock(&warm.queue);
            (queue.next_at(), queue.has_ready())
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => pending().await,
            }
        };
        tokio::select! {
            () = daemon.shutdown.cancelled() => return,
            () = warm.kick.notified() => {}
            () = sleep => {}
            permit = daemon.permit(), if ready => match permit {
                Ok(permit) => start_next(&daemon, permit),
                Err(e) => return tracing::warn!("warm-keeping stops: {e}"),
            },
        }
    }
}

/// Reads the due times of a batch and files each source: due, or waiting.
async fn examine(daemon: &Daemon, looks: Vec<Pending>) {
    let dues = due_times(daemon, looks).await;
    let now = Instant::now();
    let resting: Vec<SourceId> = {
        let mut queue = lock(&daemon.warm.queue);
        dues.into_iter()
            .filter(|(id, due)| queue.looked(id, *due, now))
            .map(|(id, _)| id)
            .collect()
    };
    // Not due now: nothing to seed (it has data, or is backing off).
    for id in &resting {
        daemon.seeded(id);
    }
}

/// Starts the refresh of the next due source with this permit.
fn start_next(daemon: &Arc<Daemon>, permit: OwnedSemaphorePermit) {
    let Some(look) = lock(&daemon.warm.queue).start_next() else {
        return;
    };
    let Some(sc) = daemon.source(&look.id) else {
        // Left the config; the reload in progress drops it.
        return daemon.warm.finished(&look.id, MIN_PAUSE);
    };
    daemon
        .tracker
        .spawn(attempt(Arc::clone(daemon), sc, look, permit));
}

/// One attempt under its permit: re-check that the source is still due
/// (someone else may have refreshed it meanwhile), refresh, then rest.
async fn attempt(daemon: Arc<Daemon>, sc: Configured, look: Pending, permit: OwnedSemaphorePermit) {
    let recheck = due_times(&daemon, vec![look]).await;
    let due = recheck.first().and_then(|(_, due)| *due);
    let due_now = due.is_some_and(|due| due <= Instant::now());
    let result = if due_now && daemon.cache.in_flight_here(&sc.id) {
        // Already running here (forced by a client): join it, holding no
        // permit while it runs.
        drop(permit);
        Some(daemon.refresh(&sc).await)
    } else {
        let result = match due_now {
            true => Some(daemon.run_refresh(&sc).await),
            false => None,
        };
        drop(permit);
        result
    };
    daemon.seeded(&sc.id);
    let pause = match result {
        Some(Err(Error::RefreshFailed { .. } | Error::Timeout { .. })) | Some(Ok(_)) | None => {
            MIN_PAUSE
        }
        // A file error is not recorded in the sidecar: back off here.
        Some(Err(_)) => timing(&sc).backoff,
    };
    daemon.warm.finished(&sc.id, pause);
}

/// The due time of every source of a batch, in one blocking call: `None`
/// for a source whose state cannot be read (logged).
async fn due_times(daemon: &Daemon, looks: Vec<Pending>) -> Vec<(SourceId, Option<Instant>)> {
    let ahead = daemon.config().daemon.refresh_ahead;
    let ids: Vec<SourceId> = looks.iter().map(|l| l.id.clone()).collect();
    let cache = daemon.cache.clone();
    let read = blocking(move || {
        let dues = looks.iter().map(|l| due_of(&cache, l, ahead));
        Ok(dues.collect::<Vec<_>>())
    })
    .await;
    let dues = match read {
        Ok(dues) => dues,
        Err(e) => {
            tracing::warn!("cannot read the state of {} sources: {e}", ids.len());
            return ids.into_iter().map(|id| (id, None)).collect();
        }
    };
    let (now, wall) = (Instant::now(), SystemTime::now());
    ids.into_iter()
        .zip(dues)
        .map(|(id, due)| match due {
            Ok(due) => (id, Some(now + due.duration_since(wall).unwrap_or_default())),
            Err(e) => {
                tracing::warn!("{id}: cannot read its state: {e}");
                (id, None)
            }
        })
        .collect()
}

/// When one source is due, from its payload's mtime and its sidecar.
fn due_of(cache: &Cache, look: &Pending, ahead: f64) -> crate::Result<SystemTime> {
    let ahead = (ahead * look.jitter).min(1.0);
    let modified = std::fs::metadata(cache.layout().payload(&look.id))
        .and_then(|m| m.modified())
        .ok();
    let meta = cache.meta(&look.id)?;
    let (recorded, last) = meta.map_or((None, None), |m| (m.next_retry_at, m.last_attempt_at));
    let now = crate::meta::Timestamp::now();
    let retry = crate::freshness::clamp_retry(recorded, last, now, look.timing.backoff_cap);
    Ok(due_at(
        modified,
        look.timing.ttl,
        ahead,
        retry.map(|t| t.system_time()),
    ))
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
    use std::path::Path;

    use super::*;
    use crate::protocol::EventKind;
    use crate::stats::Stats;

    /// A config of `n` file sources `t/s<i>`, each copying its own file.
    fn config(dir: &Path, n: usize) -> Config {
        let mut text = String::from("[defaults]\nttl = \"24h\"\n");
        for i in 0..n {
            let file = dir.join(format!("{i}.json"));
            std::fs::write(&file, format!("{{\"n\":{i}}}")).expect("write data");
            text.push_str(&format!("[[source]]\nid = \"t/s{i}\"\nfile = {:?}\n", file));
        }
        Config::parse(&text, "test").expect("valid config")
    }

    fn daemon(dir: &Path, config: Config) -> Arc<Daemon> {
        let cache = Cache::open(dir.join("root")).expect("open root");
        let stats = Stats::empty(&dir.join("state"));
        Arc::new(Daemon::new(
            cache,
            dir.join("sock"),
            config,
            None,
            stats,
            false,
        ))
    }

    #[test]
    fn update_adds_new_sources_removes_gone_ones_and_wakes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Instant::now();
        let mut queue = Queue::default();
        let (added, removed) = update(&mut queue, &config(dir.path(), 3), t0);
        assert_eq!(added.len(), 3);
        assert!(removed.is_empty());
        for look in queue.take_due(t0, 10) {
            queue.looked(&look.id, Some(t0 + Duration::from_secs(3600)), t0);
        }
        let later = t0 + Duration::from_secs(1);
        let (added, removed) = update(&mut queue, &config(dir.path(), 2), later);
        assert!(added.is_empty());
        assert_eq!(removed, [SourceId::parse("t/s2").expect("valid")]);
        assert_eq!(queue.next_at(), Some(later), "kept sources are woken");
        assert_eq!(queue.take_due(later, 10).len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_scheduler_refreshes_every_source_once_then_waits_for_its_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = 40;
        let d = daemon(dir.path(), config(dir.path(), n));
        d.start_seeding(d.config().sources.iter().map(|s| s.id.clone()).collect());
        let mut events = d.events.subscribe();
        let (added, _) = sync(&d);
        assert_eq!(added.len(), n);
        let mut committed = std::collections::BTreeSet::new();
        let deadline = Duration::from_secs(30);
        while committed.len() < n {
            let event = tokio::time::timeout(deadline, events.recv())
                .await
                .expect("every source committed in time")
                .expect("event channel open");
            assert_eq!(event.event, EventKind::Committed, "{event:?}");
            assert!(committed.insert(event.source), "one commit per source");
        }
        // Once every attempt has rested and been looked at again, the next
        // look is ahead of expiry, a day away: nothing is refetched.
        let settled = async {
            loop {
                let next = lock(&d.warm.queue).next_at();
                if next.is_some_and(|at| at > Instant::now() + Duration::from_secs(3600)) {
                    break;
                }
                tokio::time::sleep(MIN_PAUSE).await;
            }
        };
        tokio::time::timeout(deadline, settled)
            .await
            .expect("every source waits for its ttl");
        let snap = d.stats.snapshot();
        assert!(snap.sources.values().all(|c| c.refresh_ok == 1), "{snap:?}");
        assert_eq!(snap.status, crate::stats::Status::Ready);
        d.shutdown.cancel();
        d.tracker.close();
        tokio::time::timeout(deadline, d.tracker.wait())
            .await
            .expect("the scheduler stops on shutdown");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prime_looks_at_every_source_past_one_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = 1100;
        let d = daemon(dir.path(), config(dir.path(), n));
        // The last sources have a payload on disk: they are counted.
        let layout = d.cache.layout().clone();
        for sc in &d.config().sources[n - 3..] {
            std::fs::create_dir_all(layout.payload(&sc.id).parent().expect("tier"))
                .expect("tier dir");
            std::fs::write(layout.payload(&sc.id), "[1]").expect("payload");
        }
        d.prime().await;
        let config = d.config();
        let unseen: Vec<_> = config
            .sources
            .iter()
            .filter(|sc| d.view.record_of(&sc.id).is_none())
            .collect();
        assert!(unseen.is_empty(), "{} sources not looked at", unseen.len());
        assert_eq!(d.view.keys_by_tier().get("t"), Some(&3));
    }

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
