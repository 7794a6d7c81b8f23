//! `<name>.refreshing`, the single-flight marker shared with fizeau.
//!
//! fizeau writes `{pid, started_at, deadline, last_error?}` (RFC 3339 with
//! nanoseconds); discocache adds `token` (random per claim) and `pgid` (the
//! refresher's process group), which fizeau ignores. Read by fizeau's rules:
//! bytes that are not a JSON object of this shape mean "no marker"; a
//! missing or unparsable time is Go's zero time (long past). Judged by
//! fizeau's rules (`isStale`, newest version): a marker is stale when its
//! pid is dead, or, for a failure record (`last_error` set), once its
//! deadline passed, or, for a refresh in flight, once its deadline plus
//! twice the refresh deadline passed. Changed only under the short lock.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::dir::FileId;
use super::lock::ShortLock;
use super::{FAILURE_COOLDOWN, STALENESS_MULTIPLIER};
use crate::error::Result;
use crate::meta::Timestamp;

/// A marker as fizeau and discocache both read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FizeauMarker {
    /// The process running (or that ran, for a failure record) the refresh.
    #[serde(default)]
    pub pid: i64,
    /// Claim time; for a failure record, the failure time.
    #[serde(default, deserialize_with = "lenient_time")]
    pub started_at: Option<Timestamp>,
    /// Claim time plus the refresh deadline; for a failure record, the end
    /// of the cooldown.
    #[serde(default, deserialize_with = "lenient_time")]
    pub deadline: Option<Timestamp>,
    /// The failure, on a failure record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// discocache's random claim token (fizeau's markers have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The refresher's process group, once it runs (discocache only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
}

/// How fizeau's rules judge a marker at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerState {
    /// A refresh runs: do not claim; wait for it.
    InFlight,
    /// A failure record within its cooldown: do not claim yet.
    Cooldown,
    /// Orphaned: it may be removed and the source claimed.
    Stale(StaleReason),
}

/// Why a marker is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Its process is gone (or its pid is zero or missing).
    DeadPid,
    /// A refresh past its deadline plus fizeau's grace.
    PastGrace,
    /// A failure record past its cooldown.
    CooldownOver,
}

impl MarkerState {
    /// True while nobody may claim the source.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Stale(_))
    }
}

/// Who wrote a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// fizeau (no token): judged by fizeau's rules alone.
    Fizeau,
    /// discocache, with this claim token: judged by its flock.
    Discocache(&'a str),
}

impl FizeauMarker {
    /// A marker for a refresh claimed now by this process.
    pub fn claim(now: Timestamp, refresh_deadline: Duration, token: &str) -> Self {
        Self {
            pid: i64::from(std::process::id()),
            started_at: Some(now),
            deadline: Some(now.plus(refresh_deadline)),
            last_error: None,
            token: Some(token.to_owned()),
            pgid: None,
        }
    }

    /// This marker turned into a failure record, as fizeau records one:
    /// started now, cooling down for [`FAILURE_COOLDOWN`], with the error
    /// on one line. The refresher's group is dropped: it is over, and its
    /// id may be given to another group.
    #[must_use]
    pub fn failed(&self, now: Timestamp, error: &str) -> Self {
        let one_line = error.split_whitespace().collect::<Vec<_>>().join(" ");
        Self {
            started_at: Some(now),
            deadline: Some(now.plus(FAILURE_COOLDOWN)),
            last_error: Some(one_line),
            pgid: None,
            ..self.clone()
        }
    }

    /// Parses a marker as fizeau does: `None` (as if absent) when the bytes
    /// are not a marker.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        // Only an object, as Go's decoder into a struct (serde would also
        // take an array for a struct).
        match serde_json::from_slice(bytes).ok()? {
            v @ serde_json::Value::Object(_) => serde_json::from_value(v).ok(),
            _ => None,
        }
    }

    /// The marker as written (fizeau parses it; unknown fields it ignores).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a marker serialises")
    }

    /// Who wrote it.
    pub fn owner(&self) -> Owner<'_> {
        match &self.token {
            Some(t) => Owner::Discocache(t),
            None => Owner::Fizeau,
        }
    }

    /// True when it records a failure (fizeau's `RefreshState.Failed`).
    pub fn failed_record(&self) -> bool {
        self.last_error
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty())
    }

    /// When fizeau's rules make it stale, its pid staying alive: the bound
    /// of a wait for it. `None` for Go's zero time (stale already).
    pub fn stale_at(&self, refresh_deadline: Duration) -> Option<Timestamp> {
        let deadline = self.deadline?;
        if self.last_error.as_deref().is_some_and(|e| !e.is_empty()) {
            return Some(deadline);
        }
        Some(deadline.plus(refresh_deadline * STALENESS_MULTIPLIER))
    }

    /// Judges it at `now` by fizeau's rules, with the source's refresh
    /// deadline (fizeau uses the caller's, not one in the marker).
    pub fn judge(
        &self,
        now: Timestamp,
        refresh_deadline: Duration,
        alive: impl Fn(i64) -> bool,
    ) -> MarkerState {
        if !alive(self.pid) {
            return MarkerState::Stale(StaleReason::DeadPid);
        }
        let cooling = self.last_error.as_deref().is_some_and(|e| !e.is_empty());
        match self.stale_at(refresh_deadline) {
            Some(at) if now <= at => {
                if cooling {
                    MarkerState::Cooldown
                } else {
                    MarkerState::InFlight
                }
            }
            _ if cooling => MarkerState::Stale(StaleReason::CooldownOver),
            _ => MarkerState::Stale(StaleReason::PastGrace),
        }
    }

    /// fizeau's `Prune` keeps a source whose marker is active by this
    /// stricter rule: pid alive and before the deadline, with no grace.
    pub fn active_for_prune(&self, now: Timestamp, alive: impl Fn(i64) -> bool) -> bool {
        alive(self.pid) && self.deadline.is_some_and(|d| now < d)
    }
}

