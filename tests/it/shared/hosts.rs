//! Several hosts on one shared tier: each "host" is a real daemon (or the
//! CLI in direct mode) with a root of its own, all pointed at one real
//! `redis-server`; the origin is an HTTP server on 127.0.0.1 that counts
//! requests. Skipped without `redis-server` (failing when `CI` is set).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, eventually};
use crate::helpers::env::Env;
use crate::helpers::http::{Reply, Server, response, send};
use crate::helpers::redis::RedisServer;

const ID: &str = "discovery/models";

/// A config for one host: `[shared]` on `redis`, one http source on
/// `origin` with the extra keys `keys`.
fn host_config(redis: &str, origin: &str, keys: &str) -> String {
    format!(
        "[daemon]\nshutdown_grace = \"2s\"\nreconcile_interval = \"1h\"\n\n\
         [shared]\nurl = \"{redis}\"\nnamespace = \"t\"\n\n\
         [[source]]\nid = \"{ID}\"\nhttp = {{ url = \"{origin}\" }}\n{keys}\n"
    )
}

/// An origin answering `body` with `ETag: "v1"` (and counting requests).
fn origin(body: &'static str) -> Server {
    Server::start(move |_| send("200 OK", &[("ETag", "\"v1\"")], body))
}

/// A `get` on a daemon.
fn get(host: &TestDaemon, refresh: &str) -> Value {
    host.request(json!({"op": "get", "source": ID, "refresh": refresh}))
}

/// The payload file of a host's root.
fn payload(root: &Path) -> std::path::PathBuf {
    root.join("discovery").join("models.json")
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// A field of the shared copy, as Redis holds it.
fn shared_field(redis: &RedisServer, field: &str) -> String {
    redis.raw(&["HGET", &format!("t:{{{ID}}}:data"), field])
}

/// A field of the shared failure record.
fn shared_fail(redis: &RedisServer, field: &str) -> String {
    redis.raw(&["HGET", &format!("t:{{{ID}}}:fail"), field])
}

/// `XLEN` of the events stream.
fn events(redis: &RedisServer) -> String {
    redis.raw(&["XLEN", "t:events"])
}

/// Waits until a daemon serves `body` for the source.
fn wait_for_body(host: &mut TestDaemon, body: &Value) -> Value {
    let socket = host.socket.clone();
    host.wait(&format!("{ID} to hold {body}"), || {
        let mut c = discocache::client::Client::connect(&socket).ok()?;
        let r = c
            .request(&json!({"op": "get", "source": ID, "refresh": "never"}))
            .ok()?;
        (r["ok"] == true && r["data"] == *body).then_some(r)
    })
}

#[test]
fn fifty_gets_on_each_of_two_daemons_make_one_origin_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Server::start(|_| {
        // Slow enough that every get finds the refresh running.
        std::thread::sleep(Duration::from_millis(300));
        send("200 OK", &[], r#"{"models":["a","b"]}"#)
    });
    let config = host_config(&redis.url(), &origin.url("/m"), "ttl = \"1h\"");
    // Both hosts hold a payload two hours old: stale.
    let hosts = [TestDaemon::new(&config), TestDaemon::new(&config)].map(|mut host| {
        let old = payload(&host.root);
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, br#"{"models":[]}"#).unwrap();
        let file = std::fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        host.spawn();
        host
    });
    let answers: Vec<Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..100)
            .map(|i| {
                let host = &hosts[i % 2];
                s.spawn(move || get(host, "wait_if_stale"))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(answer["data"], json!({"models": ["a", "b"]}), "{answer}");
    }
    assert_eq!(
        origin.requests().len(),
        1,
        "one origin request for both hosts"
    );
    let [a, b] = [payload(&hosts[0].root), payload(&hosts[1].root)];
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // The copy keeps the origin's time: the ages agree across hosts.
    assert_eq!(mtime(&a), mtime(&b));
    // The daemons seed the empty server at start (no fence taken), then
    // one lease: fence 1.
    assert_eq!(shared_field(&redis, "fence"), "1");
    assert_eq!(shared_field(&redis, "payload"), r#"{"models":["a","b"]}"#);
}

#[test]
fn sigkilled_lease_holder_is_taken_over_when_its_lease_expires() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let first = AtomicUsize::new(0);
    let origin = Server::start(move |_| match first.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::Stall(Vec::new()),
        _ => send("200 OK", &[], r#"{"by":"b"}"#),
    });
    // A 1 s deadline makes the lease 6 s (deadline + grace).
    let config = host_config(&redis.url(), &origin.url("/m"), "refresh_deadline = \"1s\"");
    let mut a = TestDaemon::start(&config);
    eventually("host A to call the origin", || {
        (origin.requests().len() == 1).then_some(())
    });
    let mut b = TestDaemon::start(&config);
    a.signal(Signal::SIGKILL);
    a.wait_exit();
    wait_for_body(&mut b, &json!({"by": "b"}));
    assert_eq!(origin.requests().len(), 2, "A's and B's, nothing more");
    assert_eq!(events(&redis), ":1", "one commit");
    assert_eq!(shared_field(&redis, "fence"), "2");
}

#[test]
fn holder_stopped_past_its_lease_does_not_overwrite_the_newer_commit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let first = AtomicUsize::new(0);
    let origin = Server::start(move |_| match first.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::Stall(Vec::new()),
        _ => send("200 OK", &[], r#"{"by":"b"}"#),
    });
    // A long backoff: A must take B's copy at once, not on a later retry.
    let keys = "refresh_deadline = \"1s\"\nbackoff_base = \"30s\"";
    let config = host_config(&redis.url(), &origin.url("/m"), keys);
    let mut a = TestDaemon::start(&config);
    eventually("host A to call the origin", || {
        (origin.requests().len() == 1).then_some(())
    });
    a.signal(Signal::SIGSTOP);
    let mut b = TestDaemon::start(&config);
    wait_for_body(&mut b, &json!({"by": "b"}));
    a.signal(Signal::SIGCONT);
    // A wakes past its lease and its deadline: its outcome is refused by
    // the store (fence 1 < 2) and it takes B's newer copy instead.
    let served = wait_for_body(&mut a, &json!({"by": "b"}));
    assert_eq!(served["ok"], true);
    assert_eq!(shared_field(&redis, "fence"), "2");
    assert_eq!(shared_field(&redis, "payload"), r#"{"by":"b"}"#);
    assert_eq!(origin.requests().len(), 2);
    assert_eq!(mtime(&payload(&a.root)), mtime(&payload(&b.root)));
}

#[test]
fn retry_after_seen_on_one_host_stops_the_other_until_it_passes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&times);
    let origin = Server::start(move |_| {
        let mut times = seen.lock().unwrap();
        times.push(Instant::now());
        match times.len() {
            1 => send("429 Too Many Requests", &[("Retry-After", "3")], ""),
            _ => send("200 OK", &[], r#"{"ok":1}"#),
        }
    });
    let keys = "backoff_base = \"1s\"\nbackoff_cap = \"1m\"";
    let a = Env::new(&host_config(&redis.url(), &origin.url("/m"), keys));
    let b = Env::new(&host_config(&redis.url(), &origin.url("/m"), keys));
    let out = a.cmd(&["refresh", ID]).output().unwrap();
    assert!(!out.status.success());
    let out = b.cmd(&["refresh", ID]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "B must not refresh yet");
    assert!(err.contains("backs off"), "{err}");
    assert_eq!(times.lock().unwrap().len(), 1, "no origin call from B");
    let next: u64 = shared_fail(&redis, "next_retry_at").parse().unwrap();
    let next = SystemTime::UNIX_EPOCH + Duration::from_millis(next);
    eventually("B to refresh once the Retry-After passed", || {
        if SystemTime::now() < next {
            return None;
        }
        let out = b.cmd(&["refresh", ID]).output().unwrap();
        out.status.success().then_some(())
    });
    let times = times.lock().unwrap();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(2900),
        "{times:?}"
    );
}

