//! Atomic durable writes and lock-free reads.
//!
//! A write goes to a uniquely named temp file in the destination's directory,
//! is fsynced, and is renamed over the destination; the caller fsyncs the
//! directory once after renaming everything it commits. Readers therefore see
//! the old file or the new one, never a mix.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::layout::TEMP_SUFFIX;

/// Mode of the root and tier directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and parents) with mode 0700 if missing, and tightens an
/// existing one we own to 0700.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be created or its mode set.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| Error::io("stat directory", dir, e))?;
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io("set mode 0700 on", dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically: temp file named `<prefix><random>.tmp`
/// in the same directory, write, fsync, rename. Returns the file's mtime.
/// Does not fsync the directory: see [`sync_dir`].
///
/// # Errors
///
/// [`Error::Io`] naming the step and path; the temp file is removed.
pub fn write_atomic(dest: &Path, prefix: &str, bytes: &[u8]) -> Result<SystemTime> {
    replace(dest, prefix, bytes, true)
}

/// Like [`write_atomic`] but without the fsync: readers still never see a
/// torn file, but a power loss may lose it. For advisory files (the
/// marker) that crash recovery removes whatever they hold.
///
/// # Errors
///
/// [`Error::Io`] naming the step and path; the temp file is removed.
pub fn write_advisory(dest: &Path, prefix: &str, bytes: &[u8]) -> Result<SystemTime> {
    replace(dest, prefix, bytes, false)
}

fn replace(dest: &Path, prefix: &str, bytes: &[u8], durable: bool) -> Result<SystemTime> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(8)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temp file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write temp file", tmp.path(), e))?;
    if durable {
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("fsync temp file", tmp.path(), e))?;
    }
    let mtime = tmp
        .as_file()
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| Error::io("stat temp file", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io("rename temp file over", dest, e.error))?;
    Ok(mtime)
}

/// fsyncs a directory so that renames in it are durable.
///
/// # Errors
///
/// [`Error::Io`] when it cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
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
/// `Ok(None)` when it does not exist.
///
/// # Errors
///
/// [`Error::Io`] for any failure other than "not found".
pub fn read_payload(path: &Path) -> Result<Option<Payload>> {
    let Some((mut file, meta, modified)) = open_payload(path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read payload", path, e))?;
    Ok(Some(Payload { bytes, modified }))
}

/// Opens a payload and stats it: the file, its metadata and its mtime.
/// `Ok(None)` when it does not exist.
///
/// # Errors
///
/// [`Error::Io`] for any failure other than "not found".
pub fn open_payload(path: &Path) -> Result<Option<(File, fs::Metadata, SystemTime)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open payload", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("stat payload", path, e))?;
    let modified = meta
        .modified()
        .map_err(|e| Error::io("stat payload", path, e))?;
    Ok(Some((file, meta, modified)))
}

/// Reads a small file whole; `Ok(None)` when it does not exist.
///
/// # Errors
///
/// [`Error::Io`] for any failure other than "not found".
pub fn read_optional(path: &Path, op: &'static str) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(op, path, e)),
    }
}

/// Removes a file; a missing file is fine.
///
/// # Errors
///
/// [`Error::Io`] for any failure other than "not found".
pub fn remove_if_present(path: &Path, op: &'static str) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(op, path, e)),
    }
}

/// Sets a file's mtime (renewing freshness without rewriting it).
///
/// # Errors
///
/// [`Error::Io`] when it cannot be opened or touched.
pub fn touch(path: &Path, when: SystemTime) -> Result<()> {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .map_err(|e| Error::io("set mtime of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
