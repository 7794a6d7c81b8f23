//! fizeau's short lock, `<name>.lock`: created with `O_EXCL`, holding
//! `{"pid": N, "started_at": "<RFC 3339>"}`, deleted right after the marker
//! change it guards. fizeau waits 100 ms for it, clears it only when its
//! pid is dead, never clears an empty or unparsable one, and deletes it on
//! release whoever holds it. We take part in it as fizeau does, with these
//! differences (each one of its flaws, BEHAVIOUR.md §3.4):
//!
//! - an empty or unparsable lock is cleared once it is older than
//!   [`LockRules::unparsable_after`] (it is a crash leftover: a live holder
//!   writes its payload microseconds after creating the file), unless
//!   another process holds a `flock` on it: that is a format 1 discocache
//!   process refreshing through its persistent `<name>.lock`, and deleting
//!   the file it holds would let a second refresher in;
//! - a lock is removed (on release, or when cleared) only while its name
//!   still holds the inode that was judged;
//! - the wait is bounded by [`LockRules::bound`], longer than fizeau's, and
//!   ends in an error naming the file and who holds it.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::Names;
use super::dir::{FileId, TierDir};
use crate::error::{Error, Result};

/// How the short lock is waited for and when a leftover is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRules {
    /// Give up after this long.
    pub bound: Duration,
    /// An empty or unparsable lock older than this is a crash leftover.
    pub unparsable_after: Duration,
    /// Pause between attempts (no event tells that an `O_EXCL` file went).
    pub poll: Duration,
}

impl Default for LockRules {
    fn default() -> Self {
        Self {
            bound: Duration::from_secs(2),
            unparsable_after: Duration::from_secs(1),
            poll: Duration::from_millis(2),
        }
    }
}

/// What a lock file that is in the way means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockVerdict {
    /// Its pid is dead (or zero, or missing): remove it and retry.
    DeadPid(i64),
    /// Empty or unparsable and old: a crash leftover; remove it and retry.
    OldUnparsable(Duration),
    /// Held by this live process: wait.
    Live(i64),
    /// Empty or unparsable but young: its holder may be writing it; wait.
    YoungUnparsable(Duration),
    /// Empty or unparsable and flocked: a format 1 discocache process owns
    /// a refresh through it; wait (never delete a file someone flocks).
    Format1Holder,
}

impl LockVerdict {
    /// True when the lock may be removed.
    pub fn clears(&self) -> bool {
        matches!(self, Self::DeadPid(_) | Self::OldUnparsable(_))
    }
}

/// The pid in a lock's content as fizeau parses it: `null` and an object
/// without `pid` parse, with pid 0; anything else that is not an object
/// with an integer `pid` does not.
fn lock_pid(bytes: &[u8]) -> Option<i64> {
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Null => Some(0),
        Value::Object(o) => match o.get("pid") {
            None | Some(Value::Null) => Some(0),
            Some(pid) => pid.as_i64(),
        },
        _ => None,
    }
}

/// Judges a lock file of this content and age (pure but for `alive`).
pub fn judge_lock(
    bytes: &[u8],
    age: Duration,
    rules: &LockRules,
    alive: impl Fn(i64) -> bool,
) -> LockVerdict {
    match lock_pid(bytes) {
        Some(pid) if alive(pid) => LockVerdict::Live(pid),
        Some(pid) => LockVerdict::DeadPid(pid),
        None if age >= rules.unparsable_after => LockVerdict::OldUnparsable(age),
        None => LockVerdict::YoungUnparsable(age),
    }
}

/// The content we write: our pid and the time, as fizeau writes its own.
pub fn lock_payload() -> Vec<u8> {
    let started_at = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    serde_json::json!({ "pid": std::process::id(), "started_at": started_at })
        .to_string()
        .into_bytes()
}

/// fizeau's short lock, held by us: proof for the marker changes that must
/// be made under it. Released (deleted while still ours) on drop.
#[derive(Debug)]
pub struct ShortLock<'a> {
    dir: &'a TierDir,
    names: &'a Names,
    /// The lock file we created, kept open so that no other file can get
    /// its inode while we hold it; `None` under format 1's flock.
    held: Option<(FileId, OwnedFd)>,
    released: bool,
}

