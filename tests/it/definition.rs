//! A changed definition (argv, URL, header name) makes the data stale at
//! once, through the daemon and in direct mode, and says why; a changed
//! header value (a secret) does not.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config, eventually, toml_str};
use crate::helpers::http::{Server, send};

const BIN: &str = env!("CARGO_BIN_EXE_discocache");

fn printing(value: &str) -> String {
    let script = format!("printf '{value}'");
    format!(
        "[[source]]\nid = \"t/x\"\nttl = \"1h\"\ncommand = [\"sh\", \"-c\", {}]\n",
        toml_str(&script)
    )
}

/// `discocache --no-daemon <args>` on the daemon's root and config, as JSON.
fn direct(d: &TestDaemon, root: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .arg("--socket")
        .arg(d.file("no-daemon.sock"))
        .arg("--config")
        .arg(d.file("conf/config.toml"))
        .arg("--no-daemon")
        .args(args)
        .env_remove("DISCOCACHE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run discocache");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn stale_reason(d: &TestDaemon) -> Option<String> {
    let status = d.source_status("t/x")?;
    status["stale_reason"].as_str().map(str::to_owned)
}

#[test]
fn changed_argv_makes_the_data_stale_at_once_with_the_reason() {
    let mut d = TestDaemon::start(&config(&printing("{\"v\":1}")));
    let root = d.file("root");
    let first = d.wait_data("t/x");
    assert_eq!(first["fresh"], true, "{first}");
    assert!(
        d.source_status("t/x")
            .unwrap()
            .get("stale_reason")
            .is_none()
    );
    d.write_config(&config(&printing("{\"v\":2}")));
    let why = eventually("the new definition to make t/x stale", || stale_reason(&d));
    assert_eq!(why, "definition changed");
    let status = d.source_status("t/x").unwrap();
    assert_eq!(
        (&status["fresh"], &status["stale"]),
        (&json!(false), &json!(true))
    );
    let got = d.request(json!({"op": "get", "source": "t/x", "refresh": "never"}));
    assert_eq!(got["stale"], true, "{got}");
    assert_eq!(got["stale_reason"], "definition changed", "{got}");
    assert_eq!(got["data"], json!({"v": 1}));
    // Direct mode judges it the same way.
    let status = direct(&d, &root, &["status", "--json"]);
    let row = &status["sources"][0];
    assert_eq!(row["stale_reason"], "definition changed", "{status}");
    // A refresh fixes it.
    let got = d.request(json!({"op": "get", "source": "t/x", "refresh": "wait_if_stale"}));
    assert_eq!(got["data"], json!({"v": 2}), "{got}");
    assert_eq!(got["fresh"], true, "{got}");
    assert!(got.get("stale_reason").is_none(), "{got}");
    let status = d.source_status("t/x").unwrap();
    assert_eq!(status["fresh"], true, "{status}");
}

fn http_source(url: &str, header: &str) -> String {
    format!(
        "[[source]]\nid = \"t/x\"\nttl = \"1h\"\nhttp = {{ url = \"{url}\", headers = {{ {header} }} }}\n"
    )
}

#[test]
fn a_header_value_change_keeps_the_definition_a_name_change_does_not() {
    let server = Server::start(|_| send("200 OK", &[], "{\"models\":[1,2,3]}"));
    let url = server.url("/models");
    let mut d = TestDaemon::start(&config(&http_source(
        &url,
        "Authorization = \"Bearer one\"",
    )));
    d.wait_data("t/x");
    let revision = d.source_status("t/x").unwrap()["revision"].clone();
    d.write_config(&config(&http_source(
        &url,
        "Authorization = \"Bearer two\"",
    )));
    // The reload is seen once the new header goes out on a forced refresh;
    // the data it commits keeps the definition.
    eventually("the reload", || {
        let forced = d.request(json!({"op": "get", "source": "t/x", "refresh": "force"}));
        let seen = server.requests();
        let last = seen.last()?;
        (forced["ok"] == true && last.header("authorization") == Some("Bearer two")).then_some(())
    });
    let status = d.source_status("t/x").unwrap();
    assert_eq!(status["fresh"], true, "{status}");
    assert_ne!(status["revision"], revision);
    // Rename the header: the definition changes.
    d.write_config(&config(&http_source(&url, "X-Api-Key = \"two\"")));
    let why = eventually("a renamed header to make t/x stale", || stale_reason(&d));
    assert_eq!(why, "definition changed");
}
