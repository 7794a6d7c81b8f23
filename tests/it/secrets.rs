//! Secrets go only to their origin: at `DISCOCACHE_LOG=trace`, with an
//! origin that echoes every secret back in every encoding (and puts one in
//! a redirect `Location`), no output, log or file under the root shows any
//! encoding of any secret.

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::daemon::{TestDaemon, config, toml_str};
use crate::helpers::http::{Seen, Server, send};

/// From `${DISCOCACHE_IT_TOKEN}` in a header.
const TOKEN: &str = "tok-Header/Secret+42";
/// Written in the config as a header value.
const LITERAL: &str = "key-LiteralSecret99";
/// The URL's password (written percent-encoded).
const PASSWORD: &str = "pw-Userinfo/77";
/// What Basic auth is built from.
const PAIR: &str = "bot:pw-Userinfo/77";
/// From `${DISCOCACHE_IT_QUERY}` in the URL's query.
const QUERY: &str = "qk-QuerySecret55";

const SECRETS: [&str; 5] = [TOKEN, LITERAL, PASSWORD, PAIR, QUERY];
const ENCODINGS: [&str; 7] = ["raw", "upper", "json", "jsonu", "url", "urllower", "b64"];

fn escape_each(s: &str, f: impl Fn(char) -> String) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                f(c)
            }
        })
        .collect()
}

/// `secret` as the origin echoes it in `encoding`.
fn encode(encoding: &str, secret: &str) -> String {
    match encoding {
        "raw" => secret.to_owned(),
        "upper" => secret.to_uppercase(),
        "json" => serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .replace('/', "\\/"),
        "jsonu" => escape_each(secret, |c| format!("\\u{:04x}", c as u32)),
        "url" => escape_each(secret, |c| format!("%{:02X}", c as u32)),
        "urllower" => escape_each(secret, |c| format!("%{:02x}", c as u32)),
        _ => STANDARD.encode(secret),
    }
}

/// Every form of every secret that must never be shown.
fn forbidden() -> Vec<String> {
    let mut all: Vec<String> = SECRETS
        .iter()
        .flat_map(|s| ENCODINGS.iter().map(move |e| encode(e, s).to_lowercase()))
        .collect();
    all.push(STANDARD.encode(format!("Bearer {TOKEN}")).to_lowercase());
    all.push("pw-userinfo%2f77".into());
    // Basic auth from the URL's userinfo, as written or decoded.
    all.push(STANDARD.encode("bot:pw-Userinfo%2F77").to_lowercase());
    all
}

fn assert_clean(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for form in forbidden() {
        assert!(!lower.contains(&form), "{what} shows {form:?}:\n{text}");
    }
}

/// The origin: `/err/<encoding>/<n>` answers 500 echoing secret `n` in that
/// encoding and the credentials it received; `/redirect` points to a URL
/// holding the password and the query key.
fn origin() -> Server {
    Server::start(|seen: &Seen| {
        if seen.path.starts_with("/redirect") {
            let location =
                format!("http://bot:pw-Userinfo%2F77@127.0.0.1:1/next?key={QUERY}&t={TOKEN}");
            return send("302 Found", &[("Location", &location)], "");
        }
        let mut parts = seen.path.trim_start_matches("/err/").split(['/', '?']);
        let (encoding, n) = (parts.next().unwrap_or(""), parts.next().unwrap_or("0"));
        let secret = SECRETS[n.parse::<usize>().unwrap_or(0) % SECRETS.len()];
        let body = json!({
            "error": format!("bad key {}", encode(encoding, secret)),
            "got": seen.header("authorization").unwrap_or(""),
            "path": seen.path,
        });
        send("500 Internal Server Error", &[], &body.to_string())
    })
}

