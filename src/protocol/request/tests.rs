use serde_json::json;

use super::*;
use crate::protocol::ErrorCode;
use crate::protocol::to_line;

fn id(s: &str) -> SourceId {
    SourceId::parse(s).expect("valid source")
}

fn parse_ok(line: &str) -> Envelope {
    parse_request(line).unwrap_or_else(|r| panic!("{line} rejected: {}", r.error))
}

fn rejected(line: &str) -> Rejected {
    match parse_request(line) {
        Ok(env) => panic!("{line} accepted as {env:?}"),
        Err(r) => r,
    }
}

/// Asserts the code and that the message mentions every `needle`.
fn assert_error(line: &str, code: ErrorCode, needles: &[&str]) -> Rejected {
    let r = rejected(line);
    assert_eq!(r.error.code, code, "{line}: {}", r.error);
    for needle in needles {
        assert!(r.error.message.contains(needle), "{line}: {}", r.error);
    }
    r
}

#[test]
fn every_op_round_trips_from_its_client_encoding() {
    let requests = [
        Request::Hello {},
        Request::Get(GetRequest {
            source: id("discovery/openrouter"),
            refresh: RefreshMode::WaitIfStale,
            max_age_ms: Some(5_000),
            meta: true,
        }),
        Request::Refresh(RefreshTarget::Sources(vec![id("a/b"), id("c/d")])),
        Request::Refresh(RefreshTarget::All),
        Request::State { source: id("a/b") },
        Request::Status {},
        Request::Invalidate { source: id("a/b") },
        Request::Watch { sources: None },
        Request::Watch {
            sources: Some(vec![id("a/b")]),
        },
        Request::Prune { dry_run: true },
        Request::Stats {},
        Request::Metrics {},
        Request::Reload {},
    ];
    let mut ops_seen = std::collections::BTreeSet::new();
    for (n, request) in requests.into_iter().enumerate() {
        let sent = Envelope::new(Some(json!(n)), request);
        let line = to_line(&sent).expect("serialise request");
        let back = parse_ok(line.trim_end());
        assert_eq!(back, sent, "{line}");
        let value: Value = serde_json::from_str(&line).expect("json");
        ops_seen.insert(value["op"].as_str().expect("op").to_owned());
    }
    let all_ops: std::collections::BTreeSet<_> = crate::protocol::ops()
        .iter()
        .map(|op| op.to_string())
        .collect();
    assert_eq!(ops_seen, all_ops);
}

