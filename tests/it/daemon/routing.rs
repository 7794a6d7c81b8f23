//! Which daemon a client command trusts: only one that runs as the same
//! user (or root) and serves the root it was given; anything else, and a
//! busy daemon, means going direct with one note on stderr.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::helpers::daemon::{DEADLINE, TestDaemon, config, eventually, sh_source};
use discocache::client::Client;
use discocache::{Cache, Source};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI on `root` and `socket` with `config`.
fn cli(root: &Path, socket: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(root)
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DISCOCACHE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run cli")
}

/// Commits `bytes` as the payload of `id` under `root`, through the library.
fn commit(root: &Path, id: &str, bytes: &[u8]) {
    let cache = Cache::open(root).expect("open root");
    let source = Source::parse(id).expect("source");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(cache.write(&source, bytes.to_vec()))
        .expect("write");
}

#[test]
fn client_ignores_a_daemon_serving_another_root() {
    let mut d = TestDaemon::start(&config(&sh_source(
        "t/x",
        "1h",
        "10s",
        "echo '{\"root\":\"a\"}'",
    )));
    d.wait_data("t/x");
    let other = d.file("root-b");
    commit(&other, "t/x", b"{\"root\":\"b\"}");
    let out = cli(&other, &d.socket, &d.config, &["get", "t/x"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"root\":\"b\"}\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one note: {err}");
    assert!(
        err.contains("serves") && err.contains("directly"),
        "the note says why: {err}"
    );
    // The root it serves is still served through it, without a note.
    let out = cli(&d.root, &d.socket, &d.config, &["get", "t/x"]);
    assert_eq!(text(&out.stdout), "{\"root\":\"a\"}\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn client_refuses_a_socket_of_another_user() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs root under CI"
        );
        eprintln!("note: skipped: binding a socket as another user needs root");
        return;
    }
    // A daemon of uid 65534 answering on a socket path of our choosing
    // with forged data (from its own root: it cannot write ours).
    let d = TestDaemon::new(&config(&sh_source(
        "t/x",
        "1h",
        "10s",
        "echo '{\"forged\":true}'",
    )));
    use std::os::unix::fs::PermissionsExt;
    let open = std::fs::Permissions::from_mode(0o777);
    for dir in [d.dir.path(), d.config.parent().expect("conf dir")] {
        std::fs::set_permissions(dir, open.clone()).expect("chmod");
    }
    std::fs::set_permissions(&d.config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut nobody = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(d.file("nobody-root"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config)
        .arg("serve")
        .env("HOME", d.dir.path())
        .env("XDG_CONFIG_HOME", d.dir.path().join("xdg"))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a daemon as uid 65534");
    let served = eventually("the other user's daemon to serve its data", || {
        let mut c = Client::connect(&d.socket).ok()?;
        let get = discocache::protocol::GetRequest {
            source: "t/x".parse().ok()?,
            refresh: discocache::protocol::RefreshMode::Never,
            max_age_ms: None,
            meta: false,
        };
        c.get(get).ok()
    });
    assert!(served.1.contains("forged"));
    let ours = d.file("ours.toml");
    let real = config(&sh_source("t/x", "1h", "10s", "echo '{\"real\":true}'"));
    std::fs::write(&ours, real).expect("our config");
    let out = cli(&d.root, &d.socket, &ours, &["get", "t/x"]);
    let _ = nobody.kill();
    let _ = nobody.wait();
    assert!(
        !text(&out.stdout).contains("forged"),
        "forged data was printed: {}",
        text(&out.stdout)
    );
    assert_eq!(text(&out.stdout), "{\"real\":true}\n");
    let err = text(&out.stderr);
    assert!(err.contains("uid 65534"), "the note names the uid: {err}");
}

#[test]
fn busy_daemon_falls_back_to_direct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, socket) = (dir.path().join("root"), dir.path().join("d.sock"));
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, config(&sh_source("t/x", "1h", "10s", "echo '[1]'"))).expect("config");
    commit(&root, "t/x", b"[7]");
    // A server at its connection cap: every connection is told `busy` and
    // closed at once, before its request is read.
    let listener = UnixListener::bind(&socket).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let busy =
            br#"{"ok":false,"error":{"code":"busy","message":"too many connections (256)"}}"#;
        conn.write_all(busy).expect("write busy");
        conn.write_all(b"\n").expect("write newline");
    });
    let started = std::time::Instant::now();
    let out = cli(&root, &socket, &conf, &["get", "t/x"]);
    server.join().expect("server");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(text(&out.stdout), "[7]\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one note: {err}");
    assert!(err.contains("busy"), "{err}");
}

#[test]
fn stalled_daemon_falls_back_to_direct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, socket) = (dir.path().join("root"), dir.path().join("d.sock"));
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, config(&sh_source("t/x", "1h", "10s", "echo '[1]'"))).expect("config");
    commit(&root, "t/x", b"[7]");
    // A daemon that accepts (the kernel does it for a stopped one too) and
    // never answers.
    let listener = UnixListener::bind(&socket).expect("bind");
    let out = cli(&root, &socket, &conf, &["get", "t/x"]);
    drop(listener);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "[7]\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one note: {err}");
    assert!(err.contains("did not answer"), "{err}");
}
