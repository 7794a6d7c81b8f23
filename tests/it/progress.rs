//! `refresh` prints each source's line as it finishes, then a summary;
//! `--json` answers on the commands that print results.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

use serde_json::Value;

use crate::helpers::daemon::{DEADLINE, TestDaemon, config, eventually, sh_source};

/// A config with `t/quick` and `t/gated`, which finishes only once `gate`
/// (a FIFO) is written to.
fn gated(d: &TestDaemon) -> (String, std::path::PathBuf) {
    let gate = d.file("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let script = format!("cat '{}' > /dev/null; echo '[\"gated\"]'", gate.display());
    let sources = sh_source("t/quick", "1h", "30s", "echo '[1]'")
        + &sh_source("t/gated", "1h", "30s", &script);
    (config(&sources), gate)
}

fn cli(d: &TestDaemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
    cmd.arg("--root").arg(&d.root);
    cmd.arg("--socket").arg(&d.socket);
    cmd.arg("--config").arg(&d.config);
    cmd.args(args);
    cmd.env("XDG_CONFIG_HOME", d.dir.path().join("xdg"));
    cmd
}

/// Starts `cmd` with its stdout lines sent to the returned channel.
fn spawn_lines(mut cmd: Command) -> (Child, Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn discocache");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Lets the gated refresher finish: writes to the FIFO once it has a
/// reader (a non-blocking open fails until then).
fn open_gate(gate: &Path) {
    let mut fifo = eventually("the gated refresher to open its gate", || {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(gate)
            .ok()
    });
    fifo.write_all(b"go\n").expect("write the gate");
}

fn next_line(rx: &Receiver<String>, what: &str) -> String {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("no line for {what} within {DEADLINE:?}"))
}

/// The lines of a refresh of `t/quick` and `t/gated` where `t/quick`'s
/// line must come while `t/gated` is still held.
fn quick_line_comes_before_the_gate_opens(d: &TestDaemon, gate: &Path, args: &[&str]) {
    let (mut child, rx) = spawn_lines(cli(d, args));
    let first = next_line(&rx, "t/quick while t/gated is held");
    // (The daemon may be warming t/quick up: then the refresh joins it.)
    assert!(
        first.starts_with("t/quick: ") && first.contains(", revision "),
        "{first}"
    );
    open_gate(gate);
    let second = next_line(&rx, "t/gated");
    assert!(second.starts_with("t/gated: "), "{second}");
    assert_eq!(next_line(&rx, "the summary"), "2 refreshed");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn direct_refresh_prints_each_source_as_it_finishes() {
    let d = TestDaemon::new("");
    let (config, gate) = gated(&d);
    std::fs::write(&d.config, config).expect("write config");
    let args = ["--no-daemon", "refresh", "t/gated", "t/quick"];
    quick_line_comes_before_the_gate_opens(&d, &gate, &args);
}

#[test]
fn daemon_refresh_prints_each_source_as_it_finishes() {
    let mut d = TestDaemon::new("");
    let (config, gate) = gated(&d);
    std::fs::write(&d.config, config).expect("write config");
    d.spawn();
    // Sources go to the daemon one request at a time, in the order given.
    quick_line_comes_before_the_gate_opens(&d, &gate, &["refresh", "t/quick", "t/gated"]);
}

#[test]
fn refresh_summary_counts_failures_and_json_has_every_result() {
    let sources = sh_source("t/ok", "1h", "10s", "echo '{}'")
        + &sh_source("t/bad", "1h", "10s", "echo broken >&2; exit 3");
    let d = TestDaemon::new(&config(&sources));
    let out = cli(&d, &["--no-daemon", "refresh", "--all"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with("1 refreshed, 1 failed\n"), "{stdout}");
    let out = cli(&d, &["--no-daemon", "refresh", "--all", "--json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let body: Value = serde_json::from_slice(&out.stdout).expect("refresh --json");
    assert_eq!(body["failed"], 1);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(
        (results[0]["source"].clone(), results[0]["ok"].clone()),
        ("t/ok".into(), true.into())
    );
    assert_eq!(results[1]["ok"], false);
}

#[test]
fn prune_invalidate_and_config_check_answer_json() {
    let d = TestDaemon::new(&config(&sh_source("t/a", "1h", "10s", "echo '[1]'")));
    let run = |args: &[&str]| {
        let out = cli(&d, args).output().expect("run");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"));
        (out.status.code(), value)
    };
    assert_eq!(run(&["--no-daemon", "refresh", "t/a", "--json"]).0, Some(0));
    let (code, inv) = run(&["--no-daemon", "invalidate", "t/a", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(inv["source"], "t/a");
    let (code, pruned) = run(&["--no-daemon", "prune", "--dry-run", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(pruned["dry_run"], true, "{pruned}");
    let (code, check) = run(&["config", "check", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(check["sources"], serde_json::json!(["t/a"]));
    std::fs::write(
        &d.config,
        "[[source]]\nid = \"t/a\"\ncommand = [\"x\"]\nbogus = 1\n",
    )
    .unwrap();
    let (code, check) = run(&["config", "check", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(check["ok"], false);
    assert_eq!(check["problems"][0]["line"], 4, "{check}");
}
