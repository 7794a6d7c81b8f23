//! The payload is the truth and time is checked: damaged, missing or stale
//! sidecars, revisions that never go backwards or wrap, dates in the future.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use discocache::{Background, Cache, Fetched, Meta, Policy, Refreshed, Source, Timestamp};

use discocache::Layout;

use crate::helpers::daemon::{TestDaemon, config, count, counter_source, eventually, sh_source};

const BIN: &str = env!("CARGO_BIN_EXE_discocache");
/// 2100-01-01T00:00:00Z.
const YEAR_2100: u64 = 4_102_444_800;
/// 9999-12-31T23:59:59Z.
const YEAR_9999: u64 = 253_402_300_799;

fn open() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    (dir, cache)
}

fn source(id: &str) -> Source {
    let mut s = Source::parse(id).unwrap();
    s.policy = Policy {
        ttl: Duration::from_secs(60),
        ..Policy::default()
    };
    s
}

async fn commit(cache: &Cache, s: &Source, body: &'static str) -> Refreshed {
    let f = move |_| async move { Ok(Fetched::data(body)) };
    cache.refresh(s, f).await.unwrap()
}

fn edit_meta(cache: &Cache, s: &Source, f: impl FnOnce(&mut Meta)) {
    let mut meta = cache.meta(&s.id).unwrap().unwrap();
    f(&mut meta);
    let path = cache.layout().sidecar(&s.id);
    fs::write(path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A sidecar with revision 41, then damaged by `damage`: the payload is
/// served with its mtime's age, the state reports the damage, and the next
/// commit's revision is above 41.
async fn damaged_sidecar_case(damage: impl FnOnce(Vec<u8>) -> Vec<u8>) -> u64 {
    let (_d, cache) = open();
    let s = source("t/damaged");
    commit(&cache, &s, "[1]").await;
    edit_meta(&cache, &s, |m| m.revision = 41);
    let path = cache.layout().sidecar(&s.id);
    fs::write(&path, damage(fs::read(&path).unwrap())).unwrap();
    let ten_min_ago = SystemTime::now() - Duration::from_secs(600);
    fs::File::options()
        .write(true)
        .open(cache.layout().payload(&s.id))
        .unwrap()
        .set_modified(ten_min_ago)
        .unwrap();

    let entry = cache
        .read_with_meta(&s)
        .unwrap()
        .expect("the payload is served");
    assert_eq!(entry.data, b"[1]");
    assert!(
        entry.age >= Duration::from_secs(599) && entry.stale(),
        "{entry:?}"
    );
    assert!(entry.meta.is_none());
    let state = cache.refresh_state(&s.id).unwrap();
    let why = state.sidecar_damaged.expect("the damage is reported");
    assert!(why.contains(&path.display().to_string()), "{why}");

    let revision = commit(&cache, &s, "[2]").await.revision();
    assert!(revision > 41, "revision went back to {revision}");
    assert_eq!(cache.meta(&s.id).unwrap().unwrap().revision, revision);
    assert!(
        cache
            .refresh_state(&s.id)
            .unwrap()
            .sidecar_damaged
            .is_none()
    );
    revision
}

#[tokio::test]
async fn garbage_sidecar_serves_payload_and_keeps_revision_rising() {
    damaged_sidecar_case(|_| b"\x00\xffnot a sidecar".to_vec()).await;
}

#[tokio::test]
async fn truncated_sidecar_serves_payload_and_next_revision_follows_it() {
    let revision = damaged_sidecar_case(|b| b[..b.len() / 2].to_vec()).await;
    assert_eq!(revision, 42);
}

#[tokio::test]
async fn wrong_format_sidecar_serves_payload_and_next_revision_follows_it() {
    let revision = damaged_sidecar_case(|b| {
        let text = String::from_utf8(b).unwrap();
        text.replace("\"format\": 2", "\"format\": 99").into_bytes()
    })
    .await;
    assert_eq!(revision, 42);
}

#[tokio::test]
async fn missing_sidecar_does_not_reset_the_revision() {
    let (_d, cache) = open();
    let s = source("t/missing");
    commit(&cache, &s, "[1]").await;
    edit_meta(&cache, &s, |m| m.revision = 41);
    fs::remove_file(cache.layout().sidecar(&s.id)).unwrap();
    assert_eq!(cache.read(&s).unwrap().unwrap().data, b"[1]");
    let revision = commit(&cache, &s, "[2]").await.revision();
    assert!(revision > 41, "revision went back to {revision}");
}

#[tokio::test]
async fn payload_newer_than_its_sidecar_counts_as_a_commit() {
    let (_d, cache) = open();
    let s = source("t/behind");
    commit(&cache, &s, "[1]").await;
    edit_meta(&cache, &s, |m| m.revision = 5);
    // Another program (or a commit whose sidecar was lost) replaced it.
    fs::write(cache.layout().payload(&s.id), b"[1, 2]").unwrap();
    // Failures in between do not count it again.
    for _ in 0..2 {
        let f = |_| async { Err(discocache::FetchError::new("down")) };
        cache.refresh(&s, f).await.unwrap_err();
        assert_eq!(cache.refresh_state(&s.id).unwrap().revision, 6);
    }
    assert_eq!(commit(&cache, &s, "[3]").await.revision(), 7);
}

#[tokio::test]
async fn revision_u64_max_saturates_instead_of_wrapping_to_zero() {
    let (_d, cache) = open();
    let s = source("t/max");
    commit(&cache, &s, "[1]").await;
    edit_meta(&cache, &s, |m| m.revision = u64::MAX);
    let got = commit(&cache, &s, "[2]").await;
    assert_eq!(got, Refreshed::Committed { revision: u64::MAX });
    let state = cache.refresh_state(&s.id).unwrap();
    assert_eq!(state.revision, u64::MAX);
    assert_eq!(cache.read(&s).unwrap().unwrap().data, b"[2]");
}

#[tokio::test]
async fn payload_dated_2100_is_stale_and_refreshed() {
    let (_d, cache) = open();
    let s = source("t/future");
    commit(&cache, &s, "[1]").await;
    let payload = cache.layout().payload(&s.id);
    let file = fs::File::options().write(true).open(&payload).unwrap();
    file.set_modified(at(YEAR_2100)).unwrap();
    let entry = cache.read(&s).unwrap().unwrap();
    assert!(entry.future && entry.stale() && !entry.expired, "{entry:?}");
    assert!(entry.older_than(Duration::from_secs(1)));
    let f = |_| async { Ok(Fetched::data("[2]")) };
    assert_eq!(
        cache.maybe_refresh(&s, f).await.unwrap(),
        Background::Started
    );
}

#[tokio::test]
async fn fetched_at_in_the_future_makes_the_entry_stale() {
    let (_d, cache) = open();
    let s = source("t/future-meta");
    commit(&cache, &s, "[1]").await;
    edit_meta(&cache, &s, |m| {
        m.fetched_at = Some(Timestamp::from(at(YEAR_2100)))
    });
    let entry = cache.read_with_meta(&s).unwrap().unwrap();
    assert!(entry.future && entry.stale(), "{entry:?}");
}

#[tokio::test]
async fn next_retry_in_year_9999_is_clamped_so_background_refresh_resumes() {
    let (_d, cache) = open();
    let mut s = source("t/retry");
    s.policy.ttl = Duration::ZERO;
    s.policy.backoff_cap = Duration::from_millis(300);
    commit(&cache, &s, "[1]").await;
    edit_meta(&cache, &s, |m| {
        m.consecutive_failures = 3;
        m.next_retry_at = Some(Timestamp::from(at(YEAR_9999)));
    });
    let f = |_| async { Ok(Fetched::data("[2]")) };
    let bound = SystemTime::now() + Duration::from_millis(400);
    match cache.maybe_refresh(&s, f).await.unwrap() {
        Background::BackingOff { until } => assert!(until <= bound, "until {until:?}"),
        other => panic!("expected a clamped backoff, got {other:?}"),
    }
    let rt = tokio::runtime::Handle::current();
    let started = tokio::task::spawn_blocking(move || {
        eventually("the background refresh to resume", || {
            let f = |_| async { Ok(Fetched::data("[2]")) };
            let got = rt.block_on(cache.maybe_refresh(&s, f)).unwrap();
            (got == Background::Started).then_some(())
        });
    });
    started.await.unwrap();
}

/// The CLI in direct mode on a temp root with two sources.
struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = sh_source("t/a", "1h", "10s", "echo '[\"a\"]'")
            + &sh_source("t/b", "1h", "10s", "echo '[\"b\"]'");
        fs::write(dir.path().join("config.toml"), config).unwrap();
        Self { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let p = |name: &str| self.dir.path().join(name);
        Command::new(BIN)
            .arg("--root")
            .arg(p("root"))
            .arg("--socket")
            .arg(p("no-daemon.sock"))
            .arg("--config")
            .arg(p("config.toml"))
            .arg("--no-daemon")
            .args(args)
            .env_remove("DISCOCACHE_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        String::from_utf8(out.stdout).unwrap()
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path().join("root"))
    }
}

#[test]
fn damaged_sidecar_does_not_stop_direct_get_status_or_state() {
    let cli = Cli::new();
    cli.ok(&["refresh", "t/a", "t/b"]);
    let a = discocache::SourceId::parse("t/a").unwrap();
    fs::write(cli.layout().sidecar(&a), b"{\"format\": 1, \"revi").unwrap();
    assert_eq!(cli.ok(&["get", "t/a"]).trim(), "[\"a\"]");
    let status = cli.ok(&["status"]);
    assert!(status.contains("t/a") && status.contains("t/b"), "{status}");
    let state = cli.ok(&["state", "t/a", "--json"]);
    assert!(state.contains("sidecar_damaged"), "{state}");
}

#[test]
fn payload_dated_2100_fails_get_max_age_as_too_old() {
    let cli = Cli::new();
    cli.ok(&["refresh", "t/a"]);
    let file = fs::File::options()
        .write(true)
        .open(
            cli.layout()
                .payload(&discocache::SourceId::parse("t/a").unwrap()),
        )
        .unwrap();
    file.set_modified(at(YEAR_2100)).unwrap();
    let out = cli.run(&["get", "t/a", "--max-age", "1s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
}

#[tokio::test]
async fn daemon_resumes_background_refresh_after_a_year_9999_retry_time() {
    let counter_dir = tempfile::tempdir().unwrap();
    let counter = counter_dir.path().join("runs");
    let source_toml = counter_source("t/retry", "1s", &counter).replace(
        "ttl = \"1s\"\n",
        "ttl = \"1s\"\nbackoff_base = \"1s\"\nbackoff_cap = \"1s\"\n",
    );
    let mut d = TestDaemon::new(&config(&source_toml));
    let cache = Cache::open(&d.root).unwrap();
    let s = source("t/retry");
    commit(&cache, &s, "{\"n\":0}").await;
    edit_meta(&cache, &s, |m| {
        m.consecutive_failures = 1;
        m.last_attempt_at = Some(Timestamp::now());
        m.next_retry_at = Some(Timestamp::from(at(YEAR_9999)));
    });
    let old = SystemTime::now() - Duration::from_secs(60);
    let payload = fs::File::options()
        .write(true)
        .open(cache.layout().payload(&s.id));
    payload.unwrap().set_modified(old).unwrap();
    d.spawn();
    d.wait("a background refresh despite next_retry_at in 9999", || {
        (count(&counter) >= 1).then_some(())
    });
}

#[test]
fn daemon_serves_a_payload_dated_2100_as_stale() {
    let mut d = TestDaemon::start(&config(&sh_source("t/f", "1h", "10s", "echo '[1]'")));
    d.wait_data("t/f");
    let payload = Layout::new(&d.root).payload(&discocache::SourceId::parse("t/f").unwrap());
    let file = fs::File::options().write(true).open(payload).unwrap();
    file.set_modified(at(YEAR_2100)).unwrap();
    let get =
        serde_json::json!({"op": "get", "source": "t/f", "refresh": "never", "max_age_ms": 1000});
    let socket = d.socket.clone();
    let ask = |request: &serde_json::Value| {
        let mut client = discocache::client::Client::connect(&socket).expect("connect");
        client.request(request).expect("request")
    };
    d.wait("the daemon to see the new mtime", || {
        let r = ask(&get);
        (r["fresh"] == false).then_some(())
    });
    let r = ask(&get);
    assert_eq!(
        (&r["fresh"], &r["stale"]),
        (&false.into(), &true.into()),
        "{r}"
    );
}
