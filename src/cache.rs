//! The public [`Cache`] handle: reads, forced and background refreshes,
//! external writes, state, prune and recovery on one root.
//!
//! File and lock work is synchronous and runs on tokio's blocking pool; the
//! refresher itself is an async closure run as its own task under the
//! source's deadline.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::freshness;
use crate::layout::Layout;
use crate::lock::{self, SourceLock};
use crate::meta::{Marker, Meta, Sidecar, Timestamp};
use crate::prune::{self, Pruned, Recovered};
use crate::refresh::{self, Holder, Refreshed};
use crate::refresher::{FetchContext, FetchError, Fetched};
use crate::singleflight::{Flights, Outcome};
use crate::source::{Policy, SourceId};
use crate::store;

mod holding;
#[cfg(feature = "shared")]
mod shared;

use holding::run_holding;

/// How long past a holder's deadline a waiter keeps waiting for its commit.
pub const WAIT_GRACE: Duration = Duration::from_secs(5);

/// A source and the policy it is kept with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `tier/name`.
    pub id: SourceId,
    /// ttl, deadline, staleness limit, backoff.
    pub policy: Policy,
}

impl Source {
    /// A source with the default policy.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSource`] for a bad `tier/name`.
    pub fn parse(id: &str) -> Result<Self> {
        Ok(Self::new(SourceId::parse(id)?, Policy::default()))
    }

    /// A source with this policy.
    pub fn new(id: SourceId, policy: Policy) -> Self {
        Self { id, policy }
    }
}

/// A payload as read, with its freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The payload bytes (JSON).
    pub data: Vec<u8>,
    /// When it was fetched or last revalidated (the payload's mtime).
    pub fetched_at: SystemTime,
    /// Time since then.
    pub age: Duration,
    /// `age < ttl`.
    pub fresh: bool,
    /// Older than `max_stale`: reported, not to be served unless asked.
    pub expired: bool,
    /// Dated (mtime, or the sidecar's `fetched_at`) more than
    /// [`freshness::FUTURE_SKEW`] in the future: stale, age unknown.
    pub future: bool,
    /// Committed under another definition of the source than the policy's
    /// ([`Policy::definition`]): stale whatever its age.
    pub definition_changed: bool,
    /// Why it is not fresh ("definition changed", "older than ttl"...);
    /// `None` when it is fresh.
    pub stale_reason: Option<&'static str>,
    /// The sidecar, when asked for ([`Cache::read_with_meta`]) and intact.
    pub meta: Option<Meta>,
}

impl Entry {
    /// Not fresh.
    pub fn stale(&self) -> bool {
        !self.fresh
    }

    /// Older than `max` (a caller's `--max-age`); always true when dated in
    /// the future, whose age cannot be vouched for.
    pub fn older_than(&self, max: Duration) -> bool {
        self.future || self.age > max
    }

    /// The revision, when the sidecar was read.
    pub fn revision(&self) -> Option<u64> {
        self.meta.as_ref().map(|m| m.revision)
    }
}

/// What [`Cache::maybe_refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// The data is fresh; nothing to do.
    Fresh,
    /// A background refresh was started.
    Started,
    /// A refresh is already running (here or in another process).
    InFlight,
    /// The source failed recently; no retry before `until`.
    BackingOff {
        /// The earliest retry.
        until: SystemTime,
    },
}

/// What [`Cache::maybe_refresh_sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The data was fresh.
    Fresh,
    /// The data was stale but the source is backing off; it was left alone.
    BackingOff {
        /// The earliest retry.
        until: SystemTime,
    },
    /// A refresh ran (or was joined).
    Refreshed(Refreshed),
}

/// A source's refresh state, for observers.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RefreshState {
    /// A refresh runs now (in this process, or a live marker elsewhere).
    pub in_flight: bool,
    /// The process running it.
    pub pid: Option<u32>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it will be killed.
    pub deadline: Option<Timestamp>,
    /// A marker is present whose process is gone or whose deadline passed.
    pub abandoned: bool,
    /// The last attempt failed.
    pub failed: bool,
    /// Its error.
    pub last_error: Option<String>,
    /// When it started.
    pub last_attempt_at: Option<Timestamp>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// No background retry before this.
    pub next_retry_at: Option<Timestamp>,
    /// The committed revision (0: never succeeded).
    pub revision: u64,
    /// Why the sidecar is damaged (unreadable or not a sidecar), when it
    /// is: the payload is still served, the next commit rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_damaged: Option<String>,
    /// The hash of the definition the payload was committed under, as the
    /// sidecar records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

