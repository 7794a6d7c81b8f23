//! `GET /metrics` over HTTP on a live daemon: the exposition passes
//! `promtool check metrics`, shows each source's age and freshness, and
//! drops a source removed from the config.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::daemon::{DEADLINE, TestDaemon, sh_source};

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn config_on(port: u16, sources: &str) -> String {
    format!(
        "[daemon]\nshutdown_grace = \"2s\"\nreconcile_interval = \"1h\"\nmetrics_listen = \"127.0.0.1:{port}\"\n\n{sources}"
    )
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// `promtool check metrics` on `text`; `None` (with the reason printed)
/// when promtool is not installed, which fails under CI.
pub(crate) fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is needed under CI (.ci/install-test-tools): {e}"
            );
            eprintln!("skipping promtool check: cannot run promtool: {e}");
            return None;
        }
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("feed promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

#[test]
fn metrics_endpoint_passes_promtool_and_shows_age_and_freshness() {
    let port = free_port();
    let sources = sh_source("t/one", "1h", "10s", "echo '[1]'")
        + &sh_source("t/two", "1h", "10s", "echo '[2]'");
    let mut d = TestDaemon::start(&config_on(port, &sources));
    d.wait_data("t/one");
    d.wait_data("t/two");

    let (status, text) = get(port, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{text}");
    let age = text
        .lines()
        .find(|l| l.starts_with("discocache_source_age_seconds{tier=\"t\",source=\"t/one\"} "))
        .unwrap_or_else(|| panic!("no age for t/one:\n{text}"));
    let seconds: f64 = age.rsplit(' ').next().unwrap().parse().expect("a number");
    assert!((0.0..60.0).contains(&seconds), "{age}");
    assert!(
        text.contains("discocache_source_fresh{tier=\"t\",source=\"t/two\"} 1\n"),
        "{text}"
    );
    if let Some((passed, said)) = promtool(&text) {
        assert!(passed, "promtool check metrics failed: {said}\n{text}");
        assert!(said.trim().is_empty(), "promtool has lint remarks: {said}");
    }
    let (status, _) = get(port, "/nope");
    assert!(status.contains(" 404 "), "{status}");

    // The socket op shows the same families.
    let op = d.request(json!({"op": "metrics"}));
    let op_text = op["text"].as_str().expect("text");
    assert!(
        op_text.contains("discocache_source_fresh{tier=\"t\",source=\"t/one\"} 1\n"),
        "{op_text}"
    );
}

#[test]
fn a_source_removed_by_reload_leaves_the_metrics() {
    let port = free_port();
    let one = sh_source("t/one", "1h", "10s", "echo '[1]'");
    let two = sh_source("t/two", "1h", "10s", "echo '[2]'");
    let mut d = TestDaemon::start(&config_on(port, &format!("{one}{two}")));
    d.wait_data("t/two");
    let (_, text) = get(port, "/metrics");
    assert!(text.contains("source=\"t/two\""), "{text}");

    d.write_config(&config_on(port, &one));
    let reloaded = d.request(json!({"op": "reload"}));
    assert_eq!(reloaded["ok"], true, "{reloaded}");
    let (_, text) = get(port, "/metrics");
    assert!(
        !text.contains("t/two"),
        "a removed source is still shown:\n{text}"
    );
    assert!(text.contains("source=\"t/one\""), "{text}");
}
