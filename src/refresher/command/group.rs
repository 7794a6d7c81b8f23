//! A spawned command's process group: a reaper thread and a kill guard.
//!
//! The child is the leader of its own process group (pgid = its pid). A
//! dedicated thread waits for it to exit *without reaping it* (`waitid` with
//! `WNOWAIT`), kills the whole group, then reaps it. While the leader is
//! unreaped its pid cannot be reused, so a `killpg` on it can only ever hit
//! our group; the [`Group`] guard shares a flag with the thread under a mutex
//! so it never signals a pid that has already been reaped.

use std::io;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// The exit status of the group leader, sent by the reaper thread.
pub(crate) type ExitReceiver = oneshot::Receiver<io::Result<ExitStatus>>;

/// Owns a running command's process group: dropping it SIGKILLs the group.
#[derive(Debug)]
pub(crate) struct Group {
    pgid: Pid,
    /// True once the leader has been reaped (its pid may then be reused).
    reaped: Arc<Mutex<bool>>,
}

impl Group {
    /// Takes charge of `child`, which must lead its own process group, and
    /// returns the guard and the receiver of its exit status.
    ///
    /// # Errors
    ///
    /// The error of spawning the reaper thread; the group is then killed
    /// and the child reaped before returning.
    pub(crate) fn watch(child: Child) -> io::Result<(Self, ExitReceiver)> {
        let pgid = child_pid(&child);
        let reaped = Arc::new(Mutex::new(false));
        let (tx, rx) = oneshot::channel();
        let flag = Arc::clone(&reaped);
        let spawned = thread::Builder::new()
            .name("discocache-reap".to_owned())
            .spawn(move || {
                let _ = tx.send(reap(child, &flag));
            });
        if let Err(e) = spawned {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = waitpid(pgid, None);
            return Err(e);
        }
        Ok((Self { pgid, reaped }, rx))
    }

    /// SIGKILLs every process of the group, unless its leader has already
    /// been reaped (the group was then killed when the leader exited).
    pub(crate) fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            // ESRCH (nobody left) is fine; nothing else can fail here.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child's pid as a nix `Pid`.
fn child_pid(child: &Child) -> Pid {
    // A pid always fits in pid_t; the cast only changes the type.
    Pid::from_raw(child.id() as libc::pid_t)
}

/// Waits for the leader to exit, kills what is left of its group while the
/// leader is still an unreaped zombie, then reaps it.
fn reap(mut child: Child, reaped: &Mutex<bool>) -> io::Result<ExitStatus> {
    let pid = child_pid(&child);
    let exited = loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    let mut reaped = reaped.lock().unwrap_or_else(PoisonError::into_inner);
    if exited.is_ok() {
        let _ = killpg(pid, Signal::SIGKILL);
    }
    let status = child.wait();
    *reaped = true;
    status
}
