//! The `file` refresher: copy a local JSON file.

use std::path::PathBuf;

use super::FetchError;

/// A local file to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The file to copy.
    pub path: PathBuf,
    /// Largest accepted size.
    pub max_size: usize,
}

/// Reads the file.
///
/// # Errors
///
/// When it cannot be read or is larger than `max_size`.
pub async fn read(spec: &FileSpec) -> Result<Vec<u8>, FetchError> {
    let spec = spec.clone();
    let res = tokio::task::spawn_blocking(move || read_capped(&spec)).await;
    res.map_err(|e| FetchError::new(format!("file reader failed: {e}")))?
}

/// Opens without blocking (a FIFO must not hang the refresh) and refuses
/// anything but a regular file (symlinks to one are fine: the path is the
/// user's, outside the root).
fn read_capped(spec: &FileSpec) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = spec.path.display();
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&spec.path)
        .map_err(|e| FetchError::new(format!("open {shown}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| FetchError::new(format!("stat {shown}: {e}")))?;
    if !meta.file_type().is_file() {
        let what = crate::beneath::kind_name(meta.file_type());
        return Err(FetchError::new(format!(
            "refusing to read {shown}: it is {what}, not a regular file"
        )));
    }
    if meta.len() > spec.max_size as u64 {
        return Err(FetchError::new(format!(
            "{shown} is larger than the {} byte cap",
            spec.max_size
        )));
    }
    let mut bytes = Vec::new();
    file.take(spec.max_size as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FetchError::new(format!("read {shown}: {e}")))?;
    if bytes.len() > spec.max_size {
        return Err(FetchError::new(format!(
            "{shown} is larger than the {} byte cap",
            spec.max_size
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_file_source_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let spec = FileSpec {
            path,
            max_size: 1024,
        };
        let err = read_capped(&spec).unwrap_err();
        assert!(
            err.message().contains("it is a FIFO, not a regular file"),
            "{err}"
        );
    }

    #[test]
    fn directory_file_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FileSpec {
            path: dir.path().to_owned(),
            max_size: 1024,
        };
        let err = read_capped(&spec).unwrap_err();
        assert!(err.message().contains("it is a directory"), "{err}");
    }
}
