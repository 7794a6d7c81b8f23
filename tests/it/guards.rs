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
