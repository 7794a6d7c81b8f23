//! Seeds in the daemon: at start and after each reload, every configured
//! source with a `seed` and no payload gets its seed committed as its
//! first payload (see [`crate::seed`]).

use std::sync::Arc;

use super::state::{Daemon, blocking, cache_source};
use crate::source::SourceId;

/// Plants the seed of every configured source that has one and no payload.
pub(crate) async fn plant(d: &Arc<Daemon>) {
    let config = d.config();
    let wanted: Vec<_> = config
        .sources
        .iter()
        .filter(|sc| sc.seed.is_some() && !d.cache.layout().payload(&sc.id).exists())
        .map(|sc| (cache_source(sc), sc.seed.clone()))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let cache = d.cache.clone();
    let planted: Vec<SourceId> = blocking(move || {
        let mut planted = Vec::new();
        for (source, seed) in wanted {
            let Some(seed) = seed else { continue };
            match crate::seed::plant(&cache, &source, &seed) {
                Ok(Some(revision)) => {
                    tracing::info!(
                        "{}: seeded from {}, revision {revision}",
                        source.id,
                        seed.display()
                    );
                    planted.push(source.id);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{}: cannot plant the seed: {e}", source.id),
            }
        }
        Ok(planted)
    })
    .await
    .unwrap_or_default();
    d.observe_many(planted).await;
}
