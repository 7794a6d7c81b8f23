//! The CLI in direct mode, with real processes: host-wide single flight,
//! crash recovery, torn-read freedom, failures, deadlines, bad output and
//! exit codes.

use crate::helpers::env::{BIN, Env};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the direct-mode tests do with an [`Env`].
trait DirectCli {
    fn run(&self, args: &[&str]) -> Output;
    fn spawn(&self, args: &[&str]) -> Child;
}

impl DirectCli for Env {
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Processes blocked in flock(2) on `lock`, from /proc/locks ("->" lines).
fn blocked_on(lock: &Path) -> usize {
    let ino = fs::metadata(lock).map(|m| m.ino()).unwrap_or(0);
    let suffix = format!(":{ino} ");
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("->") && l.contains(&suffix))
        .count()
}

fn pid_alive(pid: i32) -> bool {
    // A zombie (killed, not yet reaped by init) counts as dead.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn many_processes_forcing_one_slow_source_run_its_refresher_once() {
    let env = Env::new(
        r#"
[[source]]
id = "t/slow"
refresh_deadline = "60s"
command = ["sh", "-c", "echo run >> @DIR@/runs; read line < @DIR@/gate; echo '{\"v\":1}'"]
"#,
    );
    let gate = env.path("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let n = 8;
    let children: Vec<Child> = (0..n).map(|_| env.spawn(&["refresh", "t/slow"])).collect();
    wait_for("the refresher to start", || env.path("runs").exists());
    let lock = env.path("root/t/.discocache/slow.flock");
    wait_for("every other process to wait on the lock", || {
        blocked_on(&lock) == n - 1
    });
    fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outputs {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let said: Vec<String> = outputs.iter().map(|o| text(&o.stdout)).collect();
    let refreshed = said
        .iter()
        .filter(|s| s.contains("refreshed, revision 1"))
        .count();
    let joined = said
        .iter()
        .filter(|s| s.contains("joined a refresh in progress, revision 1"))
        .count();
    assert_eq!((refreshed, joined), (1, n - 1), "{said:?}");
    assert_eq!(fs::read_to_string(env.path("runs")).unwrap(), "run\n");
}

#[test]
fn sigkilled_holder_does_not_block_the_next_refresh() {
    let env = Env::new(
        r#"
[[source]]
id = "t/crashy"
refresh_deadline = "300s"
command = ["sh", "-c", "if [ -e @DIR@/first ]; then echo '{\"v\":2}'; else touch @DIR@/first; echo $$ > @DIR@/child; exec sleep 300; fi"]
"#,
    );
    let mut holder = env.spawn(&["refresh", "t/crashy"]);
    wait_for("the refresher to run", || {
        let pid = fs::read_to_string(env.path("child")).unwrap_or_default();
        pid.trim().parse::<i32>().is_ok() && env.path("root/t/crashy.refreshing").exists()
    });
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    let child: i32 = fs::read_to_string(env.path("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the refresher to die with its holder", || !pid_alive(child));
    let state = text(&env.run(&["state", "t/crashy", "--json"]).stdout);
    assert!(state.contains("\"abandoned\": true"), "{state}");
    let started = Instant::now();
    let out = env.run(&["refresh", "t/crashy"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("refreshed, revision 1"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(text(&env.run(&["get", "t/crashy"]).stdout), "{\"v\":2}\n");
    assert!(!env.path("root/t/crashy.refreshing").exists());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-child),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn reader_never_sees_a_torn_payload_while_refreshes_alternate() {
    let env = Env::new(
        r#"
[[source]]
id = "t/big"
command = ["sh", "-c", "if [ -e @DIR@/toggle ]; then rm @DIR@/toggle; cat @DIR@/a.json; else touch @DIR@/toggle; cat @DIR@/b.json; fi"]
"#,
    );
    let big = |c: char| format!("[\"{}\"]", c.to_string().repeat(2 << 20));
    let (a, b) = (big('a'), big('b'));
    fs::write(env.path("a.json"), &a).unwrap();
    fs::write(env.path("b.json"), &b).unwrap();
    assert!(env.run(&["refresh", "t/big"]).status.success());
    let payload = env.path("root/t/big.json");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, a, b) = (stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = fs::read_to_string(&payload).unwrap();
                assert!(got == a || got == b, "torn read of {} bytes", got.len());
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..10 {
        let out = env.run(&["refresh", "t/big"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 10, "the reader ran ({reads} reads)");
    let state = text(&env.run(&["state", "t/big", "--json"]).stdout);
    assert!(state.contains("\"revision\": 11"), "{state}");
}

#[test]
fn failing_refresher_keeps_old_payload_and_records_the_error() {
    let env = Env::new(
        r#"
[[source]]
id = "t/flaky"
command = ["sh", "-c", "if [ -e @DIR@/broken ]; then echo 'upstream is down' >&2; exit 7; fi; echo '{\"ok\":true}'"]
"#,
    );
    assert!(env.run(&["refresh", "t/flaky"]).status.success());
    fs::write(env.path("broken"), "").unwrap();
    let out = env.run(&["refresh", "t/flaky"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refresh of t/flaky failed")
            && err.contains("status 7")
            && err.contains("upstream is down"),
        "{err}"
    );
    assert_eq!(
        text(&env.run(&["get", "t/flaky"]).stdout),
        "{\"ok\":true}\n"
    );
    let state = text(&env.run(&["state", "t/flaky", "--json"]).stdout);
    assert!(
        state.contains("\"consecutive_failures\": 1") && state.contains("upstream is down"),
        "{state}"
    );
    let status = text(&env.run(&["status"]).stdout);
    assert!(status.contains("upstream is down"), "{status}");
}

#[test]
fn refresher_past_its_deadline_is_killed_with_its_grandchildren() {
    let env = Env::new(
        r#"
[[source]]
id = "t/hangs"
refresh_deadline = "1s"
command = ["sh", "-c", "sleep 300 & echo $! > @DIR@/grandchild; wait"]
"#,
    );
    let started = Instant::now();
    let out = env.run(&["refresh", "t/hangs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text(&out.stderr).contains("deadline of 1s exceeded"),
        "{}",
        text(&out.stderr)
    );
    let gc: i32 = fs::read_to_string(env.path("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the grandchild to die", || !pid_alive(gc));
}

#[test]
fn garbage_and_oversize_output_fail_cleanly() {
    let env = Env::new(
        r#"
[[source]]
id = "t/garbage"
command = ["sh", "-c", "echo '<html>not json</html>'"]

[[source]]
id = "t/flood"
max_output = "64KiB"
command = ["yes"]
"#,
    );
    let out = env.run(&["refresh", "t/garbage"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not JSON"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["refresh", "t/flood"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("exceeded the 65536-byte cap"),
        "{}",
        text(&out.stderr)
    );
    for id in ["t/garbage", "t/flood"] {
        assert_eq!(
            env.run(&["get", id, "--refresh", "never"]).status.code(),
            Some(3)
        );
    }
    let leftovers: Vec<_> = fs::read_dir(env.path("root/t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".refreshing") && !failure_record(&env, n))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn exit_codes_follow_the_contract() {
    let env = Env::new(
        r#"
[[source]]
id = "t/ok"
ttl = "1h"
command = ["sh", "-c", "echo '[1]'"]
"#,
    );
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(code(&["get", "t/ok", "--refresh", "never"]), Some(3));
    assert_eq!(
        code(&["get", "t/ok"]),
        Some(0),
        "no data: get refreshes and waits"
    );
    assert_eq!(code(&["get", "t/ok", "--max-age", "1h"]), Some(0));
    let old = std::time::SystemTime::now() - Duration::from_secs(120);
    fs::File::options()
        .write(true)
        .open(env.path("root/t/ok.json"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(code(&["get", "t/ok", "--max-age", "1m"]), Some(4));
    assert_eq!(code(&["get", "T/ok"]), Some(2));
    assert_eq!(code(&["get", "t/../x"]), Some(2));
    assert_eq!(code(&["refresh", "t/unknown"]), Some(1));
    assert_eq!(code(&["frobnicate"]), Some(2));
    let err = text(&env.run(&["get", "t/../x"]).stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("invalid source \"t/../x\""), "{err}");
}

#[test]
fn prune_refuses_when_the_config_does_not_load() {
    let env = Env::new(
        r#"
[[source]]
id = "t/keep"
command = ["sh", "-c", "echo '{}'"]

[[source]]
id = "t/drop"
command = ["sh", "-c", "echo '{}'"]
"#,
    );
    assert!(env.run(&["refresh", "--all"]).status.success());
    fs::write(
        env.path("config.toml"),
        "[[source]]\nid = \"t/keep\"\ncomand = [\"typo\"]\n",
    )
    .unwrap();
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to prune") && err.contains("line 3"),
        "{err}"
    );
    assert!(env.path("root/t/drop.json").exists() && env.path("root/t/keep.json").exists());
    fs::write(
        env.path("config.toml"),
        "[[source]]\nid = \"t/keep\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let dry = env.run(&["prune", "--dry-run"]);
    assert!(text(&dry.stdout).contains("would remove t/drop"));
    assert!(env.path("root/t/drop.json").exists());
    let out = env.run(&["prune"]);
    assert!(out.status.success() && text(&out.stdout).contains("removed t/drop"));
    assert!(!env.path("root/t/drop.json").exists() && env.path("root/t/keep.json").exists());
}

#[test]
fn config_check_explains_each_error_with_its_line() {
    let env = Env::new(
        "[defaults]\nttl = \"5 parsecs\"\n\n[[source]]\nid = \"Bad/Name\"\ncommand = [\"x\"]\n",
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(":2: ") && err.contains("parsecs"), "{err}");
    assert!(err.contains(":5: ") && err.contains("Bad/Name"), "{err}");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("XDG_CONFIG_HOME", env.path("none"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("<embedded>: ok"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn write_failure_like_a_full_disk_keeps_the_old_payload_and_leaves_no_temp() {
    use std::os::unix::process::CommandExt;
    let env = Env::new(
        r#"
[[source]]
id = "t/grows"
command = ["sh", "-c", "if [ -e @DIR@/big.json ]; then cat @DIR@/big.json; else echo '{\"small\":true}'; fi"]
"#,
    );
    assert!(env.run(&["refresh", "t/grows"]).status.success());
    fs::write(
        env.path("big.json"),
        format!("[\"{}\"]", "x".repeat(4 << 20)),
    )
    .unwrap();
    let mut cmd = env.cmd(&["refresh", "t/grows"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Files may not grow past 1 MiB: writing the 4 MiB payload fails
            // with EFBIG, as a full disk fails with ENOSPC.
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("write temp file") && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(
        text(&env.run(&["get", "t/grows"]).stdout),
        "{\"small\":true}\n"
    );
    let state = text(&env.run(&["state", "t/grows", "--json"]).stdout);
    assert!(
        state.contains("File too large") && state.contains("\"revision\": 1"),
        "{state}"
    );
    let leftovers: Vec<_> = fs::read_dir(env.path("root/t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".refreshing") && !failure_record(&env, n))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A marker left as a failure record (fizeau's cooldown shape), which is
/// kept after a failed refresh by design (docs/FORMAT.md).
fn failure_record(env: &Env, name: &str) -> bool {
    fs::read_to_string(env.path("root/t").join(name)).is_ok_and(|m| m.contains("\"last_error\""))
}
