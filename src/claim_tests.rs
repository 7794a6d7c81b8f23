//! Tests of the claim (`crate::claim`).

use super::*;
use std::cell::RefCell;

thread_local! {
    /// Run once after a claim's marker change, before its short lock
    /// is released.
    static AFTER_MARKER_CHANGE: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
}

pub(super) fn after_marker_change() {
    if let Some(f) = AFTER_MARKER_CHANGE.with(|h| h.borrow_mut().take()) {
        f();
    }
}

/// fizeau breaks our short lock (it judged it dead and deletes it by
/// path) while we hold it, and writes its own marker over ours. The
/// claim must not go ahead as if the marker were ours.
#[test]
fn claim_whose_short_lock_fizeau_broke_judges_the_marker_again() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let id = SourceId::parse("t/x").unwrap();
    std::fs::create_dir_all(layout.tier_dir(&id)).unwrap();
    let (lock, marker) = (layout.fizeau_lock(&id), layout.marker(&id));
    // fizeau's marker, of a process that has exited since.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let theirs = format!(
        r#"{{"pid":{},"started_at":"2026-01-01T00:00:00Z","deadline":"2099-01-01T00:00:00Z"}}"#,
        gone.id()
    );
    let planted = theirs.clone();
    AFTER_MARKER_CHANGE.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            std::fs::remove_file(&lock).unwrap();
            std::fs::write(&marker, planted).unwrap();
        }));
    });

    let claimed = claim(&layout, &id, Duration::from_secs(10)).expect("claimed");
    let on_disk = std::fs::read(layout.marker(&id)).unwrap();
    let on_disk = FizeauMarker::parse(&on_disk).unwrap();
    assert_eq!(
        on_disk.token.as_deref(),
        Some(claimed.marker.token.as_str()),
        "claimed while the marker on disk is fizeau's"
    );
    assert!(claimed.replaced, "fizeau's marker was judged and replaced");
}

#[test]
fn group_is_recorded_only_in_our_marker_and_under_the_short_lock() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let id = SourceId::parse("t/x").unwrap();
    std::fs::create_dir_all(layout.tier_dir(&id)).unwrap();
    let claimed = claim(&layout, &id, Duration::from_secs(10)).expect("claimed");
    let token = claimed.marker.token;
    let read = || {
        let bytes = std::fs::read(layout.marker(&id)).unwrap();
        FizeauMarker::parse(&bytes).unwrap()
    };

    assert!(record_group(&layout, &id, &token, 4242, None).unwrap());
    assert_eq!((read().pgid, read().token), (Some(4242), Some(token)));
    assert!(
        !layout.fizeau_lock(&id).exists(),
        "the short lock is released"
    );

    assert!(!record_group(&layout, &id, "someone-else", 1, None).unwrap());
    assert_eq!(read().pgid, Some(4242), "a marker not ours is left alone");
}