/// What a sidecar records about a source's refreshes: the part of
/// [`RefreshState`] that is on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    pub revision: u64,
    pub last_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<Timestamp>,
    pub sidecar_damaged: Option<String>,
    pub definition: Option<String>,
}

impl Attempts {
    /// The record of a sidecar.
    pub fn of(meta: &Meta) -> Self {
        Self {
            revision: meta.revision,
            last_attempt_at: meta.last_attempt_at,
            last_error: meta.last_error.clone(),
            consecutive_failures: meta.consecutive_failures,
            next_retry_at: meta.next_retry_at,
            sidecar_damaged: None,
            definition: meta.definition.clone(),
        }
    }

    /// The record of a sidecar as found: a damaged one records nothing but
    /// the damage and the revision still legible in it.
    pub fn of_sidecar(sidecar: &Sidecar) -> Self {
        match sidecar {
            Sidecar::Missing => Self::default(),
            Sidecar::Intact(meta) => Self::of(meta),
            Sidecar::Damaged(damage) => Self {
                revision: damage.revision.unwrap_or(0),
                sidecar_damaged: Some(damage.reason.clone()),
                ..Self::default()
            },
        }
    }
}

/// Records that could not be written to their sidecar (no space, no
/// inodes), kept in memory for this process's readers of the state.
#[derive(Debug, Default)]
pub(crate) struct Unsaved(Mutex<HashMap<SourceId, Meta>>);

impl Unsaved {
    /// Keeps `holder`'s record when its sidecar write failed, else forgets
    /// the source (its sidecar is current).
    fn remember(&self, id: &SourceId, holder: &Holder) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match holder.unsaved() {
            Some((meta, _)) => map.insert(id.clone(), meta.clone()),
            None => map.remove(id),
        };
    }

    /// The record of `id` kept here, unless the sidecar records a later
    /// attempt than it (`disk_attempt`). Attempt times have millisecond
    /// precision: a tie goes to the record kept here, which was made after
    /// that sidecar was read.
    fn newer_than(&self, id: &SourceId, disk_attempt: Option<Timestamp>) -> Option<Meta> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mem = map.get(id)?;
        (mem.last_attempt_at >= disk_attempt).then(|| mem.clone())
    }

    /// The newer of the sidecar's record and the one kept here.
    fn latest(&self, id: &SourceId, disk: Option<Meta>) -> Option<Meta> {
        let disk_attempt = disk.as_ref().and_then(|d| d.last_attempt_at);
        self.newer_than(id, disk_attempt).or(disk)
    }
}

/// A handle on a cache root. Cheap to clone; clones share in-flight
/// refreshes.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    layout: Layout,
    flights: Arc<Flights>,
    unsaved: Arc<Unsaved>,
    /// The shared tier every refresh goes through, when attached.
    #[cfg(feature = "shared")]
    shared: Option<Arc<shared::Link>>,
}

/// What a refresh task takes along from its cache.
#[derive(Debug, Clone)]
struct Task {
    layout: Layout,
    unsaved: Arc<Unsaved>,
    #[cfg(feature = "shared")]
    shared: Option<Arc<shared::Link>>,
}

