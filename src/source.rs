//! Source identities (`tier/name`) and their refresh policy.
//!
//! A [`SourceId`] is validated before any path is built from it, so a name can
//! never escape the cache root.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod guard;
pub use guard::{DEFAULT_MAX_SHRINK, Guard, is_empty_json};

/// Longest allowed tier or name part, in bytes.
pub const MAX_PART_LEN: usize = 63;

/// Why a `tier/name` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSource {
    /// No `/` between tier and name, or more than one.
    #[error(
        "invalid source {0:?}: expected exactly one '/' between tier and name (e.g. \"discovery/openrouter\")"
    )]
    Shape(String),
    /// One part breaks the `[a-z0-9][a-z0-9-]{0,62}` rule.
    #[error("invalid source {input:?}: {part} {value:?} {why}")]
    Part {
        /// The whole input.
        input: String,
        /// `"tier"` or `"name"`.
        part: &'static str,
        /// The offending part.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A validated `tier/name` source identity.
///
/// The text is shared: a clone is a reference count, so the daemon's maps
/// (view, warm-keeping queue, counters, config index) hold one copy of each
/// id between them. Ids order by tier, then name.
#[derive(Clone)]
pub struct SourceId {
    /// `tier/name`.
    text: Arc<str>,
    /// Where the `/` is.
    slash: u8,
}

impl SourceId {
    /// Builds an id from its two parts, validating both.
    ///
    /// # Errors
    ///
    /// [`InvalidSource::Part`] when either part is empty, longer than 63
    /// bytes, or has a character outside `[a-z0-9-]` (or starts with `-`).
    pub fn new(tier: &str, name: &str) -> Result<Self, InvalidSource> {
        // The whole input is formatted only for the error.
        let parts = [("tier", tier), ("name", name)];
        if let Some((part, value)) = parts.into_iter().find(|(_, v)| why_invalid(v).is_some()) {
            check_part(&format!("{tier}/{name}"), part, value)?;
        }
        let slash = u8::try_from(tier.len()).expect("a tier is at most 63 bytes");
        Ok(Self {
            text: Arc::from(format!("{tier}/{name}")),
            slash,
        })
    }

    /// Parses `tier/name`.
    ///
    /// # Errors
    ///
    /// [`InvalidSource`] naming what is wrong with the input.
    pub fn parse(input: &str) -> Result<Self, InvalidSource> {
        let mut parts = input.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(tier), Some(name), None) => Self::new(tier, name),
            _ => Err(InvalidSource::Shape(input.to_owned())),
        }
    }

    /// The tier part (a directory under the root).
    pub fn tier(&self) -> &str {
        &self.text[..usize::from(self.slash)]
    }

    /// The name part (the file stem inside the tier directory).
    pub fn name(&self) -> &str {
        &self.text[usize::from(self.slash) + 1..]
    }

    /// `tier/name`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for SourceId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SourceId {}

impl Hash for SourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl Ord for SourceId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.tier(), self.name()).cmp(&(other.tier(), other.name()))
    }
}

impl PartialOrd for SourceId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceId")
            .field("tier", &self.tier())
            .field("name", &self.name())
            .finish()
    }
}

/// Checks one part against `[a-z0-9][a-z0-9-]{0,62}`.
pub fn check_part(input: &str, part: &'static str, value: &str) -> Result<(), InvalidSource> {
    match why_invalid(value) {
        None => Ok(()),
        Some(why) => Err(InvalidSource::Part {
            input: input.to_owned(),
            part,
            value: value.to_owned(),
            why,
        }),
    }
}

/// What is wrong with one part, if anything.
fn why_invalid(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("is empty")
    } else if value.len() > MAX_PART_LEN {
        Some("is longer than 63 characters")
    } else if value.starts_with('-') {
        Some("must start with a lower-case letter or digit")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may contain only a-z, 0-9 and '-'")
    } else {
        None
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SourceId {
    type Err = InvalidSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How a source is kept: freshness, deadline, staleness limit and backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Data is fresh while its age is below this.
    pub ttl: Duration,
    /// A refresh running longer than this is killed and counts as a failure.
    pub refresh_deadline: Duration,
    /// Data older than this is `expired`: reported, not served unless asked.
    pub max_stale: Option<Duration>,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Largest payload accepted from the refresher and read back from disk;
    /// a bigger payload on disk is refused, never read whole.
    pub max_output: usize,
    /// What a fetched payload must pass to replace the current one, unless
    /// the refresh is forced ([`crate::Cache::refresh`]).
    pub guard: Guard,
    /// A hash of what the source is (refresher kind, URL, argv, header
    /// names...; never a secret), recorded at each commit. Data committed
    /// under another definition is stale at once. `None`: not tracked (a
    /// recorded one is then never judged changed).
    pub definition: Option<String>,
    /// Whether refreshes go through the cache's shared tier, when it has
    /// one (docs/SHARED.md); `false` (`shared = false` in the config)
    /// keeps the source to this host.
    pub shared: bool,
    /// What a refresh does while the shared tier is unreachable.
    pub on_down: OnDown,
}

/// What a source does while the shared tier is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDown {
    /// Refresh on its own, as without a shared tier.
    #[default]
    Local,
    /// Make no upstream call; serve what is on disk (a failure naming the
    /// tier is recorded, so the source backs off and says why).
    Hold,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            refresh_deadline: Duration::from_secs(30),
            max_stale: None,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            max_output: crate::refresher::DEFAULT_MAX_OUTPUT,
            guard: Guard::default(),
            definition: None,
            shared: true,
            on_down: OnDown::Local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kebab_parts() {
        let id = SourceId::parse("discovery/open-router2").unwrap();
        assert_eq!(id.tier(), "discovery");
        assert_eq!(id.name(), "open-router2");
        assert_eq!(id.to_string(), "discovery/open-router2");
        let long = "a".repeat(63);
        assert!(SourceId::new(&long, &long).is_ok());
    }

    #[test]
    fn rejects_everything_that_could_escape_or_confuse() {
        let long = format!("t/{}", "a".repeat(64));
        for bad in [
            "", "a", "a/b/c", "../x", "a/..", "a/.", "A/b", "a/B", "a/b.json", "a/ b", "a/b\0",
            "/b", "a/", "-a/b", "a/-b", "a/b_c", "a\\b", &long,
        ] {
            let err = SourceId::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid source"), "{err}");
        }
    }

    #[test]
    fn error_names_the_part_and_the_cause() {
        let err = SourceId::parse("discovery/Open").unwrap_err().to_string();
        assert!(err.contains("name \"Open\""), "{err}");
        assert!(err.contains("a-z"), "{err}");
        let err = SourceId::parse("nodelimiter").unwrap_err().to_string();
        assert!(err.contains("exactly one '/'"), "{err}");
    }

    #[test]
    fn ids_order_by_tier_then_name() {
        let id = |s: &str| SourceId::parse(s).unwrap();
        // As whole strings "a-b/x" < "a/x" ('-' sorts before '/').
        assert!(id("a/x") < id("a-b/x"));
        assert!(id("a/x") < id("a/y"));
        assert_eq!(id("a/x"), id("a/x"));
    }

    #[test]
    fn a_clone_shares_the_text() {
        let id = SourceId::parse("tier/name").unwrap();
        let copy = id.clone();
        assert!(std::ptr::eq(id.as_str(), copy.as_str()));
        assert_eq!((copy.tier(), copy.name()), ("tier", "name"));
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: SourceId = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"a/b\"");
        assert!(serde_json::from_str::<SourceId>("\"a/../b\"").is_err());
    }
}