/// Go's zero time and any unparsable time read as "none" (long past).
fn lenient_time<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Timestamp>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.and_then(|s| humantime::parse_rfc3339_weak(&s).ok().map(Timestamp::from)))
}

/// A marker read from disk, with the identity of its file.
#[derive(Debug, Clone)]
pub struct SeenMarker {
    /// What it says.
    pub marker: FizeauMarker,
    /// The file it was read from.
    pub id: FileId,
}

/// What [`claim`] found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Our marker is written. `replaced` is the stale (or abandoned
    /// discocache) marker it replaced: the caller kills its process group.
    Claimed {
        /// Ours, as written.
        marker: FizeauMarker,
        /// What was there before.
        replaced: Option<FizeauMarker>,
    },
    /// A live fizeau marker: wait for it (see [`FizeauMarker::stale_at`]).
    Busy(FizeauMarker, MarkerState),
}

impl ShortLock<'_> {
    /// Reads the marker (`None` when absent or not a marker).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when it cannot be read, or is not a regular file.
    pub fn read_marker(&self) -> Result<Option<SeenMarker>> {
        read_marker(self.dir(), &self.names().marker)
    }

    /// Writes `marker` by rename (never torn, never through a symlink).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when it cannot be written.
    pub fn write_marker(&self, marker: &FizeauMarker) -> Result<()> {
        let names = self.names();
        self.dir()
            .replace(&names.marker, &names.stem, &marker.to_bytes())
    }

    /// Removes the marker if it is the one with this `token`. Returns
    /// whether it did.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when it cannot be read or removed.
    pub fn remove_marker_if_ours(&self, token: &str) -> Result<bool> {
        match self.read_marker()? {
            Some(seen) if seen.marker.token.as_deref() == Some(token) => {
                self.dir().remove_if_same(&self.names().marker, seen.id)
            }
            _ => Ok(false),
        }
    }

    /// Removes a marker that was seen (and judged) if it is still there.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when it cannot be removed.
    pub fn remove_seen_marker(&self, seen: &SeenMarker) -> Result<bool> {
        self.dir().remove_if_same(&self.names().marker, seen.id)
    }
}

/// Reads the marker `name` in `dir` without the lock (observers).
///
/// # Errors
///
/// [`crate::Error::Io`] when it cannot be read, or is not a regular file.
pub fn read_marker(dir: &super::dir::TierDir, name: &str) -> Result<Option<SeenMarker>> {
    let Some(file) = dir.read_small(name)? else {
        return Ok(None);
    };
    Ok(FizeauMarker::parse(&file.bytes).map(|marker| SeenMarker {
        marker,
        id: file.id,
    }))
}

/// Claims the source under the short lock: no live fizeau marker by
/// fizeau's rules, then ours is written. The caller holds discocache's
/// flock of the source, so a discocache marker found here is abandoned
/// (its holder no longer holds that flock) and is replaced whatever its
/// pid; the caller kills the process group it names.
///
/// # Errors
///
/// [`crate::Error::Io`] when the marker cannot be read, removed or written.
pub fn claim(
    lock: &ShortLock<'_>,
    now: Timestamp,
    refresh_deadline: Duration,
    token: &str,
) -> Result<Claim> {
    let seen = lock.read_marker()?;
    if let Some(seen) = &seen {
        let state = seen.marker.judge(now, refresh_deadline, super::pid_alive);
        if seen.marker.owner() == Owner::Fizeau && state.is_live() {
            return Ok(Claim::Busy(seen.marker.clone(), state));
        }
    }
    let marker = FizeauMarker::claim(now, refresh_deadline, token);
    lock.write_marker(&marker)?;
    Ok(Claim::Claimed {
        marker,
        replaced: seen.map(|s| s.marker),
    })
}

#[cfg(test)]
#[path = "marker_tests.rs"]
mod tests;