impl Cache {
    /// Opens (creating, mode 0700) the cache root. Its path is resolved
    /// once here; below it no symlink is ever followed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be created, [`Error::NotOwned`]
    /// when another user owns it, [`Error::Refused`] when it is not a
    /// directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = crate::beneath::open_root(root.as_ref())?;
        let layout = Layout::new(&root);
        let upgraded = crate::upgrade::ensure(&layout)?;
        for id in &upgraded.busy {
            tracing::info!("{id}: still in format 1 (its lock is held); moved on a later open");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                layout,
                flights: Arc::default(),
                unsaved: Arc::default(),
                #[cfg(feature = "shared")]
                shared: None,
            }),
        })
    }

    /// This cache with every refresh going through the shared tier `tier`
    /// (docs/SHARED.md). Readers never talk to it. Call it right after
    /// [`Cache::open`], before the handle is cloned: clones made before do
    /// not see the tier.
    #[cfg(feature = "shared")]
    #[must_use]
    pub fn with_shared(self, tier: Arc<crate::shared::SharedTier>) -> Self {
        let inner = Arc::unwrap_or_clone(self.inner);
        Self {
            inner: Arc::new(Inner {
                shared: Some(Arc::new(shared::Link::new(tier))),
                ..inner
            }),
        }
    }

    /// The shared tier refreshes go through, if one is attached.
    #[cfg(feature = "shared")]
    pub fn shared_tier(&self) -> Option<&Arc<crate::shared::SharedTier>> {
        self.inner.shared.as_ref().map(|link| link.tier())
    }

    /// The root's on-disk format: 2, or 1 while a format 1 root is not
    /// fully upgraded (a source's format 1 lock was held when it was
    /// opened). An unreadable format file reads as 1.
    pub fn format(&self) -> u32 {
        crate::upgrade::read_format(self.layout())
            .ok()
            .flatten()
            .unwrap_or(1)
    }

    /// The root's layout.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// Reads a source's payload: one open, one fstat, one read; no lock, no
    /// waiting. `Ok(None)` when it has no data yet. A payload larger than
    /// the source's `max_output` is refused without being read. When the
    /// policy carries a definition hash the sidecar is read too, so that
    /// data committed under another definition reads as stale.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the payload exists but cannot be read,
    /// [`Error::Refused`] when it is not a regular file,
    /// [`Error::TooLarge`] when it is over `max_output`.
    pub fn read(&self, source: &Source) -> Result<Option<Entry>> {
        let path = self.layout().payload(&source.id);
        let max = source.policy.max_output as u64;
        let Some(payload) = store::read_payload_within(&path, max)? else {
            return Ok(None);
        };
        let recorded = match source.policy.definition {
            Some(_) => self.meta(&source.id)?.and_then(|m| m.definition),
            None => None,
        };
        let judged = freshness::judge(payload.modified, None, SystemTime::now(), &source.policy)
            .with_definition(recorded.as_deref(), &source.policy);
        Ok(Some(Entry {
            data: payload.bytes,
            fetched_at: payload.modified,
            age: judged.age,
            fresh: judged.fresh(),
            expired: judged.expired(),
            future: judged.future,
            definition_changed: judged.definition_changed,
            stale_reason: judged.stale_reason(),
            meta: None,
        }))
    }

    /// [`Cache::read`] plus the sidecar (revision, failure record), when
    /// it is intact; a future `fetched_at` in it makes the entry stale.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the payload exists but cannot be read.
    pub fn read_with_meta(&self, source: &Source) -> Result<Option<Entry>> {
        let Some(mut entry) = self.read(source)? else {
            return Ok(None);
        };
        entry.meta = self.meta(&source.id)?;
        let recorded = entry.meta.as_ref().and_then(|m| m.fetched_at);
        let now = SystemTime::now();
        let definition = entry.meta.as_ref().and_then(|m| m.definition.as_deref());
        let judged = freshness::judge(
            entry.fetched_at,
            recorded.map(Timestamp::system_time),
            now,
            &source.policy,
        )
        .with_definition(definition, &source.policy);
        (entry.fresh, entry.expired, entry.future) =
            (judged.fresh(), judged.expired(), judged.future);
        entry.definition_changed = judged.definition_changed;
        entry.stale_reason = judged.stale_reason();
        Ok(Some(entry))
    }

    /// The record of a source: its sidecar, or the newer record this
    /// process kept in memory when the sidecar could not be written.
    /// `None` when there is neither, or the sidecar is damaged (see
    /// [`Cache::sidecar`]).
    ///
    /// # Errors
    ///
    /// None today; kept fallible for callers that propagate file errors.
    pub fn meta(&self, id: &SourceId) -> Result<Option<Meta>> {
        let disk = refresh::read_meta(self.layout(), id)?;
        Ok(self.inner.unsaved.latest(id, disk))
    }

    /// The sidecar of a source as found on disk: missing, intact or damaged.
    pub fn sidecar(&self, id: &SourceId) -> Sidecar {
        refresh::read_sidecar(self.layout(), id)
    }

    /// Refreshes now, whatever the freshness, backoff or guard, and waits:
    /// a forced refresh, so the policy's guard ([`crate::Guard`]) does not
    /// apply and an empty or shrunken payload is committed too (see
    /// [`Cache::refresh_guarded`]). Joins a refresh already running in this
    /// process; waits for one running in another process and takes its
    /// outcome (or takes over if it died). A caller that joins a refresh
    /// already running takes its outcome, guarded or not.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshFailed`] when the refresh (ours or the joined one)
    /// failed, [`Error::Timeout`] when another process's refresh overran
    /// its deadline, [`Error::Io`] for file errors.
    pub async fn refresh<F, Fut>(&self, source: &Source, f: F) -> Result<Refreshed>
    where
        F: FnOnce(FetchContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        let mut source = source.clone();
        source.policy.guard = source.policy.guard.off();
        self.refresh_guarded(&source, f).await
    }

    /// [`Cache::refresh`] with the policy's guard: a payload it refuses is
    /// a failure (recorded, backing off, the old payload kept). For
    /// refreshes the cache starts on its own: background, warm-keeping,
    /// [`Cache::maybe_refresh_sync`] (`discocache get` with
    /// `wait_if_stale`); `discocache refresh` and `get --refresh force`
    /// run [`Cache::refresh`].
    ///
    /// # Errors
    ///
    /// As [`Cache::refresh`].
    pub async fn refresh_guarded<F, Fut>(&self, source: &Source, f: F) -> Result<Refreshed>
    where
        F: FnOnce(FetchContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        let (task, src) = (self.task(), source.clone());
        let ticket = self
            .inner
            .flights
            .join_or_start(&source.id, || forced(task, src, f));
        let joined = ticket.joined;
        let outcome = ticket.wait().await;
        unshare(outcome, joined)
    }

    /// Starts a background refresh if the data is stale, and returns at once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Corrupt`] while checking.
    pub async fn maybe_refresh<F, Fut>(&self, source: &Source, f: F) -> Result<Background>
    where
        F: FnOnce(FetchContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        if self.inner.flights.in_flight(&source.id) {
            return Ok(Background::InFlight);
        }
        let (layout, src, unsaved) = self.parts(source);
        let lock = match blocking(move || check_due(&layout, &unsaved, &src, true)).await? {
            Due::Fresh => return Ok(Background::Fresh),
            Due::BackingOff(until) => return Ok(Background::BackingOff { until }),
            Due::Busy => return Ok(Background::InFlight),
            Due::Claimed(lock) => lock,
        };
        let (task, src) = (self.task(), source.clone());
        let ticket = self
            .inner
            .flights
            .join_or_start(&source.id, || run_holding(task, src, lock, f));
        Ok(if ticket.joined {
            Background::InFlight
        } else {
            Background::Started
        })
    }

    /// Refreshes and waits if the data is stale (or missing), unless the
    /// source is backing off.
    ///
    /// # Errors
    ///
    /// As [`Cache::refresh`].
    pub async fn maybe_refresh_sync<F, Fut>(&self, source: &Source, f: F) -> Result<Ensured>
    where
        F: FnOnce(FetchContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        let (layout, src, unsaved) = self.parts(source);
        match blocking(move || check_due(&layout, &unsaved, &src, false)).await? {
            Due::Fresh => Ok(Ensured::Fresh),
            Due::BackingOff(until) => Ok(Ensured::BackingOff { until }),
            Due::Busy | Due::Claimed(_) => {
                (self.refresh_guarded(source, f).await).map(Ensured::Refreshed)
            }
        }
    }

    /// Commits a payload produced elsewhere, under the source's lock
    /// (waiting for a running refresh to finish first). Returns the new
    /// revision.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshFailed`] when `bytes` is not JSON or cannot be
    /// written, [`Error::Timeout`] when the running refresh overran.
    pub async fn write(&self, source: &Source, bytes: Vec<u8>) -> Result<u64> {
        let (layout, src) = (self.layout().clone(), source.clone());
        let commit = move |lock: SourceLock, bytes: Vec<u8>| {
            let holder = Holder::start(&layout, &src.id, lock, src.policy.refresh_deadline)?;
            holder.commit_external(&bytes, &src.policy)
        };
        // One trip to the blocking pool when the lock is free.
        let lock_path = self.layout().lock(&source.id);
        let (l, id) = (self.layout().clone(), source.id.clone());
        let attempt = blocking(move || {
            store::ensure_source_dirs(&l, &id)?;
            match SourceLock::try_acquire(&lock_path)? {
                Some(lock) => commit(lock, bytes).map(Ok),
                None => Ok(Err((commit, bytes))),
            }
        })
        .await?;
        match attempt {
            Ok(revision) => Ok(revision),
            Err((commit, bytes)) => {
                let (lock, _) = acquire_waiting(self.layout(), source).await?;
                blocking(move || commit(lock, bytes)).await
            }
        }
    }

    /// The refresh state of a source, without touching its lock. A damaged
    /// sidecar is reported in it, never an error.
    ///
    /// # Errors
    ///
    /// None today; kept fallible for callers that propagate file errors.
    pub fn refresh_state(&self, id: &SourceId) -> Result<RefreshState> {
        let attempts = Attempts::of_sidecar(&self.sidecar(id));
        let marker = refresh::read_marker(self.layout(), id);
        Ok(self.state_of(id, &attempts, marker.as_ref()))
    }

    /// What a refresh task takes along: the layout, the source, and the
    /// records kept in memory.
    fn parts(&self, source: &Source) -> (Layout, Source, Arc<Unsaved>) {
        let unsaved = Arc::clone(&self.inner.unsaved);
        (self.layout().clone(), source.clone(), unsaved)
    }

    /// What a refresh task takes along: the layout, the records kept in
    /// memory, the shared tier.
    fn task(&self) -> Task {
        Task {
            layout: self.layout().clone(),
            unsaved: Arc::clone(&self.inner.unsaved),
            #[cfg(feature = "shared")]
            shared: self.inner.shared.clone(),
        }
    }

    /// Joins the refresh of `id` running in this process and waits for its
    /// outcome; `None` when none runs.
    #[cfg(feature = "cli")]
    pub(crate) fn join(&self, id: &SourceId) -> Option<impl Future<Output = Result<Refreshed>>> {
        let ticket = self.inner.flights.join(id)?;
        Some(async move { unshare(ticket.wait().await, true) })
    }

    /// True while a refresh of `id` runs in this process.
    pub(crate) fn in_flight_here(&self, id: &SourceId) -> bool {
        self.inner.flights.in_flight(id)
    }

    /// The refresh state from what the sidecar recorded (or the newer
    /// record kept in memory when it could not be written) and the marker
    /// found, plus whether a refresh runs in this process.
    pub(crate) fn state_of(
        &self,
        id: &SourceId,
        attempts: &Attempts,
        marker: Option<&Marker>,
    ) -> RefreshState {
        let kept = self.inner.unsaved.newer_than(id, attempts.last_attempt_at);
        let attempts = &match kept {
            Some(kept) => Attempts {
                sidecar_damaged: attempts.sidecar_damaged.clone(),
                ..Attempts::of(&kept)
            },
            None => attempts.clone(),
        };
        let here = self.in_flight_here(id);
        let live = marker.is_some_and(|m| m.looks_live(Timestamp::now(), WAIT_GRACE));
        RefreshState {
            in_flight: here || live,
            pid: marker.map(|m| m.pid),
            started_at: marker.map(|m| m.started_at),
            deadline: marker.map(|m| m.deadline),
            abandoned: marker.is_some() && !live && !here,
            failed: attempts.consecutive_failures > 0,
            last_error: attempts.last_error.clone(),
            last_attempt_at: attempts.last_attempt_at,
            consecutive_failures: attempts.consecutive_failures,
            next_retry_at: attempts.next_retry_at,
            revision: attempts.revision,
            sidecar_damaged: attempts.sidecar_damaged.clone(),
            definition: attempts.definition.clone(),
        }
    }

    /// Removes crash leftovers of every source whose lock is free.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed or a file removed.
    pub fn recover(&self) -> Result<Recovered> {
        prune::recover(self.layout())
    }

    /// Removes every source not in `active` (after recovery); with
    /// `dry_run`, only reports what it would remove.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed or a file removed.
    pub fn prune(&self, active: &BTreeSet<SourceId>, dry_run: bool) -> Result<Pruned> {
        prune::prune(self.layout(), active, dry_run)
    }

    /// Every source with at least one file on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed.
    pub fn sources_on_disk(&self) -> Result<Vec<SourceId>> {
        Ok(prune::scan(self.layout())?.into_keys().collect())
    }

    /// Soft purge: sets the payload's mtime back so that its age is exactly
    /// its ttl. Every reader (a daemon, the library, a reader of mtimes)
    /// then sees it stale, it is still served, and the next read that may
    /// refresh does. The sidecar is left as it is. Nothing is done when
    /// there is no payload (or something other than a regular file stands
    /// there), when it is stale already, or while a refresh holds the
    /// source (it is about to be replaced anyway).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the payload cannot be examined or timestamped,
    /// or the lock cannot be tried.
    pub fn invalidate(&self, source: &Source) -> Result<Invalidated> {
        let path = self.layout().payload(&source.id);
        let modified = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m.modified(),
            Ok(_) => return Ok(Invalidated::NoData),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Invalidated::NoData),
            Err(e) => Err(e),
        }
        .map_err(|e| Error::io("stat payload", &path, e))?;
        let stale_at = SystemTime::now().checked_sub(source.policy.ttl);
        let Some(stale_at) = stale_at.filter(|t| modified > *t) else {
            return Ok(Invalidated::AlreadyStale);
        };
        let Some(_lock) = SourceLock::try_acquire(&self.layout().lock(&source.id))? else {
            return Ok(Invalidated::Refreshing);
        };
        store::touch(&path, stale_at)?;
        Ok(Invalidated::Marked)
    }
}

