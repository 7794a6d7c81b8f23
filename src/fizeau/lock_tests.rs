use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::super::testing::{LiveProcess, dead_pid, set_mtime, written_by_dead_process};
use super::*;

fn fast() -> LockRules {
    LockRules {
        bound: Duration::from_millis(50),
        unparsable_after: Duration::from_secs(1),
        poll: Duration::from_millis(1),
    }
}

fn setup() -> (tempfile::TempDir, TierDir, Names) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TierDir::open(tmp.path()).unwrap();
    (tmp, dir, Names::new("src").unwrap())
}

fn lock_path(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path().join("src.lock")
}

fn pid_in(path: &Path) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'), "{v}");
    v["pid"].as_i64().unwrap()
}

#[test]
fn lock_holds_our_pid_and_release_deletes_it() {
    let (tmp, dir, names) = setup();
    let lock = ShortLock::acquire(&dir, &names, &fast()).unwrap();
    assert_eq!(pid_in(&lock_path(&tmp)), i64::from(std::process::id()));
    assert!(lock.release().unwrap());
    assert!(!lock_path(&tmp).exists());
}

#[test]
fn lock_is_released_on_drop() {
    let (tmp, dir, names) = setup();
    drop(ShortLock::acquire(&dir, &names, &fast()).unwrap());
    assert!(!lock_path(&tmp).exists());
}

