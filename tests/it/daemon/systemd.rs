//! Running under systemd: socket activation, sd_notify, the unit files.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;

use crate::helpers::daemon::{DEADLINE, TestDaemon, config, sh_source};

/// Reads notify datagrams until one contains `want`; returns everything read.
fn wait_notify(sock: &UnixDatagram, want: &str) -> String {
    let start = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < DEADLINE {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('|');
            if seen.contains(want) {
                return seen;
            }
        }
    }
    panic!("no {want} among the notifications: {seen}");
}

/// Makes `fd` the child's fd 3 without close-on-exec, as systemd passes a
/// socket.
fn pass_as_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the child
    // before exec. When `fd` already is 3, dup2 would be a no-op that leaves
    // close-on-exec set: clear the flag instead.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            match rc {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
}

#[test]
fn socket_activation_and_notifications() {
    let mut d = TestDaemon::new(&config(&sh_source("t/a", "1h", "10s", "echo '{}'")));
    let listener = UnixListener::bind(&d.socket).expect("bind the activation socket");
    let notify_path = d.file("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");

    // Like systemd: the socket as fd 3, LISTEN_PID = the daemon's own pid
    // (the shell sets it to its pid, then execs the daemon in place).
    let mut base = d.command();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"");
    cmd.arg(base.get_program()).args(base.get_args());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000");
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.dir.path().join("daemon-1.log")).expect("log"));
    let fd = listener.as_raw_fd();
    pass_as_fd3(&mut cmd, fd);
    let _ = &mut base;
    d.spawn_with(&mut cmd);
    let seen = wait_notify(&notify, "READY=1");
    assert!(seen.contains("STATUS="), "{seen}");
    wait_notify(&notify, "WATCHDOG=1");
    assert_eq!(
        d.request(json!({"op": "hello"}))["ok"],
        true,
        "served on the passed socket"
    );
    d.signal(Signal::SIGTERM);
    wait_notify(&notify, "STOPPING=1");
    assert!(d.wait_exit().success());
    assert!(
        d.socket.exists(),
        "a socket passed by systemd is left to systemd"
    );
}

#[test]
fn a_passed_descriptor_that_is_not_a_socket_is_refused_clearly() {
    let mut d = TestDaemon::new(&config(&sh_source("t/a", "1h", "10s", "echo '{}'")));
    let file = std::fs::File::create(d.file("not-a-socket")).expect("file");
    let base = d.command();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(base.get_program())
        .args(base.get_args())
        .env("XDG_CONFIG_HOME", d.file("xdg"));
    let fd = file.as_raw_fd();
    pass_as_fd3(&mut cmd, fd);
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LISTEN_FDS names fd 3, which is not a socket"),
        "{err}"
    );
}

#[test]
fn the_unit_files_verify() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("note: systemd-analyze is not installed; skipping the unit check");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(units.join("discocache.service")).expect("service unit");
    assert!(service.contains("ExecStart=%h/.cargo/bin/discocache serve"));
    // verify checks that ExecStart exists: point it at the binary under test.
    let service = service.replace("%h/.cargo/bin/discocache", env!("CARGO_BIN_EXE_discocache"));
    std::fs::write(dir.path().join("discocache.service"), service).expect("write service");
    std::fs::copy(
        units.join("discocache.socket"),
        dir.path().join("discocache.socket"),
    )
    .expect("copy socket");
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(dir.path().join("discocache.service"))
        .arg(dir.path().join("discocache.socket"))
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze: {stderr}"
    );
}
