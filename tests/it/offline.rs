//! Offline and seeds: `[daemon] offline`, `DISCOCACHE_OFFLINE=1` and
//! `--offline` refresh nothing and say so; a forced refresh fails with
//! exit 1; a `seed` file is the first payload, fetched at its mtime, in
//! the daemon (at start and when a reload adds the source) and in direct
//! mode; `config check` refuses a seed that is not JSON or not a file.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, count, counter_source, toml_str};

const BIN: &str = env!("CARGO_BIN_EXE_discocache");

/// The CLI on a daemon's root and config, with no daemon running.
fn cli(d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .env_remove("DISCOCACHE_OFFLINE")
        .output()
        .expect("run discocache")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a seed file next to the config, last modified `age` ago.
fn write_seed(d: &TestDaemon, name: &str, body: &str, age: Duration) -> SystemTime {
    let path = d.config.parent().expect("conf dir").join(name);
    fs::write(&path, body).expect("write seed");
    let when = SystemTime::now() - age;
    let file = fs::File::options()
        .write(true)
        .open(&path)
        .expect("open seed");
    file.set_modified(when).expect("set seed mtime");
    when
}

fn offline_config(sources: &str) -> String {
    format!("[daemon]\nshutdown_grace = \"2s\"\noffline = true\n\n{sources}")
}

fn seeded_source(id: &str, counter: &Path, seed: &str) -> String {
    let plain = counter_source(id, "1h", counter);
    format!("{}\nseed = {}\n\n", plain.trim_end(), toml_str(seed))
}

/// The daemon refuses a forced refresh and runs none of its own.
fn assert_refuses_refresh(d: &TestDaemon, counter: &Path) {
    let status = d.request(json!({"op": "status"}));
    assert_eq!(status["daemon"]["offline"], true, "{status}");
    assert_eq!(status["offline"], true, "{status}");
    let forced = d.request(json!({"op": "get", "source": "t/count", "refresh": "force"}));
    assert_eq!(forced["ok"], false, "{forced}");
    let message = forced["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("offline"), "{forced}");
    let refreshed = d.request(json!({"op": "refresh", "sources": ["t/count"]}));
    let result = &refreshed["results"][0];
    assert_eq!(result["ok"], false, "{refreshed}");
    let why = result["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("offline"), "{refreshed}");
    assert_eq!(count(counter), 0, "a refresher ran while offline");
}

#[test]
fn daemon_offline_in_config_refreshes_nothing_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let d = TestDaemon::start(&offline_config(&counter_source("t/count", "1h", &counter)));
    assert_refuses_refresh(&d, &counter);
    let got = d.request(json!({"op": "get", "source": "t/count"}));
    assert_eq!(got["error"]["code"], "no_data", "{got}");
    assert_eq!(count(&counter), 0);
}

#[test]
fn discocache_offline_env_makes_the_daemon_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let config = format!(
        "[daemon]\nshutdown_grace = \"2s\"\n\n{}",
        counter_source("t/count", "1h", &counter)
    );
    let mut d = TestDaemon::new(&config);
    let mut cmd = d.command();
    cmd.env("DISCOCACHE_OFFLINE", "1");
    d.spawn_with(&mut cmd);
    assert_refuses_refresh(&d, &counter);
}

#[test]
fn forced_refresh_while_offline_exits_1_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let d = TestDaemon::new(&counter_source("t/count", "1h", &counter));
    let out = cli(&d, &["--offline", "refresh", "t/count"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("offline"), "{said}");
    let out = cli(&d, &["--offline", "get", "--refresh", "force", "t/count"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refusing to refresh t/count: offline"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&d, &["--offline", "status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    assert_eq!(status["offline"], true, "{status}");
    assert_eq!(count(&counter), 0, "a refresher ran while offline");
}

#[test]
fn a_seed_is_the_first_payload_fetched_at_its_mtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let d = TestDaemon::new(&offline_config(&seeded_source(
        "t/count",
        &counter,
        "seed.json",
    )));
    let when = write_seed(
        &d,
        "seed.json",
        r#"{"seeded": true}"#,
        Duration::from_secs(2 * 86_400),
    );
    let mut d = d;
    d.spawn();
    let got = d.wait_data("t/count");
    assert_eq!(got["data"], json!({"seeded": true}), "{got}");
    assert_eq!(got["stale"], true, "a two-day-old seed is stale: {got}");
    let age = Duration::from_millis(got["age_ms"].as_u64().expect("age_ms"));
    let expected = SystemTime::now().duration_since(when).expect("past");
    assert!(age.abs_diff(expected) < Duration::from_secs(60), "{got}");
    assert_eq!(count(&counter), 0);
}

#[test]
fn a_source_added_by_reload_is_seeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let mut d = TestDaemon::new(&offline_config(&counter_source("t/other", "1h", &counter)));
    write_seed(&d, "seed.json", "[1, 2, 3]", Duration::from_secs(60));
    d.spawn();
    let seeded = seeded_source("t/count", &counter, "seed.json");
    d.write_config(&offline_config(&format!(
        "{}{seeded}",
        counter_source("t/other", "1h", &counter)
    )));
    let reloaded = d.request(json!({"op": "reload"}));
    assert_eq!(reloaded["ok"], true, "{reloaded}");
    let got = d.wait_data("t/count");
    assert_eq!(got["data"], json!([1, 2, 3]), "{got}");
}

#[test]
fn direct_mode_plants_a_seed_on_first_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let d = TestDaemon::new(&seeded_source("t/count", &counter, "seed.json"));
    write_seed(&d, "seed.json", r#"{"n": 0}"#, Duration::from_secs(30));
    let out = cli(&d, &["--offline", "get", "t/count"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).expect("payload JSON");
    assert_eq!(body, json!({"n": 0}));
    assert_eq!(
        count(&counter),
        0,
        "offline: the seed is served, nothing run"
    );
}

#[test]
fn config_check_refuses_a_seed_that_is_not_json_or_not_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let d = TestDaemon::new(&seeded_source("t/count", &counter, "seed.json"));
    write_seed(&d, "seed.json", "{not json", Duration::ZERO);
    let out = cli(&d, &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stdout) + &text(&out.stderr);
    assert!(
        err.contains("seed") && err.contains("not JSON") && err.contains("seed.json"),
        "{err}"
    );

    let seed = d.config.parent().expect("conf dir").join("seed.json");
    fs::remove_file(&seed).expect("remove seed");
    fs::create_dir(&seed).expect("a directory in its place");
    let out = cli(&d, &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stdout) + &text(&out.stderr);
    assert!(err.contains("it is a directory"), "{err}");

    // Only `config check` refuses it: a read goes on without the seed.
    let out = cli(&d, &["--offline", "get", "t/count"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("cannot plant the seed"), "{err}");
}

#[test]
fn a_broken_seed_does_not_stop_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let config = format!(
        "[daemon]\nshutdown_grace = \"2s\"\n\n{}",
        seeded_source("t/count", &counter, "missing.json")
    );
    let mut d = TestDaemon::start(&config);
    let got = d.wait_data("t/count");
    assert_eq!(got["data"], json!({"n": 1}), "{got}");
    assert!(d.log().contains("cannot plant the seed"), "{}", d.log());
}

#[test]
fn offline_get_through_a_running_daemon_refreshes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let config = format!(
        "[daemon]\nshutdown_grace = \"2s\"\n\n{}",
        counter_source("t/count", "1h", &counter)
    );
    let mut d = TestDaemon::start(&config);
    d.wait_data("t/count");
    let before = count(&counter);
    let out = cli(&d, &["--offline", "get", "--refresh", "force", "t/count"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = cli(&d, &["--offline", "get", "t/count"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(count(&counter), before, "an offline get refreshed");
    // Commands that refresh nothing still reach the daemon.
    let out = cli(&d, &["--offline", "stats"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
