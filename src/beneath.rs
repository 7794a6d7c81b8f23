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
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result};

/// Mode of the root and of the directories discocache creates under it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file discocache creates.
pub const FILE_MODE: u32 = 0o600;

/// Set once `openat2` turned out to be missing (old kernel) or filtered.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A directory under the root, opened without following symlinks and
/// checked to be a directory owned by the effective uid.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// How [`Dir::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// Read and write, created (mode 0600) when missing.
    Create,
}

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
    let mode = dir.stat_self()?.st_mode & 0o777;
    if mode != DIR_MODE {
        fchmod(&dir.fd, Mode::from_bits_truncate(DIR_MODE))
            .map_err(|e| Error::io("set mode 0700 on", path, e.into()))?;
    }
    Ok(dir)
}

fn create_dir(path: &Path) -> Result<Dir> {
    let (parent, name) = split(path)?;
    let parent_dir = match Dir::open(parent)? {
        Some(dir) => dir,
        None => ensure_dir(parent)?,
    };
    match mkdirat(&parent_dir.fd, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(Error::io("create directory", path, e.into())),
    }
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

impl Dir {
    /// Opens a directory with no symlink in any component of `path`.
    /// `Ok(None)` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] when a component is a symlink or the path is not a
    /// directory, [`Error::NotOwned`] when another user owns it,
    /// [`Error::Io`] otherwise.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match open_no_symlinks(path, flags) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(explain_refusal("open directory", path));
            }
            Err(e) => return Err(Error::io("open directory", path, e.into())),
        };
        let dir = Self {
            fd,
            path: path.to_owned(),
        };
        check_owner(path, &dir.stat_self()?)?;
        Ok(Some(dir))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stat_self(&self) -> Result<FileStat> {
        fstat(&self.fd).map_err(|e| Error::io("stat directory", &self.path, e.into()))
    }

    /// Opens the file `name` in this directory, never following a symlink
    /// and never blocking on a FIFO, and checks it is a regular file.
    /// `Ok(None)` when it does not exist (with [`Access::Read`]).
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] when it is not a regular file, [`Error::Io`]
    /// otherwise.
    pub fn open_file(
        &self,
        name: &OsStr,
        access: Access,
        op: &'static str,
    ) -> Result<Option<File>> {
        let path = self.path.join(name);
        let base = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let flags = match access {
            Access::Read => base | OFlag::O_RDONLY,
            Access::Create => base | OFlag::O_RDWR | OFlag::O_CREAT,
        };
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(FILE_MODE)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if access == Access::Read => return Ok(None),
            Err(Errno::ELOOP) => return Err(refused(op, path, "a symlink")),
            Err(e) => return Err(Error::io(op, path, e.into())),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Error::io(op, &path, e))?;
        if !meta.file_type().is_file() {
            return Err(refused(op, path, kind_name(meta.file_type())));
        }
        Ok(Some(file))
    }

    /// What `name` is, without following it; `Ok(None)` when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be examined.
    pub fn stat(&self, name: &OsStr) -> Result<Option<FileStat>> {
        match fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Error::io("stat", self.path.join(name), e.into())),
        }
    }

    /// Fails with [`Error::Refused`] when `name` exists and is not a
    /// regular file.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`], or [`Error::Io`] when it cannot be examined.
    pub fn check_regular(&self, name: &OsStr, op: &'static str) -> Result<()> {
        match self.stat(name)? {
            Some(st) if !is_regular(&st) => Err(refused(op, self.path.join(name), mode_name(&st))),
            _ => Ok(()),
        }
    }

    /// Removes `name` if it is a regular file; `Ok(false)` when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] when it is something else, [`Error::Io`] when it
    /// cannot be removed.
    pub fn remove_file(&self, name: &OsStr, op: &'static str) -> Result<bool> {
        if self.stat(name)?.is_none() {
            return Ok(false);
        }
        self.check_regular(name, op)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io(op, self.path.join(name), e.into())),
        }
    }

    /// Creates a new file `<prefix><random><suffix>` (mode 0600) here.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be created.
    pub fn create_temp(&self, prefix: &str, suffix: &str) -> Result<(File, String)> {
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        loop {
            let name = format!("{prefix}{}{suffix}", random_part());
            match openat(
                &self.fd,
                name.as_str(),
                flags,
                Mode::from_bits_truncate(FILE_MODE),
            ) {
                Ok(fd) => return Ok((File::from(fd), name)),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::io("create temp file in", &self.path, e.into())),
            }
        }
    }

    /// Renames `from` over `to`, both in this directory.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the rename fails.
    pub fn rename(&self, from: &str, to: &OsStr) -> Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| Error::io("rename temp file over", self.path.join(to), e.into()))
    }

    /// fsyncs the directory so that renames in it are durable.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be synced.
    pub fn sync(&self) -> Result<()> {
        nix::unistd::fsync(&self.fd).map_err(|e| Error::io("fsync directory", &self.path, e.into()))
    }
}

