//! [`Dir`]: a directory under the root, and the files in it.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::check::{check_owner, explain_refusal, is_regular, kind_name, mode_name, refused};
use super::{DIR_MODE, FILE_MODE, open_no_symlinks};
use crate::error::{Error, Result};

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

    /// Sets the directory's mode to 0700 unless it already is.
    pub(super) fn tighten(&self) -> Result<()> {
        let mode = self.stat_self()?.st_mode & 0o777;
        if mode == DIR_MODE {
            return Ok(());
        }
        fchmod(&self.fd, Mode::from_bits_truncate(DIR_MODE))
            .map_err(|e| Error::io("set mode 0700 on", &self.path, e.into()))
    }

    /// Creates the directory `name` here (mode 0700); an existing one is
    /// fine (it is checked when opened).
    pub(super) fn mkdir(&self, name: &OsStr) -> Result<()> {
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(Error::io(
                "create directory",
                self.path.join(name),
                e.into(),
            )),
        }
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
            Err(Errno::ENXIO) => return Err(self.refuse_non_regular(name, op)),
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

    /// The refusal for `name`, which could not be opened (a socket, ...).
    fn refuse_non_regular(&self, name: &OsStr, op: &'static str) -> Error {
        let what = match self.stat(name) {
            Ok(Some(st)) => mode_name(&st),
            _ => "not a regular file",
        };
        refused(op, self.path.join(name), what)
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
