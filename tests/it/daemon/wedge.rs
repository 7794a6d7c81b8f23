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

/// A `--no-daemon refresh` of `source`, stopped with SIGSTOP once its
/// marker is written. Killed (with its refresher's group) on drop.
struct StoppedHolder {
    child: Child,
    group: std::path::PathBuf,
}

impl StoppedHolder {
    fn start(d: &TestDaemon, source: &str, marker: &str) -> Self {
        let child = cli(d, &["--no-daemon", "refresh", source])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn holder");
        let marker = d.root.join(marker);
        eventually("the holder's marker", || marker.exists().then_some(()));
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        Self {
            child,
            group: d.file("group"),
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
        if let Some(group) = std::fs::read_to_string(&self.group)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(-group), Signal::SIGKILL);
        }
    }
}

/// A refresher that records its process group and sleeps.
fn sleeper(d: &TestDaemon, id: &str, deadline: &str) -> String {
    let script = format!("echo $$ > '{}'; exec sleep 300", d.file("group").display());
    sh_source(id, "1h", deadline, &script)
}

/// A test daemon's files with these sources in its config, not started.
fn with_sources(make: impl FnOnce(&TestDaemon) -> String) -> TestDaemon {
    let d = TestDaemon::new("");
    d.write_config(&config(&make(&d)));
    d
}

#[test]
fn cli_waiting_on_a_stopped_holder_exits_at_its_timeout_naming_the_pid() {
    let d = with_sources(|d| sleeper(d, "t/slow", "2s"));
    let holder = StoppedHolder::start(&d, "t/slow", "t/slow.refreshing");
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
