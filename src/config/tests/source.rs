//! `[[source]]` tables: refresher choice, ids, http and secrets.

use super::*;
use crate::refresher::http::Secret;

#[test]
fn a_source_needs_exactly_one_refresher() {
    let (line, msg) = problem("\n[[source]]\nid = \"a/b\"\nttl = \"1h\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("needs a refresher"), "{msg}");
    let text = "[[source]]\nid = \"a/b\"\ncommand = [\"x\"]\nfile = \"/x\"\n";
    let (line, msg) = problem(text);
    assert_eq!(line, 4);
    assert!(msg.contains("has both command and file"), "{msg}");
    // Reported at whichever comes second in the text.
    let text = "[[source]]\nid = \"a/b\"\nfile = \"/x\"\n[source.http]\nurl = \"https://x\"\n";
    let (line, msg) = problem(text);
    assert_eq!(line, 4);
    assert!(msg.contains("has both file and http"), "{msg}");
    let (line, msg) = problem("[[source]]\nid = \"a/b\"\nhttp = \"https://x\"\n");
    assert_eq!(line, 3);
    assert!(
        msg.ends_with("expected a table like { url = \"https://...\" }"),
        "{msg}"
    );
}

#[test]
fn pty_is_only_for_commands() {
    let text = "[[source]]\nid = \"a/b\"\nhttp = { url = \"https://x\" }\npty = false\n";
    let (line, msg) = problem(text);
    assert_eq!(line, 4);
    assert!(msg.contains("pty applies only to command sources"), "{msg}");
    let text = "[[source]]\nid = \"a/b\"\ncommand = [\"x\"]\npty = \"yes\"\n";
    assert_eq!(problem(text).0, 4);
}

#[test]
fn command_argv_must_be_a_non_empty_list_of_strings() {
    for argv in ["[]", "[\"\"]", "\"my-tool --json\"", "[\"x\", 1]"] {
        let text = format!("[[source]]\nid = \"a/b\"\n\ncommand = {argv}\n");
        let (line, msg) = problem(&text);
        assert_eq!(line, 4, "{argv}");
        assert!(msg.starts_with("source \"a/b\": command"), "{msg}");
    }
}

#[test]
fn duplicate_ids_are_reported_at_the_second() {
    let text = "[[source]]\nid = \"a/b\"\nfile = \"/x\"\n[[source]]\nid = \"a/b\"\nfile = \"/y\"\n";
    let (line, msg) = problem(text);
    assert_eq!(line, 5);
    assert_eq!(
        msg,
        "source \"a/b\": duplicate id (first defined on line 2)"
    );
}

#[test]
fn bad_or_missing_ids_name_the_source_by_position() {
    let text = "[[source]]\nid = \"a/b\"\nfile = \"/x\"\n[[source]]\nid = \"A/b\"\nfile = \"/y\"\n[[source]]\nfile = \"/z\"\n";
    let all = problems(text);
    assert_eq!(all[0].0, 5);
    assert!(
        all[0]
            .1
            .starts_with("source #2: id: invalid source \"A/b\""),
        "{}",
        all[0].1
    );
    assert_eq!(
        all[1],
        (
            7,
            "source #3: missing id (e.g. id = \"discovery/openrouter\")".into()
        )
    );
}

#[test]
fn http_url_and_redirects_are_checked() {
    let text = "[[source]]\nid = \"a/b\"\nhttp = { url = \"ftp://x\", max_redirects = -1 }\n";
    let all = problems(text);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|(l, _)| *l == 3));
    let (line, msg) = problem("[[source]]\nid = \"a/b\"\nhttp = { headers = {} }\n");
    assert_eq!(line, 3);
    assert!(msg.contains("http: missing url"), "{msg}");
}

