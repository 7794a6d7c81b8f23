//! `[shared]` and the per-source `shared` / `on_down` keys.

use super::*;

const SOURCE: &str = "[[source]]\nid = \"discovery/a\"\ncommand = [\"true\"]\n";

#[test]
fn without_shared_there_is_no_tier() {
    let config = parse(SOURCE).unwrap();
    assert!(config.shared.is_none());
    assert!(config.sources[0].shared);
    assert_eq!(config.on_down(&config.sources[0]), OnDown::Local);
}

#[test]
fn shared_defaults_apply() {
    let config = parse(&format!(
        "[shared]\nurl = \"redis://127.0.0.1:6379/0\"\n{SOURCE}"
    ))
    .unwrap();
    let shared = config.shared.unwrap();
    assert_eq!(shared.url(), "redis://127.0.0.1:6379/0");
    assert_eq!(shared.namespace, DEFAULT_NAMESPACE);
    assert_eq!(shared.on_down, OnDown::Local);
    assert_eq!(shared.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(shared.command_timeout, DEFAULT_COMMAND_TIMEOUT);
}

#[test]
fn shared_keys_and_per_source_policy_parse() {
    let text = r#"
[shared]
url = "redis://app:${API_KEY}@cache.internal:6380/2"
namespace = "team-a"
on_down = "hold"
connect_timeout = "200ms"
command_timeout = "2s"

[[source]]
id = "discovery/a"
command = ["true"]
on_down = "local"

[[source]]
id = "discovery/b"
command = ["true"]
shared = false
"#;
    let config = parse(text).unwrap();
    let shared = config.shared.clone().unwrap();
    assert_eq!(shared.url(), "redis://app:sk-SECRET@cache.internal:6380/2");
    assert_eq!(
        shared.redacted_url(),
        "redis://app:<redacted>@cache.internal:6380/2"
    );
    assert!(!format!("{config:?}").contains("sk-SECRET"));
    assert_eq!(shared.namespace, "team-a");
    assert_eq!(shared.connect_timeout, Duration::from_millis(200));
    assert_eq!(shared.command_timeout, secs(2));
    let (a, b) = (&config.sources[0], &config.sources[1]);
    assert_eq!(config.on_down(a), OnDown::Local);
    assert_eq!(config.on_down(b), OnDown::Hold);
    assert!(a.shared);
    assert!(!b.shared);
    // The policy carries both, resolved, for the refresh path.
    assert_eq!((a.policy.shared, a.policy.on_down), (true, OnDown::Local));
    assert_eq!((b.policy.shared, b.policy.on_down), (false, OnDown::Hold));
}

#[test]
fn bad_shared_values_are_reported_with_their_lines() {
    let text = "[shared]\nurl = \"http://x\"\nnamespace = \"a b\"\non_down = \"maybe\"\ncommand_timeout = \"0s\"\n";
    let all = problems(text);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0].0, 2);
    assert!(
        all[0].1.contains("expected a redis:// or rediss:// URL"),
        "{all:?}"
    );
    assert_eq!(all[1].0, 3);
    assert!(all[1].1.starts_with("[shared]: namespace"), "{all:?}");
    assert_eq!(all[2].0, 4);
    assert!(
        all[2].1.contains("expected \"local\" or \"hold\""),
        "{all:?}"
    );
    assert_eq!(all[3].0, 5);
    assert!(all[3].1.contains("more than zero"), "{all:?}");
}

#[test]
fn shared_needs_a_url_and_knows_its_keys() {
    let (line, msg) = problem("[shared]\nnamespace = \"x\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("missing url"), "{msg}");
    let (line, msg) = problem("[shared]\nurl = \"redis://h\"\nurll = 1\n");
    assert_eq!(line, 3);
    assert!(msg.contains("unknown key `urll`"), "{msg}");
}

/// A throwaway PEM file in a temp dir (the dir lives as long as the guard).
fn ca_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn tls_urls_are_accepted_with_and_without_a_ca_file() {
    let config = parse(&format!(
        "[shared]\nurl = \"rediss://u:${{API_KEY}}@h:6380\"\n{SOURCE}"
    ))
    .unwrap();
    let shared = config.shared.unwrap();
    assert_eq!(shared.url(), "rediss://u:sk-SECRET@h:6380");
    assert_eq!(shared.ca_file, None);
    let (_dir, path) = ca_file(PEM);
    let text = format!(
        "[shared]\nurl = \"rediss://h:6380\"\nca_file = {:?}\n{SOURCE}",
        path.display().to_string()
    );
    let shared = parse(&text).unwrap().shared.unwrap();
    assert_eq!(shared.ca_file.as_deref(), Some(path.as_path()));
    assert_eq!(shared.ca_pem().unwrap().unwrap(), PEM.as_bytes());
}

#[test]
fn a_relative_ca_file_resolves_against_the_config_dir_and_must_be_readable() {
    let (line, msg) = problem("[shared]\nurl = \"rediss://h\"\nca_file = \"tls/ca.pem\"\n");
    assert_eq!(line, 3);
    assert!(
        msg.starts_with("[shared]: ca_file /cfg/tls/ca.pem: "),
        "{msg}"
    );
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let (_dir, path) = ca_file("not a certificate\n");
    let text = format!(
        "[shared]\nurl = \"rediss://h\"\nca_file = {:?}\n",
        path.display().to_string()
    );
    let (_, msg) = problem(&text);
    assert!(msg.contains("no PEM certificate"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn a_fifo_ca_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let text = format!(
        "[shared]\nurl = \"rediss://h\"\nca_file = {:?}\n",
        path.display().to_string()
    );
    let (_, msg) = problem(&text);
    assert!(msg.contains("not a regular file"), "{msg}");
}

#[test]
fn a_ca_file_with_a_plain_redis_url_is_refused() {
    let (_dir, path) = ca_file(PEM);
    let text = format!(
        "[shared]\nurl = \"redis://u:${{API_KEY}}@h\"\nca_file = {:?}\n",
        path.display().to_string()
    );
    let (line, msg) = problem(&text);
    assert_eq!(line, 3);
    assert!(msg.contains("ca_file: only used with TLS"), "{msg}");
    assert!(!msg.contains("sk-SECRET"), "{msg}");
}

#[test]
fn turning_certificate_checks_off_is_refused_without_the_password() {
    let (line, msg) = problem("[shared]\nurl = \"rediss://u:${API_KEY}@h:6380/#insecure\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("#insecure) is not accepted"), "{msg}");
    assert!(!msg.contains("sk-SECRET"), "{msg}");
}

#[test]
fn an_unset_password_variable_turns_the_tier_off_and_check_says_so() {
    let text = format!("[shared]\nurl = \"redis://u:${{NOPE}}@h\"\n{SOURCE}");
    let config = parse(&text).unwrap();
    assert!(config.shared.is_none());
    let err = config.strict().unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(2));
    assert!(err.problems[0].message.contains("${NOPE} is not set"));
}

#[test]
fn per_source_keys_are_checked() {
    let text = format!("{SOURCE}shared = \"no\"\non_down = 1\n");
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all[0].1.contains("shared \"no\": expected true or false"),
        "{all:?}"
    );
    assert!(all[1].1.contains("on_down 1"), "{all:?}");
}
