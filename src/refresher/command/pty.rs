//! Pseudo-terminal setup for `pty = true` commands.
//!
//! Both ends are opened close-on-exec, so no other child of this process
//! inherits them; the child gets the slave as its stdin, stdout and stderr
//! (through `dup2`, which clears the flag on fds 0-2 only), becomes a session
//! leader and takes the slave as its controlling terminal.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

/// Window size given to the terminal, wide so tools do not wrap lines.
const COLUMNS: u16 = 250;
/// Rows of the terminal.
const ROWS: u16 = 50;

/// The two ends of a fresh pseudo-terminal.
#[derive(Debug)]
pub(crate) struct Pty {
    /// The side we read.
    pub(crate) master: OwnedFd,
    /// The side the child gets.
    pub(crate) slave: OwnedFd,
}

/// Opens a pseudo-terminal pair, both ends close-on-exec, with a
/// `COLUMNS`x`ROWS` window.
///
/// # Errors
///
/// Any failing step, as an IO error.
pub(crate) fn open_pty() -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    set_window_size(&slave)?;
    Ok(Pty {
        master: master.into(),
        slave,
    })
}

/// Sets the terminal's window size.
fn set_window_size(slave: &OwnedFd) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: ROWS,
        ws_col: COLUMNS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid
    // for the duration of the call; the fd is open.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Points `cmd`'s stdio at `slave` and makes the child a session leader
/// with the slave as its controlling terminal.
///
/// The session leader is also its process group's leader, so the group can
/// be killed by the child's pid.
///
/// # Errors
///
/// Duplicating the slave descriptor.
pub(crate) fn attach(cmd: &mut Command, slave: &OwnedFd) -> io::Result<()> {
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setsid, ioctl); it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};

    fn is_cloexec(fd: &OwnedFd) -> bool {
        let flags = fcntl(fd, FcntlArg::F_GETFD).expect("F_GETFD");
        FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn both_ends_are_close_on_exec() {
        let pty = open_pty().expect("open pty");
        assert!(is_cloexec(&pty.master), "master is inherited across exec");
        assert!(is_cloexec(&pty.slave), "slave is inherited across exec");
    }

    #[test]
    fn window_is_wide() {
        let pty = open_pty().expect("open pty");
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` to a valid pointer.
        let rc = unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        assert_eq!((size.ws_col, size.ws_row), (COLUMNS, ROWS));
    }
}
