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
use super::state::{Daemon, blocking, cache_source, lock};
use crate::cache::Cache;
use crate::config::SourceConfig;
use crate::protocol::{
    DaemonStatus, Envelope, ErrorCode, HelloBody, MetricsBody, PruneBody, ReloadBody, Request,
    Response, SourceStatus, StateBody, StatusBody, WatchBody, WireError, timestamp,
};
use crate::server::{Answer, EventStream, Service};
use crate::source::SourceId;
use crate::stats::metrics;

impl Service for Daemon {
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send {
        dispatch(Arc::clone(self), request)
    }

    fn answer_now(&self, request: &Envelope, out: &mut Vec<u8>) -> bool {
        Daemon::answer_now(self, request, out)
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
        Request::Status {} => reply(id, status(&d).await),
        Request::Invalidate { source } => reply(id, read::invalidate(&d, source).await),
        Request::Watch { sources } => watch(&d, sources, id),
        Request::Prune { dry_run } => reply(id, prune(&d, dry_run).await),
        // Serialised straight from the counters: no JSON tree in between.
        Request::Stats {} => reply(id, Ok(d.stats.snapshot())),
        Request::Metrics {} => {
            let text = metrics::render(&d.stats.snapshot());
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
    HelloBody::current(
        resolved(d.cache.layout().root()),
        config.as_deref().map(resolved),
    )
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

/// `status`: the daemon and every configured source, the sources read in
/// one blocking call.
async fn status(d: &Daemon) -> Result<StatusBody, WireError> {
    let config = d.config();
    let (cache, all) = (d.cache.clone(), Arc::clone(&config));
    let sources = blocking(move || {
        let lines = all.sources.iter().map(|sc| source_status(&cache, sc));
        Ok(lines.collect())
    })
    .await
    .map_err(|e| wire(&e))?;
    let snap = d.stats.summary();
    let daemon = DaemonStatus {
        status: snap.status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        root: d.cache.layout().root().to_owned(),
        socket: d.socket.clone(),
        config: config.origin.clone(),
        started_at: timestamp(d.started_at),
        last_error: snap.last_error,
        keys_total: snap.keys_total,
        held_bytes: d.view.held_bytes(),
    };
    Ok(StatusBody {
        daemon: Some(daemon),
        format: d.cache.format(),
        sources,
    })
}

/// One source's line in `status` (blocking: reads its files).
fn source_status(cache: &Cache, sc: &SourceConfig) -> SourceStatus {
    let source = cache_source(sc);
    let read = cache
        .read(&source)
        .and_then(|entry| Ok((entry, cache.refresh_state(&source.id)?)));
    SourceStatus {
        disabled: sc.disabled.clone(),
        ..SourceStatus::new(&source, Some(sc.refresher.describe()), read)
    }
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
