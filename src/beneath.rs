//! Opening files under the cache root without ever leaving it.
//!
//! The root is resolved once, when it is opened ([`open_root`]): its path
//! may go through symlinks the user set up, and the resolved path has none.
//! Below it, nothing is followed: every directory is opened with no symlink
//! allowed in any component (`openat2` with `RESOLVE_NO_SYMLINKS`, or
//! `O_NOFOLLOW` on each component where the kernel lacks `openat2`), must be
//! owned by the effective uid, and every file is then reached relative to
//! that directory's descriptor with `O_NOFOLLOW | O_NONBLOCK` and checked
//! with `fstat` to be a regular file. A symlink, FIFO, device, socket or
//! directory where a file belongs is refused with [`Error::Refused`] and is
//! never followed, blocked on, chmodded, timestamped or deleted through.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Mode of the root and of the directories discocache creates under it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file discocache creates.
pub const FILE_MODE: u32 = 0o600;

/// Set once `openat2` turned out to be missing (old kernel) or filtered.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

mod check;
mod dir;
#[cfg(test)]
mod tests;

pub use check::kind_name;
use check::{check_uid, explain_refusal, refused};
pub use dir::{Access, Dir};

/// Creates the root (mode 0700) if missing, resolves its path once, and
/// checks it: a directory owned by the effective uid. Returns the resolved
/// path, under which nothing is followed any more.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be created or resolved, [`Error::Refused`]
/// when it is not a directory, [`Error::NotOwned`] when another user owns it.
pub fn open_root(root: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(root)
        .map_err(|e| Error::io("create directory", root, e))?;
    let resolved = fs::canonicalize(root).map_err(|e| Error::io("resolve root", root, e))?;
    ensure_dir(&resolved)?;
    Ok(resolved)
}

/// Opens (creating it, mode 0700, when missing) a directory under the root
/// and tightens its mode to 0700.
///
/// # Errors
///
/// As [`Dir::open`]; [`Error::Io`] when it cannot be created or its mode set.
pub fn ensure_dir(path: &Path) -> Result<Dir> {
    let dir = match Dir::open(path)? {
        Some(dir) => dir,
        None => create_dir(path)?,
    };
    dir.tighten()?;
    Ok(dir)
}

fn create_dir(path: &Path) -> Result<Dir> {
    let (parent, name) = split(path)?;
    let parent_dir = match Dir::open(parent)? {
        Some(dir) => dir,
        None => ensure_dir(parent)?,
    };
    parent_dir.mkdir(name)?;
    Dir::open(path)?.ok_or_else(|| {
        let gone = io::Error::from(io::ErrorKind::NotFound);
        Error::io("open directory", path, gone)
    })
}

/// Splits a path into its directory and file name.
///
/// # Errors
///
/// [`Error::Io`] (invalid input) for a path without a file name.
pub fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok((parent, name))
        }
        _ => {
            let bad = io::Error::new(io::ErrorKind::InvalidInput, "no file name");
            Err(Error::io("open", path, bad))
        }
    }
}

/// Opens an existing file for reading in one call, with no symlink in any
/// component and without blocking, and checks it: a regular file owned by
/// the effective uid (a file planted by another user is refused even where
/// a directory's owner could not be checked). `Ok(None)` when it or its
/// directory does not exist. This is the read path: one open, one fstat.
///
/// # Errors
///
/// [`Error::Refused`], [`Error::NotOwned`], or [`Error::Io`].
pub fn open_regular(path: &Path, op: &'static str) -> Result<Option<(File, fs::Metadata)>> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let file = match open_no_symlinks(path, flags) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Ok(None),
        // A socket (or a device without a driver) cannot be opened: ENXIO.
        Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENXIO) => return Err(explain_refusal(op, path)),
        Err(e) => return Err(Error::io(op, path, e.into())),
    };
    let meta = file.metadata().map_err(|e| Error::io(op, path, e))?;
    if !meta.file_type().is_file() {
        return Err(refused(op, path.to_owned(), kind_name(meta.file_type())));
    }
    check_uid(path, meta.uid())?;
    Ok(Some((file, meta)))
}

/// Opens `path` with no symlink allowed in any component.
fn open_no_symlinks(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(nix::fcntl::AT_FDCWD, path, how) {
            Err(Errno::ENOSYS | Errno::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other,
        }
    }
    open_per_component(path, flags)
}

/// The fallback: each component opened with `O_NOFOLLOW` relative to the
/// one before.
fn open_per_component(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let step = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = nix::fcntl::open(start, step, Mode::empty())?;
    let parts: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect();
    let Some((last, inner)) = parts.split_last() else {
        return nix::fcntl::open(start, flags, Mode::empty());
    };
    for part in inner {
        dir = openat(&dir, *part, step, Mode::empty())?;
    }
    openat(&dir, *last, flags, Mode::from_bits_truncate(FILE_MODE))
}