impl Cache {
    /// Records a payload written by someone else (fizeau's commit, say)
    /// that the sidecar does not describe: the next revision, its size and
    /// sha256. Returns that revision; `Ok(None)` when there was nothing to
    /// record, or a refresh holds the source (it records it itself).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock cannot be tried or the sidecar written.
    pub fn adopt(&self, id: &SourceId) -> Result<Option<u64>> {
        // No payload, nothing to adopt (and no directory to create).
        if std::fs::symlink_metadata(self.layout().payload(id)).is_err() {
            return Ok(None);
        }
        store::ensure_source_dirs(self.layout(), id)?;
        let Some(_lock) = SourceLock::try_acquire(&self.layout().lock(id))? else {
            return Ok(None);
        };
        crate::adopt::adopt(self.layout(), id)
    }
}

/// What [`Cache::invalidate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidated {
    /// The payload is stale now.
    Marked,
    /// There is no payload to mark.
    NoData,
    /// The payload was stale already.
    AlreadyStale,
    /// A refresh holds the source; nothing was changed.
    Refreshing,
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

fn unshare(outcome: Outcome, joined: bool) -> Result<Refreshed> {
    match outcome {
        Ok(r) if joined => Ok(r.joined()),
        Ok(r) => Ok(r),
        Err(e) => Err(match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => share_error(&shared, joined),
        }),
    }
}

