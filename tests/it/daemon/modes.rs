//! The CLI prints the same through the daemon as on the root directly.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::helpers::daemon::{TestDaemon, config, sh_source};
use discocache::{Cache, Source};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI on the daemon's root and config, direct when `direct`.
fn cli(d: &TestDaemon, direct: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
    cmd.arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config);
    if direct {
        cmd.arg("--no-daemon");
    }
    cmd.args(args)
        .env_remove("DISCOCACHE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run cli")
}

/// Through the daemon (which must not fall back) and directly.
fn both(d: &TestDaemon, args: &[&str]) -> (Output, Output) {
    let daemon = cli(d, false, args);
    assert!(
        daemon.stderr.is_empty() || daemon.status.code() != Some(0),
        "{args:?} went direct: {}",
        text(&daemon.stderr)
    );
    (daemon, cli(d, true, args))
}

/// The keys of a JSON object, recursively for nested objects: its shape.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), shape(v))).collect(),
        Value::Array(items) => items.first().map(shape).into_iter().collect(),
        _ => Value::Null,
    }
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn stray(root: &Path) {
    let cache = Cache::open(root).expect("open root");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let source = Source::parse("t/stray").expect("source");
    runtime
        .block_on(cache.write(&source, b"[0]".to_vec()))
        .expect("write");
}

#[test]
fn outputs_match_in_both_modes() {
    // A pretty-printed payload: its line breaks are what differed.
    let pretty = r#"printf '{\n  "models": [\n    "a"\n  ]\n}\n'"#;
    let mut d = TestDaemon::start(&config(&sh_source("t/pretty", "1h", "10s", pretty)));
    d.wait_data("t/pretty");
    stray(&d.root);

    let (daemon, direct) = both(&d, &["get", "t/pretty"]);
    assert_eq!(text(&daemon.stdout), "{   \"models\": [     \"a\"   ] }\n");
    assert_eq!(text(&daemon.stdout), text(&direct.stdout));

    // On disk but not in the config: read from disk either way.
    let (daemon, direct) = both(&d, &["get", "t/stray"]);
    assert_eq!(text(&daemon.stdout), "[0]\n", "{}", text(&daemon.stderr));
    assert_eq!(text(&daemon.stdout), text(&direct.stdout));

    let (daemon, direct) = both(&d, &["get", "t/pretty", "--meta"]);
    let (daemon, direct) = (json(&daemon), json(&direct));
    assert_eq!(shape(&daemon), shape(&direct));
    assert_eq!(daemon["data"], direct["data"]);

    let (daemon, direct) = both(&d, &["status", "--json"]);
    let (daemon, direct) = (json(&daemon), json(&direct));
    assert!(daemon["daemon"].is_object() && direct["daemon"].is_null());
    let first = |v: &Value| shape(&v["sources"][0]);
    assert_eq!(first(&daemon), first(&direct));
    assert_eq!(
        daemon["sources"][0]["source"],
        direct["sources"][0]["source"]
    );

    let (daemon, direct) = both(&d, &["state", "t/pretty", "--json"]);
    assert_eq!(json(&daemon), json(&direct));
    let (daemon, direct) = both(&d, &["state", "t/stray", "--json"]);
    assert_eq!(json(&daemon), json(&direct));

    let (daemon, direct) = both(&d, &["prune", "--dry-run"]);
    assert!(text(&daemon.stdout).contains("would remove t/stray"));
    assert_eq!(text(&daemon.stdout), text(&direct.stdout));
    assert_eq!(daemon.status.code(), direct.status.code());

    // Not in the config: refused alike (the outcomes of a configured
    // source are in `invalidate_reports_what_happened`).
    let (daemon, direct) = both(&d, &["invalidate", "t/stray"]);
    assert_eq!(daemon.status.code(), Some(1));
    assert_eq!(daemon.status.code(), direct.status.code());
    for out in [&daemon, &direct] {
        assert!(
            text(&out.stderr).contains("t/stray"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn invalidate_reports_what_happened() {
    // Succeeds once, then fails: an invalidated source stays stale.
    let once =
        "[ -e \"$DISCOCACHE_TEST_FLAG\" ] && exit 1; touch \"$DISCOCACHE_TEST_FLAG\"; echo '[1]'";
    let sources = [
        sh_source("t/once", "1h", "10s", once),
        sh_source("t/none", "1h", "10s", "exit 1"),
    ]
    .concat();
    for direct in [true, false] {
        let mut d = TestDaemon::new(&config(&sources));
        let flag = d.file("flag");
        let mut cmd = d.command();
        cmd.env("DISCOCACHE_TEST_FLAG", &flag);
        if !direct {
            d.spawn_with(&mut cmd);
            d.wait_data("t/once");
        }
        let run = |args: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_discocache"));
            c.arg("--root").arg(&d.root).arg("--socket").arg(&d.socket);
            c.arg("--config").arg(&d.config);
            if direct {
                c.arg("--no-daemon");
            }
            let out = c
                .args(args)
                .env("DISCOCACHE_TEST_FLAG", &flag)
                .stdin(Stdio::null())
                .output()
                .expect("run");
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        };
        if direct {
            assert_eq!(run(&["refresh", "t/once"]).0, Some(0));
        }
        let (code, out, err) = run(&["invalidate", "t/once"]);
        assert_eq!(code, Some(0), "direct {direct}: {err}");
        assert!(
            out.contains("t/once: invalidated"),
            "direct {direct}: {out}"
        );

        let (code, out, err) = run(&["invalidate", "t/once"]);
        assert_eq!(code, Some(1), "direct {direct}: {out}");
        assert!(err.contains("not invalidated"), "direct {direct}: {err}");
        assert!(out.is_empty(), "direct {direct}: {out}");

        let (code, _, err) = run(&["invalidate", "t/none"]);
        assert_eq!(code, Some(3), "direct {direct}: {err}");
        assert!(err.contains("no data"), "direct {direct}: {err}");
    }
}
