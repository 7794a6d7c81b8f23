//! The daemon's shared state: the cache, the current config, the refresh
//! permits, the event channel and the daemon's view of every source.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::warm;
use crate::cache::{Cache, Entry, Source};
use crate::config::{Config, SourceConfig};
use crate::error::{Error, Result};
use crate::meta::{Meta, Timestamp};
use crate::protocol::{ErrorCode, Event, EventKind, WireError};
use crate::refresh::Refreshed;
use crate::source::SourceId;
use crate::stats::{Counter, Stats};

/// How many events a slow watch client may fall behind by.
const EVENT_BACKLOG: usize = 1024;

/// What the daemon last saw of a source on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    present: bool,
    payload: bool,
    revision: u64,
    attempt: Option<Timestamp>,
}

/// Locks a mutex, ignoring poisoning (every critical section leaves its
/// data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the daemon's tasks share.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub cache: Cache,
    pub socket: PathBuf,
    /// The `--config` given, if any (else the default path or embedded).
    pub explicit_config: Option<PathBuf>,
    config: RwLock<Arc<Config>>,
    /// Why the config file last failed to load, until a load succeeds.
    pub config_error: Mutex<Option<String>>,
    permits: Arc<Semaphore>,
    permits_total: Mutex<usize>,
    pub events: broadcast::Sender<Event>,
    view: Mutex<HashMap<SourceId, Seen>>,
    /// Sources with no data at start that have not had a first attempt.
    seeding: Mutex<BTreeSet<SourceId>>,
    pub stats: Stats,
    pub warm: warm::Registry,
    /// Stops accepting, scheduling and serving.
    pub shutdown: CancellationToken,
    /// Skips the shutdown grace (a second signal).
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
    pub started_at: SystemTime,
}

impl Daemon {
    pub fn new(
        cache: Cache,
        socket: PathBuf,
        config: Config,
        explicit: Option<PathBuf>,
        stats: Stats,
    ) -> Self {
        let permits = config.daemon.max_concurrent_refreshes;
        Self {
            cache,
            socket,
            explicit_config: explicit,
            config: RwLock::new(Arc::new(config)),
            config_error: Mutex::new(None),
            permits: Arc::new(Semaphore::new(permits)),
            permits_total: Mutex::new(permits),
            events: broadcast::channel(EVENT_BACKLOG).0,
            view: Mutex::default(),
            seeding: Mutex::default(),
            stats,
            warm: warm::Registry::default(),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started_at: SystemTime::now(),
        }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts a new config in force and resizes the refresh permits.
    pub fn set_config(&self, config: Config) {
        let want = config.daemon.max_concurrent_refreshes;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        let mut total = lock(&self.permits_total);
        if want > *total {
            self.permits.add_permits(want - *total);
            *total = want;
        } else if want < *total {
            // Permits held now cannot be forgotten: the pool shrinks by what
            // is free, and by the rest at the next reload.
            *total -= self.permits.forget_permits(*total - want);
        }
    }

    /// The configured source with this id.
    pub fn source(&self, id: &SourceId) -> Option<SourceConfig> {
        self.config().source(id).cloned()
    }

    /// The configured source, or `unknown_source`.
    pub fn known(&self, id: &SourceId) -> Result<SourceConfig, WireError> {
        self.source(id).ok_or_else(|| {
            let msg = format!("{id} is not a source of this daemon's config");
            WireError::new(ErrorCode::UnknownSource, msg)
        })
    }

    /// Reads a source's payload and sidecar on a blocking thread.
    pub async fn read(&self, sc: &SourceConfig) -> Result<Option<Entry>> {
        let (cache, source) = (self.cache.clone(), cache_source(sc));
        blocking(move || cache.read_with_meta(&source)).await
    }

    /// Refreshes a source now (joining one in flight) under a refresh
    /// permit, counts the outcome and publishes what changed.
    pub async fn refresh(&self, sc: &SourceConfig) -> Result<Refreshed> {
        let _permit = self.permit().await?;
        self.run_refresh(sc).await
    }

    /// A refresh permit; waits while `max_concurrent_refreshes` run.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the refresh permits were closed".into()))
    }

    /// Refreshes with the permit already taken.
    pub async fn run_refresh(&self, sc: &SourceConfig) -> Result<Refreshed> {
        let refresher = sc.refresher.clone();
        let fetch = move |ctx| async move { refresher.fetch(ctx).await };
        let result = self.cache.refresh(&cache_source(sc), fetch).await;
        self.stats.count(&sc.id, Counter::of_refresh(&result));
        match &result {
            Ok(done) => tracing::info!("{}: refreshed ({done:?})", sc.id),
            Err(e) => tracing::warn!("{e}"),
        }
        self.observe(&sc.id).await;
        result
    }

