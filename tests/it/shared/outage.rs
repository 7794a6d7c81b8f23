//! A shared-tier outage seen from a real daemon: Redis stops, then comes
//! back empty on the same port.

use std::path::Path;
use std::time::UNIX_EPOCH;

use discocache::client::Client;
use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config};
use crate::helpers::http::{self, Server};
use crate::helpers::redis::RedisServer;

const SOURCE: &str = "discovery/models";
const PAYLOAD: &str = "{\"models\":[\"a\",\"b\"]}";

fn daemon(redis: &RedisServer, origin: &Server) -> TestDaemon {
    let sources = format!(
        "[shared]\nurl = \"{}\"\nnamespace = \"outage\"\n\n[[source]]\nid = \"{SOURCE}\"\nttl = \"1h\"\nhttp = {{ url = \"{}\" }}\n",
        redis.url(),
        origin.url("/models"),
    );
    TestDaemon::start(&config(&sources))
}

fn ask(socket: &Path, request: &Value) -> Value {
    let mut client = Client::connect(socket).expect("connect");
    client.request(request).expect("request")
}

/// The `shared` object of an op's answer.
fn shared(socket: &Path, op: &str) -> Value {
    ask(socket, &json!({"op": op}))["shared"].clone()
}

fn metrics(socket: &Path) -> String {
    let text = ask(socket, &json!({"op": "metrics"}))["text"].clone();
    text.as_str().expect("metrics text").to_owned()
}

/// `discocache status` through the daemon, as printed for people.
fn cli_status(d: &TestDaemon) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config)
        .arg("status")
        .output()
        .expect("run discocache status");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get(socket: &Path) -> Value {
    let answer = ask(
        socket,
        &json!({"op": "get", "source": SOURCE, "refresh": "never"}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    answer
}

#[test]
fn a_redis_outage_keeps_reads_going_and_a_wiped_server_is_reseeded() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let origin = Server::start(|_| http::send("200 OK", &[("ETag", "\"e1\"")], PAYLOAD));
    let mut d = daemon(&redis, &origin);
    let first = d.wait_data(SOURCE);
    assert_eq!(
        first["data"],
        serde_json::from_str::<Value>(PAYLOAD).unwrap()
    );
    let revision = first["revision"].clone();
    let calls = origin.requests().len();
    let socket = d.socket.clone();
    let socket = socket.as_path();
    let up = d.wait("the shared tier up with an epoch", || {
        let s = shared(socket, "status");
        (s["up"] == true && s["epoch"].is_string()).then_some(s)
    });
    assert!(!up["url"].as_str().unwrap().is_empty(), "{up}");
    assert_eq!(shared(socket, "hello")["epoch"], up["epoch"]);
    assert!(metrics(socket).contains("\ndiscocache_shared_up 1\n"));

    redis.stop();
    d.wait("status to show the shared tier down", || {
        let s = shared(socket, "status");
        (s["up"] == false && s["last_error"].is_string()).then_some(())
    });
    let text = cli_status(&d);
    assert!(text.contains("shared tier redis://127.0.0.1:"), "{text}");
    assert!(text.contains(": DOWN: "), "{text}");
    let hello = shared(socket, "hello");
    assert_eq!(hello["up"], false, "{hello}");
    assert_eq!(shared(socket, "stats")["up"], false);
    let text = metrics(socket);
    assert!(text.contains("\ndiscocache_shared_up 0\n"), "{text}");
    if let Some((clean, said)) = crate::metrics::promtool(&text) {
        assert!(clean, "promtool: {said}\n{text}");
    }
    for _ in 0..20 {
        let answer = get(socket);
        assert_eq!(answer["data"], first["data"]);
        assert_eq!(answer["revision"], revision);
    }

    redis.start_again();
    let back = d.wait("the shared tier back with a new epoch", || {
        let s = shared(socket, "status");
        let new = s["up"] == true && s["epoch"].is_string() && s["epoch"] != up["epoch"];
        (new && s["seeded"].as_u64() > up["seeded"].as_u64()).then_some(s)
    });
    assert!(metrics(socket).contains("\ndiscocache_shared_up 1\n"));
    // Re-seeded from the local copy, dated by the local payload's mtime.
    let data = "outage:{discovery/models}:data";
    assert_eq!(redis.raw(&["HGET", data, "payload"]), PAYLOAD);
    assert_eq!(redis.raw(&["HGET", data, "etag"]), "\"e1\"");
    let mtime = std::fs::metadata(d.root.join("discovery/models.json"))
        .and_then(|m| m.modified())
        .unwrap();
    let mtime_ms = mtime.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(
        redis.raw(&["HGET", data, "fetched_at"]),
        mtime_ms.to_string()
    );
    // No upstream call, and nothing went backwards on the host.
    assert_eq!(origin.requests().len(), calls, "{back}");
    let after = get(socket);
    assert_eq!(after["data"], first["data"]);
    assert_eq!(after["revision"], revision);
    let log = d.log();
    let epoch = back["epoch"].as_str().unwrap();
    let reseeded = format!("epoch {epoch} is new; seeded 1 of 1 local copies");
    assert!(log.contains(&reseeded), "{log}");
}

#[test]
fn without_shared_config_no_tier_is_shown_or_counted() {
    let d = TestDaemon::start(&config(&crate::helpers::daemon::sh_source(
        "t/plain",
        "1h",
        "10s",
        "echo '[1]'",
    )));
    let socket = d.socket.as_path();
    for op in ["hello", "status", "stats"] {
        let answer = ask(socket, &json!({"op": op}));
        assert_eq!(answer["ok"], true, "{answer}");
        assert!(answer.get("shared").is_none(), "{op}: {answer}");
    }
    assert!(!metrics(socket).contains("discocache_shared_"));
}
