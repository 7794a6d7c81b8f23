//! `get` and `invalidate`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Fields, fields, internal, wire};
use crate::config::SourceConfig;
use crate::daemon::configured::Configured;
use crate::daemon::state::{Daemon, blocking};
use crate::daemon::view::Snapshot;
use crate::error::Error;
use crate::lock::SourceLock;
use crate::meta::Timestamp;
use crate::protocol::{ErrorCode, Event, EventKind, GetBody, GetRequest, RefreshMode, WireError};
use crate::source::SourceId;
use crate::stats::{Counter, millis};
use crate::store;

/// `get`: serve what is on disk, refreshing first or in the background as
/// the request asks. A current payload is served from the daemon's view
/// (one `stat`, no read); see [`crate::daemon::view`].
pub(super) async fn get(d: &Arc<Daemon>, req: GetRequest) -> Result<GetBody, WireError> {
    let sc = d.known(&req.source)?;
    let mut entry = d.snapshot(&sc).await.map_err(|e| wire(&e))?;
    let stale = |e: &Option<Snapshot>| e.as_ref().is_none_or(|e| too_old(e, req.max_age_ms));
    match req.refresh {
        RefreshMode::Never => {}
        RefreshMode::IfStale if stale(&entry) => background(d, &sc),
        RefreshMode::IfStale => {}
        RefreshMode::WaitIfStale if stale(&entry) && !backing_off(d, &sc) => {
            // Stale data beats no data: a failure only fails a miss.
            if let (Err(e), None) = (d.refresh(&sc).await, &entry) {
                return Err(wire(&e));
            }
            entry = d.snapshot(&sc).await.map_err(|e| wire(&e))?;
        }
        RefreshMode::WaitIfStale => {}
        RefreshMode::Force => {
            d.refresh(&sc).await.map_err(|e| wire(&e))?;
            entry = d.snapshot(&sc).await.map_err(|e| wire(&e))?;
        }
    }
    serve(d, &sc, entry, &req).await
}

/// Older than its ttl, or than the request's `max_age_ms`.
fn too_old(entry: &Snapshot, max_age_ms: Option<u64>) -> bool {
    !entry.fresh || max_age_ms.is_some_and(|max| millis(entry.age) > max)
}

/// The last attempt failed and its retry time has not come.
fn backing_off(d: &Daemon, sc: &Configured) -> bool {
    let (attempts, _) = d.view.record_of(&sc.id).unwrap_or_default();
    let now = Timestamp::now();
    let (recorded, last) = (attempts.next_retry_at, attempts.last_attempt_at);
    crate::freshness::retry_at(recorded, last, now, &sc.policy).is_some_and(|t| t > now)
}

/// Starts a refresh that nobody waits for, unless the source is backing off.
fn background(d: &Arc<Daemon>, sc: &Configured) {
    if backing_off(d, sc) {
        return;
    }
    let (daemon, sc) = (Arc::clone(d), sc.clone());
    d.tracker.spawn(async move {
        let _ = daemon.refresh(&sc).await;
    });
}

/// Builds the answer from what was read, counting a hit or a miss.
async fn serve(
    d: &Daemon,
    sc: &SourceConfig,
    entry: Option<Snapshot>,
    req: &GetRequest,
) -> Result<GetBody, WireError> {
    let Some(entry) = entry.filter(|e| !e.expired) else {
        d.stats.count(&sc.id, Counter::Miss);
        return Err(no_data(d, sc));
    };
    let stale = too_old(&entry, req.max_age_ms);
    let counter = if stale {
        Counter::StaleHit
    } else {
        Counter::FreshHit
    };
    d.stats.count(&sc.id, counter);
    let meta = match req.meta {
        true => sidecar(d, &sc.id).await?,
        false => None,
    };
    Ok(GetBody {
        revision: entry.state.revision,
        age_ms: millis(entry.age),
        fresh: entry.fresh,
        stale,
        expired: entry.expired,
        fetched_at: entry.held.fetched_at.clone(),
        refresh: Some(entry.state),
        meta,
        data: Some(entry.held.data.clone()),
    })
}

/// The sidecar record as JSON, read from disk (only `get` with `meta`
/// asks for it).
async fn sidecar(d: &Daemon, id: &SourceId) -> Result<Option<Value>, WireError> {
    let (cache, key) = (d.cache.clone(), id.clone());
    let meta = blocking(move || cache.meta(&key))
        .await
        .map_err(|e| wire(&e))?;
    meta.map(|m| serde_json::to_value(m).map_err(|e| internal(e.to_string())))
        .transpose()
}

/// The `no_data` error, with the last refresh error when there is one.
fn no_data(d: &Daemon, sc: &SourceConfig) -> WireError {
    let last = d.view.record_of(&sc.id).and_then(|(a, _)| a.last_error);
    let policy = &sc.policy;
    let why = match (last, policy.max_stale) {
        (Some(error), _) => format!(
            "{} has no data to serve; its last refresh failed: {error}",
            sc.id
        ),
        (None, Some(max)) => format!(
            "{} has no data to serve (none yet, or older than its max_stale of {})",
            sc.id,
            humantime::format_duration(max)
        ),
        (None, None) => format!("{} has no data yet", sc.id),
    };
    WireError::new(ErrorCode::NoData, why)
}

/// `invalidate`: a soft purge. The payload's mtime is set back so that its
/// age is exactly its ttl: every reader (this daemon, the library, a reader
/// of mtimes) sees it stale, it is still served, and the daemon refreshes it
/// in the background. The sidecar is left as it is. Skipped when a refresh
/// holds the source (it is about to be replaced anyway).
pub(super) async fn invalidate(d: &Daemon, id: &SourceId) -> Result<Fields, WireError> {
    let sc = d.known(id)?;
    let (cache, key, ttl) = (d.cache.clone(), id.clone(), sc.policy.ttl);
    let done = blocking(move || mark_stale(&cache, &key, ttl))
        .await
        .map_err(|e| wire(&e))?;
    if done == Marked::Yes {
        let _ = d.events.send(Event::new(
            EventKind::Invalidated,
            id.clone(),
            SystemTime::now(),
        ));
        d.warm.wake(id);
    }
    let reason: Value = match done {
        Marked::Yes => Value::Null,
        Marked::NoData => "no data".into(),
        Marked::AlreadyStale => "already stale".into(),
        Marked::Refreshing => "a refresh is running".into(),
    };
    Ok(fields([
        ("source", id.to_string().into()),
        ("invalidated", (done == Marked::Yes).into()),
        ("skipped", reason),
    ]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marked {
    Yes,
    NoData,
    AlreadyStale,
    Refreshing,
}

fn mark_stale(cache: &crate::Cache, id: &SourceId, ttl: Duration) -> crate::Result<Marked> {
    let path = cache.layout().payload(id);
    let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Marked::NoData),
        Err(e) => return Err(Error::io("stat payload", &path, e)),
    };
    let Some(stale_at) = SystemTime::now().checked_sub(ttl) else {
        return Ok(Marked::AlreadyStale);
    };
    if modified <= stale_at {
        return Ok(Marked::AlreadyStale);
    }
    let Some(_lock) = SourceLock::try_acquire(&cache.layout().lock(id))? else {
        return Ok(Marked::Refreshing);
    };
    store::touch(&path, stale_at)?;
    Ok(Marked::Yes)
}
