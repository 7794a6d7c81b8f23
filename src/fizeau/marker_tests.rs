use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use super::super::Names;
use super::super::dir::TierDir;
use super::super::lock::{LockRules, ShortLock};
use super::super::testing::{LiveProcess, go_time, written_by_dead_process};
use super::*;

const RD: Duration = Duration::from_secs(10);

fn at(secs: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs))
}

fn fizeau_marker(pid: i64, start: Timestamp, last_error: Option<&str>) -> FizeauMarker {
    FizeauMarker {
        pid,
        started_at: Some(start),
        deadline: Some(start.plus(if last_error.is_some() {
            FAILURE_COOLDOWN
        } else {
            RD
        })),
        last_error: last_error.map(str::to_owned),
        token: None,
        pgid: None,
    }
}

fn setup() -> (tempfile::TempDir, TierDir, Names) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TierDir::open(tmp.path()).unwrap();
    (tmp, dir, Names::new("src").unwrap())
}

#[test]
fn parses_a_marker_go_wrote_without_our_fields() {
    let text = r#"{"pid":4242,"started_at":"2026-11-28T21:54:05.420259554Z","deadline":"2026-11-28T21:54:05.670259554Z","last_error":"boom"}"#;
    let m = FizeauMarker::parse(text.as_bytes()).unwrap();
    assert_eq!(m.pid, 4242);
    assert_eq!(
        m.started_at.unwrap().to_string(),
        "2026-11-28T21:54:05.420Z"
    );
    assert_eq!(m.deadline.unwrap().to_string(), "2026-11-28T21:54:05.670Z");
    assert_eq!(m.last_error.as_deref(), Some("boom"));
    assert_eq!(m.owner(), Owner::Fizeau);
    assert!(m.failed_record());
}

