//! The daemon's shared state: the cache, the current config, the refresh
//! permits, the event channel and the daemon's view of every source.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use tokio::sync::{OwnedSemaphorePermit, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::configured::{Configured, InForce};
use super::events::changes;
pub(crate) use super::mutex::lock;
use super::permits::Permits;
use super::registry::Registry;
use super::view::{Held, Look, Served, Stamp, View};
use crate::cache::{Cache, Source};
use crate::config::{Config, SourceConfig};
use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, Event, WireError};
use crate::refresh::Refreshed;
use crate::source::SourceId;
use crate::stats::{Counter, Stats};

/// How many events a slow watch client may fall behind by.
const EVENT_BACKLOG: usize = 1024;

/// Most sources looked at in one blocking call: looking at 100,000 in one
/// call built one list of them all at once (tens of MiB that the blocking
/// thread's malloc arena kept) and held a blocking thread for seconds.
const LOOK_BATCH: usize = 512;

/// Everything the daemon's tasks share.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub cache: Cache,
    pub socket: PathBuf,
    /// The `--config` given, if any (else the default path or embedded).
    pub explicit_config: Option<PathBuf>,
    config: RwLock<Arc<InForce>>,
    /// Why the config file last failed to load, until a load succeeds.
    pub config_error: Mutex<Option<String>>,
    permits: Permits,
    pub events: broadcast::Sender<Event>,
    pub view: View,
    /// Sources with no data at start that have not had a first attempt.
    seeding: Mutex<BTreeSet<SourceId>>,
    pub stats: Stats,
    pub warm: Registry,
    /// Stops accepting, scheduling and serving.
    pub shutdown: CancellationToken,
    /// Skips the shutdown grace (a second signal).
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
    pub started_at: SystemTime,
    /// `--offline` or `DISCOCACHE_OFFLINE`: offline whatever the config
    /// says, across reloads.
    forced_offline: bool,
}

impl Daemon {
    pub fn new(
        cache: Cache,
        socket: PathBuf,
        mut config: Config,
        explicit: Option<PathBuf>,
        stats: Stats,
        forced_offline: bool,
    ) -> Self {
        config.daemon.offline |= forced_offline;
        let permits = config.daemon.max_concurrent_refreshes;
        let view = View::default();
        Self {
            cache,
            socket,
            explicit_config: explicit,
            config: RwLock::new(Arc::new(InForce::new(config))),
            config_error: Mutex::new(None),
            permits: Permits::new(permits),
            events: broadcast::channel(EVENT_BACKLOG).0,
            view,
            seeding: Mutex::default(),
            stats,
            warm: Registry::default(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started_at: SystemTime::now(),
            forced_offline,
        }
    }

    /// Refreshes are off: nothing is refreshed, what is on disk is served.
    pub fn offline(&self) -> bool {
        self.in_force().config.daemon.offline
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.in_force().config)
    }

    fn in_force(&self) -> Arc<InForce> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts a new config in force and resizes the refresh permits.
    pub fn set_config(&self, mut config: Config) {
        config.daemon.offline |= self.forced_offline;
        let want = config.daemon.max_concurrent_refreshes;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(InForce::new(config));
        self.permits.resize(want);
    }

    /// The most payload bytes `id` may have (its `max_output`; the default
    /// for a source that is not configured).
    fn max_output(&self, id: &SourceId) -> u64 {
        max_output_in(&self.in_force(), id)
    }

    /// The configured source with this id.
    pub fn source(&self, id: &SourceId) -> Option<Configured> {
        Configured::find(self.in_force(), id)
    }

    /// The configured source, or `unknown_source`.
    pub fn known(&self, id: &SourceId) -> Result<Configured, WireError> {
        self.source(id).ok_or_else(|| {
            let msg = format!("{id} is not a source of this daemon's config");
            WireError::new(ErrorCode::UnknownSource, msg)
        })
    }

