//! Which payload files changed since the daemon last asked: a private,
//! non-blocking inotify instance on the root and on each tier directory
//! that holds a payload the daemon serves from memory.
//!
//! The kernel queues an inotify event inside the system call that makes the
//! change (the `rename` of a commit, the `utimes` of an invalidation, a
//! write in place), before that call returns. So when the queue is empty,
//! no watched file changed since the queue was last read: a payload whose
//! stamp was checked after its directory was watched, and that no event
//! named since, is still the file on disk, without a `stat`. Asking whether
//! the queue is empty is one `ioctl`; a path walk and a `statx` cost more.
//!
//! The mask leaves out opens, reads and closes without a write, so readers
//! (the daemon's own loads, a `cat` of a payload) queue nothing. When the
//! queue overflows, or a watched directory is moved or deleted, every
//! payload counts as changed.
//!
//! What this cannot see, and a `stat` would: a payload written in place
//! through a hard link in another directory, or a parent of the root
//! renamed while the daemon runs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::layout::{Layout, payload_stem};

/// What a directory watch reports: every change to an entry, and the
/// directory itself going away.
fn dir_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// What reading the queue found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    /// The payload file `<tier>/<name>.json` changed (was replaced,
    /// touched, written, created or removed).
    Payload {
        /// Its tier.
        tier: String,
        /// Its name.
        name: String,
    },
    /// Anything may have changed: the queue overflowed, or a watched
    /// directory was moved, deleted or replaced.
    Everything,
}

/// The inotify instance and what it watches.
#[derive(Debug)]
pub(crate) struct Changes {
    inotify: Inotify,
    root: WatchDescriptor,
    /// Tier directories by tier, and the other way round.
    tiers: HashMap<String, WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, String>,
    /// The root was moved or deleted: its paths may name other files now,
    /// and no directory is watched again.
    root_gone: bool,
}

impl Changes {
    /// Watches the root of `layout`; `None` (logged) when inotify is not
    /// available, and then every `get` checks its payload with `stat`.
    pub fn new(layout: &Layout) -> Option<Self> {
        let made = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).and_then(|i| {
            let root = i.add_watch(layout.root(), dir_mask())?;
            Ok((i, root))
        });
        match made {
            Ok((inotify, root)) => Some(Self {
                inotify,
                root,
                tiers: HashMap::new(),
                by_wd: HashMap::new(),
                root_gone: false,
            }),
            Err(e) => {
                tracing::info!("payloads are checked with stat at every get: inotify: {e}");
                None
            }
        }
    }

    /// Watches `tier`'s directory `dir`, unless it is watched already;
    /// false when it cannot be (it does not exist yet, or the kernel's
    /// watch limit is reached).
    pub fn watch(&mut self, tier: &str, dir: &Path) -> bool {
        if self.root_gone {
            return false;
        }
        if self.tiers.contains_key(tier) {
            return true;
        }
        match self.inotify.add_watch(dir, dir_mask()) {
            Ok(wd) => {
                self.tiers.insert(tier.to_owned(), wd);
                self.by_wd.insert(wd, tier.to_owned());
                true
            }
            Err(e) => {
                tracing::debug!("cannot watch {}: {e}", dir.display());
                false
            }
        }
    }

    /// True when events wait in the queue: something watched changed since
    /// the last [`Self::drain`].
    pub fn pending(&self) -> bool {
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which
        // points to a live c_int; the descriptor is owned by `self`.
        let rc = unsafe {
            libc::ioctl(
                self.inotify.as_fd().as_raw_fd(),
                libc::FIONREAD,
                &raw mut waiting,
            )
        };
        // Should the ioctl ever fail, assume changes: a `stat` settles it.
        rc != 0 || waiting > 0
    }

    /// Reads every queued event and reports what it changed.
    pub fn drain(&mut self, mut each: impl FnMut(Changed)) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) if !events.is_empty() => events,
                Ok(_) | Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("reading payload changes: {e}");
                    return each(Changed::Everything);
                }
            };
            for event in events {
                if let Some(changed) = self.interpret(event.wd, event.mask, event.name.as_deref()) {
                    each(changed);
                }
            }
        }
    }

    /// What one event means for held payloads.
    fn interpret(
        &mut self,
        wd: WatchDescriptor,
        mask: AddWatchFlags,
        name: Option<&OsStr>,
    ) -> Option<Changed> {
        let gone = AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_IGNORED
            | AddWatchFlags::IN_UNMOUNT;
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            return Some(Changed::Everything);
        }
        if wd == self.root && mask.intersects(gone) {
            // The root itself moved or went: nothing is vouched for again.
            self.root_gone = true;
            return Some(Changed::Everything);
        }
        if wd == self.root {
            // A tier directory renamed, removed or created over: the paths
            // of its payloads may name other files now.
            let tier = name.and_then(|n| n.to_str())?;
            return self.forget_tier(tier);
        }
        let tier = self.by_wd.get(&wd)?.clone();
        if mask.intersects(gone) {
            return self.forget_tier(&tier);
        }
        let name = payload_name(name?)?;
        Some(Changed::Payload {
            tier,
            name: name.to_owned(),
        })
    }

    /// Stops watching a tier's directory (it is watched again at the next
    /// load from it); everything counts as changed.
    fn forget_tier(&mut self, tier: &str) -> Option<Changed> {
        let wd = self.tiers.remove(tier)?;
        self.by_wd.remove(&wd);
        // The watch may be gone already (IN_IGNORED); that is fine.
        let _ = self.inotify.rm_watch(wd);
        Some(Changed::Everything)
    }
}

/// The source whose payload an entry name would be, if any (a sidecar's
/// name gives a name no source has, unless one is called `<name>.meta`:
/// then it counts as changed too, which only costs a `stat`).
fn payload_name(file: &OsStr) -> Option<&str> {
    payload_stem(std::str::from_utf8(file.as_bytes()).ok()?)
}

#[cfg(test)]
mod tests;
