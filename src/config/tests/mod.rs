//! End-to-end tests of [`Config::parse_with_env`]: every rule, with its line.

use super::*;
use crate::refresher::DEFAULT_MAX_OUTPUT;

mod guard;
mod shared;
mod source;

fn fake_env(name: &str) -> Option<String> {
    match name {
        "API_KEY" => Some("sk-SECRET".into()),
        "OPENROUTER_API_KEY" => Some("sk-or-1".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_env(text, "test.toml", Some(Path::new("/cfg")), &fake_env)
}

/// The problems of a config that must fail, as `(line, message)`.
fn problems(text: &str) -> Vec<(usize, String)> {
    let err = parse(text).expect_err("config should be rejected");
    err.problems
        .into_iter()
        .map(|p| (p.line.expect("every problem has a line"), p.message))
        .collect()
}

/// The single problem of a config that must fail.
fn problem(text: &str) -> (usize, String) {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const FULL: &str = r#"
[defaults]
ttl = "1h"
refresh_deadline = "30s"
max_stale = "7d"
backoff_base = "10s"
backoff_cap = "1h"
max_output = "512KiB"

[daemon]
max_concurrent_refreshes = 2
refresh_ahead = 0.5
shutdown_grace = "3s"
reconcile_interval = "2m"

[[source]]
id = "discovery/openrouter"
ttl = "2h"
http = { url = "https://openrouter.ai/api/v1/models", headers = { Authorization = "Bearer ${OPENROUTER_API_KEY}", X-Cost = "$$5" }, max_redirects = 2 }

[[source]]
id = "discovery/local-tools"
max_output = 4096
command = ["my-tool", "list", "--json"]
pty = true

[[source]]
id = "runtime/pinned"
file = "pinned.json"
"#;

#[test]
fn the_full_shape_parses_with_defaults_applied() {
    let config = parse(FULL).unwrap();
    assert_eq!(config.origin, "test.toml");
    assert_eq!(
        config.daemon,
        DaemonSettings {
            max_concurrent_refreshes: 2,
            refresh_ahead: 0.5,
            shutdown_grace: secs(3),
            reconcile_interval: secs(120),
            metrics_listen: None,
            offline: false,
        }
    );
    let ids: Vec<String> = config.sources.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "discovery/openrouter",
            "discovery/local-tools",
            "runtime/pinned"
        ]
    );
    let router = config
        .source(&SourceId::parse("discovery/openrouter").unwrap())
        .unwrap();
    assert_eq!(
        router.policy,
        Policy {
            ttl: secs(7200),
            refresh_deadline: secs(30),
            max_stale: Some(secs(7 * 86400)),
            backoff_base: secs(10),
            backoff_cap: secs(3600),
            max_output: 512 << 10,
            guard: crate::Guard::default(),
            definition: router.policy.definition.clone(),
            shared: true,
            on_down: crate::OnDown::Local,
        }
    );
    let Refresher::Http(http) = &router.refresher else {
        panic!("{router:?}")
    };
    assert_eq!(http.url, "https://openrouter.ai/api/v1/models");
    let headers: Vec<(&str, &str)> = http
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [("Authorization", "Bearer sk-or-1"), ("X-Cost", "$5")]
    );
    assert_eq!((http.max_body, http.max_redirects), (512 << 10, 2));
}

#[test]
fn command_and_file_sources_carry_their_settings() {
    let config = parse(FULL).unwrap();
    let Refresher::Command(cmd) = &config.sources[1].refresher else {
        panic!()
    };
    assert_eq!(cmd.argv, ["my-tool", "list", "--json"]);
    assert!(cmd.pty);
    assert_eq!(cmd.max_output, 4096);
    let Refresher::File(file) = &config.sources[2].refresher else {
        panic!()
    };
    assert_eq!(file.path, Path::new("/cfg/pinned.json"));
    assert_eq!(file.max_size, 512 << 10);
}

#[test]
fn missing_tables_take_built_in_defaults() {
    let config = parse("[[source]]\nid = \"a/b\"\nfile = \"/x.json\"\n").unwrap();
    assert_eq!(config.daemon, DaemonSettings::default());
    let policy = &config.sources[0].policy;
    assert!(policy.definition.is_some());
    let policy = Policy {
        definition: None,
        ..policy.clone()
    };
    assert_eq!(policy, Policy::default());
    let Refresher::File(file) = &config.sources[0].refresher else {
        panic!()
    };
    assert_eq!(file.max_size, DEFAULT_MAX_OUTPUT);
    assert!(parse("").unwrap().sources.is_empty());
}