#[test]
fn lock_of_a_live_process_times_out_naming_file_and_pid() {
    let (tmp, dir, names) = setup();
    let other = LiveProcess::start();
    let content = format!(
        r#"{{"pid":{},"started_at":"2026-01-01T00:00:00Z"}}"#,
        other.pid()
    );
    std::fs::write(lock_path(&tmp), &content).unwrap();
    let err = ShortLock::acquire(&dir, &names, &fast())
        .unwrap_err()
        .to_string();
    assert!(err.contains("take fizeau's lock"), "{err}");
    assert!(
        err.contains(&lock_path(&tmp).display().to_string()),
        "{err}"
    );
    assert!(
        err.contains(&format!("held by live pid {}", other.pid())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(lock_path(&tmp)).unwrap(), content);
}

#[test]
fn lock_of_a_dead_process_is_cleared_and_taken() {
    let (tmp, dir, names) = setup();
    let pid = written_by_dead_process(
        &lock_path(&tmp),
        r#"{"pid":%d,"started_at":"2026-01-01T00:00:00Z"}"#,
    );
    assert_eq!(pid_in(&lock_path(&tmp)), pid);
    let lock = ShortLock::acquire(&dir, &names, &fast()).unwrap();
    assert_eq!(pid_in(&lock_path(&tmp)), i64::from(std::process::id()));
    lock.release().unwrap();
}

#[test]
fn young_empty_lock_is_waited_for_not_cleared() {
    let (tmp, dir, names) = setup();
    std::fs::write(lock_path(&tmp), "").unwrap();
    let err = ShortLock::acquire(&dir, &names, &fast())
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty or unparsable"), "{err}");
    assert!(lock_path(&tmp).exists());
}

#[test]
fn old_empty_or_garbage_lock_is_cleared_which_fizeau_never_does() {
    for content in ["", "{\"pid\":", "not json", "[1]", r#"{"pid":"1"}"#] {
        let (tmp, dir, names) = setup();
        std::fs::write(lock_path(&tmp), content).unwrap();
        set_mtime(&lock_path(&tmp), SystemTime::now() - Duration::from_secs(5));
        let lock = ShortLock::acquire(&dir, &names, &fast())
            .unwrap_or_else(|e| panic!("{content:?}: {e}"));
        assert_eq!(pid_in(&lock_path(&tmp)), i64::from(std::process::id()));
        lock.release().unwrap();
    }
}

#[test]
fn lock_without_a_pid_counts_as_dead_as_for_fizeau() {
    for content in ["{}", "null", r#"{"pid":0}"#, r#"{"pid":-4}"#] {
        let (tmp, dir, names) = setup();
        std::fs::write(lock_path(&tmp), content).unwrap();
        let lock = ShortLock::acquire(&dir, &names, &fast())
            .unwrap_or_else(|e| panic!("{content:?}: {e}"));
        lock.release().unwrap();
    }
}

#[test]
fn release_leaves_a_lock_that_is_no_longer_ours() {
    let (tmp, dir, names) = setup();
    let lock = ShortLock::acquire(&dir, &names, &fast()).unwrap();
    // Someone (fizeau's break race) deleted ours and made their own.
    std::fs::remove_file(lock_path(&tmp)).unwrap();
    std::fs::write(lock_path(&tmp), r#"{"pid":1}"#).unwrap();
    assert!(!lock.release().unwrap());
    assert_eq!(
        std::fs::read_to_string(lock_path(&tmp)).unwrap(),
        r#"{"pid":1}"#
    );
}

#[test]
fn symlink_or_fifo_at_the_lock_path_is_refused_untouched() {
    let (tmp, dir, names) = setup();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "{}").unwrap();
    symlink(&outside, lock_path(&tmp)).unwrap();
    let err = ShortLock::acquire(&dir, &names, &fast())
        .unwrap_err()
        .to_string();
    assert!(err.contains("symlink"), "{err}");
    assert!(
        lock_path(&tmp)
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "{}");

    std::fs::remove_file(lock_path(&tmp)).unwrap();
    nix::unistd::mkfifo(
        &lock_path(&tmp),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let err = ShortLock::acquire(&dir, &names, &fast())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn tier_directory_that_is_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("real")).unwrap();
    symlink(tmp.path().join("real"), tmp.path().join("tier")).unwrap();
    let err = TierDir::open(&tmp.path().join("tier"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("open tier directory"), "{err}");
}

#[test]
fn judge_lock_rules() {
    let rules = LockRules::default();
    let young = Duration::from_millis(10);
    let old = rules.unparsable_after;
    let alive = |pid: i64| pid == 7;
    assert_eq!(
        judge_lock(br#"{"pid":7}"#, old, &rules, alive),
        LockVerdict::Live(7)
    );
    assert_eq!(
        judge_lock(br#"{"pid":8}"#, young, &rules, alive),
        LockVerdict::DeadPid(8)
    );
    assert_eq!(
        judge_lock(b"", young, &rules, alive),
        LockVerdict::YoungUnparsable(young)
    );
    assert_eq!(
        judge_lock(b"", old, &rules, alive),
        LockVerdict::OldUnparsable(old)
    );
    assert!(LockVerdict::DeadPid(dead_pid()).clears());
    assert!(!LockVerdict::Live(7).clears());
}

#[test]
fn old_empty_lock_flocked_by_a_format_1_holder_is_never_cleared() {
    use std::os::fd::AsRawFd;
    let (tmp, dir, names) = setup();
    std::fs::write(lock_path(&tmp), "").unwrap();
    set_mtime(
        &lock_path(&tmp),
        SystemTime::now() - Duration::from_secs(60),
    );
    let holder = std::fs::File::open(lock_path(&tmp)).unwrap();
    // SAFETY: flock on a descriptor the test owns.
    assert_eq!(
        unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let err = ShortLock::acquire(&dir, &names, &fast())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("flocked by a format 1 discocache process"),
        "{err}"
    );
    assert!(lock_path(&tmp).exists());
    drop(holder);
    // Once it is released, the leftover is cleared.
    ShortLock::acquire(&dir, &names, &fast())
        .unwrap()
        .release()
        .unwrap();
}

#[test]
fn short_lock_admits_one_holder_at_a_time() {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_tmp, dir, names) = setup();
    let inside = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..25 {
                    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert!(lock.release().unwrap(), "our lock was taken from us");
                }
            });
        }
    });
    assert_eq!(most.load(Ordering::SeqCst), 1);
}