impl<'a> ShortLock<'a> {
    /// Takes the lock of source `names` in `dir`, waiting at most
    /// `rules.bound`, clearing a lock whose pid is dead or an old
    /// unparsable one on the way.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with `TimedOut` naming the lock file and its holder
    /// when the bound passes; [`Error::Io`] when the lock path is not a
    /// regular file (never followed or removed) or cannot be created.
    pub fn acquire(dir: &'a TierDir, names: &'a Names, rules: &LockRules) -> Result<Self> {
        let start = Instant::now();
        let payload = lock_payload();
        loop {
            if let Some((fd, id)) = dir.create_exclusive(&names.lock, &payload)? {
                return Ok(Self {
                    dir,
                    names,
                    held: Some((id, fd)),
                    released: false,
                });
            }
            let Some(verdict) = Self::judge_existing(dir, names, rules)? else {
                continue;
            };
            if start.elapsed() >= rules.bound {
                return Err(timed_out(dir, names, rules.bound, &verdict));
            }
            std::thread::sleep(rules.poll);
        }
    }

    /// Marker changes made under format 1's flock on `<name>.lock`, which
    /// the caller holds (`_format1`), instead of the short lock: the two
    /// share a name, so while format 1's empty file is there neither fizeau
    /// nor we can create the short lock, and every discocache process of
    /// either format is kept out by the flock. Nothing is created or
    /// removed.
    pub fn under_format1(
        dir: &'a TierDir,
        names: &'a Names,
        _format1: &crate::lock::SourceLock,
    ) -> Self {
        Self {
            dir,
            names,
            held: None,
            released: false,
        }
    }

    /// Judges the lock in the way and clears it if it may be cleared.
    /// `None` when it is gone (cleared, or released meanwhile): retry now.
    fn judge_existing(
        dir: &TierDir,
        names: &Names,
        rules: &LockRules,
    ) -> Result<Option<LockVerdict>> {
        let Some(file) = dir.read_small(&names.lock)? else {
            return Ok(None);
        };
        let age = SystemTime::now()
            .duration_since(file.mtime)
            .unwrap_or_default();
        let mut verdict = judge_lock(&file.bytes, age, rules, super::pid_alive);
        if matches!(verdict, LockVerdict::OldUnparsable(_)) && file.flocked_by_other() {
            verdict = LockVerdict::Format1Holder;
        }
        if !verdict.clears() {
            return Ok(Some(verdict));
        }
        if dir.remove_if_same(&names.lock, file.id)? {
            tracing::info!(
                "cleared fizeau's lock {}: {verdict:?}",
                dir.path_of(&names.lock).display()
            );
        }
        Ok(None)
    }

    /// The tier directory.
    pub fn dir(&self) -> &'a TierDir {
        self.dir
    }

    /// The source's file names.
    pub fn names(&self) -> &'a Names {
        self.names
    }

    /// Deletes the lock if it is still ours. Returns whether it was.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be removed.
    pub fn release(mut self) -> Result<bool> {
        self.released = true;
        self.remove_if_ours()
    }

    fn remove_if_ours(&self) -> Result<bool> {
        let Some((id, _)) = &self.held else {
            return Ok(true);
        };
        let removed = self.dir.remove_if_same(&self.names.lock, *id)?;
        if !removed {
            tracing::warn!(
                "fizeau's lock {} was no longer ours at release; left alone",
                self.dir.path_of(&self.names.lock).display()
            );
        }
        Ok(removed)
    }
}

impl Drop for ShortLock<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = self.remove_if_ours() {
            tracing::warn!("cannot release fizeau's lock: {e}");
        }
    }
}

fn timed_out(dir: &TierDir, names: &Names, bound: Duration, verdict: &LockVerdict) -> Error {
    let holder = match verdict {
        LockVerdict::Live(pid) => format!("held by live pid {pid}"),
        LockVerdict::YoungUnparsable(age) => {
            format!("empty or unparsable, written {age:?} ago (a leftover is cleared once older)")
        }
        LockVerdict::Format1Holder => {
            "empty and flocked by a format 1 discocache process refreshing".to_owned()
        }
        other => format!("{other:?}"),
    };
    let cause = io::Error::new(
        io::ErrorKind::TimedOut,
        format!("gave up after {bound:?}: {holder}"),
    );
    Error::io("take fizeau's lock", dir.path_of(&names.lock), cause)
}

#[cfg(test)]
#[path = "lock_tests.rs"]
mod tests;
