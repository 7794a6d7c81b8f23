//! The request line rules on a real socket: what serde alone would accept
//! but the protocol refuses.

use serde_json::json;

use crate::helpers::daemon::{TestDaemon, config, sh_source};
use discocache::{Cache, Source};

#[test]
fn duplicate_op_key_is_bad_request() {
    let d = TestDaemon::start(&config(&sh_source("t/kept", "1h", "10s", "echo '[1]'")));
    // A source on disk that is not in the config: a prune would remove it.
    let stray = Source::parse("t/stray").expect("source");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cache = Cache::open(&d.root).expect("open root");
    runtime
        .block_on(cache.write(&stray, b"[2]".to_vec()))
        .expect("write stray");
    let mut raw = d.raw();
    let answer = raw.ask(r#"{"op":"hello","op":"prune","id":9}"#);
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["id"], 9, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`op`")),
        "{answer}"
    );
    assert!(d.root.join("t/stray.json").exists(), "nothing was pruned");
    // The connection stays usable.
    assert_eq!(raw.ask(r#"{"op":"hello"}"#)["ok"], true);
}

#[test]
fn missing_op_is_bad_request() {
    let d = TestDaemon::start(&config(&sh_source("t/x", "1h", "10s", "echo '[1]'")));
    let mut raw = d.raw();
    for line in ["{}", r#"{"id":"a","source":"t/x"}"#] {
        let answer = raw.ask(line);
        assert_eq!(answer["error"]["code"], "bad_request", "{line}: {answer}");
    }
    let unknown = d.request(json!({"op": "frobnicate"}));
    assert_eq!(unknown["error"]["code"], "unknown_op", "{unknown}");
}

#[test]
fn hello_says_what_the_daemon_serves() {
    let d = TestDaemon::start(&config(&sh_source("t/x", "1h", "10s", "echo '[1]'")));
    let mut client = discocache::client::Client::connect(&d.socket).expect("connect");
    let hello = client.hello().expect("hello");
    assert_eq!(hello.protocol, 1);
    assert_eq!(hello.format, discocache::protocol::FORMAT);
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).expect("canonical");
    assert_eq!(hello.root, canonical(&d.root));
    assert_eq!(
        hello.config.as_deref(),
        Some(canonical(&d.config).as_path())
    );
}
