use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::protocol::{Response, StatusBody};
use crate::source::SourceId;
use crate::stats::Status;

fn body(n: usize) -> StatusBody {
    let sources = (0..n)
        .map(|i| {
            let id = SourceId::parse(&format!("t/s{i}")).expect("id");
            let mut line = SourceStatus::blank(
                &id,
                Some(format!("file /d/{i}.json")),
                Duration::from_secs(60),
            );
            if i % 2 == 0 {
                line.payload(
                    std::time::SystemTime::UNIX_EPOCH,
                    Duration::from_secs(5),
                    (true, false),
                    None,
                );
                line.revision = i as u64;
            }
            line
        })
        .collect();
    StatusBody {
        daemon: Some(DaemonStatus {
            status: Status::Ready,
            version: "0.1.0".into(),
            pid: 42,
            root: PathBuf::from("/root"),
            socket: PathBuf::from("/root/s.sock"),
            config: "/c.toml".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            last_error: None,
            keys_total: 3,
            held_bytes: 0,
            offline: false,
        }),
        offline: false,
        format: 2,
        shared: None,
        sources,
    }
}

/// What the daemon sends, and what `status --json` printed from it before.
fn sent_and_expected(body: &StatusBody) -> (Vec<u8>, Vec<u8>) {
    let mut line = serde_json::to_vec(&Response::success(None, body)).expect("answer");
    line.push(b'\n');
    let mut expected = serde_json::to_vec_pretty(body).expect("pretty");
    expected.push(b'\n');
    (line, expected)
}

#[test]
fn a_streamed_status_prints_the_same_bytes_as_the_whole_body() {
    for n in [0, 1, 5] {
        let (line, expected) = sent_and_expected(&body(n));
        let mut out = Vec::new();
        print_answer(line.as_slice(), &mut out).expect("printed");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }
}

#[test]
fn a_streamed_status_keeps_the_shared_tiers_state() {
    let mut with_tier = body(2);
    with_tier.shared = Some(crate::protocol::SharedStatus {
        url: "redis://127.0.0.1:6379/0".into(),
        up: false,
        epoch: Some("ab12".into()),
        last_error: Some("connection refused".into()),
        commands: 4,
        seeded: 1,
    });
    let (line, expected) = sent_and_expected(&with_tier);
    let mut out = Vec::new();
    print_answer(line.as_slice(), &mut out).expect("printed");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("\"shared\""), "{out}");
    assert_eq!(out, String::from_utf8(expected).unwrap());
}

#[test]
fn an_error_answer_is_the_daemons_error_and_prints_nothing() {
    let line = br#"{"ok":false,"error":{"code":"internal","message":"boom"}}"#;
    let mut out = Vec::new();
    let err = print_answer(&line[..], &mut out).expect_err("an error");
    assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
    assert!(out.is_empty());
}

#[test]
fn an_answer_cut_before_the_sources_is_an_io_error_and_prints_nothing() {
    let (line, _) = sent_and_expected(&body(3));
    let cut = line
        .windows(9)
        .position(|w| w == b"\"sources\"")
        .expect("sources");
    let mut out = Vec::new();
    let err = print_answer(&line[..cut], &mut out).expect_err("cut");
    assert!(matches!(err, CallError::Io(_)), "{err}");
    assert!(out.is_empty());
}

#[test]
fn an_answer_cut_among_the_sources_is_not_an_io_error() {
    // An IO error would send the command direct, printing a second answer
    // after the part already printed.
    let (line, _) = sent_and_expected(&body(5));
    let mut out = Vec::new();
    let err = print_answer(&line[..line.len() - 40], &mut out).expect_err("cut");
    assert!(err.to_string().contains("broke off"), "{err}");
    assert!(!out.is_empty());
}
