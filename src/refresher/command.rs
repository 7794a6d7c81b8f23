//! The `command` refresher: run an argv (no shell) and take what it prints.
//!
//! # Process group
//!
//! The command starts as the leader of a new process group (with `pty`, of a
//! new session), stdin `/dev/null`, stdout and stderr piped back to us. The
//! whole group, grandchildren included, is SIGKILLed:
//!
//! - as soon as the leader exits, before it is reaped (so its pid, which is
//!   the group id, cannot have been reused), so a background grandchild that
//!   keeps stdout open cannot keep the refresh waiting;
//! - when stdout passes [`CommandSpec::max_output`] (a flood fails fast and
//!   never fills memory);
//! - when the deadline passes ("deadline of 2s exceeded; process group
//!   killed");
//! - when the future returned by [`run`] is dropped before it completes (a
//!   drop guard), e.g. by a caller's own timeout or cancellation.
//!
//! Nothing that stayed in the group outlives the refresh; a process that
//! moves itself to another group or session escapes, as it would any
//! supervisor that works by process group.
//!
//! Only the last 2 KiB of stderr are kept, for the error message. Every
//! descriptor we create is close-on-exec, so one refresher's child never
//! inherits another's pipes or a lock held by this process.
//!
//! In plain mode stdout is returned verbatim; the cache checks it is JSON.
//!
//! # Pseudo-terminal (`pty = true`)
//!
//! For tools that only print on a terminal. The child gets a fresh 250x50
//! pseudo-terminal as stdin, stdout, stderr and controlling terminal (nothing
//! is ever typed on it, so a tool that waits for input meets the deadline). The
//! master side is read until the slave is closed everywhere (same cap, same
//! deadline, same group kill). Terminal escapes are stripped, CRLF becomes
//! LF, and the last complete JSON object or array in the transcript is the
//! result: a banner before it and a prompt after it are ignored. On failure
//! the end of the transcript stands in for the stderr tail.

mod extract;
pub mod group;
mod output;
mod pty;

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use self::group::{ExitReceiver, Group};
use self::output::{ReadError, Reader};
use super::{DEFAULT_MAX_OUTPUT, FetchError};

/// Bytes of stderr (or terminal output) kept for an error message.
const STDERR_TAIL: usize = 2 << 10;

/// A command to run for a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    /// Run under a pseudo-terminal.
    pub pty: bool,
    /// Most stdout bytes accepted; more is a failure.
    pub max_output: usize,
}

impl CommandSpec {
    /// A plain (non-pty) command with the default output cap.
    pub fn new(argv: Vec<String>) -> Self {
        Self {
            argv,
            pty: false,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }
}

/// Runs the command and returns its stdout (with `pty`, the last JSON value
/// it printed on the terminal).
///
/// The command's process group is killed when this returns, on every path,
/// and when the future is dropped early.
///
/// # Errors
///
/// A one-line [`FetchError`] when `argv` is empty, the program cannot be
/// started, it exits non-zero or by a signal (with the stderr tail), stdout
/// passes `max_output`, `timeout` passes, or (with `pty`) the terminal output
/// holds no JSON value.
pub async fn run(spec: &CommandSpec, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let Some(program) = spec.argv.first() else {
        return Err(FetchError::new("empty command: argv needs a program"));
    };
    let deadline = Instant::now().checked_add(timeout);
    let mut running = Running::start(spec)
        .map_err(|e| FetchError::new(format!("cannot run `{program}`: {e}")))?;
    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, running.finish(spec)).await,
        None => Ok(running.finish(spec).await),
    };
    running.group.kill();
    match outcome {
        Ok(result) => result.map_err(|failure| failure.into_error(program)),
        Err(_elapsed) => Err(FetchError::new(format!(
            "`{program}`: deadline of {} exceeded; process group killed",
            humantime::format_duration(timeout)
        ))),
    }
}

