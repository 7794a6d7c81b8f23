//! A full disk is a failure: with no space or no inodes left, a refresh's
//! commit failure is recorded (in the sidecar when it can be written, in
//! memory always), counted, and backed off. On a real small tmpfs mounted
//! by the test (root only; skipped otherwise, failing when `CI` is set).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use discocache::{Background, Cache, Error, Fetched, Policy, Source};

/// A tmpfs mounted on a temp directory, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs with these options, or `None` (with the reason
    /// printed) when not root; panics then if `CI` is set.
    fn mount(options: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            let why = "full-disk tests need root to mount a tmpfs";
            assert!(std::env::var_os("CI").is_none(), "{why} (CI is set)");
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs -o {options}: {status}");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes still free.
    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.path()).unwrap();
        st.blocks_available() * st.fragment_size()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn source(id: &str) -> Source {
    let mut s = Source::parse(id).unwrap();
    s.policy = Policy {
        ttl: Duration::ZERO,
        backoff_base: Duration::from_secs(60),
        ..Policy::default()
    };
    s
}

async fn refresh(cache: &Cache, s: &Source, body: Vec<u8>) -> Result<u64, Error> {
    let f = move |_| async move { Ok(Fetched::data(body)) };
    cache.refresh(s, f).await.map(|r| r.revision())
}

/// Writes to `filler` until at most `leave` bytes are free (or the file
/// system says there is no space).
fn fill_space(filler: &Path, leave: u64) {
    let mut f = fs::File::create(filler).unwrap();
    let chunk = vec![0u8; 4096];
    while free_of(filler) > leave {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(ENOSPC) => return,
            Err(e) => panic!("fill {}: {e}", filler.display()),
        }
    }
}

fn free_of(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p.parent().unwrap()).unwrap();
    st.blocks_available() * st.fragment_size()
}

const ENOSPC: i32 = nix::errno::Errno::ENOSPC as i32;

/// Creates empty files until the file system has no inode left.
fn fill_inodes(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir(dir).unwrap();
    let mut made = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("f{i}"));
        match fs::File::create(&p) {
            Ok(_) => made.push(p),
            Err(e) if e.raw_os_error() == Some(ENOSPC) => return made,
            Err(e) => panic!("create {}: {e}", p.display()),
        }
    }
    unreachable!()
}

/// Two refreshes fail with the cause in their error, are counted (in
/// memory, the sidecar cannot be written), back off, and keep the payload.
async fn failures_are_counted_and_back_off(cache: &Cache, s: &Source) {
    for n in 1..=2 {
        let err = refresh(cache, s, b"[2]".to_vec()).await.unwrap_err();
        assert!(matches!(err, Error::RefreshFailed { .. }), "{err:?}");
        assert!(err.to_string().contains("No space left"), "{err}");
        let state = cache.refresh_state(&s.id).unwrap();
        assert!(state.failed, "{state:?}");
        assert_eq!(state.consecutive_failures, n, "{state:?}");
        let error = state.last_error.unwrap_or_default();
        assert!(error.contains("No space left"), "{error}");
        assert!(state.next_retry_at.is_some(), "no backoff");
    }
    let f = |_| async { Ok(Fetched::data("[3]")) };
    let got = cache.maybe_refresh(s, f).await.unwrap();
    assert!(matches!(got, Background::BackingOff { .. }), "{got:?}");
    assert_eq!(cache.read(s).unwrap().unwrap().data, b"[1]");
}

#[tokio::test]
async fn no_space_left_is_a_recorded_failure_that_backs_off() {
    let Some(small) = SmallFs::mount("size=256k,nr_inodes=1000") else {
        return;
    };
    let cache = Cache::open(small.path().join("root")).unwrap();
    let s = source("t/nospace");
    assert_eq!(refresh(&cache, &s, b"[1]".to_vec()).await.unwrap(), 1);
    fill_space(&small.path().join("filler"), 0);
    assert_eq!(small.free(), 0);
    failures_are_counted_and_back_off(&cache, &s).await;
}

#[tokio::test]
async fn no_inodes_left_is_a_recorded_failure_that_backs_off() {
    let Some(small) = SmallFs::mount("size=1m,nr_inodes=64") else {
        return;
    };
    let cache = Cache::open(small.path().join("root")).unwrap();
    let s = source("t/noinodes");
    assert_eq!(refresh(&cache, &s, b"[1]".to_vec()).await.unwrap(), 1);
    let made = fill_inodes(&small.path().join("fill"));
    assert!(!made.is_empty());
    failures_are_counted_and_back_off(&cache, &s).await;
}

#[tokio::test]
async fn payload_that_does_not_fit_is_recorded_in_the_sidecar() {
    let Some(small) = SmallFs::mount("size=256k,nr_inodes=1000") else {
        return;
    };
    let root = small.path().join("root");
    let cache = Cache::open(&root).unwrap();
    let s = source("t/toobig");
    assert_eq!(refresh(&cache, &s, b"[1]".to_vec()).await.unwrap(), 1);
    // Room for the marker and the sidecar, not for a 128 KiB payload.
    fill_space(&small.path().join("filler"), 16 * 1024);
    let big = format!("[\"{}\"]", "x".repeat(128 * 1024)).into_bytes();
    let err = refresh(&cache, &s, big).await.unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    // Another handle (another process) reads the record from the sidecar.
    let other = Cache::open(&root).unwrap();
    let meta = other.meta(&s.id).unwrap().expect("sidecar");
    assert_eq!(meta.consecutive_failures, 1, "{meta:?}");
    assert!(meta.next_retry_at.is_some());
    assert!(meta.last_error.unwrap().contains("No space left"));
    assert_eq!(meta.revision, 1);
    assert_eq!(other.read(&s).unwrap().unwrap().data, b"[1]");
}

#[test]
fn daemon_refresh_on_a_full_disk_is_refresh_failed_and_recorded() {
    use crate::helpers::daemon::{TestDaemon, config, sh_source};
    use serde_json::json;
    let Some(small) = SmallFs::mount("size=512k,nr_inodes=1000") else {
        return;
    };
    let mut d = TestDaemon::new(&config(&sh_source("t/full", "1h", "10s", "echo '[2]'")));
    d.root = small.path().join("root");
    d.spawn();
    d.wait_data("t/full");
    fill_space(&small.path().join("filler"), 0);
    for n in 1..=2 {
        let r = d.request(json!({"op": "refresh", "sources": ["t/full"]}));
        let result = &r["results"][0];
        assert_eq!(result["ok"], false, "{r}");
        let message = result["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("No space left"), "{r}");
        assert_eq!(result["error"]["code"], "refresh_failed", "{r}");
        let state = d.request(json!({"op": "state", "source": "t/full"}));
        assert_eq!(state["refresh"]["consecutive_failures"], n, "{state}");
        assert!(state["refresh"]["next_retry_at"].is_string(), "{state}");
    }
    let got = d.request(json!({"op": "get", "source": "t/full", "refresh": "never"}));
    assert_eq!(got["data"], json!([2]), "{got}");
}
