//! The typed bodies of the ops' answers, flattened into a
//! [`Response`](super::Response) beside `ok` and `id`. Both ends use them:
//! the daemon builds them, the [`Client`](crate::client::Client) decodes
//! them, and the CLI builds the same ones in direct mode, so that both modes
//! print the same thing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::WireError;
use super::timestamp;
use crate::cache::{Entry, Invalidated, RefreshState, Source};
use crate::prune::Pruned;
use crate::refresh::Refreshed;
use crate::source::SourceId;
use crate::stats::{Status, millis};

/// `state`: one source's refresh state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBody {
    /// The source.
    pub source: SourceId,
    /// Its committed revision (0: never succeeded).
    pub revision: u64,
    /// In flight, last error, backoff.
    pub refresh: RefreshState,
}

impl StateBody {
    /// The body for `source` in `state`.
    pub fn new(source: SourceId, state: RefreshState) -> Self {
        Self {
            source,
            revision: state.revision,
            refresh: state,
        }
    }
}

/// What a successful refresh did, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// A new payload was committed.
    Committed,
    /// The origin said "not modified"; freshness renewed.
    NotModified,
    /// Another caller's refresh succeeded and was joined.
    Joined,
}

/// One source's line in a `refresh` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    /// The source.
    pub source: SourceId,
    /// Whether its refresh succeeded.
    pub ok: bool,
    /// What the refresh did (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RefreshOutcome>,
    /// The revision now committed (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl RefreshResult {
    /// The line for what the library's refresh of `source` returned.
    pub fn new(source: SourceId, result: &crate::Result<Refreshed>) -> Self {
        let (outcome, revision, error) = match result {
            Ok(done) => {
                let outcome = match done {
                    Refreshed::Committed { .. } => RefreshOutcome::Committed,
                    Refreshed::NotModified { .. } => RefreshOutcome::NotModified,
                    Refreshed::Joined { .. } => RefreshOutcome::Joined,
                };
                (Some(outcome), Some(done.revision()), None)
            }
            Err(e) => (None, None, Some(WireError::from(e))),
        };
        Self {
            source,
            ok: error.is_none(),
            outcome,
            revision,
            error,
        }
    }

    /// What the refresh did, or why it failed.
    ///
    /// # Errors
    ///
    /// The refresh's error (`internal` when a failure carries none).
    pub fn refreshed(&self) -> Result<Refreshed, WireError> {
        let revision = self.revision.unwrap_or(0);
        match (self.ok, self.outcome, &self.error) {
            (true, Some(RefreshOutcome::Committed), _) => Ok(Refreshed::Committed { revision }),
            (true, Some(RefreshOutcome::NotModified), _) => Ok(Refreshed::NotModified { revision }),
            (true, Some(RefreshOutcome::Joined), _) => Ok(Refreshed::Joined { revision }),
            (_, _, Some(error)) => Err(error.clone()),
            _ => Err(WireError::new(
                super::ErrorCode::Internal,
                format!("{}: the refresh result has no outcome", self.source),
            )),
        }
    }
}

/// `refresh`: every source's outcome, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshBody {
    /// One line per source.
    pub results: Vec<RefreshResult>,
    /// How many failed.
    pub failed: usize,
}

impl RefreshBody {
    /// The body for these results.
    pub fn new(results: Vec<RefreshResult>) -> Self {
        let failed = results.iter().filter(|r| !r.ok).count();
        Self { results, failed }
    }
}

/// One source in `status`: the same type in both modes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source.
    pub source: SourceId,
    /// In the config (false: only on disk).
    pub configured: bool,
    /// Its refresher, described without secrets (configured sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresher: Option<String>,
    /// Its ttl.
    pub ttl_ms: u64,
    /// Why the config disabled it (an unset `${VAR}`): it is never refreshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    /// A payload is on disk.
    pub has_data: bool,
    /// Age of the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    /// Younger than its ttl.
    pub fresh: bool,
    /// Past its ttl.
    pub stale: bool,
    /// Past its `max_stale`.
    pub expired: bool,
    /// Why it is not fresh ("definition changed", "older than ttl"...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    /// When the payload was fetched, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// The committed revision (0: never succeeded).
    pub revision: u64,
    /// In flight, last error, backoff.
    pub refresh: RefreshState,
    /// Why the source could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SourceStatus {
    /// A source's status from what the library read about it.
    pub fn new(
        source: &Source,
        refresher: Option<String>,
        read: crate::Result<(Option<Entry>, RefreshState)>,
    ) -> Self {
        let mut status = Self::blank(&source.id, refresher, source.policy.ttl);
        match read {
            Ok((entry, state)) => {
                if let Some(entry) = entry {
                    status.payload(
                        entry.fetched_at,
                        entry.age,
                        (entry.fresh, entry.expired),
                        entry.stale_reason,
                    );
                }
                status.revision = state.revision;
                status.refresh = state;
            }
            Err(e) => status.error = Some(e.to_string()),
        }
        status
    }

    /// A source with nothing known about it yet.
    pub(crate) fn blank(id: &SourceId, refresher: Option<String>, ttl: Duration) -> Self {
        Self {
            source: id.clone(),
            configured: refresher.is_some(),
            refresher,
            ttl_ms: millis(ttl),
            disabled: None,
            has_data: false,
            age_ms: None,
            fresh: false,
            stale: false,
            expired: false,
            stale_reason: None,
            fetched_at: None,
            revision: 0,
            refresh: RefreshState::default(),
            error: None,
        }
    }

    /// Records a payload fetched at `fetched_at`, of `age`, (fresh,
    /// expired) as judged, and why it is not fresh.
    pub(crate) fn payload(
        &mut self,
        fetched_at: SystemTime,
        age: Duration,
        (fresh, expired): (bool, bool),
        stale_reason: Option<&str>,
    ) {
        self.has_data = true;
        self.age_ms = Some(millis(age));
        self.fresh = fresh;
        self.stale = !fresh;
        self.expired = expired;
        self.stale_reason = stale_reason.map(str::to_owned);
        self.fetched_at = Some(timestamp(fetched_at));
    }
}

