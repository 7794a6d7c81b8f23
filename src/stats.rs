//! The daemon's statistics: its status, how many sources hold data, and
//! per-source counters of reads and refreshes, persisted in
//! `<root>/.discocache/state/stats.json` so that they survive restarts
//! (a level deeper than fizeau's `Prune` looks for payloads).
//! [`metrics`] renders the same numbers in the Prometheus text format.

pub mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::timestamp;
use crate::refresh::Refreshed;
use crate::source::SourceId;
use crate::store;

/// The file the counters are persisted in, under the root's state directory
/// (`<root>/.discocache`).
pub const STATS_FILE: &str = "state/stats.json";

/// Where format 1 kept it, under the same directory.
pub const LEGACY_STATS_FILE: &str = "stats.json";

/// The persisted file's format version.
const FORMAT: u32 = 1;

/// The daemon's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Sources that had no data at start are still getting their first
    /// refresh.
    Seeding,
    /// Every source has data or has had its first attempt.
    Ready,
    /// The last config reload or reconcile failed (see `last_error`).
    Error,
}

impl Status {
    /// Every status, for metrics.
    pub const ALL: [Self; 3] = [Self::Seeding, Self::Ready, Self::Error];

    /// The status as a word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seeding => "seeding",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }
}

/// One thing that happened to a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A read served fresh data.
    FreshHit,
    /// A read served stale data.
    StaleHit,
    /// A read found no data to serve (none, or expired).
    Miss,
    /// A refresh committed a new payload.
    RefreshOk,
    /// A refresh (run or joined) failed.
    RefreshFailed,
    /// A refresh joined one already running.
    RefreshJoined,
    /// A refresh was told "not modified".
    RefreshNotModified,
}

impl Counter {
    /// The counter for a refresh's result.
    pub fn of_refresh(result: &Result<Refreshed>) -> Self {
        match result {
            Ok(Refreshed::Committed { .. }) => Self::RefreshOk,
            Ok(Refreshed::NotModified { .. }) => Self::RefreshNotModified,
            Ok(Refreshed::Joined { .. }) => Self::RefreshJoined,
            Err(_) => Self::RefreshFailed,
        }
    }
}

/// The counters of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Reads that served fresh data.
    pub fresh_hits: u64,
    /// Reads that served stale data.
    pub stale_hits: u64,
    /// Reads with nothing to serve.
    pub misses: u64,
    /// Refreshes that committed a payload.
    pub refresh_ok: u64,
    /// Refreshes that failed.
    pub refresh_failed: u64,
    /// Refreshes that joined one already running.
    pub refresh_joined: u64,
    /// Refreshes answered "not modified".
    pub refresh_not_modified: u64,
}

impl Counters {
    fn bump(&mut self, counter: Counter) {
        let slot = match counter {
            Counter::FreshHit => &mut self.fresh_hits,
            Counter::StaleHit => &mut self.stale_hits,
            Counter::Miss => &mut self.misses,
            Counter::RefreshOk => &mut self.refresh_ok,
            Counter::RefreshFailed => &mut self.refresh_failed,
            Counter::RefreshJoined => &mut self.refresh_joined,
            Counter::RefreshNotModified => &mut self.refresh_not_modified,
        };
        *slot += 1;
    }
}

/// A copy of every statistic, as the `stats` op returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// seeding, ready or error.
    pub status: Status,
    /// Sources with a payload on disk (at the last reconcile).
    pub keys_total: u64,
    /// The same per tier.
    pub keys_by_tier: BTreeMap<String, u64>,
    /// When the last reconcile against the disk finished (RFC 3339).
    pub last_reconciled_at: Option<String>,
    /// How long it took.
    pub last_duration_ms: Option<u64>,
    /// The last daemon-level error (config reload, reconcile), if unresolved.
    pub last_error: Option<String>,
    /// Per-source counters, including sources no longer configured.
    pub sources: BTreeMap<SourceId, Counters>,
}

/// The daemon-level figures of a [`Snapshot`], without the per-source
/// counters (cheap to take with many sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// seeding, ready or error.
    pub status: Status,
    /// Sources with a payload on disk.
    pub keys_total: u64,
    /// The last daemon-level error, if unresolved.
    pub last_error: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    format: u32,
    sources: BTreeMap<SourceId, Counters>,
}

#[derive(Debug)]
struct Counts {
    seeding: bool,
    keys_by_tier: BTreeMap<String, u64>,
    last_reconciled_at: Option<SystemTime>,
    last_duration: Option<Duration>,
    last_error: Option<String>,
    sources: BTreeMap<SourceId, Counters>,
}

/// The daemon's statistics. All methods take `&self`; critical sections are
/// short and never await.
#[derive(Debug)]
pub struct Stats {
    path: PathBuf,
    inner: Mutex<Counts>,
}

