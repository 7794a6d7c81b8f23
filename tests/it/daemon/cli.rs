//! The CLI through a running daemon, and its fallback to direct mode when
//! none answers.

use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config, count, counter_source};

fn cli(d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cli")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fresh_hits(d: &TestDaemon) -> u64 {
    let stats = d.request(json!({"op": "stats"}));
    stats["sources"]["t/count"]["fresh_hits"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn client_commands_go_through_the_daemon() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let counter = tmp.path().join("count");
    let mut d = TestDaemon::start(&config(&counter_source("t/count", "1h", &counter)));
    d.wait_data("t/count");
    let before = fresh_hits(&d);
    let out = cli(&d, &["get", "t/count"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"n\":1}\n");
    assert!(
        text(&out.stderr).is_empty(),
        "no fallback note: {}",
        text(&out.stderr)
    );
    assert_eq!(
        fresh_hits(&d),
        before + 1,
        "the read was served by the daemon"
    );

    let meta: Value =
        serde_json::from_slice(&cli(&d, &["get", "t/count", "--meta"]).stdout).expect("envelope");
    assert_eq!(
        (meta["ok"].clone(), meta["revision"].clone()),
        (json!(true), json!(1))
    );

    let out = cli(&d, &["refresh", "t/count"]);
    assert_eq!(
        text(&out.stdout),
        "t/count: refreshed, revision 2\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(count(&counter), 2);

    let status = text(&cli(&d, &["status"]).stdout);
    assert!(
        status.contains("daemon: ") && status.contains("t/count") && status.contains("fresh"),
        "{status}"
    );
    let state = text(&cli(&d, &["state", "t/count", "--json"]).stdout);
    assert!(state.contains("\"revision\": 2"), "{state}");
    let metrics = text(&cli(&d, &["metrics"]).stdout);
    assert!(metrics.contains("discocache_keys_stored 1"), "{metrics}");
    let out = cli(&d, &["invalidate", "t/count"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = cli(&d, &["get", "t/unknown"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("t/unknown"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cli(&d, &["get", "T/x"]).status.code(), Some(2));
}

#[test]
fn watch_streams_events_as_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let counter = tmp.path().join("count");
    let mut d = TestDaemon::start(&config(&counter_source("t/count", "1h", &counter)));
    d.wait_data("t/count");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .args(["watch", "t/count"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    let stdout = watcher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Refresh until the watcher reports one: it may subscribe after the first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let event: Value = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no event line within 20s"
        );
        assert!(cli(&d, &["refresh", "t/count"]).status.success());
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(1)) {
            break serde_json::from_str(&line.expect("read")).expect("event line is JSON");
        }
    };
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(event["event"], "committed");
    assert_eq!(event["source"], "t/count");
}

#[test]
fn without_a_daemon_reads_fall_back_to_the_root_with_one_note() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let counter = tmp.path().join("count");
    let d = TestDaemon::new(&config(&counter_source("t/count", "1h", &counter)));
    let out = cli(&d, &["get", "t/count"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"n\":1}\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no daemon answers") && err.contains("directly"),
        "{err}"
    );
}

#[test]
fn get_with_no_data_yet_waits_for_the_refresh_as_in_direct_mode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gate = tmp.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    let script = format!("read line < '{}'; echo '{{\"n\":1}}'", gate.display());
    let d = TestDaemon::start(&config(&crate::helpers::daemon::sh_source(
        "t/gated", "1h", "30s", &script,
    )));
    let getter = Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .args(["get", "t/gated"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("get");
    // The daemon has answered the first ask "no data" before the refresh
    // it is seeding may finish.
    let misses = || {
        let stats = d.request(json!({"op": "stats"}));
        stats["sources"]["t/gated"]["misses"].as_u64().unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while misses() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the get never reached the daemon"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"go\n"))
        .expect("open the gate");
    let out = getter.wait_with_output().expect("get output");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"n\":1}\n");
}