#[test]
fn embedded_default_parses_and_runs_offline() {
    let config = Config::embedded();
    assert_eq!(config.origin, "<embedded>");
    let ids: Vec<String> = config.sources.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, ["demo/host", "demo/slow-clock"]);
    for source in &config.sources {
        assert!(
            matches!(source.refresher, Refresher::Command(_)),
            "{source:?}"
        );
    }
    let slow = &config.sources[1];
    assert!(slow.refresher.describe().contains("sleep"));
    assert!(slow.policy.refresh_deadline > secs(5));
}

#[test]
fn embedded_examples_parse_when_uncommented() {
    let examples = EMBEDDED_DEFAULT
        .split_once("# More kinds of source")
        .unwrap()
        .1;
    let text: String = examples
        .lines()
        .filter_map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = parse(&text).unwrap();
    assert_eq!(config.sources.len(), 3);
}

#[test]
fn unknown_keys_are_named_with_their_line_everywhere() {
    let text = "\
typo = 1
[defaults]
tll = \"1h\"
[daemon]
max_concurrent = 3
[[source]]
id = \"a/b\"
http = { url = \"https://x\", max_redirect = 1 }
[[source]]
id = \"a/c\"
file = \"/x\"
pyt = true
";
    let all = problems(text);
    let lines: Vec<usize> = all.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [1, 3, 5, 8, 12], "{all:?}");
    assert!(all[0].1.contains("unknown key \"typo\""), "{}", all[0].1);
    assert!(
        all[1].1.starts_with("[defaults]: unknown key `tll`"),
        "{}",
        all[1].1
    );
    assert!(
        all[2]
            .1
            .starts_with("[daemon]: unknown key `max_concurrent`"),
        "{}",
        all[2].1
    );
    assert!(
        all[3]
            .1
            .starts_with("source \"a/b\": http: unknown key `max_redirect`"),
        "{}",
        all[3].1
    );
    assert!(
        all[4].1.starts_with("source \"a/c\": unknown key `pyt`"),
        "{}",
        all[4].1
    );
}

#[test]
fn every_source_is_checked_and_problems_come_in_line_order() {
    let text = r#"
[[source]]
id = "discovery/x"
ttl = "5 parsecs"
command = ["x"]

[[source]]
id = "discovery/y"
refresh_deadline = "0s"
max_output = "lots"
command = ["y"]
"#;
    let err = parse(text).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(
            r#"line 4: source "discovery/x": ttl "5 parsecs": expected a duration like "90s", "15m", "1h""#
        ),
        "{shown}"
    );
    let all = problems(text);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[1].0, 9);
    assert!(
        all[1]
            .1
            .contains("refresh_deadline \"0s\": must be more than zero"),
        "{}",
        all[1].1
    );
    assert_eq!(all[2].0, 10);
    assert!(
        all[2]
            .1
            .contains("max_output \"lots\": expected a byte count"),
        "{}",
        all[2].1
    );
}

#[test]
fn durations_must_be_strings() {
    let (line, msg) = problem("[defaults]\n\nttl = 60\n");
    assert_eq!(line, 3);
    assert_eq!(
        msg,
        r#"[defaults]: ttl 60: expected a duration like "90s", "15m", "1h""#
    );
}

#[test]
fn durations_are_bounded() {
    let (line, msg) = problem("[defaults]\nttl = \"1h\"\nmax_stale = \"200years\"\n");
    assert_eq!(line, 3);
    assert!(
        msg.contains("max_stale \"200years\": must be at most 100 years"),
        "{msg}"
    );
}

#[test]
fn sizes_must_be_positive() {
    let (line, msg) = problem("[defaults]\nmax_output = 0\n");
    assert_eq!(line, 2);
    assert!(
        msg.contains("max_output 0: must be more than zero"),
        "{msg}"
    );
    assert!(parse("[defaults]\nmax_output = \"2 GiB\"\n").is_ok());
}

#[test]
fn backoff_base_may_not_exceed_the_cap() {
    let (line, msg) = problem("[defaults]\nbackoff_cap = \"1m\"\nbackoff_base = \"2m\"\n");
    assert_eq!(line, 3);
    assert!(
        msg.contains("backoff_base 2m is longer than backoff_cap 1m"),
        "{msg}"
    );
    // A source that raises the base over the default cap of 1h.
    let text = "[[source]]\nid = \"a/b\"\nfile = \"/x\"\nbackoff_base = \"2h\"\n";
    assert_eq!(problem(text).0, 4);
}