    /// What a `get` serves of a source now: its payload (held, or read
    /// again when its stamp changed) and its refresh state. `Ok(None)` when
    /// it has no payload. Costs one `stat` when the held payload is current.
    pub async fn snapshot(&self, sc: &SourceConfig) -> Result<Option<Served>> {
        let layout = self.cache.layout();
        let Some(stamp) = Stamp::probe(&layout.payload(&sc.id))? else {
            return Ok(None);
        };
        let held = match self.view.held(&sc.id, stamp) {
            Some(held) => held,
            None => match self.load(&sc.id).await? {
                Some(held) => held,
                None => return Ok(None),
            },
        };
        let (attempts, marker) = self.view.record_of(&sc.id).unwrap_or_default();
        let state = self.cache.state_of(&sc.id, &attempts, marker.as_ref());
        Ok(Some(Served::new(held, &sc.policy, state)))
    }

    /// Reads a source's payload with a fresh look at its sidecar (so that
    /// the revision served matches the payload), publishes what changed,
    /// and holds the payload for the next `get`s.
    async fn load(&self, id: &SourceId) -> Result<Option<Arc<Held>>> {
        let (layout, key) = (self.cache.layout().clone(), id.clone());
        let max = self.max_output(id);
        let (held, look) = blocking(move || {
            let held = Held::load(&layout.payload(&key), max)?;
            Ok((held, Look::take(&layout, &key)?))
        })
        .await?;
        self.apply(id, look);
        let held = held.map(Arc::new);
        if let Some(held) = &held {
            self.view.hold(id, held);
        }
        Ok(held)
    }

    /// Refreshes a source now, with its guard (background and warm
    /// refreshes): see [`Daemon::refresh_as`].
    pub async fn refresh(&self, sc: &SourceConfig) -> Result<Refreshed> {
        self.refresh_as(sc, false).await
    }

    /// Refreshes a source now, forced (the guard does not apply: see
    /// [`Cache::refresh`](crate::Cache::refresh)) or not. A refresh of it
    /// already running here is joined without a permit; otherwise this
    /// waits for a refresh permit (and joins instead if a refresh started
    /// meanwhile), so that a caller waiting on a flight never holds a permit
    /// another source needs.
    pub async fn refresh_as(&self, sc: &SourceConfig, forced: bool) -> Result<Refreshed> {
        if self.offline() {
            return Err(Error::Offline { id: sc.id.clone() });
        }
        loop {
            if let Some(joined) = self.cache.join(&sc.id) {
                let result = joined.await;
                if let Ok(done) = &result {
                    let revision = done.revision();
                    tracing::info!(
                        "{}: joined the refresh running here, revision {revision}",
                        sc.id
                    );
                }
                self.settle(sc, &result).await;
                return result;
            }
            let permit = self.permit().await?;
            if self.cache.in_flight_here(&sc.id) {
                continue;
            }
            let result = self.run_refresh_as(sc, forced).await;
            drop(permit);
            return result;
        }
    }

