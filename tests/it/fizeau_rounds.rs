//! Exactly one refresher per round: fizeau processes (`MaybeRefreshSync`),
//! discocache CLI processes (`get --refresh wait-if-stale`, direct mode)
//! and the daemon (`get` with `wait_if_stale`) all refreshing one stale
//! source at once, over many rounds, some of which start with a stale
//! fizeau lock or a stale fizeau marker in the way (needs Go).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::helpers::daemon::{TestDaemon, config, count, sh_source};
use crate::helpers::fizeau::{Fizeau, driver};

/// The refresher both implementations run: it notes each run, and notes an
/// overlap when another run is in progress (`mkdir` is atomic); the pause
/// is its work, the window a second refresher would show in.
const SCRIPT: &str = "mkdir @DIR@/busy 2>/dev/null || echo overlap >> @DIR@/overlaps; \
     echo run $PPID >> @DIR@/runs; sleep 0.2; rmdir @DIR@/busy 2>/dev/null; echo '{\"n\": 1}'";

const ID: &str = "discovery/models";
const ROUNDS: usize = 16;

/// What is in the way when a round starts.
#[derive(Debug, Clone, Copy)]
enum Leftover {
    Nothing,
    /// fizeau's short lock, left by a process that has exited.
    DeadLock,
    /// fizeau's marker, left by a process that has exited.
    DeadMarker,
    /// fizeau's marker of a live process, past its deadline and grace.
    PastGraceMarker,
}

const LEFTOVERS: [Leftover; 4] = [
    Leftover::Nothing,
    Leftover::DeadLock,
    Leftover::DeadMarker,
    Leftover::PastGraceMarker,
];

/// A live process, killed when dropped.
struct Live(Child);

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dead_pid() -> u32 {
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    dead.id()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Lays `leftover` in the tier directory, as fizeau leaves it.
fn plant(tier: &Path, leftover: Leftover, live_pid: u32) {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let marker = |pid: u32, deadline: SystemTime| {
        let started = rfc3339(deadline - Duration::from_secs(10));
        let deadline = rfc3339(deadline);
        format!(r#"{{"pid":{pid},"started_at":"{started}","deadline":"{deadline}"}}"#)
    };
    match leftover {
        Leftover::Nothing => {}
        Leftover::DeadLock => {
            let lock = format!(
                r#"{{"pid":{},"started_at":"{}"}}"#,
                dead_pid(),
                rfc3339(now)
            );
            fs::write(tier.join("models.lock"), lock).unwrap();
        }
        Leftover::DeadMarker => {
            let m = marker(dead_pid(), now + Duration::from_secs(10));
            fs::write(tier.join("models.refreshing"), m).unwrap();
        }
        Leftover::PastGraceMarker => {
            let m = marker(live_pid, now - hour);
            fs::write(tier.join("models.refreshing"), m).unwrap();
        }
    }
}

/// Makes the payload two hours old: stale for everyone (ttl 1h).
fn make_stale(payload: &Path) {
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    fs::File::open(payload)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
}

/// `discocache get --refresh wait-if-stale` in direct mode on the daemon's
/// root and config.
fn cli_get(d: &TestDaemon) -> Child {
    Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(d.file("no-daemon.sock"))
        .arg("--config")
        .arg(&d.config)
        .args(["--no-daemon", "get", "--refresh", "wait-if-stale", ID])
        .env_remove("DISCOCACHE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The last runs noted (each with the pid of the process that ran it).
fn last_runs(runs: &Path) -> String {
    let all = fs::read_to_string(runs).unwrap_or_default();
    let lines: Vec<&str> = all.lines().rev().take(3).collect();
    lines.join(" / ")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_kind_of_process_refreshing_a_stale_source_runs_its_refresher_once_per_round() {
    let Some(bin) = driver() else { return };
    let mut d = TestDaemon::new("");
    let dir: PathBuf = d.dir.path().to_owned();
    let script = SCRIPT.replace("@DIR@", dir.to_str().unwrap());
    d.write_config(&config(&sh_source(ID, "1h", "10s", &script)));
    d.spawn();
    d.wait_data(ID);
    let payload = d.root.join("discovery/models.json");
    let tier = d.root.join("discovery");
    let runs = d.file("runs");
    let live = Live(Command::new("sleep").arg("60").spawn().unwrap());
    let fz = Fizeau::new(bin, &d.root, ID);
    let mut counts = Vec::new();
    for round in 0..ROUNDS {
        let leftover = LEFTOVERS[round % LEFTOVERS.len()];
        make_stale(&payload);
        plant(&tier, leftover, live.0.id());
        let before = count(&runs);
        // Two fizeau processes breaking one dead lock at once can both
        // "hold" it (fizeau deletes the lock by path, BEHAVIOUR.md §3.4):
        // a flaw between fizeau processes that no third party can mend. A
        // round with a dead lock races one fizeau process with ours.
        let n_fizeau = match leftover {
            Leftover::DeadLock => 1,
            _ => 2,
        };
        let fizeaus: Vec<Child> = (0..n_fizeau)
            .map(|_| {
                fz.command(&["-ttl", "1h"], "maybe-refresh-sync")
                    .args(["--", "sh", "-c", &script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let clis: Vec<Child> = (0..2).map(|_| cli_get(&d)).collect();
        let who = format!(
            "fizeau {:?}, cli {:?}, daemon {}",
            fizeaus.iter().map(Child::id).collect::<Vec<_>>(),
            clis.iter().map(Child::id).collect::<Vec<_>>(),
            d.pid()
        );
        let got = d.request(serde_json::json!({
            "op": "get", "source": ID, "refresh": "wait_if_stale"
        }));
        assert_eq!(got["ok"], true, "round {round} ({leftover:?}): {got}");
        for child in clis {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round} ({leftover:?}): {}",
                text(&out.stderr)
            );
        }
        for child in fizeaus {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round} ({leftover:?}): fizeau: {}",
                text(&out.stdout)
            );
        }
        counts.push((leftover, count(&runs) - before));
        assert!(
            !d.file("overlaps").exists(),
            "round {round} ({leftover:?}): two refreshers ran at once; runs per round {counts:?}; {who}; runs: {}",
            last_runs(&runs)
        );
    }
    assert!(
        counts.iter().all(|(_, n)| *n == 1),
        "refreshers per round (want exactly 1 each): {counts:?}; {}",
        last_runs(&runs)
    );
}
