//! The ops of protocol v1, on the daemon's state: each request variant is
//! matched once and answered with its typed body. `get` and `invalidate`
//! are in [`read`], `refresh` in [`refresh`]; the rest is here.

mod read;
mod refresh;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::reload;
use super::state::{Daemon, blocking, lock};
use crate::protocol::{
    Envelope, ErrorCode, HelloBody, MetricsBody, PruneBody, ReloadBody, Request, Response,
    SharedStatus, StateBody, WatchBody, WireError,
};
use crate::server::{Answer, EventStream, Service};
use crate::source::SourceId;

impl Service for Daemon {
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send {
        dispatch(Arc::clone(self), request)
    }
}

/// Runs one request and turns its outcome into a response line.
async fn dispatch(d: Arc<Daemon>, envelope: Envelope) -> Answer {
    let id = envelope.id;
    match envelope.request {
        Request::Hello {} => reply(id, Ok(hello(&d))),
        Request::Get(get) => reply(id, read::get(&d, get).await),
        Request::Refresh(target) => reply(id, refresh::refresh(&d, target).await),
        Request::State { source } => reply(id, source_state(&d, source).await),
        Request::Status {} => Answer::Chunks(super::status::chunks(&d, id)),
        Request::Invalidate { source } => reply(id, read::invalidate(&d, source).await),
        Request::Watch { sources } => watch(&d, sources, id),
        Request::Prune { dry_run } => reply(id, prune(&d, dry_run).await),
        // Serialised straight from the counters: no JSON tree in between.
        Request::Stats {} => reply(id, Ok(stats(&d))),
        Request::Metrics {} => {
            let text = super::metrics::text(&d).await;
            reply(id, Ok(MetricsBody { text }))
        }
        Request::Reload {} => reply(id, reload_op(&d).await),
    }
}

/// The answer line for an op's outcome.
fn reply<B: Serialize>(id: Option<Value>, outcome: Result<B, WireError>) -> Answer {
    match outcome {
        Ok(body) => Answer::of(&Response::success(id.clone(), body), id),
        Err(e) => Answer::error(id, e),
    }
}

fn internal(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Internal, message)
}

/// A library error at the edge.
fn wire(e: &crate::Error) -> WireError {
    WireError::from(e)
}

/// A path as absolute and free of symlinks as it can be made, so that a
/// client compares like with like.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// `hello`: what this daemon is and serves.
fn hello(d: &Daemon) -> HelloBody {
    let config = reload::config_file(d.explicit_config.as_deref());
    HelloBody {
        shared: super::tier::status(d),
        ..HelloBody::current(
            resolved(d.cache.layout().root()),
            config.as_deref().map(resolved),
        )
    }
}

/// `stats`: the counters, and the shared tier's state when there is one.
#[derive(Serialize)]
struct StatsBody {
    #[serde(flatten)]
    counters: crate::stats::Snapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<SharedStatus>,
}

fn stats(d: &Daemon) -> StatsBody {
    StatsBody {
        counters: d.stats.snapshot(),
        shared: super::tier::status(d),
    }
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
    let watching = match &filter {
        Some(set) => set.iter().cloned().collect(),
        None => d.config().sources.iter().map(|s| s.id.clone()).collect(),
    };
    let first = Response::success(id.clone(), WatchBody { watching });
    match Answer::of(&first, id) {
        Answer::Line(first) => Answer::Watch {
            first,
            stream: EventStream::new(rx, filter),
        },
        failed => failed,
    }
}

/// `state`: the refresh state of one source.
async fn source_state(d: &Daemon, id: SourceId) -> Result<StateBody, WireError> {
    d.known(&id)?;
    let (cache, key) = (d.cache.clone(), id.clone());
    let state = blocking(move || cache.refresh_state(&key))
        .await
        .map_err(|e| wire(&e))?;
    Ok(StateBody::new(id, state))
}

/// `prune`: recover, then remove sources not in the config.
async fn prune(d: &Daemon, dry_run: bool) -> Result<PruneBody, WireError> {
    if let Some(why) = lock(&d.config_error).clone() {
        let msg = format!("refusing to prune while the config does not load: {why}");
        return Err(internal(msg));
    }
    let active = d
        .config()
        .prune_set()
        .map_err(|e| internal(e.to_string()))?;
    let cache = d.cache.clone();
    let pruned = blocking(move || cache.prune(&active, dry_run))
        .await
        .map_err(|e| wire(&e))?;
    if !dry_run {
        for id in &pruned.sources {
            d.observe(id).await;
        }
    }
    Ok(PruneBody::new(pruned, dry_run))
}

/// `reload`: reload the config now.
async fn reload_op(d: &Arc<Daemon>) -> Result<ReloadBody, WireError> {
    let done = reload::reload(d, "reload request")
        .await
        .map_err(internal)?;
    let config = d.config();
    Ok(ReloadBody {
        config: config.origin.clone(),
        sources: config.sources.len(),
        added: done.added,
        removed: done.removed,
    })
}
