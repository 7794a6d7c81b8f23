//! Atomic durable writes and lock-free reads.
//!
//! A write goes to a uniquely named temp file in the destination's directory,
//! is fsynced, and is renamed over the destination; the caller fsyncs the
//! directory once after renaming everything it commits. Readers therefore see
//! the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::beneath::{self, Dir};
use crate::error::{Error, Result};
use crate::layout::TEMP_SUFFIX;

/// Largest sidecar, marker or stats file read: they are small; anything
/// bigger is not one of ours.
pub const SMALL_FILE_MAX: u64 = 64 << 20;

/// Creates `dir` with mode 0700 if missing (its parent must be reachable
/// without symlinks), and tightens an existing one we own to 0700.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be created or its mode set,
/// [`Error::Refused`] when it (or a component of it) is a symlink or not a
/// directory, [`Error::NotOwned`] when another user owns it.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    beneath::ensure_dir(dir).map(drop)
}

/// Creates a source's tier directory (mode 0700) and its `.discocache/`
/// directory when missing. An existing tier directory keeps its mode (fizeau
/// creates them 0750 and a root is shared with it) but must still be ours
/// and a real directory; the `.discocache/` directory is always 0700.
///
/// # Errors
///
/// As [`ensure_dir`].
pub fn ensure_source_dirs(layout: &crate::Layout, id: &crate::SourceId) -> Result<()> {
    let tier = layout.tier_dir(id);
    if beneath::Dir::open(&tier)?.is_none() {
        ensure_dir(&tier)?;
    }
    ensure_dir(&layout.tier_state_dir(id))
}

/// Writes `bytes` to `dest` atomically: temp file named `<prefix><random>.tmp`
/// in the same directory, write, fsync, rename. Returns the file's mtime.
/// Does not fsync the directory: see [`sync_dir`].
///
/// # Errors
///
/// [`Error::Io`] naming the step and path (the temp file is removed),
/// [`Error::Refused`] when `dest` or its directory is not a regular file or
/// a real directory.
pub fn write_atomic(dest: &Path, prefix: &str, bytes: &[u8]) -> Result<SystemTime> {
    replace(dest, prefix, bytes, true, None)
}

/// [`write_atomic`] with the file's mtime set to `mtime` before the rename
/// (a payload fetched elsewhere keeps the time its origin produced it), so
/// that no reader ever sees it with another mtime. Returns `mtime`.
///
/// # Errors
///
/// As [`write_atomic`]; [`Error::Io`] when the mtime cannot be set.
pub fn write_atomic_at(
    dest: &Path,
    prefix: &str,
    bytes: &[u8],
    mtime: SystemTime,
) -> Result<SystemTime> {
    replace(dest, prefix, bytes, true, Some(mtime))
}

/// Like [`write_atomic`] but without the fsync: readers still never see a
/// torn file, but a power loss may lose it. For advisory files (the
/// marker) that crash recovery removes whatever they hold.
///
/// # Errors
///
/// As [`write_atomic`].
pub fn write_advisory(dest: &Path, prefix: &str, bytes: &[u8]) -> Result<SystemTime> {
    replace(dest, prefix, bytes, false, None)
}

fn replace(
    dest: &Path,
    prefix: &str,
    bytes: &[u8],
    durable: bool,
    mtime: Option<SystemTime>,
) -> Result<SystemTime> {
    let (dir_path, name) = beneath::split(dest)?;
    let dir = open_dir(dir_path, "create temp file in")?;
    dir.check_regular(name, "replace")?;
    let (mut file, tmp) = dir.create_temp(prefix, TEMP_SUFFIX)?;
    let written = write_temp(&mut file, bytes, (durable, mtime), &dir.path().join(&tmp))
        .and_then(|mtime| dir.rename(&tmp, name).map(|()| mtime));
    if written.is_err() {
        let _ = dir.remove_file(tmp.as_ref(), "remove temp file");
    }
    written
}

/// Writes, sets the mtime when given, fsyncs when `durable`; returns the
/// mtime.
fn write_temp(
    file: &mut File,
    bytes: &[u8],
    (durable, mtime): (bool, Option<SystemTime>),
    path: &Path,
) -> Result<SystemTime> {
    file.write_all(bytes)
        .map_err(|e| Error::io("write temp file", path, e))?;
    if let Some(at) = mtime {
        file.set_modified(at)
            .map_err(|e| Error::io("set mtime of temp file", path, e))?;
    }
    if durable {
        file.sync_all()
            .map_err(|e| Error::io("fsync temp file", path, e))?;
    }
    file.metadata()
        .and_then(|m| m.modified())
        .map_err(|e| Error::io("stat temp file", path, e))
}

