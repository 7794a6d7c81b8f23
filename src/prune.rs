//! Recovery of crash leftovers and removal of sources no longer configured.
//!
//! Both only ever touch files that match the layout, and only for sources
//! whose lock they can take: a source being refreshed is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, FileType};
use std::io;
use std::path::{Path, PathBuf};

use crate::beneath::{self, Dir};
use crate::claim;
use crate::error::{Error, Result};
use crate::layout::{self, FileKind, Layout, is_temp_of};
use crate::lock::SourceLock;
use crate::source::SourceId;
use crate::store;

/// Every layout file on disk, grouped by source.
pub type Scan = BTreeMap<SourceId, Vec<(PathBuf, FileKind)>>;

/// Lists every file under the root that matches the layout.
///
/// # Errors
///
/// [`Error::Io`] when the root or a tier directory cannot be listed.
/// Only real tier directories (never a symlink to one) are listed, and only
/// regular files are returned: anything else with a layout name is logged
/// and left alone.
///
/// # Errors
///
/// [`Error::Io`] when the root or a tier directory cannot be listed.
pub fn scan(layout: &Layout) -> Result<Scan> {
    let mut found = Scan::new();
    for (tier, tier_type) in list_dir(layout.root())? {
        let Some(tier_name) = tier.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !layout::is_tier_dir(&tier_name) {
            continue;
        }
        if !tier_type.is_dir() {
            let what = beneath::kind_name(tier_type);
            tracing::warn!(
                "{}: left alone: it is {what}, not a tier directory",
                tier.display()
            );
            continue;
        }
        scan_files(&tier, &tier_name, layout::classify, &mut found)?;
        let state = tier.join(layout::STATE_DIR);
        if fs::symlink_metadata(&state).is_ok_and(|m| m.is_dir()) {
            scan_files(&state, &tier_name, layout::classify_state, &mut found)?;
        }
    }
    Ok(found)
}

/// Adds the layout files of one directory (a tier, or its `.discocache/`)
/// to `found`; anything but a regular file is logged and left alone.
fn scan_files(
    dir: &Path,
    tier: &str,
    classify: fn(&str) -> Option<(String, FileKind)>,
    found: &mut Scan,
) -> Result<()> {
    for (file, file_type) in list_dir(dir)? {
        let Some(file_name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((name, kind)) = classify(file_name) else {
            continue;
        };
        if !file_type.is_file() {
            let what = beneath::kind_name(file_type);
            tracing::warn!(
                "{}: left alone: it is {what}, not a regular file",
                file.display()
            );
            continue;
        }
        let id = SourceId::new(tier, &name)?;
        found.entry(id).or_default().push((file, kind));
    }
    Ok(())
}

/// The entries of a directory with their types (symlinks not followed).
/// The directory itself is opened first without following symlinks, so a
/// tier replaced by a symlink is refused rather than listed.
fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, FileType)>> {
    if Dir::open(dir)?.is_none() {
        return Ok(Vec::new());
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list directory", dir, e)),
    };
    entries
        .map(|e| {
            e.and_then(|e| Ok((e.path(), e.file_type()?)))
                .map_err(|err| Error::io("list directory", dir, err))
        })
        .collect()
}

/// Takes a source's lock for recovery or prune; `Ok(None)` when it is held,
/// or when the lock file is refused (a symlink, a FIFO, ...: logged, and the
/// source left alone).
fn try_lock(layout: &Layout, id: &SourceId) -> Result<Option<SourceLock>> {
    let locked = store::ensure_source_dirs(layout, id)
        .and_then(|()| SourceLock::try_acquire(&layout.lock(id)));
    match locked {
        Err(e @ (Error::Refused { .. } | Error::NotOwned { .. })) => {
            tracing::warn!("{id}: left alone: {e}");
            Ok(None)
        }
        other => other,
    }
}

/// Removes one source's temp files and its marker. The caller holds the
/// source's lock. Returns what was removed.
///
/// # Errors
///
/// [`Error::Io`] when a file cannot be listed or removed.
pub fn clear_leftovers(layout: &Layout, id: &SourceId) -> Result<Vec<PathBuf>> {
    let mut removed = clear_temps(layout, id)?;
    removed.extend(claim::clear_abandoned(layout, id, recovery_deadline())?.removed);
    Ok(removed)
}

/// The refresh deadline markers and fizeau's temp files are judged with in
/// recovery and prune, which know no source's policy: the default one.
fn recovery_deadline() -> std::time::Duration {
    crate::source::Policy::default().refresh_deadline
}

