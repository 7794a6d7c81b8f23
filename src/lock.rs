//! The per-source `flock(2)` that owns a refresh.
//!
//! The lock file is persistent and empty. Holding an exclusive flock on it is
//! owning the source's refresh and commit; the kernel drops it when the
//! holder dies, so a crash never blocks the next claimant. The descriptor is
//! close-on-exec, so a refresher's child never inherits it.

use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::beneath::{self, Access, Dir};
use crate::claim::PayloadStamp;
use crate::error::{Error, Result};

mod wait;

pub(crate) use wait::acquire as acquire_waiting;

/// A held exclusive lock; released on drop.
#[derive(Debug)]
pub struct SourceLock {
    file: File,
    path: PathBuf,
    /// The source's payload as it was before the lock was asked for.
    payload_before: Option<PayloadStamp>,
}

impl SourceLock {
    /// Takes the lock without blocking; `Ok(None)` when someone holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock file cannot be opened or locked.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>> {
        let before = stamp_before(path);
        loop {
            let file = open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
            }
            if let Some(lock) = Self::still_linked(file, path)? {
                return Ok(Some(lock.with_stamp(before)));
            }
        }
    }

    /// Takes the lock, blocking the calling thread until it is free (see
    /// `acquire_waiting` for the bounded wait the async side uses).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock file cannot be opened or locked.
    pub fn acquire_blocking(path: &Path) -> Result<Self> {
        let before = stamp_before(path);
        loop {
            let file = open(path)?;
            file.lock().map_err(|e| Error::io("lock", path, e))?;
            if let Some(lock) = Self::still_linked(file, path)? {
                return Ok(lock.with_stamp(before));
            }
        }
    }

    /// A lock is only good if its file is still the one at `path`: prune
    /// may have removed it between our open and our lock.
    fn still_linked(file: File, path: &Path) -> Result<Option<Self>> {
        let held = file
            .metadata()
            .map_err(|e| Error::io("stat lock", path, e))?;
        let (dir, name) = beneath::split(path)?;
        let Some(dir) = Dir::open(dir)? else {
            return Ok(None);
        };
        match dir.stat(name)? {
            Some(now) if now.st_ino == held.ino() && now.st_dev == held.dev() => Ok(Some(Self {
                file,
                path: path.to_owned(),
                payload_before: None,
            })),
            _ => Ok(None),
        }
    }

    fn with_stamp(mut self, payload_before: Option<PayloadStamp>) -> Self {
        self.payload_before = payload_before;
        self
    }

    /// The source's payload as it was before this lock was asked for
    /// (`None` when the lock file is not at a source's place): a payload
    /// committed since then is someone else's refresh, which a refresh
    /// asked for before it joins instead of running again.
    pub fn payload_before(&self) -> Option<PayloadStamp> {
        self.payload_before
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file while holding it (prune). Others that open the
    /// path afterwards get a new file; the re-check in acquire makes anyone
    /// who opened the old one retry.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be removed.
    pub fn unlink(self) -> Result<()> {
        crate::store::remove_if_present(&self.path, "remove lock").map(drop)
    }
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The payload beside the lock file `path`, as it is now.
fn stamp_before(path: &Path) -> Option<PayloadStamp> {
    crate::layout::payload_of_lock(path).map(|p| PayloadStamp::at(&p))
}

/// Opens (creating) the lock file without following a symlink or blocking
/// on a FIFO; anything but a regular file is refused.
fn open(path: &Path) -> Result<File> {
    let op = "open lock";
    let (dir, name) = beneath::split(path)?;
    let dir =
        Dir::open(dir)?.ok_or_else(|| Error::io(op, path, std::io::ErrorKind::NotFound.into()))?;
    dir.open_file(name, Access::Create, op)?
        .ok_or_else(|| Error::io(op, path, std::io::ErrorKind::NotFound.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_fails_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = SourceLock::try_acquire(&path).unwrap().expect("free");
        assert!(SourceLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(SourceLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn blocking_acquire_wakes_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = SourceLock::try_acquire(&path).unwrap().unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || SourceLock::acquire_blocking(&p).map(drop));
        drop(held);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn unlinked_lock_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = SourceLock::try_acquire(&path).unwrap().unwrap();
        let stale = open(&path).unwrap();
        held.unlink().unwrap();
        stale.try_lock().unwrap();
        assert!(SourceLock::still_linked(stale, &path).unwrap().is_none());
    }

    #[test]
    fn lock_symlink_is_refused_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let path = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = SourceLock::try_acquire(&path).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    what: "a symlink",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!target.exists());
    }

    #[test]
    fn fifo_lock_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = SourceLock::acquire_blocking(&path).unwrap_err();
        assert!(
            matches!(err, Error::Refused { what: "a FIFO", .. }),
            "{err}"
        );
    }
}