    /// Rereads a source's files and publishes an event for each change
    /// since the last look: a new revision, a failed attempt, a removal.
    pub async fn observe(&self, id: &SourceId) {
        let (cache, key) = (self.cache.clone(), id.clone());
        let look = blocking(move || look(&cache, &key)).await;
        let (now, meta) = match look {
            Ok(found) => found,
            Err(e) => return tracing::warn!("cannot look at {id}: {e}"),
        };
        let before = {
            let mut view = lock(&self.view);
            let slot = view.entry(id.clone()).or_default();
            std::mem::replace(slot, now.clone())
        };
        if before == now {
            return;
        }
        if before.payload != now.payload {
            self.count_keys();
        }
        for event in changes(id, &before, &now, meta.as_ref()) {
            let _ = self.events.send(event);
        }
        self.warm.wake(id);
    }

    /// Sets the key counts from the view.
    fn count_keys(&self) {
        let mut by_tier = std::collections::BTreeMap::new();
        for id in lock(&self.view)
            .iter()
            .filter(|(_, s)| s.payload)
            .map(|(id, _)| id)
        {
            *by_tier.entry(id.tier().to_owned()).or_insert(0u64) += 1;
        }
        self.stats.set_keys(by_tier);
    }

    /// [`Daemon::observe`] for every configured source and every source on
    /// disk.
    pub async fn observe_all(&self) {
        for id in self.all_ids().await {
            self.observe(&id).await;
        }
    }

    /// Records what is on disk now without publishing anything (at start).
    pub async fn prime(&self) {
        for id in self.all_ids().await {
            let (cache, key) = (self.cache.clone(), id.clone());
            if let Ok((seen, _)) = blocking(move || look(&cache, &key)).await {
                lock(&self.view).insert(id, seen);
            }
        }
        self.count_keys();
    }

    async fn all_ids(&self) -> BTreeSet<SourceId> {
        let cache = self.cache.clone();
        let mut ids: BTreeSet<SourceId> = blocking(move || cache.sources_on_disk())
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        ids.extend(self.config().sources.iter().map(|s| s.id.clone()));
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

/// A library [`Source`] for a configured source.
pub(crate) fn cache_source(sc: &SourceConfig) -> Source {
    Source::new(sc.id.clone(), sc.policy.clone())
}

pub(crate) use crate::cache::blocking;

/// What is on disk for a source: present or not, revision, last attempt.
fn look(cache: &Cache, id: &SourceId) -> Result<(Seen, Option<Meta>)> {
    let meta = cache.meta(id)?;
    let payload = cache.layout().payload(id).exists();
    let seen = Seen {
        present: payload || meta.is_some(),
        payload,
        revision: meta.as_ref().map_or(0, |m| m.revision),
        attempt: meta.as_ref().and_then(|m| m.last_attempt_at),
    };
    Ok((seen, meta))
}

/// The events between two looks at a source.
fn changes(id: &SourceId, before: &Seen, now: &Seen, meta: Option<&Meta>) -> Vec<Event> {
    let at = SystemTime::now();
    let mut events = Vec::new();
    if before.present && !now.present {
        events.push(Event::new(EventKind::Removed, id.clone(), at));
    }
    if now.revision > before.revision {
        let mut e = Event::new(EventKind::Committed, id.clone(), at);
        e.revision = Some(now.revision);
        events.push(e);
    }
    let error = meta.and_then(|m| m.last_error.clone());
    if now.attempt != before.attempt && now.attempt.is_some() && error.is_some() {
        let mut e = Event::new(EventKind::Failed, id.clone(), at);
        e.error = error;
        events.push(e);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SourceId {
        SourceId::parse("a/b").expect("valid")
    }

    #[test]
    fn a_new_revision_is_one_committed_event() {
        let before = Seen {
            present: true,
            payload: true,
            revision: 1,
            attempt: None,
        };
        let now = Seen {
            present: true,
            payload: true,
            revision: 2,
            attempt: Some(Timestamp::now()),
        };
        let events = changes(&id(), &before, &now, None);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, EventKind::Committed);
        assert_eq!(events[0].revision, Some(2));
    }

    #[test]
    fn a_failed_attempt_carries_its_error_and_a_removal_is_seen() {
        let before = Seen {
            present: true,
            payload: true,
            revision: 1,
            attempt: None,
        };
        let now = Seen {
            present: true,
            payload: true,
            revision: 1,
            attempt: Some(Timestamp::now()),
        };
        let mut meta = Meta::new(&id());
        meta.last_error = Some("exit status 3".into());
        let events = changes(&id(), &before, &now, Some(&meta));
        assert_eq!(events[0].event, EventKind::Failed);
        assert_eq!(events[0].error.as_deref(), Some("exit status 3"));
        let gone = changes(&id(), &before, &Seen::default(), None);
        assert_eq!(gone[0].event, EventKind::Removed);
    }
}
