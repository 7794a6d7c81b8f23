//! The config in force, indexed by source id: a request names its source,
//! and with thousands of sources a linear search per request would cost
//! more than the rest of a `get`.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use crate::config::{Config, SourceConfig};
use crate::source::SourceId;

/// A config and where each source is in it.
#[derive(Debug)]
pub(crate) struct InForce {
    pub config: Arc<Config>,
    index: HashMap<SourceId, usize>,
}

impl InForce {
    pub fn new(config: Config) -> Self {
        let index = config
            .sources
            .iter()
            .enumerate()
            .map(|(at, sc)| (sc.id.clone(), at))
            .collect();
        Self {
            config: Arc::new(config),
            index,
        }
    }
}

/// One configured source, borrowed from the config it was found in (which
/// stays alive while this does, across a reload).
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    in_force: Arc<InForce>,
    at: usize,
}

impl Configured {
    /// The source `id` of `in_force`, if it is configured there.
    pub fn find(in_force: Arc<InForce>, id: &SourceId) -> Option<Self> {
        let at = *in_force.index.get(id)?;
        Some(Self { in_force, at })
    }
}

impl Deref for Configured {
    type Target = SourceConfig;

    fn deref(&self) -> &SourceConfig {
        &self.in_force.config.sources[self.at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_found_by_id_and_unknown_ones_are_not() {
        let text = "[[source]]\nid = \"t/a\"\ncommand = [\"true\"]\n[[source]]\nid = \"t/b\"\ncommand = [\"true\"]\n";
        let config = Config::parse(text, "<test>").expect("config");
        let in_force = Arc::new(InForce::new(config));
        let id = |s: &str| SourceId::parse(s).expect("id");
        let b = Configured::find(Arc::clone(&in_force), &id("t/b")).expect("t/b");
        assert_eq!(b.id, id("t/b"));
        assert!(Configured::find(in_force, &id("t/c")).is_none());
    }
}
