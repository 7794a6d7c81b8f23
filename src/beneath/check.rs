//! What a file is, who owns it, and the refusals built from that.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, SFlag};

use crate::error::{Error, Result};

/// A refusal for a path that could not be opened because of a symlink or a
/// non-directory somewhere in it: names the first offending component.
pub(super) fn explain_refusal(op: &'static str, path: &Path) -> Error {
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

pub(super) fn refused(op: &'static str, path: PathBuf, what: &'static str) -> Error {
    Error::Refused { op, path, what }
}

/// Refuses a directory owned by anyone but the effective uid.
pub(super) fn check_owner(path: &Path, st: &FileStat) -> Result<()> {
    check_uid(path, st.st_uid)
}

/// Refuses a file or directory owned by anyone but the effective uid.
pub(super) fn check_uid(path: &Path, owner_uid: u32) -> Result<()> {
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

pub(super) fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

pub(super) fn mode_name(st: &FileStat) -> &'static str {
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
