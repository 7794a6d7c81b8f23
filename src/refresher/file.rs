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

fn read_capped(spec: &FileSpec) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    let shown = spec.path.display();
    let file = std::fs::File::open(&spec.path)
        .map_err(|e| FetchError::new(format!("open {shown}: {e}")))?;
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
