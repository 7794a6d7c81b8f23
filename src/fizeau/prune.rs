//! fizeau's `Prune` as it sees a root, and the recovery of its leftovers.
//!
//! fizeau's `Prune(active)` walks the whole root and treats every regular
//! (non-directory) file `<tier>/<name>.json` at depth 2 as the payload of
//! source `tier/name`; when that source is not active and its marker is not
//! active by its prune rule, it deletes `<name>.json`, `<name>.refreshing`
//! and `<name>.json.tmp`. So in format 2 the only `*.json` files at depth 2
//! are payloads: sidecars live in `<tier>/.discocache/`, and root-level
//! state in `<root>/.discocache/` must not be a `*.json` file directly
//! there (fizeau would take `.discocache/stats.json` for source
//! `.discocache/stats` and delete it).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::lock::ShortLock;
use super::marker::MarkerState;
use crate::error::Result;
use crate::meta::Timestamp;

/// The source fizeau's `Prune` takes the file at `rel` (relative to the
/// root) for, as `(tier, name)`; `None` for a file it never touches.
pub fn prune_target(rel: &Path) -> Option<(String, String)> {
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let [tier, file] = parts.as_slice() else {
        return None;
    };
    let name = file.strip_suffix(".json")?;
    Some(((*tier).to_owned(), name.to_owned()))
}

/// Every file under `root` that fizeau's `Prune` would take for a payload
/// (depth 2, not a directory, `*.json`; symlinks are not followed, as its
/// walk does not follow them).
///
/// # Errors
///
/// [`crate::Error::Io`] when the root or a tier directory cannot be listed.
pub fn prune_targets(root: &Path) -> Result<Vec<PathBuf>> {
    let list = |dir: &Path| std::fs::read_dir(dir).map_err(|e| crate::Error::io("list", dir, e));
    let mut out = Vec::new();
    for tier in list(root)? {
        let tier = tier.map_err(|e| crate::Error::io("list", root, e))?;
        if !tier.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for file in list(&tier.path())? {
            let file = file.map_err(|e| crate::Error::io("list", tier.path(), e))?;
            let rel = Path::new(&tier.file_name()).join(file.file_name());
            if !file.file_type().is_ok_and(|t| t.is_dir()) && prune_target(&rel).is_some() {
                out.push(file.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes fizeau's fixed-name `<name>.json.tmp` (a crash leftover of its
/// write) under the short lock, when it is a regular file older than
/// `older_than` and no live marker exists by fizeau's rules. Returns
/// whether it did.
///
/// # Errors
///
/// [`crate::Error::Io`] when the marker or the temp file cannot be read or
/// removed, or the marker is not a regular file.
pub fn recover_fizeau_tmp(
    lock: &ShortLock<'_>,
    now: Timestamp,
    refresh_deadline: Duration,
    older_than: Duration,
) -> Result<bool> {
    if let Some(seen) = lock.read_marker()? {
        let state: MarkerState = seen.marker.judge(now, refresh_deadline, super::pid_alive);
        if state.is_live() {
            return Ok(false);
        }
    }
    let dir = lock.dir();
    let name = &lock.names().fizeau_tmp;
    let Some((id, regular, mtime)) = dir.stat(name)? else {
        return Ok(false);
    };
    let age = now.system_time().duration_since(mtime).unwrap_or_default();
    if !regular || age < older_than {
        return Ok(false);
    }
    dir.remove_if_same(name, id)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::Names;
    use super::super::dir::TierDir;
    use super::super::lock::LockRules;
    use super::super::marker::FizeauMarker;
    use super::super::testing::set_mtime;
    use super::*;

    #[test]
    fn fizeau_prune_takes_every_depth_2_json_for_a_payload() {
        let t = |s: &str| prune_target(Path::new(s));
        assert_eq!(
            t("discovery/x.json"),
            Some(("discovery".into(), "x".into()))
        );
        assert_eq!(
            t("discovery/x.meta.json"),
            Some(("discovery".into(), "x.meta".into()))
        );
        assert_eq!(
            t(".discocache/stats.json"),
            Some((".discocache".into(), "stats".into()))
        );
        assert_eq!(t("discovery/.discocache/x.meta.json"), None);
        assert_eq!(t("discovery/x.json.tmp"), None);
        assert_eq!(t("discovery/x.lock"), None);
        assert_eq!(t("x.json"), None);
    }

    #[test]
    fn format_2_layout_offers_fizeau_prune_only_payloads() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in ["discovery/.discocache", ".discocache/state"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for file in [
            "discovery/x.json",
            "discovery/x.refreshing",
            "discovery/x.lock",
            "discovery/.x.0123456789abcdef.tmp",
            "discovery/.discocache/x.meta.json",
            "discovery/.discocache/x.flock",
            ".discocache/format",
            ".discocache/state/stats.json",
        ] {
            std::fs::write(r.join(file), "{}").unwrap();
        }
        assert_eq!(prune_targets(r).unwrap(), vec![r.join("discovery/x.json")]);
        // Format 1 (sidecar beside the payload, counters at the root) is not.
        std::fs::write(r.join("discovery/x.meta.json"), "{}").unwrap();
        std::fs::write(r.join(".discocache/stats.json"), "{}").unwrap();
        assert_eq!(prune_targets(r).unwrap().len(), 3);
    }

    #[test]
    fn old_fizeau_tmp_is_recovered_only_when_no_marker_is_live() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TierDir::open(tmp.path()).unwrap();
        let names = Names::new("src").unwrap();
        let leftover = tmp.path().join("src.json.tmp");
        let rd = Duration::from_secs(10);
        let lock =
            super::super::lock::ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
        let min_age = Duration::from_secs(60);

        std::fs::write(&leftover, "{\"half").unwrap();
        assert!(
            !recover_fizeau_tmp(&lock, Timestamp::now(), rd, min_age).unwrap(),
            "young"
        );
        set_mtime(&leftover, SystemTime::now() - Duration::from_secs(120));

        // A live fizeau marker: its owner may be writing that file.
        let mut live = FizeauMarker::claim(Timestamp::now(), rd, "x");
        live.token = None;
        lock.write_marker(&live).unwrap();
        assert!(!recover_fizeau_tmp(&lock, Timestamp::now(), rd, min_age).unwrap());
        assert!(leftover.exists());

        std::fs::remove_file(tmp.path().join("src.refreshing")).unwrap();
        assert!(recover_fizeau_tmp(&lock, Timestamp::now(), rd, min_age).unwrap());
        assert!(!leftover.exists());
    }
}
