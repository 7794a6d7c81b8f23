//! A holder that dies (SIGKILL, Ctrl-C) takes its refresher with it: the
//! leader dies at once (death signal), a grandchild left in its process group
//! is killed by the next claimant (the group is in the marker), and the next
//! refresh runs exactly one refresher.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::daemon::{TestDaemon, config, count, eventually, sh_source};

/// A refresher that logs its pid to `starts` and, while `hang` exists,
/// leaves a `sleep 300` grandchild in its group and waits for it.
fn hanging_source(d: &TestDaemon) -> String {
    let (starts, hang, grandchild) = (d.file("starts"), d.file("hang"), d.file("grandchild"));
    let script = format!(
        "echo $$ >> '{}'; if [ -e '{}' ]; then sleep 300 & echo $! > '{}'; wait; fi; echo '{{\"ok\":1}}'",
        starts.display(),
        hang.display(),
        grandchild.display()
    );
    config(&sh_source("t/slow", "1h", "120s", &script))
}

/// Gone, or a zombie nobody has reaped yet (it runs nothing any more).
fn is_dead(pid: Pid) -> bool {
    if kill(pid, None) == Err(Errno::ESRCH) {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    state.is_none_or(|s| s.starts_with(['Z', 'X']))
}

fn pid_in(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok().map(Pid::from_raw)
}

fn cli(d: &TestDaemon) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
    cmd.arg("--root").arg(&d.root);
    cmd.arg("--socket").arg(&d.socket);
    cmd.arg("--config").arg(&d.config);
    cmd.arg("--no-daemon");
    cmd.env("XDG_CONFIG_HOME", d.dir.path().join("xdg"));
    cmd.stdin(Stdio::null());
    cmd
}

/// Waits for the hanging refresher to start; returns (leader, grandchild).
fn running_refresher(d: &TestDaemon) -> (Pid, Pid) {
    let grandchild = eventually("the refresher's grandchild", || {
        pid_in(&d.file("grandchild"))
    });
    let leader = pid_in(&d.file("starts")).expect("leader pid");
    assert!(!is_dead(leader) && !is_dead(grandchild));
    // The holder records the group in its marker as the leader starts;
    // what the next claimant kills is what the marker names.
    let marker = d.root.join("t/slow.refreshing");
    eventually("the marker to name the refresher's group", || {
        let text = std::fs::read_to_string(&marker).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("pgid").filter(|p| p.is_number()).map(|_| ())
    });
    (leader, grandchild)
}

/// After the holder died: the leader dies by itself; the next refresh kills
/// the grandchild first and runs one refresher of its own.
fn assert_cleaned_up_by_next_refresh(d: &TestDaemon, leader: Pid, grandchild: Pid) {
    eventually("the refresher's leader to die with its holder", || {
        is_dead(leader).then_some(())
    });
    std::fs::remove_file(d.file("hang")).expect("remove hang");
    let out = cli(d)
        .args(["refresh", "t/slow"])
        .output()
        .expect("refresh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGKILL is sent before the refresh starts; the death itself is the
    // kernel's to finish.
    eventually("the crashed holder's grandchild to die", || {
        is_dead(grandchild).then_some(())
    });
    assert_eq!(
        count(&d.file("starts")),
        2,
        "exactly one more refresher ran"
    );
}

fn hold_with_cli(d: &TestDaemon) -> (Child, Pid, Pid) {
    std::fs::write(d.file("hang"), "").expect("hang");
    let child = cli(d)
        .args(["refresh", "t/slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn refresh");
    let (leader, grandchild) = running_refresher(d);
    (child, leader, grandchild)
}

#[test]
fn sigkilled_cli_holder_leaves_no_refresher_running() {
    let d = TestDaemon::new("");
    std::fs::write(&d.config, hanging_source(&d)).expect("config");
    let (mut child, leader, grandchild) = hold_with_cli(&d);
    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap");
    assert_cleaned_up_by_next_refresh(&d, leader, grandchild);
}

#[test]
fn interrupted_cli_holder_leaves_no_refresher_running() {
    let d = TestDaemon::new("");
    std::fs::write(&d.config, hanging_source(&d)).expect("config");
    let (mut child, leader, grandchild) = hold_with_cli(&d);
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGINT).expect("SIGINT the holder");
    child.wait().expect("reap");
    assert_cleaned_up_by_next_refresh(&d, leader, grandchild);
}

#[test]
fn sigkilled_daemon_holder_leaves_no_refresher_running() {
    let mut d = TestDaemon::new("");
    std::fs::write(&d.config, hanging_source(&d)).expect("config");
    std::fs::write(d.file("hang"), "").expect("hang");
    d.spawn();
    let (leader, grandchild) = running_refresher(&d);
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    assert_cleaned_up_by_next_refresh(&d, leader, grandchild);
}

#[test]
fn recovery_kills_what_is_left_of_a_dead_holders_refresher() {
    let d = TestDaemon::new("");
    std::fs::write(&d.config, hanging_source(&d)).expect("config");
    let (mut child, leader, grandchild) = hold_with_cli(&d);
    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap");
    eventually("the refresher's leader to die with its holder", || {
        is_dead(leader).then_some(())
    });
    assert!(!is_dead(grandchild), "nothing left for recovery to kill");
    // prune recovers first (and keeps t/slow: it is configured).
    let out = cli(&d).arg("prune").output().expect("prune");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("recovery to kill the grandchild", || {
        is_dead(grandchild).then_some(())
    });
    assert!(!d.root.join("t/slow.refreshing").exists());
    assert_eq!(count(&d.file("starts")), 1, "recovery ran no refresher");
}

#[test]
fn sigkilled_cli_holder_of_a_pty_refresher_leaves_no_refresher_running() {
    let d = TestDaemon::new("");
    let text = hanging_source(&d).replace("command = [", "pty = true\ncommand = [");
    std::fs::write(&d.config, text).expect("config");
    let (mut child, leader, grandchild) = hold_with_cli(&d);
    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap");
    assert_cleaned_up_by_next_refresh(&d, leader, grandchild);
}
