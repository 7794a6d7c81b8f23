//! The public [`Cache`] handle: reads, forced and background refreshes,
//! external writes, state, prune and recovery on one root.
//!
//! File and lock work is synchronous and runs on tokio's blocking pool; the
//! refresher itself is an async closure run as its own task under the
//! source's deadline.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::lock::{self, SourceLock};
use crate::meta::{Marker, Meta, Timestamp};
use crate::prune::{self, Pruned, Recovered};
use crate::refresh::{self, Holder, Refreshed};
use crate::refresher::{FetchContext, FetchError, Fetched};
use crate::singleflight::{Flights, Outcome};
use crate::source::{Policy, SourceId};
use crate::store;

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
    /// The sidecar, when asked for ([`Cache::read_with_meta`]).
    pub meta: Option<Meta>,
}

impl Entry {
    /// Not fresh.
    pub fn stale(&self) -> bool {
        !self.fresh
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
        }
    }
}

/// A handle on a cache root. Cheap to clone; clones share in-flight
/// refreshes.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    flights: Arc<Flights>,
}

impl Cache {
    /// Opens (creating, mode 0700) the cache root.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be created.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        store::ensure_dir(root.as_ref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                layout: Layout::new(root.as_ref()),
                flights: Arc::default(),
            }),
        })
    }

    /// The root's layout.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// Reads a source's payload: one open, one fstat, one read; no lock, no
    /// waiting. `Ok(None)` when it has no data yet.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the payload exists but cannot be read.
    pub fn read(&self, source: &Source) -> Result<Option<Entry>> {
        let Some(payload) = store::read_payload(&self.layout().payload(&source.id))? else {
            return Ok(None);
        };
        let age = SystemTime::now()
            .duration_since(payload.modified)
            .unwrap_or_default();
        Ok(Some(Entry {
            data: payload.bytes,
            fetched_at: payload.modified,
            age,
            fresh: age < source.policy.ttl,
            expired: source.policy.max_stale.is_some_and(|m| age > m),
            meta: None,
        }))
    }

    /// [`Cache::read`] plus the sidecar (revision, failure record).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Corrupt`].
    pub fn read_with_meta(&self, source: &Source) -> Result<Option<Entry>> {
        let Some(mut entry) = self.read(source)? else {
            return Ok(None);
        };
        entry.meta = self.meta(&source.id)?;
        Ok(Some(entry))
    }

    /// The sidecar of a source, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Corrupt`].
    pub fn meta(&self, id: &SourceId) -> Result<Option<Meta>> {
        refresh::read_meta(self.layout(), id)
    }

    /// Refreshes now, whatever the freshness or backoff, and waits. Joins a
    /// refresh already running in this process; waits for one running in
    /// another process and takes its outcome (or takes over if it died).
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
        let layout = self.layout().clone();
        let src = source.clone();
        let ticket = self
            .inner
            .flights
            .join_or_start(&source.id, || forced(layout, src, f));
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
        let (layout, src) = (self.layout().clone(), source.clone());
        let lock = match blocking(move || check_due(&layout, &src, true)).await? {
            Due::Fresh => return Ok(Background::Fresh),
            Due::BackingOff(until) => return Ok(Background::BackingOff { until }),
            Due::Busy => return Ok(Background::InFlight),
            Due::Claimed(lock) => lock,
        };
        let (layout, src) = (self.layout().clone(), source.clone());
        let ticket = self
            .inner
            .flights
            .join_or_start(&source.id, || run_holding(layout, src, lock, f));
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
        let (layout, src) = (self.layout().clone(), source.clone());
        match blocking(move || check_due(&layout, &src, false)).await? {
            Due::Fresh => Ok(Ensured::Fresh),
            Due::BackingOff(until) => Ok(Ensured::BackingOff { until }),
            Due::Busy | Due::Claimed(_) => self.refresh(source, f).await.map(Ensured::Refreshed),
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
        let tier = self.layout().tier_dir(&source.id);
        let attempt = blocking(move || {
            store::ensure_dir(&tier)?;
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

    /// The refresh state of a source, without touching its lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Corrupt`] reading the sidecar.
    pub fn refresh_state(&self, id: &SourceId) -> Result<RefreshState> {
        let attempts = self
            .meta(id)?
            .as_ref()
            .map(Attempts::of)
            .unwrap_or_default();
        let marker = refresh::read_marker(self.layout(), id);
        Ok(self.state_of(id, &attempts, marker.as_ref()))
    }

    /// Joins the refresh of `id` running in this process and waits for its
    /// outcome; `None` when none runs.
    pub(crate) fn join(&self, id: &SourceId) -> Option<impl Future<Output = Result<Refreshed>>> {
        let ticket = self.inner.flights.join(id)?;
        Some(async move { unshare(ticket.wait().await, true) })
    }

    /// True while a refresh of `id` runs in this process.
    pub(crate) fn in_flight_here(&self, id: &SourceId) -> bool {
        self.inner.flights.in_flight(id)
    }

    /// The refresh state from what the sidecar recorded and the marker
    /// found, plus whether a refresh runs in this process.
    pub(crate) fn state_of(
        &self,
        id: &SourceId,
        attempts: &Attempts,
        marker: Option<&Marker>,
    ) -> RefreshState {
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

/// Is a refresh due? Fresh data, backoff, a running refresh (lock held),
/// or claimed (when `claim`) / due.
fn check_due(layout: &Layout, source: &Source, claim: bool) -> Result<Due> {
    let payload = layout.payload(&source.id);
    let fresh = match std::fs::metadata(&payload) {
        Ok(m) => {
            let modified = m
                .modified()
                .map_err(|e| Error::io("stat payload", &payload, e))?;
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            age < source.policy.ttl
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("stat payload", &payload, e)),
    };
    if fresh {
        return Ok(Due::Fresh);
    }
    let now = Timestamp::now();
    // A damaged sidecar has no backoff to honour; the refresh heals it.
    let meta = refresh::read_meta(layout, &source.id).unwrap_or(None);
    if let Some(until) = meta.and_then(|m| m.next_retry_at).filter(|t| *t > now) {
        return Ok(Due::BackingOff(until.system_time()));
    }
    if !claim {
        return Ok(Due::Busy);
    }
    store::ensure_dir(&layout.tier_dir(&source.id))?;
    Ok(match SourceLock::try_acquire(&layout.lock(&source.id))? {
        Some(lock) => Due::Claimed(lock),
        None => Due::Busy,
    })
}

/// A forced refresh: claim, or wait for the current holder and take its
/// outcome, becoming the holder if it died without one.
async fn forced<F, Fut>(layout: Layout, source: Source, f: F) -> Outcome
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    let (l, id) = (layout.clone(), source.id.clone());
    let claimed = blocking(move || {
        store::ensure_dir(&l.tier_dir(&id))?;
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
            let (lock, now) = acquire_waiting(&layout, &source).await.map_err(Arc::new)?;
            if let Some(outcome) = refresh::outcome_since(before.as_ref(), now.as_ref(), &source.id)
            {
                return outcome.map_err(Arc::new);
            }
            lock
        }
    };
    run_holding(layout, source, lock, f).await
}

/// Waits for a source's lock, held by another process, bounded by the
/// holder's deadline plus [`WAIT_GRACE`] and woken by the kernel when the
/// holder lets go (see [`crate::lock::acquire_waiting`]: no thread of the
/// runtime is held, and dropping this future stops the wait). Returns the
/// lock and the sidecar as the holder left it.
async fn acquire_waiting(layout: &Layout, source: &Source) -> Result<(SourceLock, Option<Meta>)> {
    let (l, id) = (layout.clone(), source.id.clone());
    let marker = blocking(move || {
        store::ensure_dir(&l.tier_dir(&id))?;
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

/// With the lock held: mark, run the refresher under the deadline, commit or
/// record the failure, unmark, unlock.
async fn run_holding<F, Fut>(layout: Layout, source: Source, lock: SourceLock, f: F) -> Outcome
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    let deadline = source.policy.refresh_deadline;
    let (l, id) = (layout.clone(), source.id.clone());
    let holder = blocking(move || Holder::start(&l, &id, lock, deadline))
        .await
        .map_err(Arc::new)?;
    let started = Timestamp::now();
    let ctx = FetchContext {
        source: source.id.clone(),
        timeout: deadline,
        validators: holder.meta.validators.clone(),
    };
    let fetched = run_refresher(f, ctx, deadline).await;
    blocking(move || holder.finish(fetched, &source.policy, started))
        .await
        .map_err(Arc::new)
}

/// Runs the refresher as its own task under `deadline`; a panic or an
/// overrun becomes a [`FetchError`]. The task is aborted (dropping the
/// refresher, which kills a command's process group) on overrun or when
/// this future is dropped.
async fn run_refresher<F, Fut>(
    f: F,
    ctx: FetchContext,
    deadline: Duration,
) -> Result<Fetched, FetchError>
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(f(ctx));
    let _guard = AbortOnDrop(task.abort_handle());
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if e.is_panic() => Err(FetchError::new(format!(
            "refresher panicked: {}",
            panic_message(e.into_panic())
        ))),
        Ok(Err(_)) => Err(FetchError::new("refresher was cancelled")),
        Err(_) => Err(FetchError::new(format!(
            "deadline of {} exceeded",
            humantime::format_duration(deadline)
        ))),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}
