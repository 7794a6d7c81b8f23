use std::fs;
use std::time::{Duration, SystemTime};

use super::*;

/// A root with the tier `t` watched.
fn watched() -> (tempfile::TempDir, Layout, Changes) {
    let dir = tempfile::tempdir().expect("dir");
    let layout = Layout::new(dir.path());
    fs::create_dir(dir.path().join("t")).expect("tier dir");
    let mut changes = Changes::new(&layout).expect("inotify");
    assert!(changes.watch("t", &dir.path().join("t")));
    (dir, layout, changes)
}

fn drained(changes: &mut Changes) -> Vec<Changed> {
    let mut all = Vec::new();
    changes.drain(|c| all.push(c));
    all
}

fn payload(name: &str) -> Changed {
    Changed::Payload {
        tier: "t".into(),
        name: name.into(),
    }
}

#[test]
fn a_commit_an_edit_and_a_touch_are_queued_and_name_their_source() {
    let (dir, _layout, mut changes) = watched();
    let tier = dir.path().join("t");
    assert!(!changes.pending(), "nothing happened yet");
    fs::write(tier.join(".x.1.tmp"), b"[1]").expect("temp");
    fs::rename(tier.join(".x.1.tmp"), tier.join("x.json")).expect("rename");
    assert!(changes.pending(), "a rename is queued before it returns");
    assert!(drained(&mut changes).contains(&payload("x")));
    assert!(!changes.pending(), "drained");

    fs::write(tier.join("x.json"), b"[2]").expect("write in place");
    assert!(drained(&mut changes).contains(&payload("x")));
    let file = fs::File::options()
        .write(true)
        .open(tier.join("x.json"))
        .expect("open");
    drained(&mut changes);
    file.set_modified(SystemTime::now() - Duration::from_secs(60))
        .expect("touch");
    assert_eq!(drained(&mut changes), vec![payload("x")]);
}

#[test]
fn reading_a_payload_or_locking_queues_nothing() {
    let (dir, _layout, mut changes) = watched();
    let tier = dir.path().join("t");
    fs::write(tier.join("x.json"), b"[1]").expect("write");
    fs::write(tier.join("x.lock"), b"").expect("lock file");
    drained(&mut changes);
    assert_eq!(fs::read(tier.join("x.json")).expect("read"), b"[1]");
    let lock = fs::File::open(tier.join("x.lock")).expect("open lock");
    lock.lock().expect("flock");
    assert!(!changes.pending(), "opens, reads and locks are not changes");
}

#[test]
fn a_tier_directory_removed_or_renamed_changes_everything_and_is_watched_again() {
    let (dir, _layout, mut changes) = watched();
    let tier = dir.path().join("t");
    fs::rename(&tier, dir.path().join("old")).expect("rename tier");
    assert!(drained(&mut changes).contains(&Changed::Everything));
    fs::create_dir(&tier).expect("new tier dir");
    drained(&mut changes);
    assert!(changes.watch("t", &tier), "watched again");
    fs::write(tier.join("y.json"), b"[1]").expect("write");
    assert!(drained(&mut changes).contains(&payload("y")));

    fs::remove_file(tier.join("y.json")).expect("remove");
    fs::remove_dir(&tier).expect("remove tier");
    let all = drained(&mut changes);
    assert!(all.contains(&payload("y")), "{all:?}");
    assert!(all.contains(&Changed::Everything), "{all:?}");
    assert!(!changes.watch("t", &tier), "no directory to watch");
}

#[test]
fn only_payload_names_are_sources() {
    use std::ffi::OsStr;
    assert_eq!(payload_name(OsStr::new("x.json")), Some("x"));
    assert_eq!(payload_name(OsStr::new("x.lock")), None);
    assert_eq!(payload_name(OsStr::new(".x.abc.tmp")), None);
    assert_eq!(payload_name(OsStr::new("x.refreshing")), None);
}

#[test]
fn the_root_moved_away_changes_everything_and_nothing_is_watched_again() {
    let (dir, layout, mut changes) = watched();
    let moved = dir.path().with_extension("moved");
    fs::rename(layout.root(), &moved).expect("move the root");
    let all = drained(&mut changes);
    fs::rename(&moved, layout.root()).expect("move it back");
    assert!(all.contains(&Changed::Everything), "{all:?}");
    assert!(
        !changes.watch("u", &dir.path().join("t")),
        "no more watches"
    );
}
