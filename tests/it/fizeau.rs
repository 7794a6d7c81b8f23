//! Interop with fizeau's real Go package (built by helpers::fizeau) on one
//! root, against the real binary in direct mode.
//!
//! Each reads the other's payloads (same bytes, ages that agree); fizeau
//! parses and honours the short lock and the markers in the shape format 2
//! writes them (src/fizeau); and what on-disk format 2 (DESIGN §4-§6,
//! issue 12) makes true: fizeau's Refresh after ours, its Prune leaving
//! our files, a stale fizeau lock, and a fizeau commit seen by the daemon.

use crate::helpers::env::Env;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::helpers::daemon::eventually;
use crate::helpers::fizeau::{Fizeau, driver};

/// What the interop tests do with an [`Env`].
trait FizeauCli {
    fn run(&self, args: &[&str]) -> Output;
    fn spawn(&self, args: &[&str]) -> Child;
    fn fizeau(&self, bin: &'static Path, id: &str) -> Fizeau;
}

impl FizeauCli for Env {
    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "discocache {args:?}: {}",
            text(&out.stderr)
        );
        out
    }
    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
    fn fizeau(&self, bin: &'static Path, id: &str) -> Fizeau {
        Fizeau::new(bin, &self.root(), id)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A source copying `@DIR@/origin.json`.
const FILE_SOURCE: &str = r#"
[[source]]
id = "discovery/models"
ttl = "1h"
refresh_deadline = "10s"
file = "@DIR@/origin.json"
"#;

/// discocache's age of a source, in ms.
fn discocache_age_ms(env: &Env, id: &str) -> u64 {
    let out = env.run(&["get", "--meta", "--refresh", "never", id]);
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["age_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no age_ms in {meta}"))
}

/// Asserts that discocache and fizeau see the same age, within the time the
/// two reads took (both start from the payload's mtime).
fn assert_ages_agree(env: &Env, fz: &Fizeau, id: &str) {
    let start = Instant::now();
    let ours = discocache_age_ms(env, id);
    let theirs = fz.run(&[], "read");
    let took = u64::try_from(start.elapsed().as_millis()).unwrap();
    let theirs = theirs.json["age_ms"].as_u64().unwrap();
    assert!(
        theirs >= ours.saturating_sub(2) && theirs <= ours + took + 2,
        "fizeau's age {theirs} ms, discocache's {ours} ms, reads took {took} ms"
    );
}

#[test]
fn fizeau_reads_a_payload_discocache_wrote() {
    let Some(bin) = driver() else { return };
    let env = Env::new(FILE_SOURCE);
    let payload = "{\"models\": [\"a\", \"b\"],\n \"n\": 2}\n";
    fs::write(env.path("origin.json"), payload).unwrap();
    env.run(&["refresh", "discovery/models"]);

    let fz = env.fizeau(bin, "discovery/models");
    let read = fz.run(&["-ttl", "1h"], "read");
    assert!(read.ok, "{:?}", read.output);
    assert_eq!(read.json["present"], true);
    assert_eq!(read.json["data"], payload);
    assert_eq!(read.json["fresh"], true);
    assert_ages_agree(&env, &fz, "discovery/models");
}

#[test]
fn discocache_reads_a_payload_fizeau_wrote() {
    let Some(bin) = driver() else { return };
    let env = Env::new(FILE_SOURCE);
    let fz = env.fizeau(bin, "discovery/models");
    let payload = "{\"from\": \"fizeau\", \"list\": [1, 2, 3]}";
    let run = fz.run(&["-bytes", payload], "refresh");
    assert!(run.ok, "{}", run.json);

    let on_disk = fs::read(env.root().join("discovery/models.json")).unwrap();
    assert_eq!(text(&on_disk), payload);
    let out = env.run(&["get", "--refresh", "never", "discovery/models"]);
    assert_eq!(
        text(&out.stdout),
        format!("{payload}\n"),
        "get adds one newline"
    );
    assert_ages_agree(&env, &fz, "discovery/models");
}

