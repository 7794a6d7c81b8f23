//! The ops of protocol v1, on the daemon's state. `get`, `invalidate` and
//! `refresh` are in [`read`] and [`refresh`]; the rest is here.

mod read;
mod refresh;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::reload;
use super::state::{Daemon, blocking, lock};
use crate::cache::RefreshState;
use crate::protocol::{Envelope, ErrorCode, Fields, HelloBody, Request, Response, WireError};
use crate::server::{Answer, EventStream, Service};
use crate::source::SourceId;
use crate::stats::metrics;

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
        Request::Status => return Answer::Chunks(super::status::chunks(&d, id)),
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
