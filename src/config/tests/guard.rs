//! The `guard` key and the definition hash.

use super::*;

fn only_source(text: &str) -> SourceConfig {
    parse(text).expect("config parses").sources.remove(0)
}

#[test]
fn guard_keys_merge_over_defaults() {
    let c = only_source(
        r#"
[defaults]
guard = { max_shrink = 0.5 }
[[source]]
id = "a/b"
command = ["true"]
guard = { min_bytes = 10 }
"#,
    );
    let g = c.policy.guard;
    assert_eq!((g.min_bytes, g.max_shrink, g.enabled), (10, 0.5, true));
    let plain = only_source("[[source]]\nid = \"a/b\"\ncommand = [\"true\"]\n");
    assert_eq!(plain.policy.guard, crate::Guard::default());
    assert!((plain.policy.guard.max_shrink - crate::source::DEFAULT_MAX_SHRINK).abs() < 1e-9);
}

#[test]
fn bad_guard_values_are_clear_errors() {
    let src =
        |guard: &str| format!("[[source]]\nid = \"a/b\"\ncommand = [\"true\"]\nguard = {guard}\n");
    let (line, msg) = problem(&src("{ max_shrink = 1.5 }"));
    assert_eq!(line, 4);
    assert!(
        msg.contains("guard.max_shrink 1.5: expected a fraction from 0 to 1"),
        "{msg}"
    );
    let (_, msg) = problem(&src("{ min_bytes = -1 }"));
    assert!(msg.contains("guard.min_bytes -1"), "{msg}");
    let (_, msg) = problem(&src("{ max_shrnk = 0.5 }"));
    assert!(msg.contains("unknown key `max_shrnk`"), "{msg}");
    let (_, msg) = problem(&src("0.5"));
    assert!(
        msg.starts_with("source \"a/b\": guard 0.5: expected a table"),
        "{msg}"
    );
    let (line, msg) = problem("[defaults]\nguard = { max_shrink = \"half\" }\n");
    assert_eq!(line, 2);
    assert!(msg.starts_with("[defaults]: guard.max_shrink"), "{msg}");
}

fn http_definition(url: &str, headers: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let text = format!(
        "[[source]]\nid = \"a/b\"\nhttp = {{ url = \"{url}\", headers = {{ {headers} }} }}\n"
    );
    let config = Config::parse_with_env(&text, "t.toml", None, env).expect("parses");
    config.sources[0].policy.definition.clone().expect("hashed")
}

#[test]
fn definition_hash_follows_names_not_secret_values() {
    let key = |v: &'static str| move |_: &str| Some(v.to_owned());
    let auth = "Authorization = \"Bearer ${KEY}\"";
    let base = http_definition("https://x/models", auth, &key("one"));
    assert_eq!(base.len(), 64);
    // A rotated secret (a header value) does not change it.
    assert_eq!(base, http_definition("https://x/models", auth, &key("two")));
    let literal = "Authorization = \"Bearer other\"";
    assert_eq!(
        base,
        http_definition("https://x/models", literal, &key("one"))
    );
    // A header name, or the URL, does.
    let renamed = "X-Api-Key = \"Bearer ${KEY}\"";
    assert_ne!(
        base,
        http_definition("https://x/models", renamed, &key("one"))
    );
    assert_ne!(
        base,
        http_definition("https://x/v2/models", auth, &key("one"))
    );
    // A secret in the URL is hashed as written, unexpanded.
    let in_url = "https://x/models?key=${KEY}";
    assert_eq!(
        http_definition(in_url, auth, &key("one")),
        http_definition(in_url, auth, &key("two"))
    );
}

#[test]
fn definition_hash_follows_argv_pty_and_kind() {
    let hash = |text: &str| only_source(text).policy.definition.unwrap();
    let a = hash("[[source]]\nid = \"a/b\"\ncommand = [\"tool\", \"--json\"]\n");
    let b = hash("[[source]]\nid = \"a/b\"\ncommand = [\"tool\", \"--json\", \"-v\"]\n");
    let pty = hash("[[source]]\nid = \"a/b\"\ncommand = [\"tool\", \"--json\"]\npty = true\n");
    let ttl = hash("[[source]]\nid = \"a/b\"\nttl = \"5m\"\ncommand = [\"tool\", \"--json\"]\n");
    let file = hash("[[source]]\nid = \"a/b\"\nfile = \"tool\"\n");
    assert_ne!(a, b);
    assert_ne!(a, pty);
    assert_ne!(a, file);
    // Policy keys are not part of what the source is.
    assert_eq!(a, ttl);
}
