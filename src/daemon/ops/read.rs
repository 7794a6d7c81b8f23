//! `get` and `invalidate`.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::{internal, wire};
use crate::cache::Invalidated;
use crate::config::SourceConfig;
use crate::daemon::configured::Configured;
use crate::daemon::state::{Daemon, blocking, cache_source};
use crate::daemon::view::Served;
use crate::error::Error;
use crate::meta::Timestamp;
use crate::plan::{Found, Plan, Situation, plan};
use crate::protocol::{
    ErrorCode, Event, EventKind, GetBody, GetRequest, InvalidateBody, RefreshMode, WireError,
};
use crate::source::SourceId;
use crate::stats::{Counter, millis};

/// `get`: serve what is on disk, refreshing first or in the background as
/// [`plan`] decides. A current payload is served from the daemon's view
/// (one `stat`, no read); see [`crate::daemon::view`].
pub(super) async fn get(d: &Arc<Daemon>, req: GetRequest) -> Result<GetBody, WireError> {
    let sc = d.known(&req.source)?;
    let mode = match (d.offline(), req.refresh) {
        (false, mode) => mode,
        (true, RefreshMode::Force) => return Err(wire(&Error::Offline { id: sc.id.clone() })),
        (true, _) => RefreshMode::Never,
    };
    let mut entry = d.snapshot(&sc).await.map_err(|e| wire(&e))?;
    let found = match &entry {
        None => Found::Nothing,
        Some(e) if too_old(e, req.max_age_ms) => Found::Stale,
        Some(_) => Found::Fresh,
    };
    let situation = Situation {
        mode,
        found,
        backing_off: backing_off(d, &sc),
        in_flight: entry.as_ref().is_some_and(|e| e.state.in_flight),
        lives_on: true,
    };
    match plan(situation) {
        Plan::Serve => {}
        Plan::ServeAndRefresh => background(d, &sc),
        Plan::Wait { failure_fails } => {
            let forced = req.refresh == crate::protocol::RefreshMode::Force;
            if let Err(e) = d.refresh_as(&sc, forced).await
                && failure_fails
            {
                return Err(wire(&e));
            }
            entry = d.snapshot(&sc).await.map_err(|e| wire(&e))?;
        }
    }
    serve(d, &sc, entry, &req).await
}

/// Older than its ttl, or than the request's `max_age_ms`.
fn too_old(entry: &Served, max_age_ms: Option<u64>) -> bool {
    !entry.fresh || max_age_ms.is_some_and(|max| millis(entry.age) > max)
}

/// The last attempt failed and its retry time has not come.
fn backing_off(d: &Daemon, sc: &Configured) -> bool {
    let (attempts, _) = d.view.record_of(&sc.id).unwrap_or_default();
    let now = Timestamp::now();
    let (recorded, last) = (attempts.next_retry_at, attempts.last_attempt_at);
    crate::freshness::retry_at(recorded, last, now, &sc.policy).is_some_and(|t| t > now)
}

/// Starts a refresh that nobody waits for.
fn background(d: &Arc<Daemon>, sc: &Configured) {
    let (daemon, sc) = (Arc::clone(d), sc.clone());
    d.tracker.spawn(async move {
        let _ = daemon.refresh(&sc).await;
    });
}

/// Builds the answer from what was read, counting a hit or a miss.
async fn serve(
    d: &Daemon,
    sc: &SourceConfig,
    entry: Option<Served>,
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
        future: entry.future,
        stale_reason: entry.stale_reason.map(str::to_owned),
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

/// `invalidate`: a soft purge by [`Cache::invalidate`](crate::Cache::invalidate);
/// when it marked the source, watchers are told and warm keeping is woken
/// to refresh it.
pub(super) async fn invalidate(d: &Daemon, id: SourceId) -> Result<InvalidateBody, WireError> {
    let sc = d.known(&id)?;
    let (cache, source) = (d.cache.clone(), cache_source(&sc));
    let done = blocking(move || cache.invalidate(&source))
        .await
        .map_err(|e| wire(&e))?;
    if done == Invalidated::Marked {
        let event = Event::new(EventKind::Invalidated, id.clone(), SystemTime::now());
        let _ = d.events.send(event);
        d.warm.wake(&id);
    }
    Ok(InvalidateBody::new(id, done))
}
