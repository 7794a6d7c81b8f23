//! The `command` refresher against real processes run through `sh -c`.

use std::path::Path;
use std::time::{Duration, Instant};

use discocache::refresher::command::{CommandSpec, run};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Timeout for commands expected to finish on their own.
const GENEROUS: Duration = Duration::from_secs(30);
/// How long a killed process may take to disappear.
const DEATH: Duration = Duration::from_secs(5);

fn shell(script: &str) -> CommandSpec {
    CommandSpec::new(vec!["sh".into(), "-c".into(), script.into()])
}

fn pty_shell(script: &str) -> CommandSpec {
    CommandSpec {
        pty: true,
        ..shell(script)
    }
}

async fn run_err(spec: &CommandSpec, timeout: Duration) -> String {
    match run(spec, timeout).await {
        Ok(out) => panic!("expected failure, got {:?}", String::from_utf8_lossy(&out)),
        Err(e) => e.message().to_owned(),
    }
}

/// Reads a pid a script wrote, waiting (with a deadline) for it to appear.
async fn read_pid(path: &Path) -> Pid {
    let until = Instant::now() + DEATH;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return Pid::from_raw(pid);
        }
        assert!(Instant::now() < until, "{} never got a pid", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

/// Waits, with a deadline, for `pid` to die.
async fn assert_dies(pid: Pid) {
    let until = Instant::now() + DEATH;
    while !is_dead(pid) {
        assert!(Instant::now() < until, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn success_returns_stdout_exactly() {
    let spec = shell(r#"printf '{"a": [1, 2]}\r\n  \t'; echo noise >&2"#);
    let out = run(&spec, GENEROUS).await.expect("run");
    assert_eq!(out, b"{\"a\": [1, 2]}\r\n  \t");
}

#[tokio::test]
async fn nonzero_exit_names_program_status_and_stderr_tail() {
    let spec = shell("echo 'first line' >&2; printf 'bad\\ttoken\\033[0m\\n' >&2; exit 3");
    let msg = run_err(&spec, GENEROUS).await;
    assert_eq!(msg, "`sh` exited with status 3: first line bad token[0m");
}

#[tokio::test]
async fn nonzero_exit_without_stderr_has_no_tail() {
    let msg = run_err(&shell("exit 2"), GENEROUS).await;
    assert_eq!(msg, "`sh` exited with status 2");
}

#[tokio::test]
async fn death_by_signal_names_the_signal() {
    let msg = run_err(&shell("echo dying >&2; kill -TERM $$"), GENEROUS).await;
    assert_eq!(msg, "`sh` was killed by SIGTERM: dying");
}

#[tokio::test]
async fn stderr_flood_keeps_only_the_end() {
    let script = "head -c 8000000 /dev/zero | tr '\\0' x >&2; echo THE-END >&2; exit 1";
    let msg = run_err(&shell(script), GENEROUS).await;
    assert!(msg.starts_with("`sh` exited with status 1: xxx"), "{msg}");
    assert!(msg.ends_with("xxxTHE-END"), "{}", &msg[msg.len() - 40..]);
    assert!(msg.len() <= 2100, "stderr tail is {} bytes", msg.len());
}

#[tokio::test]
async fn missing_program_cannot_run() {
    let spec = CommandSpec::new(vec!["discocache-test-no-such-program".into()]);
    let msg = run_err(&spec, GENEROUS).await;
    assert_eq!(
        msg,
        "cannot run `discocache-test-no-such-program`: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn empty_argv_is_an_error() {
    let msg = run_err(&CommandSpec::new(Vec::new()), GENEROUS).await;
    assert!(msg.contains("empty command"), "{msg}");
}

#[tokio::test]
async fn stdin_is_closed() {
    let out = run(&shell("cat; echo '[]'"), GENEROUS).await.expect("run");
    assert_eq!(out, b"[]\n");
}

#[tokio::test]
async fn deadline_kills_the_whole_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", pidfile.display());
    let started = Instant::now();
    let msg = run_err(&shell(&script), Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert_eq!(msg, "`sh`: deadline of 1s exceeded; process group killed");
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    assert_dies(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn dropped_future_kills_the_whole_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leader = dir.path().join("leader");
    let grandchild = dir.path().join("grandchild");
    let script = format!(
        "echo $$ > '{}'; sleep 300 & echo $! > '{}'; sleep 300",
        leader.display(),
        grandchild.display()
    );
    let spec = shell(&script);
    let outer = tokio::time::timeout(Duration::from_millis(500), run(&spec, GENEROUS)).await;
    assert!(outer.is_err(), "the command finished: {outer:?}");
    assert_dies(read_pid(&leader).await).await;
    assert_dies(read_pid(&grandchild).await).await;
}

#[tokio::test]
async fn grandchild_holding_stdout_does_not_hold_the_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild");
    let script = format!(
        "sleep 300 & echo $! > '{}'; echo '{{\"ok\":1}}'",
        pidfile.display()
    );
    let started = Instant::now();
    let out = run(&shell(&script), GENEROUS).await.expect("run");
    assert_eq!(out, b"{\"ok\":1}\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the grandchild"
    );
    assert_dies(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn stdout_over_the_cap_fails_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("yes");
    let script = format!("echo $$ > '{}'; exec yes", pidfile.display());
    let spec = CommandSpec {
        max_output: 1024,
        ..shell(&script)
    };
    let started = Instant::now();
    let msg = run_err(&spec, GENEROUS).await;
    assert_eq!(
        msg,
        "`sh`: output exceeded the 1024-byte cap; process group killed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the flood was not stopped"
    );
    assert_dies(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn output_exactly_at_the_cap_is_accepted() {
    let spec = CommandSpec {
        max_output: 4,
        ..shell("printf '[10]'")
    };
    assert_eq!(run(&spec, GENEROUS).await.expect("run"), b"[10]");
}

const TTY_ONLY: &str = r#"test -t 1 && printf '\033[1mhello\033[0m\n{"tty":true}\n' || { echo "not a terminal" >&2; exit 1; }"#;

#[tokio::test]
async fn pty_gives_a_terminal_and_takes_the_json() {
    let out = run(&pty_shell(TTY_ONLY), GENEROUS).await.expect("run");
    assert_eq!(String::from_utf8_lossy(&out), r#"{"tty":true}"#);
}

#[tokio::test]
async fn without_pty_a_terminal_only_tool_fails() {
    let msg = run_err(&shell(TTY_ONLY), GENEROUS).await;
    assert_eq!(msg, "`sh` exited with status 1: not a terminal");
}

#[tokio::test]
async fn pty_is_wide_and_is_the_controlling_terminal() {
    // Opening /dev/tty fails (ENXIO) without a controlling terminal.
    let script =
        r#"printf '{"size":"%s","ctty":"%s"}\n' "$(stty size)" "$(: </dev/tty && echo yes)""#;
    let out = run(&pty_shell(script), GENEROUS).await.expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out),
        r#"{"size":"50 250","ctty":"yes"}"#
    );
}

#[tokio::test]
async fn pty_banner_value_prompt_gives_the_last_value() {
    let script = r#"echo 'Tool v2 {beta}'; printf '{"a":\n  [1, "}"]\n}\n'; printf 'prompt> '"#;
    let out = run(&pty_shell(script), GENEROUS).await.expect("run");
    assert_eq!(String::from_utf8_lossy(&out), "{\"a\":\n  [1, \"}\"]\n}");
}

#[tokio::test]
async fn pty_without_json_fails_with_an_excerpt() {
    let msg = run_err(
        &pty_shell(r"printf '\033[31mplease log in\033[0m\n'"),
        GENEROUS,
    )
    .await;
    assert_eq!(msg, "`sh`: no JSON value in terminal output: please log in");
}

#[tokio::test]
async fn pty_nonzero_exit_reports_status_and_output_tail() {
    let msg = run_err(
        &pty_shell("echo '{\"partial\":1}'; echo boom >&2; exit 4"),
        GENEROUS,
    )
    .await;
    assert_eq!(msg, "`sh` exited with status 4: {\"partial\":1} boom");
}

#[tokio::test]
async fn pty_deadline_kills_the_whole_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", pidfile.display());
    let started = Instant::now();
    let msg = run_err(&pty_shell(&script), Duration::from_secs(1)).await;
    assert_eq!(msg, "`sh`: deadline of 1s exceeded; process group killed");
    assert!(started.elapsed() < Duration::from_secs(3), "returned late");
    assert_dies(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn pty_output_over_the_cap_fails_fast() {
    let spec = CommandSpec {
        max_output: 4096,
        ..pty_shell("exec yes")
    };
    let msg = run_err(&spec, GENEROUS).await;
    assert_eq!(
        msg,
        "`sh`: output exceeded the 4096-byte cap; process group killed"
    );
}

#[tokio::test]
async fn pty_child_inherits_no_terminal_master() {
    let script = r#"printf '{"fds":"%s"}\n' "$(for f in /proc/$$/fd/*; do printf '%s=%s;' "${f##*/}" "$(readlink "$f")"; done)""#;
    let out = run(&pty_shell(script), GENEROUS).await.expect("run");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("0=/dev/pts/"), "{text}");
    assert!(
        !text.contains("ptmx"),
        "the master leaked into the child: {text}"
    );
}

#[tokio::test]
async fn pty_large_output_arrives_whole() {
    let script = "printf '['; seq -s, 1 200000 | tr -d '\\n'; printf ']\\n'";
    let out = run(&pty_shell(script), GENEROUS).await.expect("run");
    let values: Vec<u32> = serde_json::from_slice(&out).expect("a JSON array");
    assert_eq!(values.len(), 200_000);
    assert_eq!(values.last(), Some(&200_000));
}

#[tokio::test]
async fn pty_missing_program_cannot_run() {
    let spec = CommandSpec {
        pty: true,
        ..CommandSpec::new(vec!["discocache-test-no-such-program".into()])
    };
    let msg = run_err(&spec, GENEROUS).await;
    assert_eq!(
        msg,
        "cannot run `discocache-test-no-such-program`: No such file or directory (os error 2)"
    );
}
