//! Real-world sources end to end through the CLI: HTTP revalidation, errors,
//! backoff and Retry-After against a server on 127.0.0.1; secrets that never
//! show; commands under a pseudo-terminal; expired data.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::helpers::http::{Server, send};

const BIN: &str = env!("CARGO_BIN_EXE_discocache");
const SECRET: &str = "sk-live-TOPSECRET999";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.toml"), config).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(self.path("root"))
            .arg("--config")
            .arg(self.path("config.toml"))
            .arg("--no-daemon")
            .args(args)
            .env("DC_TEST_TOKEN", SECRET)
            .env("DISCOCACHE_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn http_config(url: &str, extra: &str) -> String {
    format!(
        "[[source]]\nid = \"api/models\"\n{extra}\nhttp = {{ url = \"{url}\", headers = {{ Authorization = \"Bearer ${{DC_TEST_TOKEN}}\" }} }}\n"
    )
}

#[test]
fn etag_then_304_keeps_payload_and_revision_and_renews_freshness() {
    let server = Server::start(|req| match req.header("if-none-match") {
        Some("\"v1\"") => send("304 Not Modified", &[("ETag", "\"v1\"")], ""),
        _ => send(
            "200 OK",
            &[("ETag", "\"v1\""), ("Content-Type", "application/json")],
            r#"{"models":["a","b"]}"#,
        ),
    });
    let env = Env::new(&http_config(&server.url("/models"), "ttl = \"1h\""));
    let out = env.run(&["refresh", "api/models"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let payload = env.path("root/api/models.json");
    let inode = fs::metadata(&payload).unwrap().ino();
    // Make it stale, then revalidate.
    let old = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&payload)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &env.run(&["get", "api/models", "--meta", "--refresh", "never"])
            .stdout,
    )
    .unwrap();
    assert_eq!(meta["fresh"], false);
    let out = env.run(&["refresh", "api/models"]);
    assert_eq!(
        text(&out.stdout),
        "api/models: not modified, revision 1\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::metadata(&payload).unwrap().ino(),
        inode,
        "payload not rewritten"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&env.run(&["get", "api/models", "--meta"]).stdout).unwrap();
    assert_eq!(
        (meta["fresh"].clone(), meta["revision"].clone()),
        (true.into(), 1.into())
    );
    assert_eq!(meta["meta"]["etag"], "\"v1\"");
    assert_eq!(meta["data"], serde_json::json!({"models": ["a", "b"]}));
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

#[test]
fn server_errors_keep_old_data_show_the_status_and_back_off() {
    let fail = Arc::new(AtomicUsize::new(0));
    let f = fail.clone();
    let server = Server::start(move |_| {
        if f.load(Ordering::SeqCst) == 0 {
            send("200 OK", &[], "[1]")
        } else {
            send("500 Internal Server Error", &[], "database on fire")
        }
    });
    let env = Env::new(&http_config(
        &server.url("/m"),
        "ttl = \"1ms\"\nbackoff_base = \"1h\"",
    ));
    assert!(env.run(&["refresh", "api/models"]).status.success());
    fail.store(1, Ordering::SeqCst);
    // Stale data: each of these may refresh, but the first failure backs off.
    for _ in 0..5 {
        let out = env.run(&["get", "api/models", "--refresh", "wait-if-stale"]);
        assert!(
            out.status.success(),
            "stale data is still served: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "[1]\n");
    }
    assert_eq!(
        server.requests().len(),
        2,
        "one success, then one failure, then backing off"
    );
    let state = env.state("api/models");
    assert_eq!(state["consecutive_failures"], 1);
    let error = state["last_error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("database on fire"),
        "{error}"
    );
    assert!(state["next_retry_at"].is_string());
    let status = text(&env.run(&["status"]).stdout);
    assert!(status.contains("HTTP 500"), "{status}");
    // An explicit refresh does not wait for the backoff.
    assert_eq!(env.run(&["refresh", "api/models"]).status.code(), Some(1));
    assert_eq!(server.requests().len(), 3);
    assert_eq!(env.state("api/models")["consecutive_failures"], 2);
}

#[test]
fn retry_after_on_429_sets_the_next_retry() {
    let server = Server::start(|_| {
        send(
            "429 Too Many Requests",
            &[("Retry-After", "120")],
            "slow down",
        )
    });
    let env = Env::new(&http_config(&server.url("/m"), ""));
    let out = env.run(&["refresh", "api/models"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HTTP 429"),
        "{}",
        text(&out.stderr)
    );
    let state = env.state("api/models");
    let at = |k: &str| humantime::parse_rfc3339_weak(state[k].as_str().unwrap()).unwrap();
    let wait = at("next_retry_at")
        .duration_since(at("last_attempt_at"))
        .unwrap();
    assert!(
        wait >= Duration::from_secs(119) && wait <= Duration::from_secs(125),
        "{wait:?}"
    );
}

#[test]
fn header_secret_from_the_environment_never_shows_in_any_output() {
    // The origin echoes the credential back in its error body.
    let server = Server::start(|req| {
        let auth = req.header("authorization").unwrap_or("").to_owned();
        send("401 Unauthorized", &[], &format!("bad credential: {auth}"))
    });
    let env = Env::new(&http_config(&server.url("/m"), ""));
    let mut outputs = vec![env.run(&["refresh", "api/models"])];
    for args in [
        &["get", "api/models"][..],
        &["get", "api/models", "--meta"],
        &["status"],
        &["status", "--json"],
        &["state", "api/models"],
        &["state", "api/models", "--json"],
        &["config", "check"],
    ] {
        outputs.push(env.run(args));
    }
    assert!(text(&outputs[0].stderr).contains("HTTP 401"));
    for o in &outputs {
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(!all.contains("TOPSECRET"), "secret leaked: {all}");
    }
    for dir in ["root/api", "root/api/.discocache"] {
        for entry in fs::read_dir(env.path(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let content = fs::read(&path).unwrap();
                assert!(!text(&content).contains("TOPSECRET"), "secret on disk");
            }
        }
    }
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

#[test]
fn missing_header_variable_is_a_config_error_naming_it() {
    let env = Env::new(
        "[[source]]\nid = \"api/x\"\nhttp = { url = \"http://127.0.0.1:9/\", headers = { X-Key = \"${DC_NOT_SET_ANYWHERE}\" } }\n",
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("DC_NOT_SET_ANYWHERE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pty_source_succeeds_only_under_a_terminal() {
    let script = r#"test -t 1 && printf '\033[1mready\033[0m\n{"tty":true}\n$ ' || { echo 'not a terminal' >&2; exit 1; }"#;
    let config = |pty: bool| {
        format!(
            "[[source]]\nid = \"cli/tool\"\npty = {pty}\ncommand = [\"sh\", \"-c\", {}]\n",
            serde_json::to_string(script).unwrap()
        )
    };
    let env = Env::new(&config(true));
    let out = env.run(&["refresh", "cli/tool"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&env.run(&["get", "cli/tool"]).stdout),
        "{\"tty\":true}\n"
    );
    let env = Env::new(&config(false));
    let out = env.run(&["refresh", "cli/tool"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a terminal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pty_command_past_its_deadline_is_killed_with_its_group() {
    let env = Env::new("");
    let pidfile = env.path("gc");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let config = format!(
        "[[source]]\nid = \"cli/hang\"\npty = true\nrefresh_deadline = \"1s\"\ncommand = [\"sh\", \"-c\", {}]\n",
        serde_json::to_string(&script).unwrap()
    );
    fs::write(env.path("config.toml"), config).unwrap();
    let out = env.run(&["refresh", "cli/hang"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("deadline of 1s exceeded"),
        "{}",
        text(&out.stderr)
    );
    let gc = fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stat = fs::read_to_string(format!("/proc/{gc}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "grandchild {gc} still alive"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn data_past_max_stale_is_expired_and_not_served_unless_asked() {
    let env = Env::new(
        "[[source]]\nid = \"t/old\"\nttl = \"1m\"\nmax_stale = \"10m\"\ncommand = [\"sh\", \"-c\", \"echo '[1]'\"]\n",
    );
    assert!(env.run(&["refresh", "t/old"]).status.success());
    let payload = env.path("root/t/old.json");
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&payload)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = env.run(&["get", "t/old", "--refresh", "never"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["get", "t/old", "--refresh", "never", "--allow-expired"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "[1]\n".to_owned())
    );
    assert!(text(&env.run(&["status"]).stdout).contains("expired"));
}