fn http_source(id: &str, url: &str, headers: bool, redirects: u32) -> String {
    let headers = if headers {
        format!(
            ", headers = {{ Authorization = {}, X-Api-Key = {} }}",
            toml_str("Bearer ${DISCOCACHE_IT_TOKEN}"),
            toml_str(LITERAL)
        )
    } else {
        String::new()
    };
    format!(
        "[[source]]\nid = \"{id}\"\nttl = \"1h\"\nbackoff_base = \"1h\"\nbackoff_cap = \"2h\"\nhttp = {{ url = {}, max_redirects = {redirects}{headers} }}\n\n",
        toml_str(url)
    )
}

/// One source per encoding and secret, one with credentials only in the
/// URL, one whose redirect is not followed.
fn sources(server: &Server) -> (String, Vec<String>) {
    let base = server
        .url("")
        .replace("http://", "http://bot:pw-Userinfo%2F77@");
    let query = "?api_key=${DISCOCACHE_IT_QUERY}";
    let mut text = String::new();
    let mut ids = Vec::new();
    for encoding in ENCODINGS {
        for n in 0..SECRETS.len() {
            let id = format!("t/{encoding}-{n}");
            text += &http_source(&id, &format!("{base}/err/{encoding}/{n}{query}"), true, 5);
            ids.push(id);
        }
    }
    text += &http_source("t/basic", &format!("{base}/err/raw/3{query}"), false, 5);
    text += &http_source("t/redirect", &format!("{base}/redirect{query}"), true, 0);
    ids.extend(["t/basic".to_owned(), "t/redirect".to_owned()]);
    (config(&text), ids)
}

fn with_secrets(cmd: &mut Command) -> &mut Command {
    cmd.env("DISCOCACHE_IT_TOKEN", TOKEN)
        .env("DISCOCACHE_IT_QUERY", QUERY)
        .env("DISCOCACHE_LOG", "trace")
}

fn cli(d: &TestDaemon, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
    cmd.arg("--root").arg(&d.root);
    cmd.arg("--socket").arg(&d.socket);
    cmd.arg("--config").arg(&d.config);
    cmd.env("XDG_CONFIG_HOME", d.dir.path().join("xdg"));
    cmd.args(args).stdin(Stdio::null());
    let out = with_secrets(&mut cmd).output().expect("run the CLI");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_files_clean(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_files_clean(&path);
        } else if let Ok(bytes) = std::fs::read(&path) {
            assert_clean(
                &path.display().to_string(),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
}

#[test]
fn secrets_never_leave_except_to_their_origin() {
    let server = origin();
    let (text, ids) = sources(&server);
    let mut d = TestDaemon::new(&text);

    let refreshed = cli(&d, &["--no-daemon", "refresh", "--all"]);
    assert!(refreshed.contains("HTTP 500"), "{refreshed}");
    assert!(refreshed.contains("<redacted>"), "{refreshed}");
    assert_clean("direct refresh", &refreshed);
    for args in [
        &["--no-daemon", "status"][..],
        &["--no-daemon", "status", "--json"],
    ] {
        assert_clean("direct status", &cli(&d, args));
    }
    for id in &ids {
        assert_clean(
            "direct state",
            &cli(&d, &["--no-daemon", "state", id, "--json"]),
        );
    }

    let mut serve = d.command();
    with_secrets(&mut serve);
    d.spawn_with(&mut serve);
    for id in &ids {
        let reply = d.request(json!({"op": "refresh", "sources": [id]}));
        assert_clean("daemon refresh", &reply.to_string());
    }
    let status: Value = d.request(json!({"op": "status"}));
    assert_clean("daemon status", &status.to_string());
    assert_clean("status through the daemon", &cli(&d, &["status"]));
    assert_clean(
        "refresh through the daemon",
        &cli(&d, &["refresh", "t/json-0"]),
    );
    d.stop();
    assert_clean("daemon log", &d.log());
    assert_files_clean(&d.root);

    let seen = server.requests();
    assert!(
        seen.iter().any(|r| r.path.contains(QUERY)),
        "${{VAR}} not expanded in the URL"
    );
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        seen.iter()
            .any(|r| r.header("authorization") == Some(&bearer))
    );
    let basic = |r: &Seen| {
        r.header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    };
    assert!(seen.iter().any(basic), "no Basic credentials from the URL");
}