/// Opens a directory that must exist.
fn open_dir(path: &Path, op: &'static str) -> Result<Dir> {
    Dir::open(path)?.ok_or_else(|| Error::io(op, path, std::io::ErrorKind::NotFound.into()))
}

/// fsyncs a directory so that renames in it are durable.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    open_dir(dir, "fsync directory")?.sync()
}

/// A payload as read: the bytes and the mtime of the same file descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Its mtime: when it was last fetched or revalidated.
    pub modified: SystemTime,
}

/// Reads a payload with one open, one fstat and one read. No locks.
/// `Ok(None)` when it does not exist. A payload larger than `max` bytes is
/// refused without being read.
///
/// # Errors
///
/// [`Error::TooLarge`] over `max`, [`Error::Refused`] when it is not a
/// regular file, [`Error::Io`] for any failure other than "not found".
pub fn read_payload_within(path: &Path, max: u64) -> Result<Option<Payload>> {
    let Some((file, meta, modified)) = open_payload(path)? else {
        return Ok(None);
    };
    let bytes = read_bounded(file, &meta, max, "payload", path)?;
    Ok(Some(Payload { bytes, modified }))
}

/// Reads an open file whole, refusing one whose size (as stat saw it) is
/// over `max`, and never reading more than `max` bytes even if it grows.
pub(crate) fn read_bounded(
    file: File,
    meta: &fs::Metadata,
    max: u64,
    what: &'static str,
    path: &Path,
) -> Result<Vec<u8>> {
    let too_large = |size| Error::TooLarge {
        what,
        path: path.to_owned(),
        size,
        max,
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Opens a payload and stats it: the file, its metadata and its mtime.
/// `Ok(None)` when it does not exist. Never follows a symlink, never blocks
/// on a FIFO.
///
/// # Errors
///
/// [`Error::Refused`] when it is not a regular file, [`Error::Io`] for any
/// failure other than "not found".
pub fn open_payload(path: &Path) -> Result<Option<(File, fs::Metadata, SystemTime)>> {
    let Some((file, meta)) = beneath::open_regular(path, "read payload")? else {
        return Ok(None);
    };
    let modified = meta
        .modified()
        .map_err(|e| Error::io("stat payload", path, e))?;
    Ok(Some((file, meta, modified)))
}

/// Opens an existing regular file for reading; `Ok(None)` when it or its
/// directory does not exist.
fn open_regular(path: &Path, op: &'static str) -> Result<Option<File>> {
    Ok(beneath::open_regular(path, op)?.map(|(file, _)| file))
}

/// Reads a small file (at most [`SMALL_FILE_MAX`] bytes) whole; `Ok(None)`
/// when it does not exist.
///
/// # Errors
///
/// [`Error::Refused`] when it is not a regular file, [`Error::TooLarge`],
/// [`Error::Io`] for any failure other than "not found".
pub fn read_optional(path: &Path, op: &'static str) -> Result<Option<Vec<u8>>> {
    let Some((file, meta)) = beneath::open_regular(path, op)? else {
        return Ok(None);
    };
    read_bounded(file, &meta, SMALL_FILE_MAX, "file", path).map(Some)
}

/// Removes a regular file; a missing file is fine.
///
/// # Errors
///
/// [`Error::Refused`] when it is not a regular file, [`Error::Io`] for any
/// failure other than "not found".
pub fn remove_if_present(path: &Path, op: &'static str) -> Result<bool> {
    let (dir, name) = beneath::split(path)?;
    match Dir::open(dir)? {
        Some(dir) => dir.remove_file(name, op),
        None => Ok(false),
    }
}

/// Sets a regular file's mtime (renewing freshness without rewriting it).
///
/// # Errors
///
/// [`Error::Refused`] when it is not a regular file, [`Error::Io`] when it
/// is missing or cannot be touched.
pub fn touch(path: &Path, when: SystemTime) -> Result<()> {
    let op = "set mtime of";
    let file = open_regular(path, op)?
        .ok_or_else(|| Error::io(op, path, std::io::ErrorKind::NotFound.into()))?;
    file.set_modified(when).map_err(|e| Error::io(op, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::FILE_MODE;

    fn read_payload(path: &Path) -> Result<Option<Payload>> {
        read_payload_within(path, crate::refresher::DEFAULT_MAX_OUTPUT as u64)
    }
    use std::fs::Permissions;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn refused(e: Error) -> &'static str {
        match e {
            Error::Refused { what, .. } => what,
            other => panic!("expected a refusal, got {other}"),
        }
    }

    #[test]
    fn symlinked_directory_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o755)).unwrap();
        symlink(&outside, dir.path().join("tier")).unwrap();
        let dest = dir.path().join("tier/x.json");
        let err = write_atomic(&dest, ".x.", b"[1]").unwrap_err();
        assert!(err.to_string().contains("tier: it is a symlink"), "{err}");
        assert_eq!(
            refused(ensure_dir(&dir.path().join("tier")).unwrap_err()),
            "a symlink"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        let mode = fs::metadata(&outside).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "the outside directory was chmodded");
    }

    #[test]
    fn symlinked_file_is_never_read_touched_or_deleted_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.json");
        fs::write(&target, b"[\"secret\"]").unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let link = dir.path().join("x.json");
        symlink(&target, &link).unwrap();
        assert_eq!(refused(read_payload(&link).unwrap_err()), "a symlink");
        assert_eq!(
            refused(read_optional(&link, "read").unwrap_err()),
            "a symlink"
        );
        assert_eq!(
            refused(touch(&link, SystemTime::now()).unwrap_err()),
            "a symlink"
        );
        assert_eq!(
            refused(remove_if_present(&link, "remove").unwrap_err()),
            "a symlink"
        );
        assert_eq!(
            refused(write_atomic(&link, ".x.", b"[]").unwrap_err()),
            "a symlink"
        );
        assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), old);
        assert_eq!(fs::read(&target).unwrap(), b"[\"secret\"]");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn fifo_payload_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read_payload(&fifo).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("refusing to read payload {}: it is a FIFO", fifo.display())
        );
        assert_eq!(
            refused(read_optional(&fifo, "read sidecar").unwrap_err()),
            "a FIFO"
        );
        assert_eq!(
            refused(touch(&fifo, SystemTime::now()).unwrap_err()),
            "a FIFO"
        );
        assert_eq!(
            refused(remove_if_present(&fifo, "prune").unwrap_err()),
            "a FIFO"
        );
        let sub = dir.path().join("d.json");
        fs::create_dir(&sub).unwrap();
        assert_eq!(refused(read_payload(&sub).unwrap_err()), "a directory");
    }

    #[test]
    fn oversize_payload_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        File::create(&path).unwrap().set_len(2 << 30).unwrap();
        let started = std::time::Instant::now();
        let err = read_payload_within(&path, 1 << 20).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            matches!(err, Error::TooLarge { size, max, .. } if size == 2 << 30 && max == 1 << 20),
            "{err}"
        );
        fs::write(&path, b"[1]").unwrap();
        assert_eq!(
            read_payload_within(&path, 3).unwrap().unwrap().bytes,
            b"[1]"
        );
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        write_atomic(&dest, ".x.", b"{\"v\":1}").unwrap();
        let mtime = write_atomic(&dest, ".x.", b"{\"v\":2}").unwrap();
        sync_dir(dir.path()).unwrap();
        let p = read_payload(&dest).unwrap().unwrap();
        assert_eq!(p.bytes, b"{\"v\":2}");
        assert_eq!(p.modified, mtime);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
    }

    #[test]
    fn write_atomic_at_gives_the_payload_the_origin_time() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        let origin = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(
            write_atomic_at(&dest, ".x.", b"[1]", origin).unwrap(),
            origin
        );
        let p = read_payload(&dest).unwrap().unwrap();
        assert_eq!((p.bytes.as_slice(), p.modified), (&b"[1]"[..], origin));
    }

    #[test]
    fn write_atomic_error_names_the_step_and_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.json"), ".x.", b"{}").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("create temp file in /nonexistent-dir"),
            "{text}"
        );
    }

    #[test]
    fn ensure_dir_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b");
        ensure_dir(&root).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&root).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn missing_files_are_none_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_payload(&dir.path().join("no.json")).unwrap().is_none());
        assert!(
            read_optional(&dir.path().join("no"), "read")
                .unwrap()
                .is_none()
        );
        assert!(!remove_if_present(&dir.path().join("no"), "remove").unwrap());
    }
}