/// A copy of a flight's error for one of the callers that shared it.
fn share_error(e: &Error, joined: bool) -> Error {
    match e {
        Error::RefreshFailed { id, message, .. } => Error::RefreshFailed {
            id: id.clone(),
            message: message.clone(),
            joined: joined || matches!(e, Error::RefreshFailed { joined: true, .. }),
        },
        Error::Timeout { id, waited, holder } => Error::Timeout {
            id: id.clone(),
            waited: *waited,
            holder: *holder,
        },
        other => Error::Internal(other.to_string()),
    }
}

enum Due {
    Fresh,
    BackingOff(SystemTime),
    Busy,
    Claimed(SourceLock),
}

/// Is a refresh due? Fresh data, backoff (from the sidecar, or the newer
/// record kept in memory), a running refresh (lock held), or claimed (when
/// `claim`) / due.
fn check_due(layout: &Layout, unsaved: &Unsaved, source: &Source, claim: bool) -> Result<Due> {
    let payload = layout.payload(&source.id);
    let now = SystemTime::now();
    let fresh = match std::fs::metadata(&payload) {
        Ok(m) => {
            let modified = m
                .modified()
                .map_err(|e| Error::io("stat payload", &payload, e))?;
            let recorded = match source.policy.definition {
                Some(_) => refresh::read_meta(layout, &source.id)?.and_then(|m| m.definition),
                None => None,
            };
            freshness::judge(modified, None, now, &source.policy)
                .with_definition(recorded.as_deref(), &source.policy)
                .fresh()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("stat payload", &payload, e)),
    };
    if fresh {
        return Ok(Due::Fresh);
    }
    // A damaged sidecar has no backoff to honour; the refresh heals it.
    let meta = unsaved.latest(&source.id, refresh::read_meta(layout, &source.id)?);
    let now = Timestamp::from(now);
    let (recorded, last) = meta.map_or((None, None), |m| (m.next_retry_at, m.last_attempt_at));
    let retry = freshness::retry_at(recorded, last, now, &source.policy);
    if let Some(until) = retry.filter(|t| *t > now) {
        return Ok(Due::BackingOff(until.system_time()));
    }
    if !claim {
        return Ok(Due::Busy);
    }
    store::ensure_source_dirs(layout, &source.id)?;
    Ok(match SourceLock::try_acquire(&layout.lock(&source.id))? {
        Some(lock) => Due::Claimed(lock),
        None => Due::Busy,
    })
}