#[test]
fn get_defaults_to_if_stale_without_max_age_or_meta() {
    let env = parse_ok(r#"{"op":"get","source":"discovery/x"}"#);
    assert_eq!(env.id, None);
    let Request::Get(get) = env.request else {
        panic!("not a get: {env:?}")
    };
    assert_eq!(get.refresh, RefreshMode::IfStale);
    assert_eq!((get.max_age_ms, get.meta), (None, false));
}

#[test]
fn escaped_keys_and_whitespace_read_as_in_any_json_map() {
    let line = " { \"o\\u0070\" : \"get\" ,\n \"source\": \"a/b\" } ";
    let env = parse_ok(line);
    let Request::Get(get) = env.request else {
        panic!("not a get: {env:?}")
    };
    assert_eq!(get.source, id("a/b"));
}

#[test]
fn duplicate_op_key_is_bad_request() {
    let r = assert_error(
        r#"{"op":"hello","op":"prune","id":4}"#,
        ErrorCode::BadRequest,
        &["`op`", "more than once"],
    );
    assert_eq!(r.id, Some(json!(4)));
    assert_error(
        r#"{"op":"get","source":"a/old","source":"a/b"}"#,
        ErrorCode::BadRequest,
        &["`source`"],
    );
    assert_error(
        r#"{"id":1,"op":"stats","\u0069d":2}"#,
        ErrorCode::BadRequest,
        &["`id`"],
    );
}

#[test]
fn refresh_modes_parse_by_their_snake_case_names() {
    for (name, mode) in [
        ("never", RefreshMode::Never),
        ("if_stale", RefreshMode::IfStale),
        ("wait_if_stale", RefreshMode::WaitIfStale),
        ("force", RefreshMode::Force),
    ] {
        let line = format!(r#"{{"op":"get","source":"a/b","refresh":"{name}"}}"#);
        let Request::Get(get) = parse_ok(&line).request else {
            panic!("not a get")
        };
        assert_eq!(get.refresh, mode);
    }
}

#[test]
fn null_optional_fields_mean_absent() {
    let env = parse_ok(r#"{"op":"prune","dry_run":null,"id":null}"#);
    assert_eq!(env.request, Request::Prune { dry_run: false });
    assert_eq!(env.id, Some(Value::Null));
}

#[test]
fn malformed_json_is_bad_request_with_position() {
    let r = assert_error(
        r#"{"op":"get","id":3"#,
        ErrorCode::BadRequest,
        &["line 1 column"],
    );
    assert_eq!(r.id, None);
    assert_error("", ErrorCode::BadRequest, &["malformed JSON"]);
}

#[test]
fn non_object_is_bad_request() {
    assert_error(
        r#"["op","get"]"#,
        ErrorCode::BadRequest,
        &["object", "an array"],
    );
    assert_error("42", ErrorCode::BadRequest, &["a number"]);
}

#[test]
fn missing_op_is_bad_request() {
    let r = assert_error(
        r#"{"id":"req-9"}"#,
        ErrorCode::BadRequest,
        &["missing", "`op`", "hello"],
    );
    assert_eq!(r.id, Some(json!("req-9")));
    assert_error("{}", ErrorCode::BadRequest, &["missing field `op`"]);
}

#[test]
fn unknown_op_names_the_op() {
    let r = assert_error(
        r#"{"op":"frobnicate","id":{"n":1}}"#,
        ErrorCode::UnknownOp,
        &["\"frobnicate\"", "hello"],
    );
    assert_eq!(r.id, Some(json!({"n": 1})));
}

#[test]
fn op_of_the_wrong_type_is_bad_request() {
    let r = assert_error(
        r#"{"op":7,"id":1}"#,
        ErrorCode::BadRequest,
        &["`op`", "a number"],
    );
    assert_eq!(r.id, Some(json!(1)));
}

#[test]
fn mistyped_fields_are_bad_request_naming_the_field() {
    for (line, field) in [
        (r#"{"op":"get","source":"a/b","refresh":5}"#, "`refresh`"),
        (
            r#"{"op":"get","source":"a/b","refresh":"sometimes"}"#,
            "`refresh`",
        ),
        (
            r#"{"op":"get","source":"a/b","max_age_ms":"1s"}"#,
            "`max_age_ms`",
        ),
        (
            r#"{"op":"get","source":"a/b","max_age_ms":-1}"#,
            "`max_age_ms`",
        ),
        (r#"{"op":"get","source":"a/b","meta":"yes"}"#, "`meta`"),
        (r#"{"op":"get","source":["a/b"]}"#, "`source`"),
        (r#"{"op":"prune","dry_run":1}"#, "`dry_run`"),
        (r#"{"op":"refresh","all":"true"}"#, "`all`"),
        (r#"{"op":"watch","sources":"a/b"}"#, "`sources`"),
    ] {
        let r = assert_error(line, ErrorCode::BadRequest, &[field]);
        assert_eq!(r.id, None, "{line}");
    }
}

#[test]
fn unknown_fields_are_bad_request_naming_the_field() {
    let r = assert_error(
        r#"{"op":"get","sourc":"a/b","id":5}"#,
        ErrorCode::BadRequest,
        &["unknown field `sourc`", "`source`"],
    );
    assert_eq!(r.id, Some(json!(5)));
    assert_error(
        r#"{"op":"hello","verbose":true}"#,
        ErrorCode::BadRequest,
        &["`verbose`", "no fields"],
    );
}

#[test]
fn missing_source_is_bad_request() {
    assert_error(
        r#"{"op":"state"}"#,
        ErrorCode::BadRequest,
        &["missing field `source`"],
    );
    assert_error(
        r#"{"op":"get","source":null}"#,
        ErrorCode::BadRequest,
        &["`source`"],
    );
}

#[test]
fn bad_source_names_are_invalid_source_with_the_reason() {
    let expected = SourceId::parse("Discovery/x").expect_err("bad").to_string();
    let r = assert_error(
        r#"{"op":"get","source":"Discovery/x","id":"g"}"#,
        ErrorCode::InvalidSource,
        &[&expected],
    );
    assert_eq!(r.id, Some(json!("g")));
    for line in [
        r#"{"op":"invalidate","source":"../etc"}"#,
        r#"{"op":"state","source":"a/b/c"}"#,
        r#"{"op":"refresh","sources":["a/b","a/.."]}"#,
        r#"{"op":"watch","sources":[""]}"#,
    ] {
        assert_error(line, ErrorCode::InvalidSource, &["invalid source"]);
    }
}

#[test]
fn refresh_needs_exactly_one_target() {
    assert_error(
        r#"{"op":"refresh"}"#,
        ErrorCode::BadRequest,
        &["`sources`", "`all: true`"],
    );
    assert_error(
        r#"{"op":"refresh","all":false}"#,
        ErrorCode::BadRequest,
        &["`sources`"],
    );
    assert_error(
        r#"{"op":"refresh","all":true,"sources":["a/b"]}"#,
        ErrorCode::BadRequest,
        &["not both"],
    );
    assert_error(
        r#"{"op":"refresh","sources":[]}"#,
        ErrorCode::BadRequest,
        &["empty"],
    );
    assert_error(
        r#"{"op":"watch","sources":[]}"#,
        ErrorCode::BadRequest,
        &["empty"],
    );
    let env = parse_ok(r#"{"op":"refresh","sources":["a/b"],"all":false}"#);
    assert_eq!(
        env.request,
        Request::Refresh(RefreshTarget::Sources(vec![id("a/b")]))
    );
}

#[test]
fn rejection_becomes_a_failure_line_echoing_the_id() {
    let line = to_line(&rejected(r#"{"op":"nope","id":[1,2]}"#).into_response()).expect("line");
    let v: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["id"], json!([1, 2]));
    assert_eq!(v["error"]["code"], "unknown_op");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("nope")
    );
}
