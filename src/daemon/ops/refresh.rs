//! `refresh`: refresh sources now, all at once, and report each outcome.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Fields, fields, wire};
use crate::daemon::state::Daemon;
use crate::protocol::{RefreshTarget, WireError};
use crate::refresh::Refreshed;

/// Refreshes every named source (or all of them) concurrently and waits
/// for all. A failed source does not fail the request: each has its own
/// `ok` in `results`, and `failed` counts the failures. An unknown source
/// fails the request before anything runs.
pub(super) async fn refresh(d: &Arc<Daemon>, target: RefreshTarget) -> Result<Fields, WireError> {
    let sources = match target {
        RefreshTarget::All => d.config().sources.clone(),
        RefreshTarget::Sources(ids) => ids
            .iter()
            .map(|id| d.known(id).map(|sc| (*sc).clone()))
            .collect::<Result<_, _>>()?,
    };
    let mut running = tokio::task::JoinSet::new();
    for (index, sc) in sources.into_iter().enumerate() {
        let daemon = Arc::clone(d);
        running.spawn(async move {
            (
                index,
                outcome(&sc.id.to_string(), daemon.refresh(&sc).await),
            )
        });
    }
    let mut results = Vec::new();
    while let Some(done) = running.join_next().await {
        match done {
            Ok(result) => results.push(result),
            Err(e) => return Err(super::internal(format!("a refresh task failed: {e}"))),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    let failed = results.iter().filter(|(_, r)| r["ok"] == false).count();
    let results: Vec<Value> = results.into_iter().map(|(_, r)| r).collect();
    Ok(fields([
        ("results", results.into()),
        ("failed", failed.into()),
    ]))
}

/// One source's line in the results.
fn outcome(source: &str, result: crate::Result<Refreshed>) -> Value {
    match result {
        Ok(done) => {
            let what = match done {
                Refreshed::Committed { .. } => "committed",
                Refreshed::NotModified { .. } => "not_modified",
                Refreshed::Joined { .. } => "joined",
            };
            json!({"source": source, "ok": true, "outcome": what, "revision": done.revision()})
        }
        Err(e) => json!({"source": source, "ok": false, "error": wire(&e)}),
    }
}
