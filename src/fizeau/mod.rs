//! fizeau's file protocol, acted out in Rust, for on-disk format 2: one
//! root shared with fizeau's `discoverycache` package (DESIGN §4-§6; its
//! behaviour is described in `../shared/peers/fizeau/BEHAVIOUR.md`).
//!
//! - [`lock`]: fizeau's short `<name>.lock` (created `O_EXCL` with `{pid,
//!   started_at}`, deleted right after), taken as fizeau takes it, minus its
//!   flaws: we delete it only while it is still ours, clear a lock whose pid
//!   is dead, clear an empty or unparsable one once it is old (fizeau never
//!   does, which blocks it for good), and give up after a bound with an
//!   error that names the file and its holder.
//! - [`marker`]: `<name>.refreshing`, the single-flight marker shared with
//!   fizeau: parsed with fizeau's rules (unparsable means absent; our
//!   `token` and `pgid` optional), judged with fizeau's rules (pid alive;
//!   deadline plus twice the refresh deadline; the failure cooldown), and
//!   written so that fizeau parses it. Every change is made under the short
//!   lock ([`lock::ShortLock`] is the proof).
//! - [`prune`]: which files fizeau's `Prune` treats as sources, and the
//!   recovery of fizeau's fixed-name `<name>.json.tmp`.
//! - `dir`: the tier directory, opened once; files in it are reached
//!   relative to it with `O_NOFOLLOW | O_NONBLOCK`, never followed.
//!
//! Everything here is synchronous (the lock polls for at most its bound);
//! async callers go through `spawn_blocking`.
//!
//! The claim path, recovery and prune use it through `crate::claim`; a
//! few parts serve only tests so far, hence `#[allow(dead_code)]` on it
//! in `lib.rs`.

pub mod dir;
pub mod lock;
pub mod marker;
pub mod prune;

use std::time::Duration;

/// fizeau gives up on its short lock after this (`lockAcquisitionTimeout`).
pub const FIZEAU_LOCK_TIMEOUT: Duration = Duration::from_millis(100);
/// fizeau's marker grace is this many refresh deadlines past the marker's
/// deadline (`stalenessMultiplier`).
pub const STALENESS_MULTIPLIER: u32 = 2;
/// A failed marker's deadline is the failure time plus this
/// (`refreshFailureCooldown`); it is a retry cooldown, not work in flight.
pub const FAILURE_COOLDOWN: Duration = Duration::from_millis(250);

/// True when a process with this pid exists, as fizeau's `processAlive`
/// judges it: signal 0 succeeds or fails with `EPERM` (another user's
/// process). A pid of zero or less is dead; so is one that does not fit.
/// (An unreaped zombie counts as alive, as it does for fizeau.)
pub fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// File names of one source in its tier directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The source's name (the file stem).
    pub stem: String,
    /// `<name>.lock`: fizeau's short lock.
    pub lock: String,
    /// `<name>.refreshing`: the shared marker.
    pub marker: String,
    /// `<name>.json.tmp`: fizeau's fixed-name temp file.
    pub fizeau_tmp: String,
}

impl Names {
    /// The names for source `name`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] (`InvalidInput`) when `name` is not a plain file
    /// name: empty, `.`, `..`, or containing `/` or NUL.
    pub fn new(name: &str) -> crate::Result<Self> {
        if !dir::plain_name(name) {
            let cause =
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain source name");
            return Err(crate::Error::io(
                "build the file names of source",
                name,
                cause,
            ));
        }
        Ok(Self {
            stem: name.to_owned(),
            lock: format!("{name}.lock"),
            marker: format!("{name}.refreshing"),
            fizeau_tmp: format!("{name}.json.tmp"),
        })
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_alive_judges_as_fizeau_does() {
        assert!(pid_alive(i64::from(std::process::id())));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
        assert!(!pid_alive(i64::from(i32::MAX) + 1));
        assert!(!pid_alive(testing::dead_pid()));
        // pid 1 belongs to root; from another user it fails with EPERM,
        // which still counts as alive.
        assert!(pid_alive(1));
    }

    #[test]
    fn names_refuse_anything_but_a_plain_name() {
        let n = Names::new("openrouter").unwrap();
        assert_eq!(n.lock, "openrouter.lock");
        assert_eq!(n.marker, "openrouter.refreshing");
        assert_eq!(n.fizeau_tmp, "openrouter.json.tmp");
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            let err = Names::new(bad).unwrap_err().to_string();
            assert!(err.contains("not a plain source name"), "{bad:?}: {err}");
        }
    }
}
