//! The key names of the shared tier (DESIGN §10, docs/SHARED.md).

use crate::source::SourceId;

/// The keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    /// The keys under `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
        }
    }

    /// `<ns>:{tier/name}:lease`: the refresh lease (`SET NX PX`).
    pub fn lease(&self, source: &SourceId) -> String {
        self.per_source(source, "lease")
    }

    /// `<ns>:{tier/name}:fence`: the fencing counter (`INCR` per lease).
    pub fn fence(&self, source: &SourceId) -> String {
        self.per_source(source, "fence")
    }

    /// `<ns>:{tier/name}:data`: the shared copy (a hash).
    pub fn data(&self, source: &SourceId) -> String {
        self.per_source(source, "data")
    }

    /// `<ns>:{tier/name}:fail`: the shared backoff (a hash).
    pub fn fail(&self, source: &SourceId) -> String {
        self.per_source(source, "fail")
    }

    /// `<ns>:events`: the capped stream of commits and failures.
    pub fn events(&self) -> String {
        format!("{}:events", self.namespace)
    }

    /// `<ns>:epoch`: a random id set once; a new one means a wiped server.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.namespace)
    }

    fn per_source(&self, source: &SourceId, what: &str) -> String {
        format!("{}:{{{source}}}:{what}", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_keys_share_one_hash_tag() {
        let keys = Keys::new("dc");
        let id = SourceId::parse("discovery/models").unwrap();
        assert_eq!(keys.lease(&id), "dc:{discovery/models}:lease");
        assert_eq!(keys.fence(&id), "dc:{discovery/models}:fence");
        assert_eq!(keys.data(&id), "dc:{discovery/models}:data");
        assert_eq!(keys.fail(&id), "dc:{discovery/models}:fail");
        assert_eq!(keys.events(), "dc:events");
        assert_eq!(keys.epoch(), "dc:epoch");
    }
}
