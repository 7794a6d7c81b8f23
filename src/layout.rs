//! Where every file of a source lives under the root. Pure: no IO.
//!
//! ```text
//! <root>/<tier>/<name>.json          payload
//! <root>/<tier>/<name>.meta.json     sidecar
//! <root>/<tier>/<name>.lock          flock owner of the refresh
//! <root>/<tier>/<name>.refreshing    marker while a refresh runs
//! <root>/<tier>/.<name>.<random>.tmp temp files
//! <root>/.discocache/                daemon state
//! ```
//!
//! Each of these is a regular file (or a real directory) owned by the user;
//! anything else found at one of these names is refused, never followed:
//! see [`crate::beneath`].

use std::path::{Path, PathBuf};

use crate::source::{SourceId, check_part};

/// The daemon's own state directory under the root; never a tier name
/// (tiers cannot start with a dot).
pub const STATE_DIR: &str = ".discocache";

const PAYLOAD: &str = ".json";
const SIDECAR: &str = ".meta.json";
const LOCK: &str = ".lock";
const MARKER: &str = ".refreshing";
const TEMP: &str = ".tmp";

/// The kinds of file a source owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `<name>.json`
    Payload,
    /// `<name>.meta.json`
    Sidecar,
    /// `<name>.lock`
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

    /// `<root>/.discocache`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// The path of one of `id`'s files (not for [`FileKind::Temp`], whose
    /// names are random: use [`Layout::temp_prefix`]).
    pub fn file(&self, id: &SourceId, kind: FileKind) -> PathBuf {
        let suffix = match kind {
            FileKind::Payload => PAYLOAD,
            FileKind::Sidecar => SIDECAR,
            FileKind::Lock => LOCK,
            FileKind::Marker => MARKER,
            FileKind::Temp => TEMP,
        };
        self.tier_dir(id).join(format!("{}{suffix}", id.name()))
    }

    /// `<root>/<tier>/<name>.json`.
    pub fn payload(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Payload)
    }

    /// `<root>/<tier>/<name>.meta.json`.
    pub fn sidecar(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Sidecar)
    }

    /// `<root>/<tier>/<name>.lock`.
    pub fn lock(&self, id: &SourceId) -> PathBuf {
        self.file(id, FileKind::Lock)
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

/// The suffix of every temp file.
pub const TEMP_SUFFIX: &str = TEMP;

/// Recognises a file name inside a tier directory: the source name it belongs
/// to and its kind. Anything that does not match the layout exactly is `None`
/// and is never touched by prune or recovery.
pub fn classify(file_name: &str) -> Option<(String, FileKind)> {
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
        assert_eq!(l.sidecar(&id), Path::new("/r/discovery/x.meta.json"));
        assert_eq!(l.lock(&id), Path::new("/r/discovery/x.lock"));
        assert_eq!(l.marker(&id), Path::new("/r/discovery/x.refreshing"));
        assert_eq!(Layout::temp_prefix(&id), ".x.");
        assert_eq!(l.state_dir(), Path::new("/r/.discocache"));
    }

    #[test]
    fn classify_recognises_each_kind() {
        let cases = [
            ("x.json", FileKind::Payload),
            ("x.meta.json", FileKind::Sidecar),
            ("x.lock", FileKind::Lock),
            ("x.refreshing", FileKind::Marker),
            (".x.Ab12cD.tmp", FileKind::Temp),
        ];
        for (file, kind) in cases {
            assert_eq!(classify(file), Some(("x".to_owned(), kind)), "{file}");
        }
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