    /// A refresh permit; waits while `max_concurrent_refreshes` run.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        self.permits.acquire().await
    }

    /// Refreshes with the permit already taken.
    pub async fn run_refresh(&self, sc: &SourceConfig) -> Result<Refreshed> {
        self.run_refresh_as(sc, false).await
    }

    async fn run_refresh_as(&self, sc: &SourceConfig, forced: bool) -> Result<Refreshed> {
        if self.offline() {
            return Err(Error::Offline { id: sc.id.clone() });
        }
        let refresher = sc.refresher.clone();
        let fetch = move |ctx| async move { refresher.fetch(ctx).await };
        let started = std::time::Instant::now();
        let source = cache_source(sc);
        let result = match forced {
            true => self.cache.refresh(&source, fetch).await,
            false => self.cache.refresh_guarded(&source, fetch).await,
        };
        // The marker seen last names the holder of a refresh joined.
        let holder = self
            .view
            .record_of(&sc.id)
            .and_then(|(_, m)| m)
            .map(|m| m.pid);
        log_refresh(&sc.id, &result, started.elapsed(), holder);
        self.settle(sc, &result).await;
        result
    }

    /// Counts a refresh's outcome and publishes what changed.
    async fn settle(&self, sc: &SourceConfig, result: &Result<Refreshed>) {
        self.stats.count(&sc.id, Counter::of_refresh(result));
        self.observe_refreshed(&sc.id).await;
    }

    /// [`Daemon::observe`] right after a refresh of the source ran or was
    /// joined: what it committed has its sidecar, so there is nothing to
    /// adopt (that costs a directory check and a lock per look); a payload
    /// written elsewhere meanwhile is adopted when the watcher sees it.
    async fn observe_refreshed(&self, id: &SourceId) {
        let (layout, key) = (self.cache.layout().clone(), id.clone());
        match blocking(move || Look::take(&layout, &key)).await {
            Ok(look) => self.apply(id, look),
            Err(e) => tracing::warn!("cannot look at {id}: {e}"),
        }
    }

    /// Looks at a source's files again and publishes an event for each
    /// change since the last look: a new revision, a failed attempt, a
    /// removal.
    pub async fn observe(&self, id: &SourceId) {
        self.observe_many(vec![id.clone()]).await;
    }

    /// [`Daemon::observe`] for many sources, a batch of [`LOOK_BATCH`]
    /// per blocking call.
    pub async fn observe_many(&self, ids: Vec<SourceId>) {
        for batch in ids.chunks(LOOK_BATCH) {
            for (id, look, _) in self.look_at(batch.to_vec(), HashSet::new()).await {
                match look {
                    Ok(look) => self.apply(&id, look),
                    Err(e) => tracing::warn!("cannot look at {id}: {e}"),
                }
            }
        }
    }

    /// Looks at each source's files in one blocking call, and reads the
    /// payloads of the sources in `load` as well.
    async fn look_at(&self, ids: Vec<SourceId>, load: HashSet<SourceId>) -> Vec<Looked> {
        let (layout, cache) = (self.cache.layout().clone(), self.cache.clone());
        let in_force = self.in_force();
        let looked = blocking(move || {
            let look = |id: SourceId| {
                // A payload written by someone else (fizeau) gets its
                // revision first, so that the look sees it committed.
                if let Err(e) = cache.adopt(&id) {
                    tracing::warn!("{id}: cannot record a payload written elsewhere: {e}");
                }
                let look = Look::take(&layout, &id);
                let wanted = load.contains(&id) && look.as_ref().is_ok_and(|l| l.payload);
                let max = max_output_in(&in_force, &id);
                let held = wanted
                    .then(|| Held::load(&layout.payload(&id), max).ok().flatten())
                    .flatten();
                (id, look, held)
            };
            Ok(ids.into_iter().map(look).collect())
        })
        .await;
        looked.unwrap_or_default()
    }

    /// Records a look at a source; publishes the changes since the one
    /// before and wakes its warm-keeping.
    fn apply(&self, id: &SourceId, now: Look) {
        let before = self.view.record(id, now.clone()).unwrap_or_default();
        if before == now {
            return;
        }
        if before.payload != now.payload {
            self.count_keys();
        }
        for event in changes(id, &before, &now) {
            let _ = self.events.send(event);
        }
        self.warm.wake(id);
    }

    /// Sets the key counts from the view.
    fn count_keys(&self) {
        self.stats.set_keys(self.view.keys_by_tier());
    }

    /// [`Daemon::observe`] for every configured source and every source on
    /// disk.
    pub async fn observe_all(&self) {
        let on_disk = self.on_disk().await;
        self.observe_with(on_disk).await;
    }

    /// [`Daemon::observe`] for every configured source and each of
    /// `on_disk` (the sources found on disk).
    pub async fn observe_with(&self, on_disk: Vec<SourceId>) {
        let ids = self.with_configured(on_disk);
        self.observe_many(ids.into_iter().collect()).await;
    }

    /// Records what is on disk now without publishing anything, and holds
    /// the payloads of configured sources, so that the first `get` of each
    /// is answered from memory (at start).
    pub async fn prime(&self) {
        let configured: HashSet<SourceId> =
            self.config().sources.iter().map(|s| s.id.clone()).collect();
        let on_disk = self.on_disk().await;
        let ids: Vec<SourceId> = self.with_configured(on_disk).into_iter().collect();
        for batch in ids.chunks(LOOK_BATCH) {
            let load = batch.iter().filter(|id| configured.contains(*id)).cloned();
            for (id, look, held) in self.look_at(batch.to_vec(), load.collect()).await {
                let Ok(look) = look else { continue };
                self.view.record(&id, look);
                if let Some(held) = held {
                    self.view.hold(&id, &Arc::new(held));
                }
            }
        }
        self.count_keys();
    }

    /// The sources with files on disk (none when the root cannot be read).
    async fn on_disk(&self) -> Vec<SourceId> {
        let cache = self.cache.clone();
        blocking(move || cache.sources_on_disk())
            .await
            .unwrap_or_default()
    }

    /// Every configured source and each of `on_disk`, the configured ones
    /// as the config holds them (one shared id each).
    fn with_configured(&self, on_disk: Vec<SourceId>) -> BTreeSet<SourceId> {
        let mut ids: BTreeSet<SourceId> =
            self.config().sources.iter().map(|s| s.id.clone()).collect();
        ids.extend(on_disk);
        ids
    }

    /// Starts seeding: these sources have no data yet.
    pub fn start_seeding(&self, ids: BTreeSet<SourceId>) {
        let empty = ids.is_empty();
        *lock(&self.seeding) = ids;
        self.stats.set_seeding(!empty);
    }

    /// A source had its first attempt (or left the config): seeding ends
    /// when none is left.
    pub fn seeded(&self, id: &SourceId) {
        let mut pending = lock(&self.seeding);
        if pending.remove(id) && pending.is_empty() {
            self.stats.set_seeding(false);
            tracing::info!("seeding done: every source has had a first refresh");
            drop(pending);
            super::notify::report(&self.stats);
        }
    }
}

