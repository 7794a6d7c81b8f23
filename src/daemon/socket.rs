//! The listening socket: taken from systemd (`LISTEN_FDS`, fd 3) or bound
//! at the socket path with mode 0600. A socket file left by a dead daemon
//! is replaced; a live daemon on the path is never displaced. A guard
//! removes the file we bound when the daemon ends.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::net::UnixListener;

/// Mode of a socket we bind.
const SOCKET_MODE: u32 = 0o600;

/// A listening socket and, when we bound it, the guard that removes it.
#[derive(Debug)]
pub(crate) struct Listening {
    pub listener: UnixListener,
    pub guard: Option<SocketGuard>,
}

/// Removes the socket file on drop, if it is still the one we bound.
#[derive(Debug)]
pub(crate) struct SocketGuard {
    path: PathBuf,
    inode: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The socket systemd passed, else a new one bound at `path`. Must run
/// inside the runtime.
///
/// # Errors
///
/// When another daemon answers at `path`, when `path` is something other
/// than a socket, or when binding fails.
pub(crate) fn listen(path: &Path) -> anyhow::Result<Listening> {
    if let Some(fd) = systemd_socket()? {
        // SAFETY: systemd passes us fd 3 open and owned by this process
        // (LISTEN_PID is our pid); nothing else in the process uses it.
        let std = unsafe { StdListener::from_raw_fd(fd) };
        std.set_nonblocking(true)
            .context("set the systemd socket non-blocking")?;
        let listener = UnixListener::from_std(std).context("use the socket passed by systemd")?;
        tracing::info!("listening on the socket passed by systemd");
        return Ok(Listening {
            listener,
            guard: None,
        });
    }
    clear_stale(path)?;
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        // Created private; an existing directory is left as it is.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create the socket directory {}", dir.display()))?;
    }
    let std =
        StdListener::bind(path).with_context(|| format!("bind the socket {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("set mode 0600 on {}", path.display()))?;
    let inode = fs::symlink_metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino();
    std.set_nonblocking(true)
        .context("set the socket non-blocking")?;
    let listener = UnixListener::from_std(std).context("register the socket")?;
    let guard = SocketGuard {
        path: path.to_path_buf(),
        inode,
    };
    tracing::info!("listening on {}", path.display());
    Ok(Listening {
        listener,
        guard: Some(guard),
    })
}

/// The first socket passed by systemd, if any. A descriptor that is not
/// an open socket is refused before anything takes ownership of it.
fn systemd_socket() -> anyhow::Result<Option<RawFd>> {
    let mut fds = sd_notify::listen_fds().context("read LISTEN_FDS")?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    // SAFETY: fd is only inspected here; ownership is taken by the caller.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let stat = nix::sys::stat::fstat(borrowed)
        .with_context(|| format!("LISTEN_FDS names fd {fd}, which is not open"))?;
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    anyhow::ensure!(
        kind == nix::sys::stat::SFlag::S_IFSOCK,
        "LISTEN_FDS names fd {fd}, which is not a socket"
    );
    Ok(Some(fd))
}

/// Removes a socket file nobody answers on; refuses to touch a live one or
/// anything that is not a socket.
fn clear_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    match StdStream::connect(path) {
        Ok(_) => bail!("another daemon is already serving on {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing the stale socket {}", path.display());
            fs::remove_file(path)
                .with_context(|| format!("remove the stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("check the existing socket {}", path.display())),
    }
}
