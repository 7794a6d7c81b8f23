//! The shared single-flight marker `<name>.refreshing`, claimed and
//! released under fizeau's short lock `<name>.lock` (on-disk format 2).
//!
//! The caller holds our flock of the source, so no other discocache process
//! refreshes it; this adds fizeau: our marker is written only when no live
//! fizeau marker exists by fizeau's rules, a live one is waited for, and
//! only our own marker is ever removed. See [`crate::fizeau`].

use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::fizeau::dir::TierDir;
use crate::fizeau::lock::{LockRules, ShortLock};
use crate::fizeau::marker::{self, Claim, FizeauMarker, MarkerState, Owner};
use crate::fizeau::{Names, pid_alive};
use crate::layout::Layout;
use crate::lock::SourceLock;
use crate::meta::{Marker, Timestamp};
use crate::source::SourceId;

/// Pause between looks at a live fizeau marker (no event tells when fizeau
/// removes it), or at format 1's lock held by a format 1 process.
const POLL: Duration = Duration::from_millis(20);

/// How long after a format 1 root was upgraded format 1 processes may still
/// run: until then each source's format 1 lock file `<name>.lock` is kept
/// and every claim takes its flock too (docs/FORMAT.md, "Upgrade").
pub const FORMAT1_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Our marker, written; and, when we found a live fizeau marker and waited
/// for it, the payload as it was then (that refresh's outcome is read from
/// the payload: one that changed meanwhile is its success).
#[derive(Debug)]
pub struct Claimed {
    /// The marker we wrote.
    pub marker: Marker,
    /// The payload when the wait for a fizeau refresh started, if there
    /// was one.
    pub waited_since: Option<PayloadStamp>,
    /// A stale or abandoned marker was replaced: its holder may have left
    /// temp files.
    pub replaced: bool,
    /// Format 1's flock on `<name>.lock`, when format 1 processes may still
    /// run: held to the end of the refresh, and the marker's later changes
    /// are made under it.
    pub format1: Option<SourceLock>,
}

/// What tells one payload file from the next: mtime, size and inode
/// (`None` when there is none). Compared, not ordered: file times are
/// coarser than the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadStamp(Option<(SystemTime, u64, u64)>);

impl PayloadStamp {
    /// The payload of `id` now.
    pub fn of(layout: &Layout, id: &SourceId) -> Self {
        Self::at(&layout.payload(id))
    }

    /// The payload at `path` now.
    pub fn at(path: &std::path::Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok();
        Self(meta.and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))))
    }

    /// True when `now` is a payload committed after `self` was taken:
    /// another file (every commit renames a new one in), another size, or
    /// a later mtime (a "not modified" renewal). A payload gone, or an
    /// mtime set back (an invalidation), is no commit.
    pub fn committed_since(self, now: Self) -> bool {
        match (self.0, now.0) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some((t0, len0, ino0)), Some((t1, len1, ino1))) => {
                ino0 != ino1 || len0 != len1 || t1 > t0
            }
        }
    }
}

/// Why the marker could not be claimed.
#[derive(Debug)]
pub enum NotClaimed {
    /// It cannot be written (no space, no inodes, short lock not to be
    /// had): the refresh is recorded as a failure without running.
    Unwritable(Error),
    /// fizeau's refresh outlived the bound of our wait.
    Timeout(Error),
    /// fizeau's refresh just failed and its failure record is cooling
    /// down (fizeau's rule): its error. The origin is not called again
    /// now; the refresh is recorded as a failure without running.
    FizeauFailed(String),
}

