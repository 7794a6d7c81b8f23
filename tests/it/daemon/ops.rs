//! Every op over a raw socket, and every error code from real inputs.

use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config, count, counter_source, sh_source};
use discocache::lock::SourceLock;
use discocache::protocol::EventKind;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[test]
fn get_refresh_state_and_status_over_a_raw_socket() {
    let dir_counter = tempfile::NamedTempFile::new().expect("counter");
    let counter = dir_counter.path().to_path_buf();
    let mut d = TestDaemon::start(&config(&counter_source("t/count", "1h", &counter)));
    d.wait_data("t/count");
    let mut raw = d.raw();
    let hits = |stats: &Value| {
        stats["sources"]["t/count"]["fresh_hits"]
            .as_u64()
            .unwrap_or(0)
    };
    let hits_before = hits(&raw.ask(r#"{"op":"stats"}"#));
    let got = raw.ask(r#"{"op":"get","id":"g1","source":"t/count","refresh":"never"}"#);
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["id"], "g1");
    assert_eq!(got["data"], json!({"n": 1}));
    assert_eq!(
        (got["revision"].as_u64(), got["fresh"].as_bool()),
        (Some(1), Some(true))
    );
    assert!(
        got["fetched_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{got}"
    );

    let refreshed = raw.ask(r#"{"op":"refresh","sources":["t/count"]}"#);
    assert_eq!(refreshed["failed"], 0, "{refreshed}");
    assert_eq!(
        refreshed["results"][0]["outcome"], "committed",
        "{refreshed}"
    );
    assert_eq!(refreshed["results"][0]["revision"], 2);
    assert_eq!(count(&counter), 2);

    let state = raw.ask(r#"{"op":"state","source":"t/count"}"#);
    assert_eq!(state["revision"], 2, "{state}");
    assert_eq!(state["refresh"]["in_flight"], false);
    let status = raw.ask(r#"{"op":"status"}"#);
    assert_eq!(status["sources"][0]["source"], "t/count", "{status}");
    assert_eq!(status["sources"][0]["has_data"], true);
    assert_eq!(status["daemon"]["pid"], d.pid());

    let forced = raw.ask(r#"{"op":"get","source":"t/count","refresh":"force"}"#);
    assert_eq!(forced["data"], json!({"n": 3}), "{forced}");
    // The payload served is held in memory: `{"n":3}` is 7 bytes.
    let status = raw.ask(r#"{"op":"status"}"#);
    assert_eq!(status["daemon"]["held_bytes"], 7, "{status}");
    let stats = raw.ask(r#"{"op":"stats"}"#);
    // `never` and `force`: two reads of fresh data.
    assert_eq!(hits(&stats), hits_before + 2, "{stats}");
    assert!(
        stats["sources"]["t/count"]["refresh_ok"].as_u64() >= Some(3),
        "{stats}"
    );
    assert_eq!(stats["keys_total"], 1, "{stats}");
    let metrics = raw.ask(r#"{"op":"metrics"}"#);
    let text = metrics["text"].as_str().expect("text");
    assert!(text.contains("discocache_keys_stored 1\n"), "{text}");
}

#[test]
fn payload_is_embedded_verbatim() {
    let src = sh_source(
        "t/raw",
        "1h",
        "10s",
        r#"printf '{"b": 1.50,   "a": [1, 2]}'"#,
    );
    let mut d = TestDaemon::start(&config(&src));
    d.wait_data("t/raw");
    let mut raw = d.raw();
    raw.send(r#"{"op":"get","source":"t/raw"}"#);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut raw.reader, &mut line).expect("read");
    assert!(
        line.contains(r#""data":{"b": 1.50,   "a": [1, 2]}"#),
        "{line}"
    );
}

#[test]
fn every_error_code_from_real_inputs_and_the_connection_stays_usable() {
    let sources = [
        sh_source("t/fails", "1h", "10s", "echo broken >&2; exit 3"),
        sh_source("t/ok", "1h", "10s", "echo '{}'"),
        sh_source("t/held", "1h", "1s", "echo '{}'"),
    ];
    let mut d = TestDaemon::start(&config(&sources.concat()));
    d.wait_data("t/ok");
    d.wait_data("t/held");
    let mut raw = d.raw();
    let cases = [
        ("{nope", "bad_request"),
        (r#"{"op":"get"}"#, "bad_request"),
        (r#"{"op":"fly"}"#, "unknown_op"),
        (r#"{"op":"get","source":"T/x"}"#, "invalid_source"),
        (r#"{"op":"get","source":"t/absent"}"#, "unknown_source"),
        (
            r#"{"op":"get","source":"t/fails","refresh":"never"}"#,
            "no_data",
        ),
        (
            r#"{"op":"get","source":"t/fails","refresh":"force"}"#,
            "refresh_failed",
        ),
    ];
    for (line, want) in cases {
        let answer = raw.ask(line);
        assert_eq!(answer["ok"], false, "{line}: {answer}");
        assert_eq!(code(&answer), want, "{line}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(
            raw.ask(r#"{"op":"hello"}"#)["ok"],
            true,
            "still usable after {line}"
        );
    }
    let failed = raw.ask(r#"{"op":"get","source":"t/fails","refresh":"force"}"#);
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("broken") || m.contains("exit")),
        "{failed}"
    );

    // Another process holds the refresh past its deadline: timeout.
    let layout = discocache::Layout::new(&d.root);
    let held_id = discocache::SourceId::parse("t/held").expect("id");
    std::fs::create_dir_all(layout.tier_state_dir(&held_id)).expect("mkdir");
    let lock_path = layout.lock(&held_id);
    let _held = SourceLock::try_acquire(&lock_path)
        .expect("lock")
        .expect("free");
    let timeout = raw.ask(r#"{"op":"get","source":"t/held","refresh":"force"}"#);
    assert_eq!(code(&timeout), "timeout", "{timeout}");

    // A damaged sidecar: `state` answers and says so; the payload is still
    // served.
    let ok_id = discocache::SourceId::parse("t/ok").expect("id");
    std::fs::write(layout.sidecar(&ok_id), b"{garbage").expect("damage");
    let state = raw.ask(r#"{"op":"state","source":"t/ok"}"#);
    let damaged = state["refresh"]["sidecar_damaged"].as_str().unwrap_or("");
    assert!(damaged.contains("corrupt sidecar"), "{state}");
    let served = raw.ask(r#"{"op":"get","source":"t/ok","refresh":"never"}"#);
    assert_eq!(served["ok"], true, "{served}");
    // A damaged payload: internal, and the daemon goes on.
    std::fs::write(d.root.join("t").join("ok.json"), b"{garbage").expect("damage");
    let internal = raw.ask(r#"{"op":"get","source":"t/ok","refresh":"never"}"#);
    assert_eq!(code(&internal), "internal", "{internal}");
    assert!(
        internal["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ok.json") && m.contains("not one JSON value")),
        "{internal}"
    );
    assert_eq!(raw.ask(r#"{"op":"hello"}"#)["ok"], true);

    // An oversize line: too_large, then the connection is closed.
    let big = format!(r#"{{"op":"hello","pad":"{}"}}"#, "x".repeat(70 * 1024));
    // The daemon closes before reading it all: the write may fail.
    let _ = std::io::Write::write_all(&mut raw.writer, format!("{big}\n").as_bytes());
    let answer = raw.recv().expect("an answer");
    assert_eq!(code(&answer), "too_large", "{answer}");
    assert!(raw.recv().is_none(), "connection closed after too_large");
    assert_eq!(
        d.request(json!({"op": "hello"}))["ok"],
        true,
        "daemon still serves"
    );
}

#[test]
fn invalidate_marks_stale_keeps_serving_and_refreshes() {
    let counter_file = tempfile::NamedTempFile::new().expect("counter");
    let counter = counter_file.path().to_path_buf();
    let mut d = TestDaemon::start(&config(&counter_source("t/inv", "1h", &counter)));
    d.wait_data("t/inv");
    let (_, mut watch) = discocache::client::Client::connect(&d.socket)
        .expect("connect")
        .watch(Some(vec![
            discocache::SourceId::parse("t/inv").expect("id"),
        ]))
        .expect("watch");
    let answer = d.request(json!({"op": "invalidate", "source": "t/inv"}));
    assert_eq!(answer["invalidated"], true, "{answer}");
    let event = watch.next_event().expect("read").expect("event");
    assert_eq!(event.event, EventKind::Invalidated, "{event:?}");
    let next = watch.next_event().expect("read").expect("event");
    assert_eq!(
        (next.event, next.revision),
        (EventKind::Committed, Some(2)),
        "{next:?}"
    );
    assert_eq!(count(&counter), 2);
}

#[test]
fn daemon_get_of_a_payload_over_max_output_is_too_large_and_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = format!(
        "[[source]]\nid = \"t/big\"\nttl = \"1h\"\nmax_output = \"1MiB\"\nfile = {}\n",
        crate::helpers::daemon::toml_str(&dir.path().join("absent.json").to_string_lossy())
    );
    let d = TestDaemon::new(&config(&source));
    std::fs::create_dir_all(d.root.join("t")).expect("tier");
    let big = std::fs::File::create(d.root.join("t/big.json")).expect("payload");
    big.set_len(2 << 30).expect("sparse 2 GiB");
    let mut d = d;
    d.spawn();
    let got = d.request(json!({"op": "get", "source": "t/big", "refresh": "never"}));
    assert_eq!(code(&got), "too_large", "{got}");
    let message = got["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("is 2147483648 bytes, over its limit of 1048576 bytes"),
        "{message}"
    );
}