#[test]
fn go_zero_time_and_missing_fields_read_as_long_past() {
    let m = FizeauMarker::parse(br#"{"pid":5,"started_at":"0001-01-01T00:00:00Z"}"#).unwrap();
    assert_eq!(m.started_at, None);
    assert_eq!(m.deadline, None);
    let alive = |_| true;
    assert_eq!(
        m.judge(at(0), RD, alive),
        MarkerState::Stale(StaleReason::PastGrace)
    );
    assert!(!m.active_for_prune(at(0), alive));
}

#[test]
fn garbage_is_no_marker_as_for_fizeau() {
    for bytes in [&b""[..], b"{", b"[]", b"\"x\"", br#"{"pid":"x"}"#] {
        assert_eq!(FizeauMarker::parse(bytes), None, "{bytes:?}");
    }
}

#[test]
fn our_marker_has_fizeau_fields_and_round_trips() {
    let m = FizeauMarker::claim(at(0), RD, "abc");
    let v: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
    assert_eq!(v["pid"], i64::from(std::process::id()));
    assert_eq!(v["started_at"], "2027-01-15T08:00:00.000Z");
    assert_eq!(v["deadline"], "2027-01-15T08:00:10.000Z");
    assert_eq!(v["token"], "abc");
    assert!(
        v.get("last_error").is_none() && v.get("pgid").is_none(),
        "{v}"
    );
    assert_eq!(FizeauMarker::parse(&m.to_bytes()), Some(m.clone()));
    assert_eq!(m.owner(), Owner::Discocache("abc"));

    let f = m.failed(at(3), "exit status 1:\n  no route");
    let v: serde_json::Value = serde_json::from_slice(&f.to_bytes()).unwrap();
    assert_eq!(v["last_error"], "exit status 1: no route");
    assert_eq!(v["started_at"], "2027-01-15T08:00:03.000Z");
    assert_eq!(v["deadline"], "2027-01-15T08:00:03.250Z");
    assert_eq!(v["token"], "abc");
}

#[test]
fn fizeau_staleness_rules() {
    let alive = |pid: i64| pid == 1;
    let running = fizeau_marker(1, at(0), None);
    assert_eq!(running.judge(at(5), RD, alive), MarkerState::InFlight);
    // Past its deadline but within 2 x RD of grace: still in flight.
    assert_eq!(running.judge(at(30), RD, alive), MarkerState::InFlight);
    assert_eq!(
        running.judge(at(31), RD, alive),
        MarkerState::Stale(StaleReason::PastGrace)
    );
    assert_eq!(running.stale_at(RD), Some(at(30)));

    let dead = fizeau_marker(2, at(0), None);
    assert_eq!(
        dead.judge(at(0), RD, alive),
        MarkerState::Stale(StaleReason::DeadPid)
    );

    // A failure record is a cooldown, with no grace.
    let failed = fizeau_marker(1, at(0), Some("boom"));
    assert_eq!(failed.judge(at(0), RD, alive), MarkerState::Cooldown);
    assert!(failed.judge(at(0), RD, alive).is_live());
    assert_eq!(
        failed.judge(at(1), RD, alive),
        MarkerState::Stale(StaleReason::CooldownOver)
    );
}

#[test]
fn fizeau_prune_rule_has_no_grace() {
    let alive = |pid: i64| pid == 1;
    let running = fizeau_marker(1, at(0), None);
    assert!(running.active_for_prune(at(9), alive));
    assert!(!running.active_for_prune(at(10), alive));
    assert!(!fizeau_marker(2, at(0), None).active_for_prune(at(0), alive));
}

#[test]
fn claim_writes_our_marker_when_none_exists() {
    let (tmp, dir, names) = setup();
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    let Claim::Claimed { marker, replaced } = claim(&lock, Timestamp::now(), RD, "t1").unwrap()
    else {
        panic!("not claimed");
    };
    assert_eq!(replaced, None);
    let on_disk = std::fs::read(tmp.path().join("src.refreshing")).unwrap();
    assert_eq!(FizeauMarker::parse(&on_disk), Some(marker));
    // No temp file is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn claim_waits_for_a_live_fizeau_marker_and_leaves_it() {
    let (tmp, dir, names) = setup();
    let other = LiveProcess::start();
    let now = SystemTime::now();
    let text = format!(
        r#"{{"pid":{},"started_at":"{}","deadline":"{}"}}"#,
        other.pid(),
        go_time(now),
        go_time(now + RD)
    );
    std::fs::write(tmp.path().join("src.refreshing"), &text).unwrap();
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    match claim(&lock, Timestamp::now(), RD, "t1").unwrap() {
        Claim::Busy(m, MarkerState::InFlight) => assert_eq!(m.pid, other.pid()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("src.refreshing")).unwrap(),
        text
    );
}

#[test]
fn claim_honours_a_fizeau_failure_cooldown() {
    let (tmp, dir, names) = setup();
    let now = SystemTime::now();
    let text = format!(
        r#"{{"pid":{},"started_at":"{}","deadline":"{}","last_error":"boom"}}"#,
        std::process::id(),
        go_time(now),
        go_time(now + Duration::from_secs(60))
    );
    std::fs::write(tmp.path().join("src.refreshing"), &text).unwrap();
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    let c = claim(&lock, Timestamp::now(), RD, "t1").unwrap();
    assert!(matches!(c, Claim::Busy(_, MarkerState::Cooldown)), "{c:?}");
}

#[test]
fn claim_replaces_a_dead_fizeau_marker() {
    let (tmp, dir, names) = setup();
    let path = tmp.path().join("src.refreshing");
    let deadline = go_time(SystemTime::now() + Duration::from_secs(60));
    let format = format!(r#"{{"pid":%d,"started_at":"{deadline}","deadline":"{deadline}"}}"#);
    let pid = written_by_dead_process(&path, &format);
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    let Claim::Claimed { marker, replaced } = claim(&lock, Timestamp::now(), RD, "t1").unwrap()
    else {
        panic!("a dead pid's marker must not block");
    };
    assert_eq!(replaced.unwrap().pid, pid);
    assert_eq!(
        FizeauMarker::parse(&std::fs::read(&path).unwrap()),
        Some(marker)
    );
}

#[test]
fn claim_replaces_an_abandoned_discocache_marker_and_returns_it() {
    let (_tmp, dir, names) = setup();
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    let mut old = FizeauMarker::claim(Timestamp::now(), RD, "old");
    old.pgid = Some(12345);
    lock.write_marker(&old).unwrap();
    let Claim::Claimed { replaced, .. } = claim(&lock, Timestamp::now(), RD, "new").unwrap() else {
        panic!("an abandoned discocache marker must not block its flock holder");
    };
    assert_eq!(replaced, Some(old));
}

#[test]
fn only_our_own_marker_is_removed() {
    let (tmp, dir, names) = setup();
    let path = tmp.path().join("src.refreshing");
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    lock.write_marker(&FizeauMarker::claim(Timestamp::now(), RD, "theirs"))
        .unwrap();
    assert!(!lock.remove_marker_if_ours("mine").unwrap());
    assert!(path.exists());
    std::fs::write(&path, r#"{"pid":1,"started_at":"2026-01-01T00:00:00Z"}"#).unwrap();
    assert!(
        !lock.remove_marker_if_ours("mine").unwrap(),
        "fizeau's marker is not ours"
    );
    lock.write_marker(&FizeauMarker::claim(Timestamp::now(), RD, "mine"))
        .unwrap();
    assert!(lock.remove_marker_if_ours("mine").unwrap());
    assert!(!path.exists());
}

#[test]
fn marker_symlink_is_replaced_never_followed() {
    let (tmp, dir, names) = setup();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "keep").unwrap();
    symlink(&outside, tmp.path().join("src.refreshing")).unwrap();
    let err = read_marker(&dir, &names.marker).unwrap_err().to_string();
    assert!(err.contains("symlink"), "{err}");
    let lock = ShortLock::acquire(&dir, &names, &LockRules::default()).unwrap();
    lock.write_marker(&FizeauMarker::claim(Timestamp::now(), RD, "t"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
    assert!(read_marker(&dir, &names.marker).unwrap().is_some());
}