#[test]
fn etag_learnt_on_one_host_gives_a_304_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Server::start(|seen| match seen.header("if-none-match") {
        Some("\"v1\"") => Reply::Send(response("304 Not Modified", &[], "")),
        _ => send("200 OK", &[("ETag", "\"v1\"")], r#"{"v":1}"#),
    });
    let url = origin.url("/m");
    let a = Env::new(&host_config(&redis.url(), &url, "ttl = \"1h\""));
    // On B the shared copy is stale at once, so B asks the origin, with
    // the validators A learnt.
    let b = Env::new(&host_config(&redis.url(), &url, "ttl = \"1ms\""));
    assert!(a.cmd(&["refresh", ID]).status().unwrap().success());
    let out = b.cmd(&["refresh", ID]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = origin.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("if-none-match"), Some("\"v1\""));
    let got = std::fs::read(payload(&b.root())).unwrap();
    assert_eq!(got, br#"{"v":1}"#);
}

#[test]
fn four_mib_payload_round_trips_byte_for_byte_and_keeps_its_age() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let body: &'static str = Box::leak(format!("{{\"x\":\"{}\"}}", "ab".repeat(2 << 20)).into());
    let origin = origin(body);
    let keys = "ttl = \"1h\"\nmax_output = \"8MiB\"";
    let config = host_config(&redis.url(), &origin.url("/m"), keys);
    let (a, b) = (Env::new(&config), Env::new(&config));
    assert!(a.cmd(&["refresh", ID]).status().unwrap().success());
    // B's CLI, in direct mode, copies A's result down: no origin call.
    let out = b
        .cmd(&["get", ID, "--refresh", "wait-if-stale"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(origin.requests().len(), 1);
    let got = std::fs::read(payload(&b.root())).unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body.as_bytes(), "payload differs");
    assert!(
        out.stdout.starts_with(body.as_bytes()),
        "get prints the payload"
    );
    assert_eq!(mtime(&payload(&a.root())), mtime(&payload(&b.root())));
}

#[test]
fn tier_down_hold_makes_no_origin_call_and_local_does() {
    // No server at all on this port: the tier is down from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = origin(r#"{"v":1}"#);
    let url = origin.url("/m");
    let redis = format!("redis://127.0.0.1:{port}/0");
    let hold = Env::new(&host_config(&redis, &url, "on_down = \"hold\""));
    let out = hold.cmd(&["refresh", ID]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("shared tier") && err.contains("hold"), "{err}");
    assert!(origin.requests().is_empty(), "hold calls nothing");
    let local = Env::new(&host_config(&redis, &url, "on_down = \"local\""));
    let out = local.cmd(&["refresh", ID]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(origin.requests().len(), 1, "local refreshes on its own");
}

#[test]
fn tier_outage_is_logged_once_not_once_per_refresh() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = origin(r#"{"v":1}"#);
    let redis = format!("redis://127.0.0.1:{port}/0");
    let host = TestDaemon::start(&host_config(&redis, &origin.url("/m"), ""));
    for _ in 0..3 {
        let r = host.request(json!({"op": "refresh", "sources": [ID]}));
        assert_eq!(r["ok"], true, "{r}");
    }
    assert!(origin.requests().len() >= 3, "on_down = local refreshes");
    let log = host.log();
    assert_eq!(
        log.matches("each source follows its on_down").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_source_with_shared_false_never_talks_to_the_tier() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = discocache::config::SharedSettings::new(&redis.url());
    let tier = Arc::new(discocache::shared::SharedTier::new(settings).unwrap());
    let cache = discocache::Cache::open(dir.path())
        .unwrap()
        .with_shared(Arc::clone(&tier));
    let fetch = |bytes: &'static [u8]| {
        move |_| async move {
            Ok(discocache::Fetched::Data {
                bytes: bytes.to_vec(),
                validators: discocache::Validators::default(),
            })
        }
    };
    let mut source = discocache::Source::parse(ID).unwrap();
    source.policy.shared = false;
    cache.refresh(&source, fetch(b"[1]")).await.unwrap();
    assert_eq!(
        tier.status().commands,
        0,
        "an opted-out source sends nothing"
    );
    source.policy.shared = true;
    cache.refresh(&source, fetch(b"[2]")).await.unwrap();
    assert!(tier.status().commands > 0);
    let key = format!("discocache:{{{ID}}}:data");
    assert_eq!(redis.raw(&["HGET", &key, "payload"]), "[2]");
}

/// A holder stalled past its lease (here: its refresher blocks the thread
/// until the test lets it go, so no deadline of its own runs meanwhile)
/// comes back with a payload after another host took the lease over and
/// committed: Redis refuses the late commit and the stalled host takes the
/// newer copy; nothing goes backwards on either host or in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commit_of_a_holder_stalled_past_its_lease_is_refused() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let host = |dir: &Path| {
        let mut settings = discocache::config::SharedSettings::new(&redis.url());
        settings.namespace = "t".into();
        let tier = Arc::new(discocache::shared::SharedTier::new(settings).unwrap());
        discocache::Cache::open(dir).unwrap().with_shared(tier)
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (host(dir_a.path()), host(dir_b.path()));
    let mut source = discocache::Source::parse(ID).unwrap();
    source.policy.refresh_deadline = Duration::from_secs(1);
    source.policy.backoff_base = Duration::from_secs(30);
    let data = |bytes: &[u8]| {
        Ok(discocache::Fetched::Data {
            bytes: bytes.to_vec(),
            validators: discocache::Validators::default(),
        })
    };
    let (started, on_start) = tokio::sync::oneshot::channel();
    let (release, on_release) = std::sync::mpsc::channel::<()>();
    let stalled = tokio::spawn({
        let (a, source) = (a.clone(), source.clone());
        async move {
            a.refresh(&source, move |_| {
                started.send(()).unwrap();
                on_release.recv().unwrap();
                std::future::ready(data(br#"{"by":"a"}"#))
            })
            .await
        }
    });
    on_start.await.unwrap();
    // B waits out A's lease (refresh deadline + grace), takes it over and
    // commits under the next fence.
    let by_b = b
        .refresh(&source, move |_| std::future::ready(data(br#"{"by":"b"}"#)))
        .await
        .unwrap();
    assert!(
        matches!(by_b, discocache::Refreshed::Committed { .. }),
        "{by_b:?}"
    );
    assert_eq!(shared_field(&redis, "fence"), "2");
    release.send(()).unwrap();
    let by_a = stalled.await.unwrap();
    assert!(
        matches!(by_a, Ok(discocache::Refreshed::Joined { .. })),
        "A's late commit must be refused and B's copy taken: {by_a:?}"
    );
    assert_eq!(shared_field(&redis, "fence"), "2");
    assert_eq!(shared_field(&redis, "payload"), r#"{"by":"b"}"#);
    for dir in [&dir_a, &dir_b] {
        let bytes = std::fs::read(payload(dir.path())).unwrap();
        assert_eq!(bytes, br#"{"by":"b"}"#, "{}", dir.path().display());
    }
    assert_eq!(events(&redis), ":1", "one commit event: B's");
}