/// Removes one source's temp files (in its tier directory and its
/// `.discocache/`). The caller holds the source's lock.
///
/// # Errors
///
/// [`Error::Io`] when a directory cannot be listed or a file removed.
pub fn clear_temps(layout: &Layout, id: &SourceId) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in [layout.tier_dir(id), layout.tier_state_dir(id)] {
        for (path, file_type) in list_dir(&dir)? {
            let temp = file_type.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| is_temp_of(n, id));
            if temp && store::remove_if_present(&path, "remove temp file")? {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// What [`Cache::recover`](crate::Cache::recover) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Temp files and abandoned markers removed.
    pub removed: Vec<PathBuf>,
    /// Sources with leftovers whose lock was held: left alone.
    pub busy: Vec<SourceId>,
}

/// Removes crash leftovers (temp files, abandoned markers) of every source
/// whose lock is free. A sidecar without a payload stays: it is the failure
/// record of a source that never succeeded.
///
/// # Errors
///
/// [`Error::Io`] when the root cannot be listed or a file removed.
pub fn recover(layout: &Layout) -> Result<Recovered> {
    let mut report = Recovered::default();
    for (id, files) in scan(layout)? {
        let fizeau_tmp = layout.tier_dir(&id).join(format!("{}.json.tmp", id.name()));
        let leftovers = fizeau_tmp.exists()
            || files
                .iter()
                .any(|(_, k)| matches!(k, FileKind::Temp | FileKind::Marker));
        if !leftovers {
            continue;
        }
        match try_lock(layout, &id)? {
            Some(_lock) => report.removed.extend(clear_leftovers(layout, &id)?),
            None => report.busy.push(id),
        }
    }
    Ok(report)
}

/// What [`Cache::prune`](crate::Cache::prune) did, or would do with `dry_run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Sources removed (or that would be).
    pub sources: Vec<SourceId>,
    /// Files removed (or that would be).
    pub files: Vec<PathBuf>,
    /// Unknown sources left alone because a refresh holds their lock.
    pub in_flight: Vec<SourceId>,
    /// Crash leftovers cleared first.
    pub recovered: Recovered,
}

/// Removes every file of sources not in `active`, after running
/// [`recover`]. Sources being refreshed are skipped; files that do not match
/// the layout are never touched. With `dry_run`, only reports.
///
/// # Errors
///
/// [`Error::Io`] when the root cannot be listed or a file removed.
pub fn prune(layout: &Layout, active: &BTreeSet<SourceId>, dry_run: bool) -> Result<Pruned> {
    let mut report = Pruned::default();
    if !dry_run {
        report.recovered = recover(layout)?;
    }
    for (id, files) in scan(layout)? {
        if active.contains(&id) {
            continue;
        }
        let Some(lock) = try_lock(layout, &id)? else {
            report.in_flight.push(id);
            continue;
        };
        // fizeau refreshing it: left alone, as one of ours would be.
        if !dry_run && claim::clear_abandoned(layout, &id, recovery_deadline())?.fizeau_refreshing {
            report.in_flight.push(id);
            continue;
        }
        for (path, kind) in &files {
            if *kind != FileKind::Lock && (dry_run || store::remove_if_present(path, "prune")?) {
                report.files.push(path.clone());
            }
        }
        report.files.push(lock.path().to_owned());
        if !dry_run {
            lock.unlink()?;
            remove_dir_if_empty(&layout.tier_state_dir(&id));
            remove_dir_if_empty(&layout.tier_dir(&id));
        }
        report.sources.push(id);
    }
    Ok(report)
}

fn remove_dir_if_empty(dir: &Path) {
    // Fails harmlessly when the directory still has files.
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn prune_and_recover_leave_symlinks_and_fifos_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path().join("root"));
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(layout.root().join("t")).unwrap();
        fs::write(outside.join("gone.json"), b"[1]").unwrap();
        fs::write(outside.join(".gone.ab.tmp"), b"[1]").unwrap();
        symlink(&outside, layout.root().join("linked")).unwrap();
        let fifo = layout.root().join("t/old.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        symlink(outside.join("gone.json"), layout.root().join("t/sym.json")).unwrap();
        fs::write(layout.root().join("t/real.json"), b"[1]").unwrap();

        let report = prune(&layout, &BTreeSet::new(), false).unwrap();
        let real = SourceId::parse("t/real").unwrap();
        assert_eq!(report.sources, vec![real]);
        assert!(fs::symlink_metadata(&fifo).is_ok(), "the FIFO was deleted");
        assert!(fs::symlink_metadata(layout.root().join("t/sym.json")).is_ok());
        assert!(outside.join("gone.json").exists());
        assert!(outside.join(".gone.ab.tmp").exists());
        assert!(!layout.root().join("t/real.json").exists());
    }
}
