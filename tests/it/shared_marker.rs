//! The shared marker `<name>.refreshing` and payloads written by others,
//! with fizeau acted out by the test (markers without a `token`, owned by a
//! real live or dead process; payloads replaced by rename), so these run
//! where Go is missing.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use discocache::{Cache, FetchError, Fetched, Layout, Policy, Refreshed, Source};
use notify::Watcher;
use sha2::{Digest, Sha256};

fn source(id: &str) -> Source {
    let mut s = Source::parse(id).unwrap();
    s.policy = Policy {
        ttl: Duration::from_secs(3600),
        refresh_deadline: Duration::from_secs(5),
        ..Policy::default()
    };
    s
}

/// A live process, killed when dropped.
struct Live(Child);

impl Live {
    fn start() -> Self {
        Self(Command::new("sleep").arg("60").spawn().unwrap())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A marker as fizeau writes it: no token.
fn fizeau_marker(pid: u32, deadline_in: Duration) -> String {
    let now = SystemTime::now();
    let t = |t: SystemTime| humantime::format_rfc3339_nanos(t).to_string();
    format!(
        r#"{{"pid":{pid},"started_at":"{}","deadline":"{}"}}"#,
        t(now),
        t(now + deadline_in)
    )
}

/// Replaces `path` by rename, as fizeau commits.
fn write_as_fizeau(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fizeau_marker_is_waited_for_and_its_commit_joined() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    let layout = cache.layout().clone();
    let tier = layout.tier_dir(&s.id);
    fs::create_dir_all(&tier).unwrap();
    let fizeau = Live::start();
    let marker = fizeau_marker(fizeau.0.id(), Duration::from_secs(5));
    fs::write(layout.marker(&s.id), &marker).unwrap();

    // Our claim takes fizeau's short lock (`models.lock`) to judge the
    // marker: its removal means the marker was judged live and we wait.
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).unwrap();
    watcher
        .watch(&tier, notify::RecursiveMode::NonRecursive)
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let refresh = {
        let (cache, s) = (cache.clone(), s.clone());
        tokio::spawn(async move {
            let f = move |_| async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FetchError>(Fetched::data("{\"ours\":1}"))
            };
            cache.refresh(&s, f).await
        })
    };
    let short_lock = tier.join("models.lock");
    let judged = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Ok(e)) if e.kind.is_remove() && e.paths.contains(&short_lock) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(
        judged,
        "the marker was never judged under fizeau's short lock"
    );
    assert_eq!(
        fs::read_to_string(layout.marker(&s.id)).unwrap(),
        marker,
        "fizeau's live marker was touched"
    );

    // fizeau commits and removes its marker.
    write_as_fizeau(&layout.payload(&s.id), b"{\"fizeau\":1}");
    fs::remove_file(layout.marker(&s.id)).unwrap();
    let got = refresh.await.unwrap().unwrap();
    assert!(matches!(got, Refreshed::Joined { .. }), "{got:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a second refresher ran");
    let entry = cache.read(&s).unwrap().unwrap();
    assert_eq!(entry.data, b"{\"fizeau\":1}");
    assert!(!layout.marker(&s.id).exists(), "our marker left behind");
}

#[tokio::test]
async fn stale_fizeau_marker_is_replaced_and_the_refresh_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    let layout = cache.layout().clone();
    fs::create_dir_all(layout.tier_dir(&s.id)).unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let marker = fizeau_marker(dead.id(), Duration::from_secs(5));
    fs::write(layout.marker(&s.id), marker).unwrap();

    let f = |_| async { Ok::<_, FetchError>(Fetched::data("[1]")) };
    let got = cache.refresh(&s, f).await.unwrap();
    assert_eq!(got, Refreshed::Committed { revision: 1 });
    assert!(!layout.marker(&s.id).exists());
}

#[tokio::test]
async fn payload_written_by_fizeau_gets_a_new_revision_and_its_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    let layout: Layout = cache.layout().clone();
    cache.write(&s, b"[1]".to_vec()).await.unwrap();
    let theirs = b"{\"from\":\"fizeau\",\"n\":2}";
    write_as_fizeau(&layout.payload(&s.id), theirs);

    let fail = |_| async { Err::<Fetched, _>(FetchError::new("origin down")) };
    assert!(cache.refresh(&s, fail).await.is_err());
    let meta = cache.meta(&s.id).unwrap().unwrap();
    assert_eq!(meta.revision, 2, "the foreign payload is a new revision");
    assert_eq!(meta.bytes, Some(theirs.len() as u64));
    let sha = hex::encode(Sha256::digest(theirs));
    assert_eq!(meta.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(meta.last_error.as_deref(), Some("origin down"));
}

#[tokio::test]
async fn recovery_leaves_a_live_fizeau_marker_and_clears_its_old_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    let layout = cache.layout().clone();
    cache.write(&s, b"[1]".to_vec()).await.unwrap();
    let fizeau = Live::start();
    let marker = fizeau_marker(fizeau.0.id(), Duration::from_secs(5));
    fs::write(layout.marker(&s.id), &marker).unwrap();
    let tmp = layout.tier_dir(&s.id).join("models.json.tmp");
    fs::write(&tmp, b"[2").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old)
        .unwrap();

    // fizeau is refreshing: its marker and its temp file stay.
    cache.recover().unwrap();
    assert_eq!(fs::read_to_string(layout.marker(&s.id)).unwrap(), marker);
    assert!(
        tmp.exists(),
        "fizeau's temp file removed under its live marker"
    );

    // fizeau died: both are leftovers now.
    drop(fizeau);
    let report = cache.recover().unwrap();
    assert!(!layout.marker(&s.id).exists(), "{report:?}");
    assert!(!tmp.exists(), "{report:?}");
    assert!(!layout.tier_dir(&s.id).join("models.lock").exists());
}

