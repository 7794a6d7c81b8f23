//! `Cache::invalidate`, the library's soft purge, on its own.

use std::time::{Duration, SystemTime};

use discocache::{Cache, Invalidated, Policy, Source};

fn source() -> Source {
    let mut s = Source::parse("t/inv").expect("source");
    s.policy = Policy {
        ttl: Duration::from_secs(3600),
        ..Policy::default()
    };
    s
}

fn mtime(path: &std::path::Path) -> SystemTime {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

#[tokio::test]
async fn invalidate_marks_stale_once_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("root")).expect("open");
    let s = source();
    assert_eq!(
        cache.invalidate(&s).expect("invalidate"),
        Invalidated::NoData
    );
    cache.write(&s, b"[1]".to_vec()).await.expect("write");
    assert!(cache.read(&s).expect("read").expect("entry").fresh);
    assert_eq!(
        cache.invalidate(&s).expect("invalidate"),
        Invalidated::Marked
    );
    let entry = cache.read(&s).expect("read").expect("still served");
    assert!(!entry.fresh, "stale after invalidate");
    assert_eq!(entry.data, b"[1]");
    assert_eq!(
        cache.invalidate(&s).expect("invalidate"),
        Invalidated::AlreadyStale
    );
}

#[test]
fn invalidate_never_timestamps_through_a_payload_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("root")).expect("open");
    let outside = dir.path().join("outside.json");
    std::fs::write(&outside, b"[0]").expect("outside file");
    let before = mtime(&outside);
    std::fs::create_dir_all(dir.path().join("root/t")).expect("tier");
    std::os::unix::fs::symlink(&outside, dir.path().join("root/t/inv.json")).expect("symlink");
    assert_eq!(
        cache.invalidate(&source()).expect("invalidate"),
        Invalidated::NoData
    );
    assert_eq!(mtime(&outside), before, "the outside file was not touched");
}
