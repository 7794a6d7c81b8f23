//! The root's on-disk format, and the upgrade of a format 1 root in place.
//!
//! Format 1 kept each source's sidecar (`<name>.meta.json`) and flocked
//! lock file (`<name>.lock`) beside its payload, and the daemon's counters
//! in `<root>/.discocache/stats.json`. Format 2 moves them where fizeau's
//! `Prune` never looks (see [`crate::layout`]). The first format 2 process
//! that opens a root without `<root>/.discocache/format` upgrades it, one
//! source at a time, each under format 1's flock on `<name>.lock` (so a
//! format 1 process refreshing that source is not raced: the source is
//! skipped and the upgrade is retried by the next open) and under our own
//! new flock. The format file is written only when every source moved.
//! Format 1's `<name>.lock` is kept: a format 1 process still running
//! flocks it, and so does every format 2 claim for [`FORMAT1_GRACE`] after
//! the upgrade (`<root>/.discocache/upgraded-from-format-1` records when
//! it began), so the two never refresh one source at once.
//!
//! [`FORMAT1_GRACE`]: crate::claim::FORMAT1_GRACE

use std::path::Path;

use crate::error::{Error, Result};
use crate::layout::{self, FORMAT, Layout};
use crate::lock::SourceLock;
use crate::meta::Sidecar;
use crate::source::SourceId;
use crate::stats::{LEGACY_STATS_FILE, STATS_FILE};
use crate::store;

/// What [`ensure`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Sources whose sidecar was moved.
    pub moved: Vec<SourceId>,
    /// Sources whose format 1 lock was held: left for the next open.
    pub busy: Vec<SourceId>,
}

/// Reads the root's format: `None` when the root has no format file
/// (format 1, or a new root).
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read, [`Error::Corrupt`] when it
/// does not hold a number.
pub fn read_format(layout: &Layout) -> Result<Option<u32>> {
    let path = layout.format_file();
    let Some(bytes) = store::read_optional(&path, "read format file")? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    text.trim().parse().map(Some).map_err(|_| Error::Corrupt {
        what: "format file",
        path,
        reason: format!("{:?} is not a format number", text.trim()),
    })
}

/// Makes sure the root is in format 2: upgrades a format 1 root in place
/// (see the module docs) and records the format. A root of a newer format
/// is refused.
///
/// # Errors
///
/// [`Error::Corrupt`] for a newer or unreadable format, [`Error::Io`] when
/// a file cannot be moved or written.
pub fn ensure(layout: &Layout) -> Result<Upgraded> {
    match read_format(layout)? {
        Some(FORMAT) => return Ok(Upgraded::default()),
        Some(newer) if newer > FORMAT => {
            return Err(Error::Corrupt {
                what: "format file",
                path: layout.format_file(),
                reason: format!(
                    "the root is in on-disk format {newer}; this discocache writes {FORMAT}"
                ),
            });
        }
        Some(_) | None => {}
    }
    let mut report = Upgraded::default();
    let sources = legacy_sources(layout)?;
    if !sources.is_empty() && !layout.format1_file().exists() {
        // Starts the time format 1 processes may still run.
        store::ensure_dir(&layout.state_dir())?;
        store::write_atomic(&layout.format1_file(), ".format1.", b"")?;
    }
    for id in sources {
        match upgrade_source(layout, &id)? {
            true => report.moved.push(id),
            false => report.busy.push(id),
        }
    }
    move_stats(layout)?;
    if report.busy.is_empty() {
        store::ensure_dir(&layout.state_dir())?;
        store::write_atomic(
            &layout.format_file(),
            ".format.",
            format!("{FORMAT}\n").as_bytes(),
        )?;
    }
    Ok(report)
}

/// Every source with a format 1 sidecar beside its payload.
fn legacy_sources(layout: &Layout) -> Result<Vec<SourceId>> {
    let mut found = Vec::new();
    for tier in list(layout.root())? {
        if !layout::is_tier_dir(&tier) {
            continue;
        }
        let dir = layout.root().join(&tier);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        for file in list(&dir)? {
            if let Some(name) = layout::classify_legacy_sidecar(&file) {
                found.push(SourceId::new(&tier, &name)?);
            }
        }
    }
    Ok(found)
}

fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Moves one source's sidecar under both flocks (format 1's lock file
/// stays). `Ok(false)` when either flock is held (a refresh is running):
/// left for the next open.
fn upgrade_source(layout: &Layout, id: &SourceId) -> Result<bool> {
    // A `<name>.lock` with content is fizeau's short lock, held for a
    // moment: never ours to flock or remove.
    let fizeau_holds = std::fs::symlink_metadata(layout.legacy_lock(id)).is_ok_and(|m| m.len() > 0);
    if fizeau_holds {
        return Ok(false);
    }
    let Some(old_lock) = SourceLock::try_acquire(&layout.legacy_lock(id))? else {
        return Ok(false);
    };
    store::ensure_source_dirs(layout, id)?;
    let Some(_new_lock) = SourceLock::try_acquire(&layout.lock(id))? else {
        return Ok(false);
    };
    let legacy = layout.legacy_sidecar(id);
    let regular = std::fs::symlink_metadata(&legacy).is_ok_and(|m| m.is_file());
    if regular && !already_moved(layout, id, &legacy)? {
        // One rename: a reader sees the sidecar at one place or the other,
        // and a damaged one keeps whatever revision is still legible.
        std::fs::rename(&legacy, layout.sidecar(id))
            .map_err(|e| Error::io("move format 1 sidecar", &legacy, e))?;
    }
    if regular {
        store::remove_if_present(&legacy, "remove format 1 sidecar")?;
    }
    // Kept: a format 1 process still running flocks it, and so does every
    // claim until FORMAT1_GRACE has passed (crate::claim::take_format1).
    drop(old_lock);
    Ok(true)
}

/// True when the new place already holds a record at least as far along
/// as the old one (an upgrade cut short after its rename, then a format 1
/// process wrote the old place again with nothing newer).
fn already_moved(layout: &Layout, id: &SourceId, legacy: &Path) -> Result<bool> {
    let path = layout.sidecar(id);
    let new = store::read_optional(&path, "read sidecar")?;
    let Sidecar::Intact(new) = Sidecar::judge(new.as_deref(), &path) else {
        return Ok(false);
    };
    let old = store::read_optional(legacy, "read format 1 sidecar")?;
    Ok(match Sidecar::judge(old.as_deref(), legacy) {
        Sidecar::Intact(old) => new.revision >= old.revision,
        Sidecar::Missing | Sidecar::Damaged(_) => true,
    })
}

/// Moves format 1's `<root>/.discocache/stats.json` to its format 2 place,
/// unless one is there already.
fn move_stats(layout: &Layout) -> Result<()> {
    let old = layout.state_dir().join(LEGACY_STATS_FILE);
    if !std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let new = layout.state_dir().join(STATS_FILE);
    store::ensure_dir(&layout.daemon_dir())?;
    if std::fs::symlink_metadata(&new).is_ok() {
        return Ok(());
    }
    std::fs::rename(&old, &new).map_err(|e| Error::io("move stats file", &old, e))
}