/// What went wrong, before the program name is put in front.
#[derive(Debug)]
enum Failure {
    /// Stdout passed the cap.
    OverCap(usize),
    /// Reading output failed.
    Read(&'static str, io::Error),
    /// The reaper thread vanished or could not wait for the child.
    Wait(Option<io::Error>),
    /// The command exited unsuccessfully.
    Exit(ExitStatus, String),
    /// A pty command printed no JSON value.
    NoJson(String),
}

impl Failure {
    /// The one-line error for `program`.
    fn into_error(self, program: &str) -> FetchError {
        let message = match self {
            Self::OverCap(cap) => {
                format!("`{program}`: output exceeded the {cap}-byte cap; process group killed")
            }
            Self::Read(what, e) => format!("`{program}`: reading {what}: {e}"),
            Self::Wait(Some(e)) => format!("`{program}`: cannot wait for it: {e}"),
            Self::Wait(None) => format!("`{program}`: lost track of the process"),
            Self::Exit(status, tail) => exit_message(program, status, &tail),
            Self::NoJson(message) => format!("`{program}`: {message}"),
        };
        FetchError::new(message)
    }
}

/// "`prog` exited with status 2: tail" or "`prog` was killed by SIGTERM".
fn exit_message(program: &str, status: ExitStatus, tail: &str) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signo)) => match Signal::try_from(signo) {
            Ok(signal) => format!("was killed by {}", signal.as_str()),
            Err(_) => format!("was killed by signal {signo}"),
        },
        (None, None) => format!("ended with {status}"),
    };
    if tail.is_empty() {
        format!("`{program}` {how}")
    } else {
        format!("`{program}` {how}: {tail}")
    }
}

/// A started command: its group guard, exit status and output readers.
struct Running {
    /// Kills the group when dropped (early drop of [`run`]'s future).
    group: Group,
    exit: ExitReceiver,
    /// Stdout, or the pty master.
    output: Reader,
    /// Stderr; `None` under a pty, where it shares the terminal.
    stderr: Option<Reader>,
}

impl Running {
    /// Spawns the command described by `spec` (which has a program).
    fn start(spec: &CommandSpec) -> io::Result<Self> {
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..]);
        let hook = group::current_hook();
        if spec.pty {
            let pty = pty::open_pty()?;
            pty::attach(&mut cmd, &pty.slave)?;
            let spawned = Group::spawn(cmd, hook)?;
            // Our copies of the slave must close, or the master never sees EOF.
            drop(pty.slave);
            return Ok(Self {
                group: spawned.group,
                exit: spawned.exit,
                output: Reader::new(pty.master)?,
                stderr: None,
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let spawned = Group::spawn(cmd, hook)?;
        let (Some(stdout), Some(stderr)) = (spawned.stdout, spawned.stderr) else {
            return Err(io::Error::other("stdout or stderr pipe missing"));
        };
        Ok(Self {
            group: spawned.group,
            exit: spawned.exit,
            output: Reader::new(stdout.into())?,
            stderr: Some(Reader::new(stderr.into())?),
        })
    }
}

impl Running {
    /// Collects output and exit status; the caller bounds it by the deadline.
    async fn finish(&mut self, spec: &CommandSpec) -> Result<Vec<u8>, Failure> {
        let cap = spec.max_output;
        let output = async {
            self.output.read_capped(cap).await.map_err(|e| match e {
                ReadError::OverCap => Failure::OverCap(cap),
                ReadError::Io(e) => Failure::Read("output", e),
            })
        };
        let status = async {
            match (&mut self.exit).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(e)) => Err(Failure::Wait(Some(e))),
                Err(_) => Err(Failure::Wait(None)),
            }
        };
        match &self.stderr {
            Some(stderr) => {
                let tail = async {
                    let tail = stderr.read_tail(STDERR_TAIL).await;
                    tail.map_err(|e| Failure::Read("stderr", e))
                };
                let (stdout, tail, status) = tokio::try_join!(output, tail, status)?;
                check_exit(status, || {
                    extract::one_line(output::tail_of(&tail, STDERR_TAIL))
                })?;
                Ok(stdout)
            }
            None => {
                let (raw, status) = tokio::try_join!(output, status)?;
                check_exit(status, || terminal_tail(&raw))?;
                extract::json_from_terminal(&raw).map_err(Failure::NoJson)
            }
        }
    }
}

/// `Ok` for a successful exit, else the failure with the tail `tail` makes.
fn check_exit(status: ExitStatus, tail: impl FnOnce() -> String) -> Result<(), Failure> {
    if status.success() {
        Ok(())
    } else {
        Err(Failure::Exit(status, tail()))
    }
}

/// The end of a terminal transcript, cleaned, on one line.
fn terminal_tail(raw: &[u8]) -> String {
    let text = extract::clean_terminal(raw);
    extract::one_line(output::tail_of(text.as_bytes(), STDERR_TAIL))
}
