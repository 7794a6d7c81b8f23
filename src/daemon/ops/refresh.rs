//! `refresh`: refresh sources now, all at once, and report each outcome.

use std::sync::Arc;

use crate::daemon::state::Daemon;
use crate::protocol::{RefreshBody, RefreshResult, RefreshTarget, WireError};

/// Refreshes every named source (or all of them) concurrently and waits
/// for all. A failed source does not fail the request: each has its own
/// `ok` in `results`, and `failed` counts the failures. An unknown source
/// fails the request before anything runs.
pub(super) async fn refresh(
    d: &Arc<Daemon>,
    target: RefreshTarget,
) -> Result<RefreshBody, WireError> {
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
            let result = daemon.refresh_as(&sc, true).await;
            (index, RefreshResult::new(sc.id.clone(), &result))
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
    Ok(RefreshBody::new(
        results.into_iter().map(|(_, r)| r).collect(),
    ))
}