/// Claims the marker of `id`, whose flock the caller holds, for a refresh
/// of `deadline`: waits for a live fizeau marker (each until it goes stale
/// by fizeau's rules, all together at most three of its refreshes' worth),
/// replaces a stale or abandoned one (killing an abandoned discocache
/// refresher's process group).
///
/// # Errors
///
/// [`NotClaimed`].
pub fn claim(
    layout: &Layout,
    id: &SourceId,
    deadline: Duration,
) -> std::result::Result<Claimed, NotClaimed> {
    let unwritable = NotClaimed::Unwritable;
    let dir = TierDir::open(&layout.tier_dir(id)).map_err(unwritable)?;
    let names = Names::new(id.name()).map_err(unwritable)?;
    let token = format!("{:016x}", fastrand::u64(..));
    let started = Instant::now();
    let bound = deadline * (2 + 2 * crate::fizeau::STALENESS_MULTIPLIER) + Duration::from_secs(1);
    let format1 = take_format1(layout, id, Some(bound)).map_err(|e| match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
            NotClaimed::Timeout(e)
        }
        _ => NotClaimed::Unwritable(e),
    })?;
    let mut waited_since = None;
    loop {
        // Taken before the marker is judged: a fizeau commit that lands
        // right after it was judged live still reads as a change.
        let before = waited_since.is_none().then(|| PayloadStamp::of(layout, id));
        let short = marker_lock(&dir, &names, format1.as_ref()).map_err(unwritable)?;
        let found =
            marker::claim(&short, Timestamp::now(), deadline, &token).map_err(unwritable)?;
        #[cfg(test)]
        tests::after_marker_change();
        let intact = short.release().map_err(unwritable)?;
        match found {
            Claim::Claimed { .. } if !intact && !still_ours(&dir, &names, &token, &format1)? => {
                tracing::warn!(
                    "{id}: fizeau's short lock was broken while we held it and our marker \
                     was replaced: judging the marker again"
                );
            }
            Claim::Claimed { marker, replaced } => {
                if let Some(old) = replaced.as_ref().and_then(abandoned_discocache) {
                    old.kill_group();
                }
                return Ok(Claimed {
                    marker: ours(&marker, &token),
                    waited_since,
                    replaced: replaced.is_some(),
                    format1,
                });
            }
            Claim::Busy(theirs, MarkerState::Cooldown) => {
                return Err(NotClaimed::FizeauFailed(
                    theirs.last_error.unwrap_or_default(),
                ));
            }
            Claim::Busy(theirs, _) => {
                if let Some(before) = before {
                    waited_since.get_or_insert(before);
                }
                let until = theirs.stale_at(deadline).map(Timestamp::system_time);
                wait_while_live(&dir, &names, &theirs, until, deadline);
                if started.elapsed() > bound {
                    return Err(NotClaimed::Timeout(Error::Timeout {
                        id: id.clone(),
                        waited: started.elapsed(),
                        holder: u32::try_from(theirs.pid).ok(),
                    }));
                }
            }
        }
    }
}

/// Whether the marker we wrote is still ours, judged under a fresh short
/// lock: fizeau breaks a lock it judged dead by deleting the path
/// (BEHAVIOUR.md §3.4), so ours may have been deleted while we held it and
/// another process may have written its marker beside ours.
fn still_ours(
    dir: &TierDir,
    names: &Names,
    token: &str,
    format1: &Option<SourceLock>,
) -> std::result::Result<bool, NotClaimed> {
    let short = marker_lock(dir, names, format1.as_ref()).map_err(NotClaimed::Unwritable)?;
    let seen = short.read_marker().map_err(NotClaimed::Unwritable)?;
    short.release().map_err(NotClaimed::Unwritable)?;
    Ok(seen.is_some_and(|s| s.marker.token.as_deref() == Some(token)))
}

/// The lock marker changes are made under: format 1's flock when the
/// caller holds it, else fizeau's short lock.
fn marker_lock<'a>(
    dir: &'a TierDir,
    names: &'a Names,
    format1: Option<&SourceLock>,
) -> Result<ShortLock<'a>> {
    match format1 {
        Some(held) => Ok(ShortLock::under_format1(dir, names, held)),
        None => ShortLock::acquire(dir, names, &LockRules::default()),
    }
}

/// True while format 1 processes may still run on this root: it was
/// upgraded from format 1 less than [`FORMAT1_GRACE`] ago.
fn format1_may_run(layout: &Layout) -> bool {
    let upgraded = std::fs::symlink_metadata(layout.format1_file()).and_then(|m| m.modified());
    upgraded.is_ok_and(|t| t.elapsed().unwrap_or_default() < FORMAT1_GRACE)
}