#[tokio::test]
async fn tier_directory_fizeau_made_keeps_its_mode_and_ours_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let layout = cache.layout().clone();
    let theirs = source("shared/models");
    let tier = layout.tier_dir(&theirs.id);
    fs::create_dir(&tier).unwrap();
    fs::set_permissions(&tier, fs::Permissions::from_mode(0o750)).unwrap();
    let ours = source("private/models");

    cache.write(&theirs, b"[1]".to_vec()).await.unwrap();
    cache.write(&ours, b"[1]".to_vec()).await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tier), 0o750, "fizeau's tier directory was chmodded");
    assert_eq!(mode(&layout.tier_dir(&ours.id)), 0o700);
    assert_eq!(mode(&layout.tier_state_dir(&theirs.id)), 0o700);
}

#[tokio::test]
async fn adopt_records_a_fizeau_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    assert_eq!(cache.write(&s, b"[1]".to_vec()).await.unwrap(), 1);
    assert_eq!(cache.adopt(&s.id).unwrap(), None, "ours needs no adopting");

    let theirs = b"[1, 2]";
    write_as_fizeau(&cache.layout().payload(&s.id), theirs);
    assert_eq!(cache.adopt(&s.id).unwrap(), Some(2));
    let meta = cache.meta(&s.id).unwrap().unwrap();
    assert_eq!(meta.revision, 2);
    let sha = hex::encode(Sha256::digest(theirs));
    assert_eq!(meta.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(cache.adopt(&s.id).unwrap(), None, "adopted twice");
}

/// True when some process holds a `flock` on `path` (from /proc/locks).
fn flocked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = fs::metadata(path).map(|m| m.ino()) else {
        return false;
    };
    let needle = format!(":{ino} ");
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("FLOCK") && !l.contains("->") && l.contains(&needle))
}

/// Sets `path`'s mtime two hours back: stale for a ttl of one hour.
fn make_stale(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(7200);
    fs::File::open(path).unwrap().set_modified(old).unwrap();
}

/// fizeau commits (rename) and then takes its short lock to remove its
/// marker. A refresh that judged the source stale before that commit and
/// reaches the short lock while fizeau holds it then finds no marker: it
/// must take fizeau's commit as the outcome, not run a second refresher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fizeau_commit_landing_before_our_claim_is_joined_not_refreshed_again() {
    use discocache::Ensured;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    let layout = cache.layout().clone();
    cache.write(&s, b"{\"v\":1}".to_vec()).await.unwrap();
    make_stale(&layout.payload(&s.id));
    // fizeau holds its short lock (to release its marker after a commit).
    let fizeau = Live::start();
    let short_lock = layout.tier_dir(&s.id).join("models.lock");
    let lock = format!(
        r#"{{"pid":{},"started_at":"2026-01-01T00:00:00Z"}}"#,
        fizeau.0.id()
    );
    fs::write(&short_lock, lock).unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let refresh = {
        let (cache, s) = (cache.clone(), s.clone());
        tokio::spawn(async move {
            let f = move |_| async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FetchError>(Fetched::data("{\"ours\":1}"))
            };
            cache.maybe_refresh_sync(&s, f).await
        })
    };
    // Our claim holds the source's flock and waits for the short lock.
    let flock = layout.lock(&s.id);
    tokio::task::spawn_blocking(move || {
        crate::helpers::daemon::eventually("our flock to be held", || flocked(&flock).then_some(()))
    })
    .await
    .unwrap();
    write_as_fizeau(&layout.payload(&s.id), b"{\"fizeau\":2}");
    fs::remove_file(&short_lock).unwrap();

    let got = refresh.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a second refresher ran");
    assert!(
        matches!(got, Ensured::Refreshed(Refreshed::Joined { revision: 2 })),
        "{got:?}"
    );
    let entry = cache.read(&s).unwrap().unwrap();
    assert_eq!(entry.data, b"{\"fizeau\":2}");
}

/// fizeau renames in a payload of the same size within the mtime's
/// granularity: size and mtime match the sidecar's record, the inode does
/// not. It is another payload, adopted under a new revision.
#[tokio::test]
async fn same_size_payload_renamed_in_with_the_same_mtime_is_adopted() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source("discovery/models");
    let payload = cache.layout().payload(&s.id);
    assert_eq!(cache.write(&s, b"[1]".to_vec()).await.unwrap(), 1);
    let ours = fs::metadata(&payload).unwrap();
    assert_eq!(cache.meta(&s.id).unwrap().unwrap().inode, Some(ours.ino()));

    write_as_fizeau(&payload, b"[2]");
    let file = fs::File::open(&payload).unwrap();
    file.set_modified(ours.modified().unwrap()).unwrap();
    let theirs = file.metadata().unwrap();
    assert_eq!(
        (theirs.len(), theirs.modified().unwrap()),
        (ours.len(), ours.modified().unwrap())
    );

    assert_eq!(cache.adopt(&s.id).unwrap(), Some(2), "not adopted");
    let meta = cache.meta(&s.id).unwrap().unwrap();
    assert_eq!(meta.inode, Some(theirs.ino()));
    let sha = hex::encode(Sha256::digest(b"[2]"));
    assert_eq!(meta.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(cache.adopt(&s.id).unwrap(), None, "adopted twice");
}
