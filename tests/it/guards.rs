//! The guard against bad refreshes, through the real daemon: a background
//! or `wait_if_stale` refresh that returns an empty or shrunken payload is
//! refused (recorded, the good payload kept and served); a forced one
//! commits it.

use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config, toml_str};

/// A source that prints the file `payload.json` of the daemon's temp dir.
fn daemon_printing_a_file() -> (TestDaemon, std::path::PathBuf) {
    let d = TestDaemon::new("");
    let file = d.file("payload.json");
    let script = format!("cat '{}'", file.display());
    let source = format!(
        "[[source]]\nid = \"t/x\"\nttl = \"1h\"\nguard = {{ max_shrink = 0.5 }}\ncommand = [\"sh\", \"-c\", {}]\n",
        toml_str(&script)
    );
    d.write_config(&config(&source));
    (d, file)
}

fn get(d: &TestDaemon, mode: &str) -> Value {
    d.request(json!({"op": "get", "source": "t/x", "refresh": mode}))
}

/// A payload of about `n` bytes.
fn payload(n: usize) -> String {
    json!({ "models": "m".repeat(n.saturating_sub(14)) }).to_string()
}

#[test]
fn empty_or_shrunken_payloads_are_refused_unless_forced() {
    let (mut d, file) = daemon_printing_a_file();
    let good = payload(1000);
    std::fs::write(&file, &good).unwrap();
    d.spawn();
    for bad in ["[]", "{}", "null", "\"\"", " [ ]\n", &payload(400)] {
        std::fs::write(&file, &good).unwrap();
        let forced = get(&d, "force");
        assert_eq!(forced["ok"], true, "{forced}");
        std::fs::write(&file, bad).unwrap();
        let marked = d.request(json!({"op": "invalidate", "source": "t/x"}));
        assert_eq!(marked["ok"], true, "{marked}");
        let answer = get(&d, "wait_if_stale");
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(
            answer["data"],
            serde_json::from_str::<Value>(&good).unwrap()
        );
        let status = d.source_status("t/x").expect("configured");
        let why = status["refresh"]["last_error"].as_str().unwrap_or_default();
        assert!(why.starts_with("refused: payload"), "{bad}: {status}");
        if bad.len() > 100 {
            let shrank = format!("shrank from {} to {} bytes", good.len(), bad.len());
            assert!(
                why.contains(&shrank) && why.contains("max_shrink 0.5"),
                "{why}"
            );
        }
        assert_eq!(status["refresh"]["consecutive_failures"], 1, "{status}");
        assert!(status["refresh"]["next_retry_at"].is_string(), "{status}");
    }
    // A forced refresh (`get --refresh force`, `refresh`) takes them.
    for bad in ["[]", "null"] {
        std::fs::write(&file, bad).unwrap();
        let forced = get(&d, "force");
        assert_eq!(forced["ok"], true, "{forced}");
        assert_eq!(forced["data"], serde_json::from_str::<Value>(bad).unwrap());
    }
    std::fs::write(&file, &good).unwrap();
    let refreshed = d.request(json!({"op": "refresh", "sources": ["t/x"]}));
    assert_eq!(refreshed["failed"], 0, "{refreshed}");
    std::fs::write(&file, "{}").unwrap();
    let refreshed = d.request(json!({"op": "refresh", "sources": ["t/x"]}));
    assert_eq!(refreshed["failed"], 0, "{refreshed}");
    assert_eq!(get(&d, "never")["data"], json!({}));
}

/// `discocache --no-daemon` on a temp root with `config`.
struct Direct {
    dir: tempfile::TempDir,
}

impl Direct {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.replace("@DIR@", dir.path().to_str().expect("utf-8 path"));
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_discocache"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--socket")
            .arg(self.path("no-daemon.sock"))
            .arg("--config")
            .arg(self.path("config.toml"))
            .arg("--no-daemon")
            .args(args)
            .env_remove("DISCOCACHE_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run discocache")
    }

    fn stdout(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn direct_wait_if_stale_refuses_an_empty_payload_and_force_takes_it() {
    let env = Direct::new(
        "[[source]]\nid = \"t/x\"\nttl = \"1h\"\ncommand = [\"cat\", \"@DIR@/payload.json\"]\n",
    );
    std::fs::write(env.path("payload.json"), "[1,2,3]").unwrap();
    assert_eq!(env.stdout(&["get", "t/x"]), "[1,2,3]");
    std::fs::write(env.path("payload.json"), "[]").unwrap();
    env.stdout(&["invalidate", "t/x"]);
    assert_eq!(
        env.stdout(&["get", "t/x", "--refresh", "wait-if-stale"]),
        "[1,2,3]"
    );
    let state: Value = serde_json::from_str(&env.stdout(&["state", "t/x", "--json"])).unwrap();
    assert_eq!(
        state["last_error"], "refused: payload is empty ([])",
        "{state}"
    );
    let human = env.stdout(&["state", "t/x"]);
    assert!(human.contains("refused: payload is empty"), "{human}");
    assert_eq!(env.stdout(&["get", "t/x", "--refresh", "force"]), "[]");
    std::fs::write(env.path("payload.json"), "[4,5,6]").unwrap();
    env.stdout(&["refresh", "t/x"]);
    std::fs::write(env.path("payload.json"), "{}").unwrap();
    env.stdout(&["refresh", "t/x"]);
    assert_eq!(env.stdout(&["get", "t/x", "--refresh", "never"]), "{}");
}

#[test]
fn config_check_names_bad_guard_values() {
    let env = Direct::new(
        "[defaults]\nguard = { max_shrink = 2 }\n\n[[source]]\nid = \"t/x\"\ncommand = [\"true\"]\nguard = { min_bytes = \"big\" }\n",
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2: [defaults]: guard.max_shrink 2: expected a fraction from 0 to 1"),
        "{err}"
    );
    assert!(
        err.contains(":7: source \"t/x\": guard.min_bytes \"big\""),
        "{err}"
    );
    let good = Direct::new(
        "[defaults]\nguard = { max_shrink = 0.5 }\n\n[[source]]\nid = \"t/x\"\ncommand = [\"true\"]\nguard = { min_bytes = 100, max_shrink = 1 }\n",
    );
    let out = good.run(&["config", "check"]);
    assert!(out.status.success(), "{out:?}");
}
