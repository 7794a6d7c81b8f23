//! Watching, keeping warm, restarts, signals and reloads.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use crate::helpers::daemon::{TestDaemon, config, count, counter_source, eventually, sh_source};
use discocache::client::Client;
use discocache::lock::SourceLock;
use discocache::protocol::EventKind;
use discocache::{Cache, Source, SourceId};

#[test]
fn watch_sees_our_refreshes_and_commits_by_other_processes() {
    let counter_file = tempfile::NamedTempFile::new().expect("counter");
    let mut d = TestDaemon::start(&config(&counter_source("t/w", "1h", counter_file.path())));
    d.wait_data("t/w");
    let client = Client::connect(&d.socket).expect("connect");
    let (first, mut events) = client.watch(None).expect("watch");
    assert_eq!(first.watching, vec![SourceId::parse("t/w").expect("id")]);
    d.request(json!({"op": "refresh", "sources": ["t/w"]}));
    let e = events.next_event().expect("read").expect("event");
    assert_eq!(
        (e.event, e.revision),
        (EventKind::Committed, Some(2)),
        "{e:?}"
    );

    // A commit by this (other) process through the library.
    let cache = Cache::open(&d.root).expect("open root");
    let source = Source::parse("t/w").expect("source");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let revision = runtime
        .block_on(cache.write(&source, b"{\"external\":true}".to_vec()))
        .expect("write");
    assert_eq!(revision, 3);
    let e = events.next_event().expect("read").expect("event");
    assert_eq!(
        (e.event, e.revision),
        (EventKind::Committed, Some(3)),
        "{e:?}"
    );
    let got = d.request(json!({"op": "get", "source": "t/w"}));
    assert_eq!(got["data"], json!({"external": true}));
}

/// A `get` answered from memory (see the daemon's `hot` module) still
/// serves a change made by another process the moment it is made: no
/// event is waited for between the change and the `get`.
#[test]
fn a_get_right_after_another_process_changes_a_payload_serves_the_change() {
    let counter_file = tempfile::NamedTempFile::new().expect("counter");
    let mut d = TestDaemon::start(&config(&counter_source("t/now", "1h", counter_file.path())));
    d.wait_data("t/now");
    let mut client = Client::connect(&d.socket).expect("connect");
    let mut get = || {
        let got = client
            .request(&json!({"op": "get", "source": "t/now", "refresh": "never"}))
            .expect("get");
        assert_eq!(got["ok"], true, "{got}");
        got
    };
    let cache = Cache::open(&d.root).expect("open root");
    let source = Source::parse("t/now").expect("source");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for round in 0..20_u64 {
        // Twice, so that the second is answered from memory.
        get();
        get();
        let bytes = format!("{{\"round\":{round}}}").into_bytes();
        let revision = runtime
            .block_on(cache.write(&source, bytes))
            .expect("write");
        let got = get();
        assert_eq!(got["data"], json!({"round": round}), "commit: {got}");
        assert_eq!(got["revision"].as_u64(), Some(revision), "{got}");
    }

    // Written in place, then touched into the past (an invalidation).
    get();
    let payload = d.root.join("t").join("now.json");
    std::fs::write(&payload, b"{\"in_place\":true}").expect("write in place");
    assert_eq!(get()["data"], json!({"in_place": true}));
    let file = std::fs::File::options()
        .write(true)
        .open(&payload)
        .expect("open payload");
    let past = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    file.set_modified(past).expect("set mtime");
    let got = get();
    assert_eq!(
        (got["fresh"].as_bool(), got["stale"].as_bool()),
        (Some(false), Some(true)),
        "{got}"
    );
}

#[test]
fn a_short_ttl_source_is_refreshed_ahead_of_expiry() {
    let counter_file = tempfile::NamedTempFile::new().expect("counter");
    let mut d = TestDaemon::start(&config(&counter_source(
        "t/short",
        "1s",
        counter_file.path(),
    )));
    d.wait_data("t/short");
    let (_, mut events) = Client::connect(&d.socket)
        .expect("connect")
        .watch(Some(vec![SourceId::parse("t/short").expect("id")]))
        .expect("watch");
    let e = events.next_event().expect("read").expect("event");
    assert_eq!(e.event, EventKind::Committed, "{e:?}");
    assert!(e.revision >= Some(2), "{e:?}");
    // Refreshed ahead: a read never finds it stale while it is kept warm.
    let got = d.request(json!({"op": "get", "source": "t/short", "refresh": "never"}));
    assert_eq!(got["ok"], true, "{got}");
}

#[test]
fn a_restart_serves_from_disk_without_refetching() {
    let counter_file = tempfile::NamedTempFile::new().expect("counter");
    let counter = counter_file.path().to_path_buf();
    let mut d = TestDaemon::start(&config(&counter_source("t/keep", "1h", &counter)));
    let before = d.wait_data("t/keep");
    let counters = |d: &TestDaemon| d.request(json!({"op": "stats"}))["sources"]["t/keep"].clone();
    let counted = counters(&d);
    assert!(counted["fresh_hits"].as_u64() >= Some(1), "{counted}");
    d.stop();
    assert!(!d.socket.exists(), "socket removed on exit");
    assert!(
        d.root.join(".discocache/state/stats.json").exists(),
        "counters persisted"
    );
    d.spawn();
    assert_eq!(counters(&d), counted, "counters survived the restart");
    let after = d.wait_data("t/keep");
    assert_eq!(after["data"], before["data"]);
    assert_eq!(after["revision"], 1);
    assert_eq!(count(&counter), 1, "the fresh source was not refetched");
    let stats = d.request(json!({"op": "stats"}));
    assert_eq!(stats["sources"]["t/keep"]["refresh_ok"], 1, "{stats}");
}

