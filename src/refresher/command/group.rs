//! A spawned command's process group: a reaper thread and a kill guard.
//!
//! The child is the leader of its own process group (pgid = its pid). It is
//! spawned *by* a dedicated reaper thread, with `PR_SET_PDEATHSIG(SIGKILL)`:
//! the kernel sends that signal when the thread that forked the child exits,
//! and the reaper thread lives exactly as long as the child, so the leader
//! dies with its holder process (SIGKILL, Ctrl-C, panic) and never sooner.
//! Grandchildren do not inherit the death signal; they are killed by the
//! next claimant of the source, which finds the group in the holder's
//! marker (see [`GroupHook`] and [`kill_abandoned`]).
//!
//! The reaper thread waits for the leader to exit *without reaping it*
//! (`waitid` with `WNOWAIT`), kills the whole group, then reaps it. While the
//! leader is unreaped its pid cannot be reused, so a `killpg` on it can only
//! ever hit our group; the `Group` guard shares a flag with the thread under
//! a mutex so it never signals a pid that has already been reaped.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::{Pid, getpgrp};
use tokio::sync::oneshot;

/// The exit status of the group leader, sent by the reaper thread.
pub(crate) type ExitReceiver = oneshot::Receiver<io::Result<ExitStatus>>;

/// Told the process group id of every command started while it is in scope
/// (see [`with_hook`]); the cache uses it to record the group in the
/// source's marker. Called on the reaper thread right after the spawn.
pub type GroupHook = Arc<dyn Fn(i32) + Send + Sync>;

tokio::task_local! {
    static HOOK: GroupHook;
}

/// Runs `fut` with `hook` told the process group of each command it starts.
pub async fn with_hook<F: Future>(hook: GroupHook, fut: F) -> F::Output {
    HOOK.scope(hook, fut).await
}

/// The hook of the current task, if any.
pub(crate) fn current_hook() -> Option<GroupHook> {
    HOOK.try_with(Arc::clone).ok()
}

/// SIGKILLs process group `pgid`, recorded by a refresh that ran between
/// `started` and `deadline` and whose holder is gone, unless the id is ours
/// or now names someone else's group. Returns whether a signal was sent.
///
/// A group's id is never given to a new process while any member of the
/// group lives. So when no process has that pid (or it is a zombie), what
/// is left of the group can only be the refresher's; when one runs, it is
/// the refresher's leader only if it started within the refresh.
///
/// # Errors
///
/// The error of `killpg` other than "no such group".
pub fn kill_abandoned(pgid: i32, started: SystemTime, deadline: SystemTime) -> nix::Result<bool> {
    if pgid <= 1 || Pid::from_raw(pgid) == getpgrp() {
        return Ok(false);
    }
    if let Some(leader_start) = running_since(pgid) {
        let slack = Duration::from_secs(1);
        let from = started.checked_sub(slack).unwrap_or(UNIX_EPOCH);
        if leader_start < from || leader_start > deadline + slack {
            return Ok(false);
        }
    }
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// When the process `pid` started, if it exists and is not a zombie.
fn running_since(pid: i32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // first (field 3), starttime field 22.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if matches!(fields.first(), Some(&("Z" | "X"))) {
        return None;
    }
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let since_boot = Duration::from_millis(ticks.checked_mul(1000)? / per_second.max(1));
    Some(UNIX_EPOCH + Duration::from_secs(boot) + since_boot)
}

/// What the reaper thread hands back once the child runs.
pub(crate) struct Spawned {
    pub(crate) group: Group,
    pub(crate) exit: ExitReceiver,
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: Option<ChildStderr>,
}

/// Owns a running command's process group: dropping it SIGKILLs the group.
#[derive(Debug)]
pub(crate) struct Group {
    pgid: Pid,
    /// True once the leader has been reaped (its pid may then be reused).
    reaped: Arc<Mutex<bool>>,
}

impl Group {
    /// Spawns `cmd` (which must make the child lead its own process group)
    /// from a new reaper thread, with a death signal tied to that thread;
    /// `hook` is told the group id before the thread starts waiting.
    ///
    /// # Errors
    ///
    /// The error of spawning the thread or the command.
    pub(crate) fn spawn(mut cmd: Command, hook: Option<GroupHook>) -> io::Result<Spawned> {
        die_with_parent(&mut cmd);
        let reaped = Arc::new(Mutex::new(false));
        let (exit_tx, exit) = oneshot::channel();
        let (start_tx, start_rx) = mpsc::channel();
        let flag = Arc::clone(&reaped);
        thread::Builder::new()
            .name("discocache-reap".to_owned())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(child) => child,
                    Err(e) => return drop(start_tx.send(Err(e))),
                };
                // Our copies of the child's descriptors (a pty slave) close now.
                drop(cmd);
                let pgid = child_pid(&child);
                if let Some(hook) = hook {
                    hook(pgid.as_raw());
                }
                let pipes = (child.stdout.take(), child.stderr.take());
                let _ = start_tx.send(Ok((pgid, pipes)));
                let _ = exit_tx.send(reap(child, &flag));
            })?;
        let (pgid, (stdout, stderr)) = start_rx.recv().map_err(|_| {
            io::Error::other("the reaper thread ended before the command started")
        })??;
        Ok(Spawned {
            group: Self { pgid, reaped },
            exit,
            stdout,
            stderr,
        })
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

/// Makes the child get SIGKILL when the thread that forks it ends, and
/// exit at once if its parent is already gone by the time that is set.
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_started_in_the_window_is_recognised() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pgid = i32::try_from(child.id()).expect("pid");
        let since = running_since(pgid).expect("running");
        let now = SystemTime::now();
        assert!(since <= now + Duration::from_secs(1) && since + Duration::from_secs(60) > now);
        // A recorded window long before it started: the id is someone else's.
        let long_ago = now - Duration::from_secs(3600);
        assert_eq!(kill_abandoned(pgid, long_ago, long_ago), Ok(false));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "killed a stranger"
        );
        assert_eq!(
            kill_abandoned(pgid, now - Duration::from_secs(5), now),
            Ok(true)
        );
        assert!(!child.wait().expect("wait").success());
        assert_eq!(running_since(pgid), None);
    }

    #[test]
    fn our_own_group_is_never_killed() {
        let own = getpgrp().as_raw();
        let now = SystemTime::now();
        assert_eq!(kill_abandoned(own, UNIX_EPOCH, now), Ok(false));
    }
}
