//! Nothing outside can pin the daemon or the CLI: stopped lock holders,
//! FIFOs, crowds of forced refreshes, idle watchers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::daemon::{TestDaemon, config, eventually, sh_source};

/// The binary on the test daemon's root, socket and config.
fn cli(d: &TestDaemon, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_discocache"));
    c.arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .env_remove("DISCOCACHE_LOG")
        .stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `--no-daemon refresh` of `sources`, stopped with SIGSTOP once the
/// marker of each is written. Killed (with its refreshers' groups) on drop.
struct StoppedHolder {
    child: Child,
    groups: std::path::PathBuf,
}

impl StoppedHolder {
    fn start(d: &TestDaemon, sources: &[String]) -> Self {
        let mut args = vec!["--no-daemon", "refresh"];
        args.extend(sources.iter().map(String::as_str));
        let child = cli(d, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn holder");
        for source in sources {
            let marker = d.root.join(format!("{source}.refreshing"));
            eventually("the holder's markers", || marker.exists().then_some(()));
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        Self {
            child,
            groups: d.file("groups"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for StoppedHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let groups = std::fs::read_to_string(&self.groups).unwrap_or_default();
        for group in groups.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(-group), Signal::SIGKILL);
        }
    }
}

/// A refresher that records its process group and sleeps.
fn sleeper(d: &TestDaemon, id: &str, deadline: &str) -> String {
    let script = format!(
        "echo $$ >> '{}'; exec sleep 300",
        d.file("groups").display()
    );
    sh_source(id, "1h", deadline, &script)
}

/// A test daemon's files with these sources in its config, not started.
fn with_sources(make: impl FnOnce(&TestDaemon) -> String) -> TestDaemon {
    with_config(|d| config(&make(d)))
}

/// A test daemon's files with this whole config, not started.
fn with_config(make: impl FnOnce(&TestDaemon) -> String) -> TestDaemon {
    let d = TestDaemon::new("");
    d.write_config(&make(&d));
    d
}

#[test]
fn cli_waiting_on_a_stopped_holder_exits_at_its_timeout_naming_the_pid() {
    let d = with_sources(|d| sleeper(d, "t/slow", "2s"));
    let holder = StoppedHolder::start(&d, &["t/slow".to_owned()]);
    let started = Instant::now();
    let mut waiter = cli(&d, &["--no-daemon", "refresh", "t/slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn waiter");
    let status = eventually("the waiting CLI to exit", || {
        waiter.try_wait().expect("try_wait")
    });
    let took = started.elapsed();
    let out = waiter.wait_with_output().expect("output");
    let stderr = text(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", holder.pid())),
        "names the holder: {stderr}"
    );
    // The holder's deadline (2 s) plus the grace (5 s), not for ever.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn stopped_holder_does_not_wedge_the_daemon() {
    // More sources held by a stopped process than the runtime's blocking
    // pool has threads, and a `file` source that is a FIFO.
    let held: Vec<String> = (0..40).map(|n| format!("t/held{n}")).collect();
    let fifo = tempfile::tempdir().expect("tempdir");
    let fifo = fifo.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut d = with_config(|d| {
        let mut sources =
            "[daemon]\nshutdown_grace = \"2s\"\nmax_concurrent_refreshes = 64\n\n".to_owned();
        for id in &held {
            sources += &sleeper(d, id, "300s");
        }
        sources += &sh_source("t/ok", "1h", "10s", "echo '{\"ok\":1}'");
        sources += &format!("[[source]]\nid = \"t/fifo\"\nfile = {:?}\n\n", fifo);
        sources
    });
    let seeded = cli(&d, &["--no-daemon", "refresh", "t/ok"])
        .output()
        .expect("seed");
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));
    let _holder = StoppedHolder::start(&d, &held);
    d.spawn();
    // Every held source is waited on (warm-keeping seeds them) and the FIFO
    // is tried; the daemon still answers everything at once.
    let waiting = |d: &TestDaemon| {
        let status = d.request(serde_json::json!({"op": "status"}));
        let sources = status["sources"].as_array()?.clone();
        let in_flight = sources
            .iter()
            .filter(|s| s["refresh"]["in_flight"] == true)
            .count();
        (in_flight >= held.len()).then_some(())
    };
    eventually("the daemon to wait on every held source", || waiting(&d));
    for round in 0..3 {
        let started = Instant::now();
        let status = d.request(serde_json::json!({"op": "status"}));
        assert_eq!(status["ok"], true, "{status}");
        let state = d.request(serde_json::json!({"op": "state", "source": "t/held0"}));
        assert_eq!(state["ok"], true, "{state}");
        let get = d.request(serde_json::json!({"op": "get", "source": "t/ok"}));
        assert_eq!(get["data"], serde_json::json!({"ok": 1}), "{get}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "round {round} took {took:?}");
    }
}

#[test]
fn concurrent_forced_refreshes_join_one_flight() {
    let mut d = with_sources(|d| {
        let (counter, armed, gate) = (d.file("count"), d.file("armed"), d.file("gate"));
        let script = format!(
            "echo x >> '{}'; if [ -e '{}' ]; then read l < '{}'; fi; printf '{{\"n\":%s}}' $(wc -l < '{}')",
            counter.display(),
            armed.display(),
            gate.display(),
            counter.display()
        );
        sh_source("t/x", "1h", "60s", &script)
    });
    d.spawn();
    d.wait_data("t/x");
    let gate = d.file("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::write(d.file("armed"), "").expect("arm");
    let mut clients: Vec<_> = (0..10).map(|_| d.raw()).collect();
    for c in &mut clients {
        c.send(r#"{"op":"refresh","sources":["t/x"]}"#);
    }
    eventually("the refresher to run", || {
        (crate::helpers::daemon::count(&d.file("count")) == 2).then_some(())
    });
    // Answered after every refresh request above was read.
    assert_eq!(d.request(serde_json::json!({"op": "hello"}))["ok"], true);
    std::fs::write(&gate, "go\n").expect("open the gate");
    for c in &mut clients {
        let answer = c.recv().expect("an answer");
        assert_eq!(answer["failed"], 0, "{answer}");
    }
    assert_eq!(
        crate::helpers::daemon::count(&d.file("count")),
        2,
        "ten forced refreshes ran the refresher once"
    );
}

#[test]
fn relative_config_is_watched_and_reloaded() {
    let mut d = with_sources(|_| sh_source("t/a", "1h", "10s", "echo 1"));
    let dir = d.config.parent().expect("config dir").to_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
    cmd.current_dir(&dir)
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(d.config.file_name().expect("file name"))
        .arg("serve")
        .env("XDG_CONFIG_HOME", d.file("xdg"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    d.spawn_with(&mut cmd);
    assert!(d.source_status("t/b").is_none());
    let mut both = sh_source("t/a", "1h", "10s", "echo 1");
    both += &sh_source("t/b", "1h", "10s", "echo 2");
    d.write_config(&config(&both));
    eventually("the edited config to be loaded", || d.source_status("t/b"));
}