impl Stats {
    /// Loads the persisted counters from `state_dir` (the root's
    /// `.discocache`). A missing file starts from zero.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file exists but cannot be read,
    /// [`Error::Corrupt`] when it does not parse.
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(STATS_FILE);
        let persisted = match store::read_optional(&path, "read stats")? {
            Some(bytes) => parse(&bytes, &path)?,
            None => Persisted::default(),
        };
        Ok(Self::with_counters(path, persisted.sources))
    }

    /// Empty statistics that persist to `state_dir` (used when the persisted
    /// file could not be loaded).
    pub fn empty(state_dir: &Path) -> Self {
        Self::with_counters(state_dir.join(STATS_FILE), BTreeMap::new())
    }

    fn with_counters(path: PathBuf, sources: BTreeMap<SourceId, Counters>) -> Self {
        Self {
            path,
            inner: Mutex::new(Counts {
                seeding: true,
                keys_by_tier: BTreeMap::new(),
                last_reconciled_at: None,
                last_duration: None,
                last_error: None,
                sources,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one event for a source.
    pub fn count(&self, id: &SourceId, counter: Counter) {
        let mut inner = self.lock();
        // The id is cloned only the first time a source is counted.
        match inner.sources.get_mut(id) {
            Some(counts) => counts.bump(counter),
            None => inner.sources.entry(id.clone()).or_default().bump(counter),
        }
    }

    /// Ends (or restarts) the seeding phase.
    pub fn set_seeding(&self, seeding: bool) {
        self.lock().seeding = seeding;
    }

    /// Records (or with `None`, clears) the daemon-level error.
    pub fn set_error(&self, error: Option<String>) {
        self.lock().last_error = error;
    }

    /// The current status.
    pub fn status(&self) -> Status {
        status_of(&self.lock())
    }

    /// Sets the number of sources with a payload, per tier.
    pub fn set_keys(&self, keys_by_tier: BTreeMap<String, u64>) {
        self.lock().keys_by_tier = keys_by_tier;
    }

    /// Records a reconcile: sources with a payload per tier, and how long
    /// the scan took.
    pub fn reconciled(&self, keys_by_tier: BTreeMap<String, u64>, took: Duration) {
        let mut inner = self.lock();
        inner.keys_by_tier = keys_by_tier;
        inner.last_reconciled_at = Some(SystemTime::now());
        inner.last_duration = Some(took);
    }

    /// The daemon-level figures, without copying the per-source counters.
    pub fn summary(&self) -> Summary {
        let inner = self.lock();
        Summary {
            status: status_of(&inner),
            keys_total: inner.keys_by_tier.values().sum(),
            last_error: inner.last_error.clone(),
        }
    }

    /// [`Stats::snapshot`] without the per-source counters (cheap with
    /// many sources; read them one at a time with [`Stats::counters`]).
    pub fn head(&self) -> Snapshot {
        head_of(&self.lock())
    }

    /// One source's counters; zeros when it was never counted.
    pub fn counters(&self, id: &SourceId) -> Counters {
        self.lock().sources.get(id).cloned().unwrap_or_default()
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            sources: inner.sources.clone(),
            ..head_of(&inner)
        }
    }

    /// Writes the counters to disk atomically.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the state directory or file cannot be written.
    pub fn persist(&self) -> Result<()> {
        let persisted = Persisted {
            format: FORMAT,
            sources: self.lock().sources.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&persisted)
            .map_err(|e| Error::Internal(format!("serialise stats: {e}")))?;
        if let Some(dir) = self.path.parent() {
            store::ensure_dir(dir)?;
        }
        store::write_atomic(&self.path, ".stats.", &bytes)?;
        Ok(())
    }
}

fn status_of(inner: &Counts) -> Status {
    if inner.last_error.is_some() {
        Status::Error
    } else if inner.seeding {
        Status::Seeding
    } else {
        Status::Ready
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<Persisted> {
    let corrupt = |reason: String| Error::Corrupt {
        what: "stats file",
        path: path.to_owned(),
        reason,
    };
    let persisted: Persisted = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if persisted.format != FORMAT {
        return Err(corrupt(format!("unsupported format {}", persisted.format)));
    }
    Ok(persisted)
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The daemon-level part of a [`Snapshot`], with no per-source counters.
fn head_of(inner: &Counts) -> Snapshot {
    Snapshot {
        status: status_of(inner),
        keys_total: inner.keys_by_tier.values().sum(),
        keys_by_tier: inner.keys_by_tier.clone(),
        last_reconciled_at: inner.last_reconciled_at.map(timestamp),
        last_duration_ms: inner.last_duration.map(millis),
        last_error: inner.last_error.clone(),
        sources: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SourceId {
        SourceId::parse(s).expect("valid id")
    }

    #[test]
    fn counters_survive_a_persist_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = Stats::load(dir.path()).expect("load empty");
        stats.count(&id("a/b"), Counter::FreshHit);
        stats.count(&id("a/b"), Counter::FreshHit);
        stats.count(&id("a/c"), Counter::RefreshFailed);
        stats.persist().expect("persist");
        let again = Stats::load(dir.path()).expect("load");
        let snap = again.snapshot();
        assert_eq!(snap.sources[&id("a/b")].fresh_hits, 2);
        assert_eq!(snap.sources[&id("a/c")].refresh_failed, 1);
    }

    #[test]
    fn status_is_error_over_seeding_over_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = Stats::empty(dir.path());
        assert_eq!(stats.status(), Status::Seeding);
        stats.set_seeding(false);
        assert_eq!(stats.status(), Status::Ready);
        stats.set_error(Some("config broke".into()));
        assert_eq!(stats.status(), Status::Error);
        stats.set_error(None);
        assert_eq!(stats.status(), Status::Ready);
    }

    #[test]
    fn a_corrupt_stats_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("state")).expect("mkdir");
        std::fs::write(dir.path().join(STATS_FILE), b"{nope").expect("write");
        let err = Stats::load(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains(STATS_FILE), "{err}");
    }

    #[test]
    fn reconcile_sums_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = Stats::empty(dir.path());
        let tiers = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 3)]);
        stats.reconciled(tiers, Duration::from_millis(7));
        let snap = stats.snapshot();
        assert_eq!(snap.keys_total, 5);
        assert_eq!(stats.summary().keys_total, 5);
        assert_eq!(snap.last_duration_ms, Some(7));
        assert!(snap.last_reconciled_at.is_some());
    }
}
