//! A format 1 root (sidecar and flocked `<name>.lock` beside the payload,
//! counters in `.discocache/stats.json`) is upgraded in place to format 2 by
//! the first process that opens it, while a format 1 reader reads it, and a
//! source whose format 1 lock is held is left until a later open.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use discocache::lock::SourceLock;
use discocache::{Cache, FetchError, Fetched, Layout, Policy, Source, SourceId};

const COUNTERS: &str = r#"{"format":1,"sources":{"t/ok":{"fresh_hits":7,"stale_hits":2,"misses":1,"refresh_ok":3,"refresh_failed":4,"refresh_joined":0,"refresh_not_modified":0}}}"#;

fn source(id: &str) -> Source {
    let mut s = Source::parse(id).unwrap();
    s.policy = Policy {
        ttl: Duration::from_secs(3600),
        ..Policy::default()
    };
    s
}

/// Fills a root with today's code, then lays it out as format 1 wrote it:
/// each sidecar (with `"format": 1`) and an empty lock file beside the
/// payload, the counters at `.discocache/stats.json`, no format file.
async fn format1_root(root: &Path) -> Vec<(SourceId, Vec<u8>)> {
    let cache = Cache::open(root).unwrap();
    let mut written = Vec::new();
    for (id, revisions) in [("t/ok", 3), ("t/other", 1), ("u/more", 2)] {
        let s = source(id);
        for r in 0..revisions {
            let body = format!("{{\"source\":\"{id}\",\"r\":{r}}}");
            cache.write(&s, body.clone().into_bytes()).await.unwrap();
            if r + 1 == revisions {
                written.push((s.id.clone(), body.into_bytes()));
            }
        }
    }
    // A failure record on top of t/ok's data, and a source that only ever
    // failed (a sidecar without a payload).
    for id in ["t/ok", "t/never"] {
        let fail = |_| async { Err::<discocache::Fetched, _>(FetchError::new("origin down")) };
        assert!(cache.refresh(&source(id), fail).await.is_err());
    }
    drop(cache);
    let layout = Layout::new(root);
    for id in ["t/ok", "t/other", "u/more", "t/never"] {
        let id = SourceId::parse(id).unwrap();
        let text = fs::read_to_string(layout.sidecar(&id)).unwrap();
        let old = text.replace("\"format\": 2", "\"format\": 1");
        assert_ne!(old, text, "the sidecar names its format");
        fs::write(layout.legacy_sidecar(&id), old).unwrap();
        fs::write(layout.legacy_lock(&id), b"").unwrap();
    }
    for tier in ["t", "u"] {
        fs::remove_dir_all(root.join(tier).join(".discocache")).unwrap();
    }
    let _ = fs::remove_dir_all(layout.state_dir());
    fs::create_dir(layout.state_dir()).unwrap();
    fs::write(layout.state_dir().join("stats.json"), COUNTERS).unwrap();
    written
}

/// What a format 1 reader reads: the payload, and the sidecar at its old
/// place or else at its new one (as the example readers do).
fn read_as_format1_reader(layout: &Layout, id: &SourceId) -> (Vec<u8>, serde_json::Value) {
    let payload = fs::read(layout.payload(id)).expect("payload");
    let sidecar = fs::read(layout.legacy_sidecar(id))
        .or_else(|_| fs::read(layout.sidecar(id)))
        .expect("a sidecar at one of its places");
    (
        payload,
        serde_json::from_slice(&sidecar).expect("sidecar JSON"),
    )
}

