//! Config safety: prune never runs against the embedded default, and a
//! source whose `${VAR}` is unset is disabled while the others run.

use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::helpers::daemon::{TestDaemon, config, sh_source, toml_str};

/// The CLI on the daemon's root and socket with no config file anywhere:
/// no `--config`, no `$DISCOCACHE_CONFIG`, nothing at the XDG path.
fn cli_without_config(d: &TestDaemon) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
    cmd.arg("--root").arg(&d.root);
    cmd.arg("--socket").arg(&d.socket);
    cmd.env("XDG_CONFIG_HOME", d.dir.path().join("xdg"));
    cmd.env("HOME", d.dir.path().join("home"));
    cmd.env_remove("DISCOCACHE_CONFIG");
    cmd.stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon config with one real source, refreshed once through the CLI.
fn with_real_source() -> TestDaemon {
    let d = TestDaemon::new(&config(&sh_source(
        "t/real",
        "1h",
        "10s",
        "echo '{\"a\":1}'",
    )));
    let out = Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(&d.root)
        .arg("--config")
        .arg(&d.config)
        .args(["--no-daemon", "refresh", "t/real"])
        .output()
        .expect("refresh");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.root.join("t/real.json").exists());
    d
}

#[test]
fn direct_prune_without_a_config_file_deletes_nothing() {
    let d = with_real_source();
    let out: Output = cli_without_config(&d)
        .args(["--no-daemon", "prune"])
        .output()
        .expect("prune");
    assert!(!out.status.success(), "prune ran: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to prune") && err.contains("embedded default"),
        "{err}"
    );
    assert!(d.root.join("t/real.json").exists(), "prune deleted t/real");
}

#[test]
fn daemon_prune_without_a_config_file_deletes_nothing() {
    let mut d = with_real_source();
    let mut serve = cli_without_config(&d);
    serve
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    d.spawn_with(&mut serve);
    let reply = d.request(json!({"op": "prune"}));
    assert_eq!(reply["ok"], false, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("refusing to prune"), "{reply}");
    assert!(d.root.join("t/real.json").exists(), "prune deleted t/real");
    d.stop();
}

#[test]
fn unset_variable_disables_its_source_and_the_daemon_serves_the_rest() {
    let keyed = format!(
        "[[source]]\nid = \"t/keyed\"\nhttp = {{ url = \"http://127.0.0.1:9/x\", headers = {{ Authorization = {} }} }}\n\n",
        toml_str("Bearer ${DISCOCACHE_IT_SURELY_UNSET}")
    );
    let plain = sh_source("t/plain", "1h", "10s", "echo '{\"p\":1}'");
    let mut d = TestDaemon::start(&config(&format!("{keyed}{plain}")));
    d.wait_data("t/plain");
    let keyed = d.source_status("t/keyed").expect("t/keyed in status");
    let why = keyed["disabled"].as_str().unwrap_or_default();
    assert!(
        why.contains("DISCOCACHE_IT_SURELY_UNSET is not set"),
        "{keyed}"
    );
    let table = cli_without_config(&d)
        .arg("status")
        .output()
        .expect("status");
    let table = text(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("t/keyed"))
        .unwrap_or("");
    assert!(
        row.contains("disabled") && row.contains("DISCOCACHE_IT_SURELY_UNSET"),
        "{table}"
    );
    let check = cli_without_config(&d)
        .args(["config", "check"])
        .arg(&d.config)
        .output()
        .expect("config check");
    assert!(!check.status.success(), "config check passed");
    let err = text(&check.stderr);
    assert!(
        err.contains(":7: source \"t/keyed\": header Authorization: environment variable DISCOCACHE_IT_SURELY_UNSET is not set"),
        "{err}"
    );
    d.stop();
}
