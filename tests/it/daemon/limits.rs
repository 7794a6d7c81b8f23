//! The connection cap under hundreds of stalled connections.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use crate::helpers::daemon::{DEADLINE, Raw, TestDaemon, config, sh_source};

/// The daemon's default connection cap.
const CAP: usize = 256;

#[test]
fn stalled_connections_do_not_stop_others_and_only_past_the_cap_are_busy() {
    let d = TestDaemon::start(&config(&sh_source("t/a", "1h", "10s", "echo '{}'")));
    let mut stalled: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&d.socket).expect("connect"))
        .collect();
    let mut served = Raw::connect(&d.socket);
    assert_eq!(
        served.ask(r#"{"op":"hello"}"#)["ok"],
        true,
        "served among 200 stalled connections"
    );
    stalled.extend((0..100).map(|_| UnixStream::connect(&d.socket).expect("connect")));
    let mut busy = 0;
    // Every stream stays open until all are answered: none frees a slot.
    for stream in &stalled {
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        // A refused connection may already be closed: the write can fail,
        // the `busy` line is still there to read.
        let _ = (&*stream).write_all(b"{\"op\":\"hello\"}\n");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("read an answer");
        let answer: serde_json::Value = serde_json::from_str(&line).expect("JSON answer");
        if answer["ok"] == false {
            assert_eq!(answer["error"]["code"], "busy", "{answer}");
            busy += 1;
        }
    }
    assert_eq!(
        busy,
        300 + 1 - CAP,
        "exactly the connections past the cap are busy"
    );
    assert_eq!(served.ask(r#"{"op":"hello"}"#)["ok"], true);
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: skipped: switching to another uid needs root");
        return;
    }
    let mut d = TestDaemon::start(&config(&sh_source("t/x", "1h", "10s", "echo '[1]'")));
    // Let another user reach the socket at all: the refusal under test is
    // the daemon's own peer check, not the file mode.
    let open = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(d.dir.path(), open.clone()).expect("chmod dir");
    std::fs::set_permissions(&d.socket, open).expect("chmod socket");
    let nobody_root = d.file("nobody-root");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--root")
        .arg(&nobody_root)
        .args(["get", "t/x"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    assert_ne!(out.status.code(), Some(0), "refused peer got an answer");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = d.dir.path().join("daemon-1.log");
    d.wait("the refusal to be logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("refused a connection from uid 65534")
            .then_some(())
    });
    // Our own uid is still served.
    let mut raw = Raw::connect(&d.socket);
    assert_eq!(raw.ask(r#"{"op":"hello"}"#)["ok"], true);
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn an_idle_daemon_does_not_wake_itself_reading_its_own_files() {
    // The bug: the root watcher passed on "opened" events, handling one
    // re-read the sidecar, which opened it again: ~90 % of a core, idle.
    let sources: String = (0..20)
        .map(|i| sh_source(&format!("t/s{i}"), "1h", "10s", "echo '[1]'"))
        .collect();
    let mut d = TestDaemon::start(&config(&sources));
    for i in 0..20 {
        d.wait_data(&format!("t/s{i}"));
    }
    let mut raw = Raw::connect(&d.socket);
    let got = raw.ask(r#"{"op":"get","source":"t/s0"}"#);
    assert_eq!(got["ok"], true, "{got}");
    let ticks_per_second = 100; // USER_HZ on Linux
    let before = cpu_ticks(d.pid());
    let window = std::time::Instant::now();
    // Measure over a fixed window of idleness: that is the event under test.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let used = cpu_ticks(d.pid()) - before;
    let elapsed = window.elapsed().as_secs_f64();
    let share = used as f64 / ticks_per_second as f64 / elapsed;
    assert!(
        share < 0.25,
        "idle daemon used {:.0} % of a core",
        share * 100.0
    );
}