fn random_part() -> String {
    let chars: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(8)
        .collect();
    chars
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
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(explain_refusal(op, path)),
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

/// A refusal for a path that could not be opened because of a symlink or a
/// non-directory somewhere in it: names the first offending component.
fn explain_refusal(op: &'static str, path: &Path) -> Error {
    let mut at = PathBuf::new();
    for c in path.components() {
        at.push(c);
        if let Ok(meta) = fs::symlink_metadata(&at)
            && !meta.file_type().is_dir()
        {
            let what = kind_name(meta.file_type());
            return refused(op, at, what);
        }
    }
    refused(
        op,
        path.to_owned(),
        "not a directory or has a symlink in its path",
    )
}

fn refused(op: &'static str, path: PathBuf, what: &'static str) -> Error {
    Error::Refused { op, path, what }
}

/// Refuses a directory owned by anyone but the effective uid.
fn check_owner(path: &Path, st: &FileStat) -> Result<()> {
    check_uid(path, st.st_uid)
}

/// Refuses a file or directory owned by anyone but the effective uid.
fn check_uid(path: &Path, owner_uid: u32) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if owner_uid == euid {
        return Ok(());
    }
    let owner = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner_uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {owner_uid}"),
    };
    Err(Error::NotOwned {
        path: path.to_owned(),
        owner,
        uid: owner_uid,
        euid,
    })
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

fn mode_name(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFREG => "a regular file",
        _ => "not a regular file",
    }
}

/// What a file type is, for refusals.
pub fn kind_name(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir_flags() -> OFlag {
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    }

    #[test]
    fn both_ways_of_opening_refuse_a_symlink_in_any_component() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir_all(real.join("sub")).unwrap();
        symlink(&real, tmp.path().join("link")).unwrap();
        let through = tmp.path().join("link/sub");
        assert!(open_per_component(&real.join("sub"), dir_flags()).is_ok());
        let err = open_per_component(&through, dir_flags()).unwrap_err();
        assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{err}");
        let err = open_no_symlinks(&through, dir_flags()).unwrap_err();
        assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{err}");
        let err = Dir::open(&through).unwrap_err();
        let link = tmp.path().join("link");
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to open directory {}: it is a symlink",
                link.display()
            )
        );
    }

    #[test]
    fn files_are_checked_before_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap().unwrap();
        fs::create_dir(tmp.path().join("d")).unwrap();
        let err = dir
            .open_file("d".as_ref(), Access::Read, "read")
            .unwrap_err();
        assert!(err.to_string().ends_with("d: it is a directory"), "{err}");
        let err = dir.remove_file("d".as_ref(), "prune").unwrap_err();
        assert!(err.to_string().ends_with("d: it is a directory"), "{err}");
        assert!(tmp.path().join("d").is_dir());
        assert!(
            dir.open_file("new".as_ref(), Access::Create, "open lock")
                .unwrap()
                .is_some()
        );
        assert!(dir.remove_file("new".as_ref(), "prune").unwrap());
        assert!(!dir.remove_file("new".as_ref(), "prune").unwrap());
    }

    #[test]
    fn ensure_dir_creates_missing_parents_privately() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b");
        ensure_dir(&deep).unwrap();
        for d in [tmp.path().join("a"), deep] {
            assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, DIR_MODE);
        }
    }
}
