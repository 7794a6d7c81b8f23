//! Seeds: a source's `seed = "file.json"`, committed as its first payload
//! when it has none, so that a first run without a network (air-gapped,
//! offline) has something to serve. The seed's mtime is the payload's
//! fetched time: an old seed is served as stale and refreshed when it can
//! be.

use std::path::Path;
use std::time::SystemTime;

use crate::cache::{Cache, Source};
use crate::error::{Error, Result};
use crate::lock::SourceLock;
use crate::refresh::Holder;
use crate::store;

/// Reads a seed file: its bytes and its mtime.
///
/// # Errors
///
/// [`Error::Refused`] when it is not a regular file, [`Error::TooLarge`]
/// past `max` bytes, [`Error::Corrupt`] when it is not one JSON document,
/// [`Error::Io`] when it cannot be read.
pub fn read(path: &Path, max: u64) -> Result<(Vec<u8>, SystemTime)> {
    let op = "read seed";
    let meta = std::fs::metadata(path).map_err(|e| Error::io(op, path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Error::Refused {
            op,
            path: path.to_owned(),
            what,
        });
    }
    if meta.len() > max {
        let (size, path) = (meta.len(), path.to_owned());
        return Err(Error::TooLarge {
            what: "seed",
            path,
            size,
            max,
        });
    }
    let modified = meta.modified().map_err(|e| Error::io(op, path, e))?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(op, path, e))?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        let reason = format!("not JSON: {e}");
        return Err(Error::Corrupt {
            what: "seed",
            path: path.to_owned(),
            reason,
        });
    }
    Ok((bytes, modified))
}

/// Commits `seed` as the payload of `source` if it has none. Returns the
/// revision committed, or `None` when there was a payload already or a
/// refresh holds the source's lock (it will produce one). Blocking.
///
/// # Errors
///
/// The errors of [`read`], and of the commit ([`Error::RefreshFailed`],
/// [`Error::Io`]).
pub fn plant(cache: &Cache, source: &Source, seed: &Path) -> Result<Option<u64>> {
    let layout = cache.layout();
    let payload = layout.payload(&source.id);
    if payload.exists() {
        return Ok(None);
    }
    store::ensure_source_dirs(layout, &source.id)?;
    let Some(lock) = SourceLock::try_acquire(&layout.lock(&source.id))? else {
        return Ok(None);
    };
    let holder = Holder::start(layout, &source.id, lock, source.policy.refresh_deadline)?;
    if payload.exists() {
        return Ok(None);
    }
    let max = u64::try_from(source.policy.max_output).unwrap_or(u64::MAX);
    let (bytes, modified) = read(seed, max)?;
    holder
        .commit_seed(&bytes, &source.policy, modified)
        .map(Some)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn setup() -> (tempfile::TempDir, Cache, Source, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path().join("root")).expect("open root");
        let source = Source::parse("t/seeded").expect("valid id");
        let seed = dir.path().join("seed.json");
        std::fs::write(&seed, b"[1]").expect("write seed");
        (dir, cache, source, seed)
    }

    #[test]
    fn a_seed_is_committed_at_its_mtime_and_only_once() {
        let (_dir, cache, source, seed) = setup();
        let when = SystemTime::now() - Duration::from_secs(3600);
        let file = std::fs::File::options()
            .write(true)
            .open(&seed)
            .expect("open");
        file.set_modified(when).expect("set mtime");
        assert_eq!(plant(&cache, &source, &seed).expect("plant"), Some(1));
        let payload = cache.layout().payload(&source.id);
        let modified = std::fs::metadata(&payload)
            .and_then(|m| m.modified())
            .expect("mtime");
        let off = modified
            .duration_since(when)
            .unwrap_or_else(|e| e.duration());
        assert!(
            off < Duration::from_millis(2),
            "payload mtime {modified:?}, seed {when:?}"
        );
        // A payload is there now: the seed is not planted again.
        std::fs::write(&seed, b"[2]").expect("rewrite seed");
        assert_eq!(plant(&cache, &source, &seed).expect("plant again"), None);
        assert_eq!(std::fs::read(&payload).expect("payload"), b"[1]");
    }

    #[test]
    fn a_seed_that_is_not_json_is_refused_naming_it() {
        let (_dir, cache, source, seed) = setup();
        std::fs::write(&seed, b"{nope").expect("write");
        let err = plant(&cache, &source, &seed).expect_err("not JSON");
        assert!(err.to_string().contains("seed.json"), "{err}");
        assert!(!cache.layout().payload(&source.id).exists());
    }
}