#[test]
fn a_missing_variable_disables_its_source_and_check_names_it_but_not_the_header_content() {
    let text = r#"
[[source]]
id = "discovery/x"
http = { url = "https://x", headers = { Authorization = "Bearer sk-LITERAL ${NOT_SET}" } }

[[source]]
id = "discovery/y"
command = ["true"]
"#;
    let config = parse(text).expect("an unset variable only disables its source");
    let reason = "header Authorization: environment variable NOT_SET is not set";
    assert_eq!(config.sources[0].disabled.as_deref(), Some(reason));
    assert_eq!(config.sources[1].disabled, None);
    let Refresher::Http(http) = &config.sources[0].refresher else {
        panic!()
    };
    assert_eq!(http.disabled.as_deref(), Some(reason));
    let err = config.strict().unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    let (line, msg) = (err.problems[0].line, &err.problems[0].message);
    assert_eq!(line, Some(4));
    assert_eq!(
        msg,
        "source \"discovery/x\": header Authorization: environment variable NOT_SET is not set"
    );
    assert!(!err.to_string().contains("sk-LITERAL"));
    assert!(!err.render().contains("sk-LITERAL"));
}

#[test]
fn header_syntax_and_injection_are_refused() {
    let env = |name: &str| (name == "NL").then(|| "a\r\nX-Evil: 1".to_owned());
    let text = "[[source]]\nid = \"a/b\"\nhttp = { url = \"https://x\", headers = { A = \"$X\", B = \"${NL}\", \"C D\" = \"v\" } }\n";
    let err = Config::parse_with_env(text, "t", None, &env).unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    assert!(err.problems.iter().all(|p| p.line == Some(3)));
    assert!(!err.to_string().contains("X-Evil"), "{err}");
}

#[test]
fn variables_are_expanded_only_in_header_values() {
    let text = "[[source]]\nid = \"a/b\"\ncommand = [\"echo\", \"${API_KEY}\"]\n";
    let config = parse(text).unwrap();
    let Refresher::Command(cmd) = &config.sources[0].refresher else {
        panic!()
    };
    assert_eq!(cmd.argv[1], "${API_KEY}");
}

#[test]
fn secrets_never_reach_debug_or_errors() {
    let text = r#"
[[source]]
id = "discovery/x"
http = { url = "https://x", headers = { Authorization = "Bearer ${API_KEY}", X-Other = "${NOT_SET}" } }
"#;
    let err = parse(text).and_then(Config::strict).unwrap_err();
    for shown in [err.to_string(), err.render(), format!("{err:?}")] {
        assert!(!shown.contains("sk-SECRET"), "{shown}");
    }
    let good = text.replace(", X-Other = \"${NOT_SET}\"", "");
    let config = parse(&good).unwrap();
    let Refresher::Http(http) = &config.sources[0].refresher else {
        panic!()
    };
    assert_eq!(http.headers[0].1.expose(), "Bearer sk-SECRET");
    let shown = format!(
        "{config:?} {config:#?} {}",
        config.sources[0].refresher.describe()
    );
    assert!(!shown.contains("sk-SECRET"), "{shown}");
}

#[test]
fn variables_in_urls_are_expanded_and_their_values_kept() {
    let text = "[[source]]\nid = \"a/b\"\nhttp = { url = \"https://x/v1?key=${API_KEY}\" }\n";
    let config = parse(text).unwrap();
    let Refresher::Http(http) = &config.sources[0].refresher else {
        panic!()
    };
    assert_eq!(http.url, "https://x/v1?key=sk-SECRET");
    assert_eq!(http.url_secrets, vec![Secret::new("sk-SECRET")]);
    let shown = config.sources[0].refresher.describe();
    assert!(!shown.contains("sk-SECRET"), "{shown}");
    let unset = text.replace("API_KEY", "NOT_SET");
    let config = parse(&unset).unwrap();
    let why = config.sources[0].disabled.as_deref().unwrap();
    assert_eq!(why, "http.url: environment variable NOT_SET is not set");
    let bad = text.replace("https://x/v1", "${API_KEY}");
    let msg = parse(&bad).unwrap_err().to_string();
    assert!(
        !msg.contains("sk-SECRET") && msg.contains("expected an http"),
        "{msg}"
    );
}
