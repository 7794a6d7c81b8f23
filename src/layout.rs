//! Where every file of a source lives under the root. Pure: no IO.
//!
//! ```text
//! <root>/<tier>/<name>.json                      payload
//! <root>/<tier>/<name>.refreshing                marker while a refresh runs
//! <root>/<tier>/<name>.lock                      fizeau's short lock (not ours)
//! <root>/<tier>/.<name>.<random>.tmp             temp files
//! <root>/<tier>/.discocache/<name>.meta.json     sidecar
//! <root>/<tier>/.discocache/<name>.flock         flock owner of the refresh
//! <root>/<tier>/.discocache/.<name>.<random>.tmp temp files of the sidecar
//! <root>/.discocache/format                      the root's format: `2`
//! <root>/.discocache/state/                      daemon state
//! ```
//!
//! This is on-disk format 2 (docs/FORMAT.md): the only `*.json` files at
//! depth 2 are payloads, so fizeau's `Prune` never takes our files for
//! sources. Format 1 kept the sidecar and the flocked lock file beside the
//! payload: [`Layout::legacy_sidecar`] and [`Layout::legacy_lock`].
//!
//! Each of these is a regular file (or a real directory) owned by the user;
//! anything else found at one of these names is refused, never followed:
//! see [`crate::beneath`].

use std::path::{Path, PathBuf};

use crate::source::{SourceId, check_part};

/// Our own directory, under the root and under each tier; never a tier or
/// source name (those cannot start with a dot).
pub const STATE_DIR: &str = ".discocache";

/// The on-disk format this code writes.
pub const FORMAT: u32 = 2;

const PAYLOAD: &str = ".json";
const SIDECAR: &str = ".meta.json";
const LOCK: &str = ".flock";
const LEGACY_LOCK: &str = ".lock";
const MARKER: &str = ".refreshing";
const TEMP: &str = ".tmp";

/// The kinds of file a source owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `<name>.json`
    Payload,
    /// `.discocache/<name>.meta.json`
    Sidecar,
    /// `.discocache/<name>.flock`
    Lock,
    /// `<name>.refreshing`
    Marker,
    /// `.<name>.<random>.tmp`
    Temp,
}

/// Paths under one cache root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<tier>`.
    pub fn tier_dir(&self, id: &SourceId) -> PathBuf {
        self.root.join(id.tier())
    }

    /// `<root>/<tier>/.discocache`: the source's sidecar and lock file.
    pub fn tier_state_dir(&self, id: &SourceId) -> PathBuf {
        self.tier_dir(id).join(STATE_DIR)
    }

    /// `<root>/.discocache`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// `<root>/.discocache/state`: the daemon's files (a level deeper than
    /// fizeau's `Prune` looks).
    pub fn daemon_dir(&self) -> PathBuf {
        self.state_dir().join("state")
    }

    /// `<root>/.discocache/format`: the root's on-disk format.
    pub fn format_file(&self) -> PathBuf {
        self.state_dir().join("format")
    }

    /// `<root>/.discocache/upgraded-from-format-1`: written when a format 1
    /// root is upgraded; its mtime starts the time during which format 1
    /// processes may still run (see `crate::claim::FORMAT1_GRACE`).
    pub fn format1_file(&self) -> PathBuf {
        self.state_dir().join("upgraded-from-format-1")
    }

    /// The path of one of `id`'s files (not for `FileKind::Temp`, whose
    /// names are random: use [`Layout::temp_prefix`]).
    pub fn file(&self, id: &SourceId, kind: FileKind) -> PathBuf {
        let (dir, suffix) = match kind {
            FileKind::Payload => (self.tier_dir(id), PAYLOAD),
            FileKind::Sidecar => (self.tier_state_dir(id), SIDECAR),
            FileKind::Lock => (self.tier_state_dir(id), LOCK),
            FileKind::Marker => (self.tier_dir(id), MARKER),
            FileKind::Temp => (self.tier_dir(id), TEMP),
        };
        dir.join(format!("{}{suffix}", id.name()))
    }

    /// `<root>/<tier>/<name>.json`.
    pub fn payload(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Payload)
    }

    /// `<root>/<tier>/.discocache/<name>.meta.json`.
    pub fn sidecar(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Sidecar)
    }

    /// `<root>/<tier>/.discocache/<name>.flock`: the persistent file whose
    /// flock owns the source's refresh.
    pub fn lock(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Lock)
    }

    /// `<root>/<tier>/<name>.lock`: fizeau's short lock, taken around
    /// marker changes (format 1 kept our flocked lock file here).
    pub fn fizeau_lock(&self, id: &SourceId) -> PathBuf {
        self.tier_dir(id)
            .join(format!("{}{LEGACY_LOCK}", id.name()))
    }

    /// Format 1's sidecar, `<root>/<tier>/<name>.meta.json`.
    pub fn legacy_sidecar(&self, id: &SourceId) -> PathBuf {
        self.tier_dir(id).join(format!("{}{SIDECAR}", id.name()))
    }

    /// Format 1's flocked lock file, `<root>/<tier>/<name>.lock` (the same
    /// name as fizeau's short lock).
    pub fn legacy_lock(&self, id: &SourceId) -> PathBuf {
        self.fizeau_lock(id)
    }

    /// `<root>/<tier>/<name>.refreshing`.
    pub fn marker(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Marker)
    }

    /// The prefix of `id`'s temp files: `.<name>.`.
    pub fn temp_prefix(id: &SourceId) -> String {
        format!(".{}.", id.name())
    }
}