#[test]
fn fizeau_refresh_after_discocache_refresh_succeeds() {
    let Some(bin) = driver() else { return };
    let env = Env::new(FILE_SOURCE);
    fs::write(env.path("origin.json"), "{\"v\": 1}").unwrap();
    let fz = env.fizeau(bin, "discovery/models");
    for round in 0..5 {
        env.run(&["refresh", "discovery/models"]);
        let payload = format!("{{\"fizeau\": {round}}}");
        let run = fz.run(&["-bytes", &payload], "refresh");
        assert!(
            run.ok,
            "round {round}: fizeau's Refresh failed: {}",
            run.json
        );
        assert_eq!(fz.run(&[], "read").json["data"], payload.as_str());
        let sync = fz.run(&["-ttl", "0s", "-bytes", "{}"], "maybe-refresh-sync");
        assert!(
            sync.ok,
            "round {round}: fizeau's MaybeRefreshSync failed: {}",
            sync.json
        );
    }
}

/// Every regular file under `root`, relative, with its content.
fn files_under(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_owned();
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fizeau_prune_with_every_source_active_leaves_every_discocache_file() {
    let Some(bin) = driver() else { return };
    let config = format!(
        "{FILE_SOURCE}
[[source]]
id = \"runtime/broken\"
ttl = \"1h\"
refresh_deadline = \"10s\"
command = [\"false\"]
"
    );
    let env = Env::new(&config);
    fs::write(env.path("origin.json"), "{\"v\": 1}").unwrap();
    env.run(&["refresh", "discovery/models"]);
    env.run(&["refresh", "discovery/models"]);
    let failed = env.cmd(&["refresh", "runtime/broken"]).output().unwrap();
    assert!(!failed.status.success(), "the failing source must fail");
    let before = files_under(&env.root());
    assert!(before.len() >= 3, "{before:?}");

    let fz = env.fizeau(bin, "discovery/models");
    let run = fz.run(&["-active", "discovery/models,runtime/broken"], "prune");
    assert!(run.ok, "{}", run.json);
    let after = files_under(&env.root());
    let names =
        |files: &[(PathBuf, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(&before),
        "fizeau's Prune removed discocache files"
    );
    assert!(after == before, "fizeau's Prune changed discocache files");
}

/// Processes blocked in flock(2), from /proc/locks ("->" lines).
fn blocked_in_flock(pid: u32) -> bool {
    let needle = format!(" {pid} ");
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("->") && l.contains(&needle))
}

fn runs(path: &Path) -> usize {
    fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[test]
fn stale_fizeau_lock_never_leads_to_two_refreshers() {
    let Some(bin) = driver() else { return };
    let config = r#"
[[source]]
id = "discovery/models"
ttl = "1h"
refresh_deadline = "5s"
command = ["sh", "-c", "echo run >> @DIR@/runs; read go < @DIR@/gate; echo '{\"n\": 1}'"]
"#;
    let env = Env::new(config);
    nix::unistd::mkfifo(
        &env.path("gate"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let tier = env.root().join("discovery");
    fs::create_dir_all(&tier).unwrap();
    // A stale fizeau lock: written by a process that has exited.
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let stale = format!(
        r#"{{"pid":{},"started_at":"2026-01-01T00:00:00Z"}}"#,
        dead.id()
    );
    fs::write(tier.join("models.lock"), stale).unwrap();

    let first = env.spawn(&["refresh", "discovery/models"]);
    eventually("the first refresher to run", || {
        (runs(&env.path("runs")) == 1).then_some(())
    });
    // fizeau takes its short lock (clearing the stale one) and finds the
    // refresh in flight; it gives up waiting after its 1 s deadline.
    let mut fz = env.fizeau(bin, "discovery/models");
    fz.rd = "1s".into();
    fz.run(&["-bytes", "{}"], "refresh");

    let second = env.spawn(&["refresh", "discovery/models"]);
    eventually("the second process to wait or to run a refresher", || {
        (runs(&env.path("runs")) > 1 || blocked_in_flock(second.id())).then_some(())
    });
    let refreshers = runs(&env.path("runs"));
    let mut gate = fs::OpenOptions::new()
        .write(true)
        .open(env.path("gate"))
        .unwrap();
    gate.write_all(b"go\ngo\n").unwrap();
    drop(gate);
    let outs: Vec<Output> = [first, second]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(refreshers, 1, "two refreshers ran at once");
    for out in outs {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// RFC 3339 UTC with milliseconds, as discocache writes times.
fn ms_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The marker discocache's format 2 writes (src/fizeau/marker.rs: fizeau's
/// fields with millisecond times, plus `token` and `pgid`).
fn discocache_marker(deadline_in: std::time::Duration, last_error: Option<&str>) -> String {
    let now = std::time::SystemTime::now();
    let mut m = serde_json::json!({
        "pid": std::process::id(),
        "started_at": ms_time(now),
        "deadline": ms_time(now + deadline_in),
        "token": "0123456789abcdef",
        "pgid": 4242,
    });
    if let Some(e) = last_error {
        m["last_error"] = e.into();
    }
    m.to_string()
}

#[test]
fn fizeau_honours_markers_in_the_shape_discocache_writes() {
    use std::time::Duration;
    let Some(bin) = driver() else { return };
    let env = Env::new(FILE_SOURCE);
    let tier = env.root().join("discovery");
    fs::create_dir_all(&tier).unwrap();
    let marker = tier.join("models.refreshing");
    let fz = env.fizeau(bin, "discovery/models");

    fs::write(&marker, discocache_marker(Duration::from_secs(10), None)).unwrap();
    let state = fz.run(&[], "state");
    assert_eq!(state.json["in_flight"], true, "{}", state.json);
    assert_eq!(state.json["failed"], false, "{}", state.json);
    let maybe = fz.run(&["-ttl", "0s", "-bytes", "{}"], "maybe-refresh");
    assert_eq!(
        maybe.json["claimed"], false,
        "fizeau claimed over our marker: {}",
        maybe.json
    );

    let failed = discocache_marker(Duration::from_secs(60), Some("origin said 503"));
    fs::write(&marker, failed).unwrap();
    let state = fz.run(&[], "state");
    assert_eq!(state.json["failed"], true, "{}", state.json);
    assert_eq!(state.json["last_error"], "origin said 503");
    let sync = fz.run(&["-ttl", "0s", "-bytes", "{}"], "maybe-refresh-sync");
    assert!(sync.ok, "{}", sync.json);
    assert!(
        !tier.join("models.json").exists(),
        "fizeau ignored our failure cooldown"
    );
}

/// The short lock discocache's format 2 writes (src/fizeau/lock.rs).
fn discocache_lock(pid: u32) -> String {
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    serde_json::json!({ "pid": pid, "started_at": now }).to_string()
}

#[test]
fn fizeau_parses_the_short_lock_discocache_writes() {
    let Some(bin) = driver() else { return };
    let env = Env::new(FILE_SOURCE);
    let tier = env.root().join("discovery");
    fs::create_dir_all(&tier).unwrap();
    let fz = env.fizeau(bin, "discovery/models");

    // Held by a live process (this one): fizeau waits, then gives up.
    fs::write(
        tier.join("models.lock"),
        discocache_lock(std::process::id()),
    )
    .unwrap();
    let run = fz.run(&["-bytes", "{}"], "refresh");
    assert!(!run.ok, "fizeau took a lock we hold: {}", run.json);
    assert!(
        run.json["error"]
            .as_str()
            .unwrap()
            .contains("timed out acquiring lock")
    );

    // Left by a dead process: fizeau clears it.
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    fs::write(tier.join("models.lock"), discocache_lock(dead.id())).unwrap();
    let run = fz.run(&["-bytes", "{\"ok\": 1}"], "refresh");
    assert!(run.ok, "{}", run.json);
    assert!(!tier.join("models.lock").exists());
}

#[test]
fn fizeau_commit_is_served_by_the_daemon_with_a_new_revision_and_a_watch_event() {
    use crate::helpers::daemon::{DEADLINE, TestDaemon, config, counter_source};
    use discocache::protocol::EventKind;
    let Some(bin) = driver() else { return };
    let mut d = TestDaemon::new("");
    let counter = d.file("runs");
    d.write_config(&config(&counter_source("discovery/models", "1h", &counter)));
    d.spawn();
    let first = d.wait_data("discovery/models");
    let revision = first["revision"].as_u64().expect("a revision");

    let (_, mut watch) = discocache::client::Client::connect(&d.socket)
        .expect("connect")
        .watch(Some(vec![
            discocache::SourceId::parse("discovery/models").unwrap(),
        ]))
        .expect("watch");
    let (tx, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(Some(event)) = watch.next_event() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    let payload = "{\"from\": \"fizeau\"}";
    let run = Fizeau::new(bin, &d.root, "discovery/models").run(&["-bytes", payload], "refresh");
    assert!(run.ok, "fizeau's Refresh failed: {}", run.json);

    let event = events
        .recv_timeout(DEADLINE)
        .expect("a watch event for fizeau's commit");
    assert_eq!(event.event, EventKind::Committed, "{event:?}");
    assert_eq!(event.revision, Some(revision + 1), "{event:?}");
    let got = d.request(serde_json::json!({
        "op": "get", "source": "discovery/models", "refresh": "never"
    }));
    assert_eq!(got["revision"], revision + 1, "{got}");
    assert_eq!(
        got["data"],
        serde_json::from_str::<Value>(payload).unwrap(),
        "{got}"
    );
}

/// A refresher both implementations run: it notes each run, and notes an
/// overlap when another run is in progress (`mkdir` is atomic); the short
/// pause is its work, widening the window an overlap would show in.
const RACE_SCRIPT: &str = "mkdir @DIR@/busy 2>/dev/null || echo overlap >> @DIR@/overlaps; \
     echo run >> @DIR@/runs; sleep 0.2; rmdir @DIR@/busy 2>/dev/null; echo '{\"n\": 1}'";

#[test]
fn fizeau_and_discocache_processes_racing_never_run_two_refreshers_at_once() {
    let Some(bin) = driver() else { return };
    let config = format!(
        r#"
[[source]]
id = "discovery/models"
ttl = "1h"
refresh_deadline = "10s"
command = ["sh", "-c", "{}"]
"#,
        RACE_SCRIPT.replace('"', "\\\"")
    );
    let env = Env::new(&config);
    let script = RACE_SCRIPT.replace("@DIR@", env.dir.path().to_str().unwrap());
    let fz = env.fizeau(bin, "discovery/models");
    for round in 0..6 {
        let mut fizeaus: Vec<Child> = (0..2)
            .map(|_| {
                fz.command(&[], "refresh")
                    .args(["--", "sh", "-c", &script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let ours: Vec<Child> = (0..2)
            .map(|_| env.spawn(&["refresh", "discovery/models"]))
            .collect();
        for child in ours {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        }
        for child in fizeaus.drain(..) {
            // fizeau's Refresh may give up waiting (its own rule); it must
            // never run a second refresher at once, which the script notes.
            child.wait_with_output().unwrap();
        }
        assert!(
            !env.path("overlaps").exists(),
            "round {round}: two refreshers ran at once ({} runs so far)",
            runs(&env.path("runs"))
        );
    }
    assert!(runs(&env.path("runs")) >= 6, "a round ran no refresher");
}

#[test]
fn fizeau_processes_and_the_daemon_racing_never_run_two_refreshers_at_once() {
    use crate::helpers::daemon::{TestDaemon, config};
    let Some(bin) = driver() else { return };
    let mut d = TestDaemon::new("");
    let dir = d.file("");
    let dir = dir.to_str().unwrap().trim_end_matches('/');
    let script = RACE_SCRIPT.replace("@DIR@", dir);
    let source = format!(
        "[[source]]\nid = \"discovery/models\"\nttl = \"1h\"\nrefresh_deadline = \"10s\"\ncommand = [\"sh\", \"-c\", \"{}\"]\n",
        script.replace('"', "\\\"")
    );
    d.write_config(&config(&source));
    d.spawn();
    d.wait_data("discovery/models");
    let fz = Fizeau::new(bin, &d.root, "discovery/models");
    let runs_file = d.file("runs");
    for round in 0..5 {
        let fizeaus: Vec<Child> = (0..2)
            .map(|_| {
                fz.command(&[], "refresh")
                    .args(["--", "sh", "-c", &script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let got = d.request(serde_json::json!({
            "op": "refresh", "sources": ["discovery/models"]
        }));
        assert_eq!(got["ok"], true, "round {round}: {got}");
        for child in fizeaus {
            child.wait_with_output().unwrap();
        }
        assert!(
            !d.file("overlaps").exists(),
            "round {round}: two refreshers ran at once ({} runs so far)",
            runs(&runs_file)
        );
    }
}