/// Logs a refresh's outcome as a sentence: `demo/host: committed revision
/// 3 in 12 ms`.
fn log_refresh(
    id: &SourceId,
    result: &Result<Refreshed>,
    took: std::time::Duration,
    holder: Option<u32>,
) {
    let ms = took.as_millis();
    match result {
        Ok(Refreshed::Committed { revision }) => {
            tracing::info!("{id}: committed revision {revision} in {ms} ms");
        }
        Ok(Refreshed::NotModified { revision }) => {
            tracing::info!("{id}: not modified, revision {revision} renewed in {ms} ms");
        }
        Ok(Refreshed::Joined { revision }) => match holder {
            Some(pid) => {
                tracing::info!("{id}: joined a refresh run by pid {pid}, revision {revision}")
            }
            None => {
                tracing::info!("{id}: joined a refresh run by another process, revision {revision}")
            }
        },
        Err(e) => tracing::warn!("{e}"),
    }
}

/// What [`Daemon::look_at`] found of one source.
type Looked = (SourceId, Result<Look>, Option<Held>);

/// A library [`Source`] for a configured source.
pub(crate) fn cache_source(sc: &SourceConfig) -> Source {
    Source::new(sc.id.clone(), sc.policy.clone())
}

pub(crate) use crate::cache::blocking;

/// The `max_output` of `id` in `in_force` (the default when unconfigured).
fn max_output_in(in_force: &Arc<InForce>, id: &SourceId) -> u64 {
    let max = Configured::find(Arc::clone(in_force), id)
        .map_or(crate::refresher::DEFAULT_MAX_OUTPUT, |sc| {
            sc.policy.max_output
        });
    max as u64
}
