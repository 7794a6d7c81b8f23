//! The ops of protocol v1, on the daemon's state. `get`, `invalidate` and
//! `refresh` are in [`read`] and [`refresh`]; the rest is here.

mod read;
mod refresh;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::reload;
use super::state::{Daemon, blocking, cache_source, lock};
use crate::cache::{Cache, Entry, RefreshState};
use crate::config::SourceConfig;
use crate::protocol::{
    Envelope, ErrorCode, Fields, HelloBody, Request, Response, WireError, timestamp,
};
use crate::server::{Answer, EventStream, Service};
use crate::source::SourceId;
use crate::stats::{metrics, millis};

impl Service for Daemon {
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send {
        dispatch(Arc::clone(self), request)
    }
}

/// Runs one request and turns its outcome into a response line.
async fn dispatch(d: Arc<Daemon>, envelope: Envelope) -> Answer {
    let id = envelope.id;
    let fields = match envelope.request {
        Request::Hello => {
            return Answer::of(&Response::success(id.clone(), HelloBody::current()), id);
        }
        Request::Get(get) => {
            return match read::get(&d, get).await {
                Ok(body) => Answer::of(&Response::success(id.clone(), body), id),
                Err(e) => Answer::error(id, e),
            };
        }
        Request::Watch { sources } => return watch(&d, sources, id),
        Request::Refresh(target) => refresh::refresh(&d, target).await,
        Request::State { source } => source_state(&d, &source).await,
        Request::Status => status(&d).await,
        Request::Invalidate { source } => read::invalidate(&d, &source).await,
        Request::Prune { dry_run } => prune(&d, dry_run).await,
        Request::Stats => {
            // Serialised straight from the counters: no JSON tree of every
            // source in between.
            return Answer::of(&Response::success(id.clone(), d.stats.snapshot()), id);
        }
        Request::Metrics => Ok(fields([(
            "text",
            metrics::render(&d.stats.snapshot()).into(),
        )])),
        Request::Reload => reload_op(&d).await,
    };
    match fields {
        Ok(fields) => Answer::of(&Response::success(id.clone(), fields), id),
        Err(e) => Answer::error(id, e),
    }
}

/// A body from key/value pairs.
fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn internal(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Internal, message)
}

/// A library error at the edge.
fn wire(e: &crate::Error) -> WireError {
    WireError::from(e)
}

/// `watch`: answers at once, then streams events.
fn watch(d: &Daemon, sources: Option<Vec<SourceId>>, id: Option<Value>) -> Answer {
    let filter = match sources {
        Some(list) => match list.iter().try_for_each(|s| d.known(s).map(drop)) {
            Ok(()) => Some(list.into_iter().collect::<BTreeSet<_>>()),
            Err(e) => return Answer::error(id, e),
        },
        None => None,
    };
    let rx = d.events.subscribe();
    let watching: Vec<String> = match &filter {
        Some(set) => set.iter().map(ToString::to_string).collect(),
        None => d
            .config()
            .sources
            .iter()
            .map(|s| s.id.to_string())
            .collect(),
    };
    let first = Response::ok(id.clone()).with("watching", watching);
    match Answer::of(&first, id) {
        Answer::Line(first) => Answer::Watch {
            first,
            stream: EventStream::new(rx, filter),
        },
        failed => failed,
    }
}

/// The refresh state as JSON.
pub(crate) fn state_json(s: &RefreshState) -> Value {
    serde_json::to_value(s).unwrap_or_default()
}

/// `state`: the refresh state of one source.
async fn source_state(d: &Daemon, id: &SourceId) -> Result<Fields, WireError> {
    d.known(id)?;
    let (cache, key) = (d.cache.clone(), id.clone());
    let state = blocking(move || cache.refresh_state(&key))
        .await
        .map_err(|e| wire(&e))?;
    Ok(fields([
        ("source", id.to_string().into()),
        ("revision", state.revision.into()),
        ("refresh", state_json(&state)),
    ]))
}

/// `status`: the daemon and every configured source, the sources read in
/// one blocking call.
async fn status(d: &Daemon) -> Result<Fields, WireError> {
    let config = d.config();
    let (cache, all) = (d.cache.clone(), Arc::clone(&config));
    let sources = blocking(move || {
        let lines = all.sources.iter().map(|sc| source_status(&cache, sc));
        Ok(Value::Array(lines.collect()))
    })
    .await
    .map_err(|e| wire(&e))?;
    let snap = d.stats.summary();
    let daemon = json!({
        "status": snap.status,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "root": d.cache.layout().root(),
        "socket": d.socket,
        "config": config.origin,
        "started_at": timestamp(d.started_at),
        "last_error": snap.last_error,
        "keys_total": snap.keys_total,
        "held_bytes": d.view.held_bytes(),
    });
    Ok(fields([("daemon", daemon), ("sources", sources)]))
}

/// One source's line in `status` (blocking: reads its files).
fn source_status(cache: &Cache, sc: &SourceConfig) -> Value {
    let source = cache_source(sc);
    let looked = cache
        .read_with_meta(&source)
        .and_then(|entry| Ok((entry, cache.refresh_state(&source.id)?)));
    let mut line = json!({
        "source": sc.id,
        "refresher": sc.refresher.describe(),
        "ttl_ms": millis(sc.policy.ttl),
    });
    match looked {
        Ok((entry, state)) => {
            line["has_data"] = entry.is_some().into();
            if let Some(entry) = entry {
                freshness(&mut line, &entry);
            }
            line["revision"] = state.revision.into();
            line["refresh"] = state_json(&state);
        }
        Err(e) => line["error"] = e.to_string().into(),
    }
    line
}

/// Adds an entry's age and freshness to a JSON object.
pub(crate) fn freshness(line: &mut Value, entry: &Entry) {
    line["age_ms"] = millis(entry.age).into();
    line["fresh"] = entry.fresh.into();
    line["stale"] = entry.stale().into();
    line["expired"] = entry.expired.into();
    line["fetched_at"] = timestamp(entry.fetched_at).into();
}

/// `prune`: recover, then remove sources not in the config.
async fn prune(d: &Daemon, dry_run: bool) -> Result<Fields, WireError> {
    if let Some(why) = lock(&d.config_error).clone() {
        let msg = format!("refusing to prune while the config does not load: {why}");
        return Err(internal(msg));
    }
    let active: BTreeSet<SourceId> = d.config().sources.iter().map(|s| s.id.clone()).collect();
    let cache = d.cache.clone();
    let pruned = blocking(move || cache.prune(&active, dry_run))
        .await
        .map_err(|e| wire(&e))?;
    if !dry_run {
        for id in &pruned.sources {
            d.observe(id).await;
        }
    }
    let paths = |v: &[std::path::PathBuf]| -> Vec<String> {
        v.iter().map(|p| p.display().to_string()).collect()
    };
    Ok(fields([
        ("dry_run", dry_run.into()),
        ("sources", json!(pruned.sources)),
        ("files", paths(&pruned.files).into()),
        ("in_flight", json!(pruned.in_flight)),
        ("recovered", paths(&pruned.recovered.removed).into()),
    ]))
}

/// `reload`: reload the config now.
async fn reload_op(d: &Arc<Daemon>) -> Result<Fields, WireError> {
    let done = reload::reload(d, "reload request")
        .await
        .map_err(internal)?;
    let names = |v: &[SourceId]| -> Vec<String> { v.iter().map(ToString::to_string).collect() };
    Ok(fields([
        ("config", d.config().origin.clone().into()),
        ("sources", d.config().sources.len().into()),
        ("added", names(&done.added).into()),
        ("removed", names(&done.removed).into()),
    ]))
}