/// Takes format 1's flock on `<name>.lock` when format 1 processes may
/// still run and that name holds format 1's empty lock file (fizeau's
/// short lock has content). A format 1 process refreshing holds it: waits
/// for it, at most `bound` (`None`: does not wait).
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be locked, or (`TimedOut`) when it
/// was held past the bound or, with no bound, is held now.
pub fn take_format1(
    layout: &Layout,
    id: &SourceId,
    bound: Option<Duration>,
) -> Result<Option<SourceLock>> {
    let path = layout.legacy_lock(id);
    let empty = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if !empty || !format1_may_run(layout) {
        return Ok(None);
    }
    let started = Instant::now();
    loop {
        if let Some(lock) = SourceLock::try_acquire(&path)? {
            return Ok(Some(lock));
        }
        if bound.is_none_or(|b| started.elapsed() > b) {
            let cause = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "held by a format 1 discocache process refreshing",
            );
            return Err(Error::io("take format 1's lock", &path, cause));
        }
        std::thread::sleep(POLL);
    }
}

/// Sleeps while `theirs` is still the marker on disk and live, at most
/// until it goes stale (`until`).
fn wait_while_live(
    dir: &TierDir,
    names: &Names,
    theirs: &FizeauMarker,
    until: Option<SystemTime>,
    deadline: Duration,
) {
    loop {
        if until.is_some_and(|t| SystemTime::now() > t) {
            return;
        }
        match marker::read_marker(dir, &names.marker) {
            Ok(Some(seen)) if seen.marker == *theirs => {
                let state = seen.marker.judge(Timestamp::now(), deadline, pid_alive);
                if !state.is_live() {
                    return;
                }
            }
            _ => return,
        }
        std::thread::sleep(POLL);
    }
}

/// Our marker as [`Marker`] (the type the rest of the crate reads).
fn ours(written: &FizeauMarker, token: &str) -> Marker {
    let now = Timestamp::now();
    Marker {
        pid: std::process::id(),
        started_at: written.started_at.unwrap_or(now),
        deadline: written.deadline.unwrap_or(now),
        token: token.to_owned(),
        pgid: None,
    }
}

/// A replaced marker that a discocache process wrote, with what is needed
/// to kill its refresher's group.
fn abandoned_discocache(m: &FizeauMarker) -> Option<Marker> {
    let Owner::Discocache(token) = m.owner() else {
        return None;
    };
    Some(Marker {
        pid: u32::try_from(m.pid).ok()?,
        started_at: m.started_at?,
        deadline: m.deadline?,
        token: token.to_owned(),
        pgid: m.pgid,
    })
}

/// Removes our marker (the one with `token`) under the short lock; a
/// marker someone else wrote since is left alone.
///
/// # Errors
///
/// [`Error::Io`] when the short lock cannot be had or the marker removed.
pub fn release(
    layout: &Layout,
    id: &SourceId,
    token: &str,
    format1: Option<&SourceLock>,
) -> Result<bool> {
    let dir = TierDir::open(&layout.tier_dir(id))?;
    let names = Names::new(id.name())?;
    let short = marker_lock(&dir, &names, format1)?;
    let removed = short.remove_marker_if_ours(token)?;
    short.release()?;
    Ok(removed)
}

/// Turns our marker (the one with `token`) into a failure record, under
/// the short lock (or format 1's flock), as fizeau records a failure: with
/// `error` and fizeau's 250 ms cooldown, so that fizeau processes do not
/// call the failing origin again at once (while this process lives: a
/// dead pid's record is stale to fizeau). A discocache claim, holding the
/// flock, replaces it at once. Returns whether it was ours.
///
/// # Errors
///
/// [`Error::Io`] when the short lock cannot be had or the marker written.
pub fn leave_failure(
    layout: &Layout,
    id: &SourceId,
    token: &str,
    error: &str,
    format1: Option<&SourceLock>,
) -> Result<bool> {
    rewrite_ours(layout, id, token, format1, |marker| {
        marker.failed(Timestamp::now(), error)
    })
}