fn revision_of(v: &serde_json::Value) -> u64 {
    v["revision"].as_u64().expect("revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format1_root_upgrades_in_place_while_read_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let written = format1_root(&root).await;
    let layout = Layout::new(fs::canonicalize(&root).unwrap());
    let before: Vec<_> = written
        .iter()
        .map(|(id, _)| read_as_format1_reader(&layout, id).1)
        .collect();
    assert_eq!(revision_of(&before[0]), 3);
    assert_eq!(before[0]["consecutive_failures"], 1);

    // A format 1 reader reads all along; every read must find the payload
    // and a sidecar with the same revision.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (layout, written, stop, reads) = (
            layout.clone(),
            written.clone(),
            Arc::clone(&stop),
            Arc::clone(&reads),
        );
        let revisions: Vec<u64> = before.iter().map(revision_of).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) || reads.load(Ordering::SeqCst) < 100 {
                for ((id, bytes), revision) in written.iter().zip(&revisions) {
                    let (payload, sidecar) = read_as_format1_reader(&layout, id);
                    assert_eq!(&payload, bytes, "{id}: payload changed");
                    assert_eq!(revision_of(&sidecar), *revision, "{id}: revision");
                }
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while reads.load(Ordering::SeqCst) < 10 {
        std::thread::yield_now();
    }
    let cache = Cache::open(&root).unwrap();
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("the reader never missed a file");

    assert_eq!(
        fs::read_to_string(layout.format_file()).unwrap().trim(),
        "2"
    );
    for ((id, bytes), old) in written.iter().zip(&before) {
        assert!(
            !layout.legacy_sidecar(id).exists(),
            "{id}: old sidecar left"
        );
        let old_lock = fs::metadata(layout.legacy_lock(id)).expect("format 1's lock is kept");
        assert_eq!(old_lock.len(), 0, "{id}: format 1's lock is empty");
        let entry = cache
            .read_with_meta(&source(&id.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(&entry.data, bytes);
        let meta = entry.meta.expect("the sidecar moved");
        assert_eq!(meta.revision, revision_of(old), "{id}");
        assert_eq!(meta.format, 2);
        assert_eq!(meta.sha256.as_deref(), old["sha256"].as_str(), "{id}");
    }
    let ok = cache.meta(&written[0].0).unwrap().unwrap();
    assert_eq!(ok.last_error.as_deref(), Some("origin down"));
    assert_eq!(ok.consecutive_failures, 1);
    assert!(ok.next_retry_at.is_some(), "the backoff record survived");
    let never = cache.meta(&SourceId::parse("t/never").unwrap()).unwrap();
    assert_eq!(never.unwrap().last_error.as_deref(), Some("origin down"));
    let stats = layout.daemon_dir().join("stats.json");
    assert_eq!(fs::read_to_string(stats).unwrap(), COUNTERS);
    assert!(!layout.state_dir().join("stats.json").exists());

    // A second refresh continues the revision.
    let s = source("t/other");
    let revision = cache.write(&s, b"[2]".to_vec()).await.unwrap();
    assert_eq!(revision, revision_of(&before[1]) + 1);
}

#[tokio::test]
async fn format1_source_whose_lock_is_held_is_upgraded_by_a_later_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let written = format1_root(&root).await;
    let layout = Layout::new(fs::canonicalize(&root).unwrap());
    let (busy, _) = &written[0];

    // A format 1 process is refreshing t/ok: it holds the flock.
    let held = SourceLock::try_acquire(&layout.legacy_lock(busy))
        .unwrap()
        .expect("free");
    let cache = Cache::open(&root).unwrap();
    assert!(
        layout.legacy_sidecar(busy).exists(),
        "moved under a held lock"
    );
    assert!(!layout.format_file().exists(), "format recorded too early");
    assert!(!layout.legacy_sidecar(&written[1].0).exists());
    // Still read from its old place meanwhile.
    assert_eq!(cache.meta(busy).unwrap().unwrap().revision, 3);

    drop(held);
    let cache = Cache::open(&root).unwrap();
    assert!(!layout.legacy_sidecar(busy).exists());
    assert_eq!(cache.meta(busy).unwrap().unwrap().revision, 3);
    assert_eq!(
        fs::read_to_string(layout.format_file()).unwrap().trim(),
        "2"
    );
}

#[tokio::test]
async fn hello_and_status_report_the_format_of_an_upgraded_root() {
    use crate::helpers::daemon::{TestDaemon, config, counter_source};
    let counter = tempfile::NamedTempFile::new().unwrap();
    let mut d = TestDaemon::new(&config(&counter_source("t/ok", "1h", counter.path())));
    format1_root(&d.root).await;
    d.spawn();
    let mut raw = d.raw();
    let hello = raw.ask(r#"{"op":"hello"}"#);
    assert_eq!(hello["format"], 2, "{hello}");
    let status = raw.ask(r#"{"op":"status"}"#);
    assert_eq!(status["format"], 2, "{status}");
    let layout = Layout::new(fs::canonicalize(&d.root).unwrap());
    let ok = SourceId::parse("t/ok").unwrap();
    assert!(layout.sidecar(&ok).exists() && !layout.legacy_sidecar(&ok).exists());
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

/// A refresher that counts its runs.
fn counting(
    runs: &Arc<AtomicU64>,
) -> impl FnOnce(discocache::FetchContext) -> std::future::Ready<Result<Fetched, FetchError>>
+ Send
+ 'static {
    let runs = Arc::clone(runs);
    move |_| {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Fetched::data("{\"ours\":1}")))
    }
}

/// A format 1 process still running after the upgrade refreshes under
/// format 1's flock on `<name>.lock` (here `flock(1)` holding it while the
/// refresh runs, then committing by rename as format 1 did): a format 2
/// refresh meanwhile waits for it and takes its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format1_process_refreshing_after_the_upgrade_is_waited_for_and_joined() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    format1_root(&root).await;
    let cache = Cache::open(&root).unwrap();
    let layout = cache.layout().clone();
    let s = source("t/other");
    let gate = dir.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let theirs = dir.path().join("theirs.json");
    fs::write(&theirs, "{\"format1\":1}").unwrap();
    let held = dir.path().join("held");
    let script = format!(
        "echo > '{}'; read go < '{}'; mv '{}' '{}'",
        held.display(),
        gate.display(),
        theirs.display(),
        layout.payload(&s.id).display()
    );
    let mut format1 = std::process::Command::new("flock")
        .arg("-n")
        .arg(layout.legacy_lock(&s.id))
        .args(["sh", "-c", &script])
        .spawn()
        .unwrap();
    crate::helpers::daemon::eventually("format 1's refresh to hold its lock", || {
        held.exists().then_some(())
    });

    let runs = Arc::new(AtomicU64::new(0));
    let refresh = {
        let (cache, s, f) = (cache.clone(), s.clone(), counting(&runs));
        tokio::spawn(async move { cache.refresh(&s, f).await })
    };
    let ours = layout.lock(&s.id);
    tokio::task::spawn_blocking(move || {
        crate::helpers::daemon::eventually("our claim to hold the source's flock", || {
            flocked(&ours).then_some(())
        })
    })
    .await
    .unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "ran beside format 1's refresh"
    );
    fs::write(&gate, "go\n").unwrap();
    assert!(format1.wait().unwrap().success());

    let got = refresh.await.unwrap().unwrap();
    assert!(
        matches!(got, discocache::Refreshed::Joined { .. }),
        "{got:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a second refresher ran");
    let entry = cache.read(&s).unwrap().unwrap();
    assert_eq!(entry.data, b"{\"format1\":1}");
}

/// While a format 2 refresh runs, a format 1 process still running after
/// the upgrade finds format 1's lock held (`flock -n` on `<name>.lock`, as
/// format 1 claims): it cannot start a second refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format1_process_cannot_claim_while_a_format2_refresh_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    format1_root(&root).await;
    let cache = Cache::open(&root).unwrap();
    let layout = cache.layout().clone();
    let s = source("t/other");
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let refresh = {
        let (cache, s) = (cache.clone(), s.clone());
        tokio::spawn(async move {
            let f = move |_| async move {
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Ok::<_, FetchError>(Fetched::data("[2]"))
            };
            cache.refresh(&s, f).await
        })
    };
    started.await.unwrap();
    let format1_claims = |path: PathBuf| {
        std::process::Command::new("flock")
            .arg("-n")
            .arg(path)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    assert!(
        !format1_claims(layout.legacy_lock(&s.id)),
        "a format 1 process could claim while our refresh runs"
    );
    go.send(()).unwrap();
    let got = refresh.await.unwrap().unwrap();
    assert!(
        matches!(got, discocache::Refreshed::Committed { .. }),
        "{got:?}"
    );
    assert!(format1_claims(layout.legacy_lock(&s.id)));
}