/// A forced refresh: claim, or wait for the current holder and take its
/// outcome, becoming the holder if it died without one.
async fn forced<F, Fut>(task: Task, source: Source, f: F) -> Outcome
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    let (l, id) = (task.layout.clone(), source.id.clone());
    let claimed = blocking(move || {
        store::ensure_source_dirs(&l, &id)?;
        // Only compared with what the holder leaves: damage reads as none.
        let before = refresh::read_meta(&l, &id).unwrap_or(None);
        let lock = SourceLock::try_acquire(&l.lock(&id))?;
        Ok((before, lock))
    })
    .await
    .map_err(Arc::new)?;
    let lock = match claimed {
        (_, Some(lock)) => lock,
        (before, None) => {
            let (lock, now) = acquire_waiting(&task.layout, &source)
                .await
                .map_err(Arc::new)?;
            if let Some(outcome) = refresh::outcome_since(before.as_ref(), now.as_ref(), &source.id)
            {
                return outcome.map_err(Arc::new);
            }
            lock
        }
    };
    run_holding(task, source, lock, f).await
}

/// Waits for a source's lock, held by another process, bounded by the
/// holder's deadline plus [`WAIT_GRACE`] and woken by the kernel when the
/// holder lets go (see [`crate::lock::acquire_waiting`]: no thread of the
/// runtime is held, and dropping this future stops the wait). Returns the
/// lock and the sidecar as the holder left it.
async fn acquire_waiting(layout: &Layout, source: &Source) -> Result<(SourceLock, Option<Meta>)> {
    let (l, id) = (layout.clone(), source.id.clone());
    let marker = blocking(move || {
        store::ensure_source_dirs(&l, &id)?;
        Ok(refresh::read_marker(&l, &id))
    })
    .await?;
    let left = marker.as_ref().map_or(source.policy.refresh_deadline, |m| {
        Timestamp::now().until(m.deadline)
    });
    let budget = left + WAIT_GRACE;
    let Some(lock) = lock::acquire_waiting(&layout.lock(&source.id), budget).await? else {
        return Err(Error::Timeout {
            id: source.id.clone(),
            waited: budget,
            holder: marker.map(|m| m.pid),
        });
    };
    let (l, id) = (layout.clone(), source.id.clone());
    let meta = blocking(move || Ok(refresh::read_meta(&l, &id).unwrap_or(None))).await?;
    Ok((lock, meta))
}