/// Records the refresher's process group `pgid` in our marker (the one
/// with `token`), under the short lock (or format 1's flock), so that a
/// claimant after our crash can kill the group. Returns whether the marker
/// was still ours.
///
/// # Errors
///
/// [`Error::Io`] when the short lock cannot be had or the marker written.
pub fn record_group(
    layout: &Layout,
    id: &SourceId,
    token: &str,
    pgid: i32,
    format1: Option<&SourceLock>,
) -> Result<bool> {
    rewrite_ours(layout, id, token, format1, |marker| FizeauMarker {
        pgid: Some(pgid),
        ..marker
    })
}

/// Under the short lock (or format 1's flock), replaces our marker (the one
/// with `token`) by what `change` makes of it; a marker someone else wrote
/// since is left alone. Returns whether it was ours.
fn rewrite_ours(
    layout: &Layout,
    id: &SourceId,
    token: &str,
    format1: Option<&SourceLock>,
    change: impl FnOnce(FizeauMarker) -> FizeauMarker,
) -> Result<bool> {
    let dir = TierDir::open(&layout.tier_dir(id))?;
    let names = Names::new(id.name())?;
    let short = marker_lock(&dir, &names, format1)?;
    let ours = match short.read_marker()? {
        Some(seen) if seen.marker.token.as_deref() == Some(token) => {
            short.write_marker(&change(seen.marker))?;
            true
        }
        _ => false,
    };
    short.release()?;
    Ok(ours)
}

/// What [`clear_abandoned`] did.
#[derive(Debug, Default)]
pub struct Cleared {
    /// The marker and fizeau's temp file, when removed.
    pub removed: Vec<std::path::PathBuf>,
    /// A live fizeau marker was found and left: fizeau is refreshing.
    pub fizeau_refreshing: bool,
}

/// Recovery of one source whose flock the caller holds, under the short
/// lock: removes a marker that is neither a live fizeau one nor a failure
/// record (killing an abandoned discocache refresher's group), and fizeau's `<name>.json.tmp`
/// once older than `deadline` with no live marker. Markers are judged with
/// `deadline` as the source's refresh deadline.
///
/// # Errors
///
/// [`Error::Io`] when the short lock cannot be had or a file read or
/// removed.
pub fn clear_abandoned(layout: &Layout, id: &SourceId, deadline: Duration) -> Result<Cleared> {
    let dir = TierDir::open(&layout.tier_dir(id))?;
    let names = Names::new(id.name())?;
    let mut cleared = Cleared::default();
    // A format 1 process refreshing it: in flight, as a live fizeau marker.
    let format1 = match take_format1(layout, id, None) {
        Ok(format1) => format1,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::TimedOut => {
            cleared.fizeau_refreshing = true;
            return Ok(cleared);
        }
        Err(e) => return Err(e),
    };
    let short = marker_lock(&dir, &names, format1.as_ref())?;
    if let Some(seen) = short.read_marker()? {
        let state = seen.marker.judge(Timestamp::now(), deadline, pid_alive);
        if seen.marker.owner() == Owner::Fizeau && state.is_live() {
            cleared.fizeau_refreshing = true;
            return Ok(cleared);
        }
        // A failure record (fizeau's or ours) is no refresh: kept, as
        // fizeau keeps it (its RefreshState reports the failure from it
        // until the next success); the next claim replaces it.
        if !seen.marker.failed_record() {
            if let Some(old) = abandoned_discocache(&seen.marker) {
                old.kill_group();
            }
            if short.remove_seen_marker(&seen)? {
                cleared.removed.push(layout.marker(id));
            }
        }
    }
    let now = Timestamp::now();
    if crate::fizeau::prune::recover_fizeau_tmp(&short, now, deadline, deadline)? {
        cleared.removed.push(dir.path_of(&names.fizeau_tmp));
    }
    short.release()?;
    Ok(cleared)
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
