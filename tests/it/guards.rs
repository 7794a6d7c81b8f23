//! The guard against bad refreshes, through the real daemon: a background
//! or `wait_if_stale` refresh that returns an empty or shrunken payload is
//! refused (recorded, the good payload kept and served); a forced one
//! commits it.

use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config, toml_str};
use crate::helpers::env::Env;

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

/// What the guard tests do with an [`Env`].
trait GuardCli {
    fn stdout(&self, args: &[&str]) -> String;
}

impl GuardCli for Env {
    /// The stdout of a direct-mode command that must succeed.
    fn stdout(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run discocache");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn direct_wait_if_stale_refuses_an_empty_payload_and_force_takes_it() {
    let env = Env::new(
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
    let env = Env::new(
        "[defaults]\nguard = { max_shrink = 2 }\n\n[[source]]\nid = \"t/x\"\ncommand = [\"true\"]\nguard = { min_bytes = \"big\" }\n",
    );
    let out = env
        .cmd(&["config", "check"])
        .output()
        .expect("run discocache");
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
    let good = Env::new(
        "[defaults]\nguard = { max_shrink = 0.5 }\n\n[[source]]\nid = \"t/x\"\ncommand = [\"true\"]\nguard = { min_bytes = 100, max_shrink = 1 }\n",
    );
    let out = good
        .cmd(&["config", "check"])
        .output()
        .expect("run discocache");
    assert!(out.status.success(), "{out:?}");
}

mod library {
    use std::time::Duration;

    use discocache::{Cache, Ensured, Error, Fetched, Policy, Source};

    fn open() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("root")).unwrap();
        (dir, cache)
    }

    fn source(definition: &str) -> Source {
        let mut s = Source::parse("t/lib").unwrap();
        s.policy = Policy {
            ttl: Duration::from_secs(60),
            definition: Some(definition.into()),
            ..Policy::default()
        };
        s
    }

    async fn commit(cache: &Cache, s: &Source, guarded: bool, body: &'static str) -> bool {
        let fetch = move |_| async move { Ok(Fetched::data(body)) };
        let done = match guarded {
            true => cache.refresh_guarded(s, fetch).await,
            false => cache.refresh(s, fetch).await,
        };
        match done {
            Ok(_) => true,
            Err(Error::RefreshFailed { message, .. }) => {
                assert!(message.starts_with("refused: "), "{message}");
                false
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// 54 bytes: `[1]` is under a tenth of it.
    const BIG: &str = r#"["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]"#;

    #[tokio::test]
    async fn refresh_guarded_refuses_what_refresh_commits() {
        let (_d, cache) = open();
        let s = source("a");
        // Nothing to keep yet: even an empty first payload is committed.
        assert!(commit(&cache, &s, true, "[]").await);
        assert!(commit(&cache, &s, true, BIG).await);
        assert!(!commit(&cache, &s, true, "{}").await);
        assert!(!commit(&cache, &s, true, "[1]").await);
        let entry = cache.read(&s).unwrap().unwrap();
        assert_eq!(entry.data, BIG.as_bytes());
        assert!(commit(&cache, &s, false, "[1]").await);
        assert_eq!(cache.read(&s).unwrap().unwrap().data, b"[1]");
        // wait_if_stale (maybe_refresh_sync) is guarded too.
        cache.invalidate(&s).unwrap();
        let fetch = |_| async { Ok(Fetched::data("null")) };
        assert!(cache.maybe_refresh_sync(&s, fetch).await.is_err());
        assert_eq!(cache.read(&s).unwrap().unwrap().data, b"[1]");
        let state = cache.refresh_state(&s.id).unwrap();
        assert_eq!(
            state.last_error.as_deref(),
            Some("refused: payload is empty (null)")
        );
        let backing_off = cache.maybe_refresh_sync(&s, fetch).await.unwrap();
        assert!(matches!(backing_off, Ensured::BackingOff { .. }));
    }

    #[tokio::test]
    async fn another_definition_reads_stale_until_refreshed() {
        let (_d, cache) = open();
        let old = source("a");
        assert!(commit(&cache, &old, false, "[1]").await);
        let entry = cache.read(&old).unwrap().unwrap();
        assert!(entry.fresh && entry.stale_reason.is_none());
        let new = source("b");
        for entry in [
            cache.read(&new).unwrap().unwrap(),
            cache.read_with_meta(&new).unwrap().unwrap(),
        ] {
            assert!(entry.stale() && entry.definition_changed, "{entry:?}");
            assert_eq!(entry.stale_reason, Some("definition changed"));
        }
        // Not tracked by the caller: unchanged.
        let untracked = Source {
            policy: Policy {
                definition: None,
                ..new.policy.clone()
            },
            ..new.clone()
        };
        assert!(cache.read(&untracked).unwrap().unwrap().fresh);
        let fetch = |_| async { Ok(Fetched::data("[2]")) };
        let ran = cache.maybe_refresh_sync(&new, fetch).await.unwrap();
        assert!(matches!(ran, Ensured::Refreshed(_)), "{ran:?}");
        let entry = cache.read_with_meta(&new).unwrap().unwrap();
        assert!(entry.fresh, "{entry:?}");
        assert_eq!(entry.meta.unwrap().definition.as_deref(), Some("b"));
    }
}