/// The payload of the source whose lock file is `lock` (the inverse of
/// [`Layout::lock`]: `<tier>/.discocache/<name>.flock` names
/// `<tier>/<name>.json`); `None` for a path that is not a lock file's.
pub fn payload_of_lock(lock: &Path) -> Option<PathBuf> {
    let name = lock.file_name()?.to_str()?.strip_suffix(LOCK)?;
    let state = lock.parent()?;
    if state.file_name()? != STATE_DIR {
        return None;
    }
    Some(state.parent()?.join(format!("{name}{PAYLOAD}")))
}

/// The suffix of every temp file.
pub const TEMP_SUFFIX: &str = TEMP;

/// True for a temp file name of this source.
pub fn is_temp_of(file_name: &str, id: &SourceId) -> bool {
    file_name.starts_with(&Layout::temp_prefix(id)) && file_name.ends_with(TEMP_SUFFIX)
}

/// Recognises a file name inside a tier directory: the source name it belongs
/// to and its kind (payload, marker, temp file). Anything that does not
/// match the layout exactly is `None` and is never touched by prune or
/// recovery; that includes fizeau's `<name>.lock` and a format 1 sidecar.
pub fn classify(file_name: &str) -> Option<(String, FileKind)> {
    classify_any(file_name)
        .filter(|(_, kind)| matches!(kind, FileKind::Payload | FileKind::Marker | FileKind::Temp))
}

/// Recognises a file name inside a tier's `.discocache/` directory:
/// sidecar, lock file or temp file.
pub fn classify_state(file_name: &str) -> Option<(String, FileKind)> {
    classify_any(file_name)
        .filter(|(_, kind)| matches!(kind, FileKind::Sidecar | FileKind::Lock | FileKind::Temp))
}

/// Recognises a format 1 sidecar in a tier directory: `<name>.meta.json`.
pub fn classify_legacy_sidecar(file_name: &str) -> Option<String> {
    file_name.strip_suffix(SIDECAR).and_then(valid_name)
}

fn classify_any(file_name: &str) -> Option<(String, FileKind)> {
    if let Some(rest) = file_name.strip_prefix('.') {
        let body = rest.strip_suffix(TEMP)?;
        let (name, random) = body.split_once('.')?;
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
        if random.is_empty() || !random.chars().all(plain) {
            return None;
        }
        return valid_name(name).map(|n| (n, FileKind::Temp));
    }
    let kinds = [
        (SIDECAR, FileKind::Sidecar),
        (PAYLOAD, FileKind::Payload),
        (LOCK, FileKind::Lock),
        (MARKER, FileKind::Marker),
    ];
    kinds.iter().find_map(|(suffix, kind)| {
        let name = file_name.strip_suffix(suffix)?;
        valid_name(name).map(|n| (n, *kind))
    })
}

fn valid_name(name: &str) -> Option<String> {
    check_part(name, "name", name)
        .ok()
        .map(|()| name.to_owned())
}

/// True when `dir_name` can be a tier directory.
pub fn is_tier_dir(dir_name: &str) -> bool {
    check_part(dir_name, "tier", dir_name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_format() {
        let l = Layout::new("/r");
        let id = SourceId::parse("discovery/x").unwrap();
        assert_eq!(l.payload(&id), Path::new("/r/discovery/x.json"));
        assert_eq!(
            l.sidecar(&id),
            Path::new("/r/discovery/.discocache/x.meta.json")
        );
        assert_eq!(l.lock(&id), Path::new("/r/discovery/.discocache/x.flock"));
        assert_eq!(l.fizeau_lock(&id), Path::new("/r/discovery/x.lock"));
        assert_eq!(l.legacy_sidecar(&id), Path::new("/r/discovery/x.meta.json"));
        assert_eq!(l.marker(&id), Path::new("/r/discovery/x.refreshing"));
        assert_eq!(Layout::temp_prefix(&id), ".x.");
        assert_eq!(l.state_dir(), Path::new("/r/.discocache"));
        assert_eq!(l.daemon_dir(), Path::new("/r/.discocache/state"));
        assert_eq!(l.format_file(), Path::new("/r/.discocache/format"));
    }

    #[test]
    fn classify_recognises_each_kind() {
        let cases = [
            ("x.json", FileKind::Payload),
            ("x.refreshing", FileKind::Marker),
            (".x.Ab12cD.tmp", FileKind::Temp),
        ];
        for (file, kind) in cases {
            assert_eq!(classify(file), Some(("x".to_owned(), kind)), "{file}");
        }
        let cases = [
            ("x.meta.json", FileKind::Sidecar),
            ("x.flock", FileKind::Lock),
            (".x.Ab12cD.tmp", FileKind::Temp),
        ];
        for (file, kind) in cases {
            assert_eq!(classify_state(file), Some(("x".to_owned(), kind)));
        }
        // fizeau's short lock and a format 1 sidecar are not ours to touch.
        assert_eq!(classify("x.lock"), None);
        assert_eq!(classify("x.meta.json"), None);
        assert_eq!(classify_state("x.json"), None);
        assert_eq!(classify_legacy_sidecar("x.meta.json"), Some("x".into()));
    }

    #[test]
    fn classify_leaves_foreign_files_alone() {
        for file in [
            "README",
            "x.txt",
            "X.json",
            "x.y.json",
            ".x.tmp",
            "..tmp",
            ".x..tmp",
            ".X.ab.tmp",
            "x.meta",
            ".x.ab/c.tmp",
            "notes.md",
            "x.json~",
            ".x.ab.tmp.bak",
        ] {
            assert_eq!(classify(file), None, "{file}");
        }
        assert!(is_tier_dir("discovery"));
        assert!(!is_tier_dir(STATE_DIR));
        assert!(!is_tier_dir("lost+found"));
    }
}