#[test]
fn max_stale_may_not_be_shorter_than_ttl() {
    let (line, msg) = problem("[defaults]\nttl = \"1h\"\nmax_stale = \"30m\"\n");
    assert_eq!(line, 3);
    assert!(
        msg.contains("max_stale 30m is shorter than ttl 1h"),
        "{msg}"
    );
    // The default max_stale against a source's longer ttl: at the ttl.
    let text =
        "[defaults]\nmax_stale = \"1d\"\n[[source]]\nid = \"a/b\"\nfile = \"/x\"\nttl = \"2d\"\n";
    let (line, msg) = problem(text);
    assert_eq!(line, 6);
    assert!(
        msg.starts_with("source \"a/b\": max_stale 1day is shorter than ttl 2days"),
        "{msg}"
    );
}

#[test]
fn daemon_values_are_range_checked() {
    let text =
        "[daemon]\nmax_concurrent_refreshes = 0\nrefresh_ahead = 1.5\nshutdown_grace = \"0s\"\n";
    let all = problems(text);
    let lines: Vec<usize> = all.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 3, 4], "{all:?}");
    assert!(all[0].1.contains("at least 1"), "{}", all[0].1);
    assert!(all[1].1.contains("refresh_ahead 1.5"), "{}", all[1].1);
    assert_eq!(problem("[daemon]\nrefresh_ahead = 0.0\n").0, 2);
    assert_eq!(problem("[daemon]\nrefresh_ahead = \"0.5\"\n").0, 2);
    assert_eq!(
        parse("[daemon]\nrefresh_ahead = 1\n")
            .unwrap()
            .daemon
            .refresh_ahead,
        1.0
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let (line, msg) = problem("[defaults]\nttl = \"1h\"\nbroken = \n");
    assert_eq!(line, 3);
    assert!(msg.starts_with("invalid TOML: "), "{msg}");
    let (line, msg) = problem("[[source]]\nid = \"a/b\"\nid = \"a/c\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("duplicate"), "{msg}");
}

#[test]
fn source_must_be_an_array_of_tables() {
    let (line, msg) = problem("[source]\nid = \"a/b\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("[[source]]"), "{msg}");
}

#[test]
fn render_gives_one_origin_line_per_problem() {
    let text = "[defaults]\nttl = \"x\"\n\n[daemon]\nrefresh_ahead = 2.0\n";
    let err = Config::parse_with_env(text, "/etc/d.toml", None, &|_| None).unwrap_err();
    let rendered = err.render();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 2, "{rendered}");
    assert!(
        lines[0].starts_with("/etc/d.toml:2: [defaults]: ttl \"x\""),
        "{rendered}"
    );
    assert!(
        lines[1].starts_with("/etc/d.toml:5: [daemon]: refresh_ahead 2.0"),
        "{rendered}"
    );
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn load_resolves_relative_files_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[[source]]\nid = \"a/b\"\nfile = \"data/x.json\"\n").unwrap();
    let config = Config::load(&path).unwrap();
    let Refresher::File(file) = &config.sources[0].refresher else {
        panic!()
    };
    assert_eq!(file.path, dir.path().join("data/x.json"));
    assert_eq!(config.origin, path.display().to_string());

    let missing = dir.path().join("nope.toml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(err.problems[0].line, None);
    assert!(
        err.render()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );
}

#[test]
fn prune_runs_only_against_a_config_file_and_keeps_disabled_sources() {
    let refused = Config::embedded().prune_set().unwrap_err();
    assert_eq!(refused, PruneRefused::NoFile);
    assert!(
        refused.to_string().contains("embedded default"),
        "{refused}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = "[[source]]\nid = \"a/b\"\ncommand = [\"true\"]\n[[source]]\nid = \"a/c\"\nhttp = { url = \"https://x/${DISCOCACHE_SURELY_UNSET_VAR}\" }\n";
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.file.as_deref(), Some(path.as_path()));
    let active: Vec<String> = config
        .prune_set()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(active, ["a/b", "a/c"]);
    std::fs::write(&path, "").unwrap();
    let empty = Config::load(&path).unwrap().prune_set().unwrap_err();
    assert!(matches!(empty, PruneRefused::NoSources(_)), "{empty}");
}

#[test]
fn metrics_listen_takes_a_loopback_address_only() {
    let config = parse("[daemon]\nmetrics_listen = \"127.0.0.1:9464\"\noffline = true\n").unwrap();
    assert_eq!(
        config.daemon.metrics_listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert!(config.daemon.offline);
    let (line, message) = problem("[daemon]\nmetrics_listen = \"0.0.0.0:9464\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("not a loopback address"), "{message}");
    let (_, message) = problem("[daemon]\nmetrics_listen = \"localhost\"\n");
    assert!(message.contains("ip:port"), "{message}");
}