/// A source whose command records its pid, then sleeps.
fn slow(d: &TestDaemon) -> String {
    let pid = d.file("slow.pid");
    let script = format!("echo $$ > '{}'; sleep 30; echo '{{}}'", pid.display());
    config(&sh_source("t/slow", "1h", "60s", &script))
}

/// Running: it exists and is not a zombie waiting to be reaped.
fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !state.is_none_or(|s| s.starts_with(['Z', 'X']))
}

fn wait_slow_running(d: &mut TestDaemon) -> i32 {
    let (marker, pid_file) = (d.root.join("t/slow.refreshing"), d.file("slow.pid"));
    d.wait("the slow refresh to start", || {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        marker.exists().then_some(pid)
    })
}

#[test]
fn sigterm_during_a_slow_refresh_exits_cleanly_after_the_grace() {
    let mut d = TestDaemon::new("");
    d.write_config(&slow(&d));
    d.spawn();
    let refresher = wait_slow_running(&mut d);
    d.stop();
    // SIGKILL was sent to its group before the daemon exited; the kernel
    // finishes the death on its own time.
    eventually("the refresher to be killed", || {
        (!alive(refresher)).then_some(())
    });
    let tier = d.root.join("t");
    assert!(!tier.join("slow.refreshing").exists(), "no marker left");
    let temps: Vec<_> = std::fs::read_dir(&tier)
        .expect("tier")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "no temp file left: {temps:?}");
    let lock = SourceLock::try_acquire(&tier.join(".discocache/slow.flock")).expect("lock");
    assert!(lock.is_some(), "the lock was released");
    assert!(!d.socket.exists(), "socket removed");
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut d = TestDaemon::new("");
    let text = slow(&d).replace("shutdown_grace = \"2s\"", "shutdown_grace = \"10m\"");
    d.write_config(&text);
    d.spawn();
    let refresher = wait_slow_running(&mut d);
    d.signal(Signal::SIGTERM);
    eventually("the shutdown to begin", || {
        d.log().contains("shutting down").then_some(())
    });
    let started = std::time::Instant::now();
    d.signal(Signal::SIGINT);
    let status = d.wait_exit();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exited at once"
    );
    eventually("the refresher to be killed", || {
        (!alive(refresher)).then_some(())
    });
}

#[test]
fn sighup_reload_adds_and_removes_sources_and_a_bad_config_keeps_the_old_one() {
    let a = sh_source("t/a", "1h", "10s", "echo '{\"a\":1}'");
    let b = sh_source("t/b", "1h", "10s", "echo '{\"b\":1}'");
    let mut d = TestDaemon::start(&config(&a));
    d.wait_data("t/a");
    d.write_config(&config(&b));
    d.signal(Signal::SIGHUP);
    let got = d.wait_data("t/b");
    assert_eq!(got["data"], json!({"b": 1}));
    let gone = d.request(json!({"op": "get", "source": "t/a"}));
    assert_eq!(gone["error"]["code"], "unknown_source", "{gone}");
    assert!(
        d.root.join("t/a.json").exists(),
        "reload does not delete files"
    );

    d.write_config("[[source]]\nid = \"t/c\"\nttl = 5\n");
    d.signal(Signal::SIGHUP);
    let socket = d.socket.clone();
    let status = eventually("the daemon to report the bad config", || {
        let s = Client::connect(&socket)
            .ok()?
            .request(&json!({"op": "status"}))
            .ok()?;
        (s["daemon"]["status"] == "error").then_some(s)
    });
    let why = status["daemon"]["last_error"].as_str().expect("last_error");
    assert!(
        why.contains("line 3") && why.contains("keeping the previous config"),
        "{why}"
    );
    assert_eq!(
        d.request(json!({"op": "get", "source": "t/b"}))["ok"],
        true,
        "old config still serves"
    );
    let reload = d.request(json!({"op": "reload"}));
    assert_eq!(reload["ok"], false, "{reload}");
    let refused = d.request(json!({"op": "prune"}));
    assert_eq!(
        refused["ok"], false,
        "prune refuses while the config is bad: {refused}"
    );

    d.write_config(&config(&a));
    let reload = d.request(json!({"op": "reload"}));
    assert_eq!(reload["ok"], true, "{reload}");
    assert!(d.source_status("t/a").is_some() && d.source_status("t/b").is_none());
    assert_eq!(
        d.request(json!({"op": "status"}))["daemon"]["status"],
        "ready"
    );
    let pruned = d.request(json!({"op": "prune"}));
    assert_eq!(pruned["sources"], json!(["t/b"]), "{pruned}");
}

#[test]
fn a_config_file_change_is_reloaded_without_a_signal() {
    let a = sh_source("t/a", "1h", "10s", "echo '{\"a\":1}'");
    let b = sh_source("t/b", "1h", "10s", "echo '{\"b\":1}'");
    let mut d = TestDaemon::start(&config(&a));
    d.write_config(&config(&format!("{a}{b}")));
    d.wait_data("t/b");
    assert!(!d.log().contains("SIGHUP"));
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let d = TestDaemon::start(&config(&sh_source("t/a", "1h", "10s", "echo '{}'")));
    let mut other = TestDaemon::new(&config(""));
    other.socket = d.socket.clone();
    let status = other.command().status().expect("run");
    assert_eq!(status.code(), Some(1));
    assert!(other.log().contains("already serving"), "{}", other.log());
    assert_eq!(
        d.request(json!({"op": "hello"}))["ok"],
        true,
        "the first one is untouched"
    );
}