/// The daemon's own line in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// seeding, ready or error.
    pub status: Status,
    /// The daemon's version.
    pub version: String,
    /// Its pid.
    pub pid: u32,
    /// The root it serves.
    pub root: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    /// Its config (a path, or the embedded default).
    pub config: String,
    /// When it started, RFC 3339 UTC.
    pub started_at: String,
    /// The last daemon-level error, if unresolved.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Sources with a payload.
    pub keys_total: u64,
    /// Payload bytes held in memory.
    pub held_bytes: u64,
    /// Refreshes are off: what is on disk is served as it is.
    #[serde(default)]
    pub offline: bool,
}

/// `status`: the daemon (`null` in direct mode) and every source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// The daemon that answered; `None` when the CLI read the root itself.
    pub daemon: Option<DaemonStatus>,
    /// Refreshes are off (in the daemon, or in this process in direct
    /// mode).
    #[serde(default)]
    pub offline: bool,
    /// The root's on-disk format (docs/FORMAT.md): 2, or 1 while a format 1
    /// root is not fully upgraded yet.
    #[serde(default)]
    pub format: u32,
    /// The shared tier's state; absent without `[shared]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<super::SharedStatus>,
    /// Every source.
    pub sources: Vec<SourceStatus>,
}

/// Why `invalidate` left a source as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Skipped {
    /// No payload to mark.
    #[serde(rename = "no data")]
    NoData,
    /// The payload is stale already.
    #[serde(rename = "already stale")]
    AlreadyStale,
    /// A refresh holds the source (it is about to be replaced anyway).
    #[serde(rename = "a refresh is running")]
    Refreshing,
}

/// `invalidate`: whether the source was marked stale, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidateBody {
    /// The source.
    pub source: SourceId,
    /// It was marked stale now.
    pub invalidated: bool,
    /// Why not (`null` when it was).
    pub skipped: Option<Skipped>,
}

impl InvalidateBody {
    /// The body for what [`Cache::invalidate`](crate::Cache::invalidate) did.
    pub fn new(source: SourceId, done: Invalidated) -> Self {
        let skipped = match done {
            Invalidated::Marked => None,
            Invalidated::NoData => Some(Skipped::NoData),
            Invalidated::AlreadyStale => Some(Skipped::AlreadyStale),
            Invalidated::Refreshing => Some(Skipped::Refreshing),
        };
        Self {
            source,
            invalidated: skipped.is_none(),
            skipped,
        }
    }
}

/// `prune`: what was (or would be) removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneBody {
    /// Only reported, nothing removed.
    pub dry_run: bool,
    /// Sources removed.
    pub sources: Vec<SourceId>,
    /// Their files.
    pub files: Vec<PathBuf>,
    /// Sources skipped because a refresh holds them.
    pub in_flight: Vec<SourceId>,
    /// Crash leftovers removed first.
    pub recovered: Vec<PathBuf>,
}

impl PruneBody {
    /// The body for a library prune report.
    pub fn new(report: Pruned, dry_run: bool) -> Self {
        Self {
            dry_run,
            sources: report.sources,
            files: report.files,
            in_flight: report.in_flight,
            recovered: report.recovered.removed,
        }
    }
}

/// `watch`: the first line, naming the sources watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchBody {
    /// The sources whose events follow.
    pub watching: Vec<SourceId>,
}

/// `metrics`: Prometheus text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsBody {
    /// The exposition text.
    pub text: String,
}

/// `reload`: the config now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadBody {
    /// Where it came from.
    pub config: String,
    /// How many sources it has.
    pub sources: usize,
    /// Sources added by this reload.
    pub added: Vec<SourceId>,
    /// Sources removed by this reload.
    pub removed: Vec<SourceId>,
}
