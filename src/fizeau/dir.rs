//! A tier directory opened once, with every file in it reached relative to
//! that descriptor: `O_NOFOLLOW | O_NONBLOCK`, checked with `fstat` to be a
//! regular file, removed only while the name still holds the inode that was
//! judged. Nothing here follows a symlink or blocks on a FIFO.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result};

/// Largest lock or marker file read (both are a few hundred bytes).
const SMALL_FILE_MAX: u64 = 64 * 1024;

/// The identity of a file that was read: the name is acted on only while it
/// still holds this inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(st: &FileStat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// A small regular file's bytes, its identity and its mtime, still open.
#[derive(Debug)]
pub struct SmallFile {
    /// The whole content.
    pub bytes: Vec<u8>,
    /// Device and inode it was read from.
    pub id: FileId,
    /// Its last modification.
    pub mtime: SystemTime,
    /// The open file (so its inode stays its own while it is judged).
    pub file: std::fs::File,
}

impl SmallFile {
    /// True when another open file holds a `flock` on it: a format 1
    /// discocache process owning a refresh through `<name>.lock`. (When
    /// not, this takes the flock itself, held until `self` is dropped.)
    pub fn flocked_by_other(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
    }
}

/// An open tier directory.
#[derive(Debug)]
pub struct TierDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl TierDir {
    /// Opens the tier directory at `path` without following a symlink in
    /// its last component (the caller vouches for the components above).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it is missing, a symlink or not a directory.
    pub fn open(path: &Path) -> Result<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty())
            .map_err(|e| Error::io("open tier directory", path, e.into()))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The full path of `name` in this directory (for messages).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates `name` exclusively (mode 0600) and writes `bytes` to it.
    /// `Ok(None)` when the name already exists.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] on any other failure; a half-written file is removed.
    pub fn create_exclusive(&self, name: &str, bytes: &[u8]) -> Result<Option<(OwnedFd, FileId)>> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => return Ok(None),
            Err(e) => return Err(Error::io("create", self.path_of(name), e.into())),
        };
        let id = fstat(&fd)
            .map(|st| FileId::of(&st))
            .map_err(|e| Error::io("stat", self.path_of(name), e.into()))?;
        let mut file = std::fs::File::from(fd);
        if let Err(e) = file.write_all(bytes) {
            let _ = self.remove_if_same(name, id);
            return Err(Error::io("write", self.path_of(name), e));
        }
        Ok(Some((OwnedFd::from(file), id)))
    }

    /// Reads `name` whole if it is a regular file; `Ok(None)` when absent.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it is a symlink, FIFO, device or directory (never
    /// followed or blocked on), larger than 64 KiB, or unreadable.
    pub fn read_small(&self, name: &str) -> Result<Option<SmallFile>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.refused(name, "a symlink")),
            Err(e) => return Err(Error::io("open", self.path_of(name), e.into())),
        };
        let st = fstat(&fd).map_err(|e| Error::io("stat", self.path_of(name), e.into()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(self.refused(name, "not a regular file"));
        }
        let mut bytes = Vec::new();
        let mut file = std::fs::File::from(fd);
        (&mut file)
            .take(SMALL_FILE_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", self.path_of(name), e))?;
        if bytes.len() as u64 > SMALL_FILE_MAX {
            return Err(self.refused(name, "larger than 64 KiB"));
        }
        Ok(Some(SmallFile {
            bytes,
            id: FileId::of(&st),
            mtime: mtime_of(&st),
            file,
        }))
    }

    /// Stats `name` without following it: its identity, whether it is a
    /// regular file, and its mtime. `Ok(None)` when absent.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] on a failure other than absence.
    pub fn stat(&self, name: &str) -> Result<Option<(FileId, bool, SystemTime)>> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let regular =
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
                Ok(Some((FileId::of(&st), regular, mtime_of(&st))))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Error::io("stat", self.path_of(name), e.into())),
        }
    }

    /// Removes `name` if it still is the file `id`. Returns whether it did.
    /// (Between the check and the unlink another process could replace the
    /// file; every writer of these files holds fizeau's short lock or our
    /// flock, which keeps that window closed in practice.)
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the unlink fails for a reason other than absence.
    pub fn remove_if_same(&self, name: &str, id: FileId) -> Result<bool> {
        match self.stat(name)? {
            Some((now, _, _)) if now == id => {}
            _ => return Ok(false),
        }
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io("remove", self.path_of(name), e.into())),
        }
    }

    /// Replaces `name` by rename from a uniquely named temp file
    /// `.<stem>.<random>.tmp` (mode 0600, not fsynced: for advisory files).
    /// A symlink at `name` is replaced, never followed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the temp file cannot be written or renamed.
    pub fn replace(&self, name: &str, stem: &str, bytes: &[u8]) -> Result<()> {
        let tmp = loop {
            let tmp = format!(".{stem}.{:016x}.tmp", fastrand::u64(..));
            if self.create_exclusive(&tmp, bytes)?.is_some() {
                break tmp;
            }
        };
        renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(|e| {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            Error::io("rename temp file over", self.path_of(name), e.into())
        })
    }

    fn refused(&self, name: &str, why: &str) -> Error {
        let cause = io::Error::new(io::ErrorKind::InvalidInput, format!("refusing: {why}"));
        Error::io("open", self.path_of(name), cause)
    }
}

/// A file's mtime from its `stat`.
fn mtime_of(st: &FileStat) -> SystemTime {
    let secs = u64::try_from(st.st_mtime).unwrap_or(0);
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// True when `name` is a plain file name (no `/`, not `.` or `..`, no NUL).
pub fn plain_name(name: &str) -> bool {
    let os = OsStr::new(name).as_bytes();
    !os.is_empty() && name != "." && name != ".." && !os.contains(&b'/') && !os.contains(&0)
}
