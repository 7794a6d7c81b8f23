use std::time::Duration;

use super::*;
use crate::store;

fn id() -> SourceId {
    SourceId::parse("t/x").expect("id")
}

fn attempts(revision: u64) -> Look {
    Look {
        payload: true,
        sidecar: true,
        attempts: Attempts {
            revision,
            ..Attempts::default()
        },
        marker: None,
    }
}

#[test]
fn a_stamp_changes_when_the_file_is_replaced_or_touched() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("x.json");
    assert_eq!(Stamp::probe(&path).expect("probe"), None);
    std::fs::write(&path, "[1]").expect("write");
    let first = Stamp::probe(&path).expect("probe").expect("stamp");
    assert_eq!(Stamp::probe(&path).expect("probe"), Some(first));
    let old = SystemTime::now() - Duration::from_secs(3600);
    store::touch(&path, old).expect("touch");
    let touched = Stamp::probe(&path).expect("probe").expect("stamp");
    assert_ne!(touched, first);
    let other = dir.path().join("y.json");
    std::fs::write(&other, "[1]").expect("write");
    std::fs::rename(&other, &path).expect("rename");
    let replaced = Stamp::probe(&path).expect("probe").expect("stamp");
    assert_ne!(replaced, touched);
}

#[test]
fn a_payload_is_loaded_on_one_line_and_garbage_is_corrupt() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("x.json");
    assert!(Held::load(&path, 1 << 20).expect("load").is_none());
    std::fs::write(&path, "{\n  \"a\": [1,\r\n 2]\n}\n").expect("write");
    let held = Held::load(&path, 1 << 20).expect("load").expect("held");
    assert!(
        !held.data.get().contains(['\n', '\r']),
        "{}",
        held.data.get()
    );
    let parsed: serde_json::Value = serde_json::from_str(held.data.get()).expect("json");
    assert_eq!(parsed, serde_json::json!({"a": [1, 2]}));
    assert_eq!(Some(held.stamp), Stamp::probe(&path).expect("probe"));
    std::fs::write(&path, "{\"a\": ").expect("write");
    let err = Held::load(&path, 1 << 20).expect_err("truncated JSON");
    assert!(err.to_string().contains("not one JSON value"), "{err}");
    std::fs::write(&path, [0xff, 0xfe]).expect("write");
    let err = Held::load(&path, 1 << 20).expect_err("not UTF-8");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn a_held_payload_serves_its_own_stamp_until_the_revision_moves() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("x.json");
    std::fs::write(&path, "[1]").expect("write");
    let view = View::default();
    assert_eq!(view.record(&id(), attempts(1)), None);
    let held = Arc::new(Held::load(&path, 1 << 20).expect("load").expect("held"));
    view.hold(&id(), &held);
    let stamp = held.stamp;
    assert!(view.held(&id(), stamp).is_some());
    std::fs::write(&path, "[22]").expect("write");
    let changed = Stamp::probe(&path).expect("probe").expect("stamp");
    assert!(view.held(&id(), changed).is_none(), "a new stamp misses");
    assert_eq!(view.record(&id(), attempts(1)), Some(attempts(1)));
    assert!(
        view.held(&id(), stamp).is_some(),
        "same revision: still held"
    );
    view.record(&id(), attempts(2));
    assert!(view.held(&id(), stamp).is_none(), "new revision: let go");
    assert_eq!(view.keys_by_tier().get("t"), Some(&1));
}

#[test]
fn holding_stays_within_the_budget_and_counts_what_it_lets_go() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("x.json");
    std::fs::write(&path, "[1, 2, 3]").expect("write");
    let held = Arc::new(Held::load(&path, 1 << 20).expect("load").expect("held"));
    let view = View::default();
    view.hold(&id(), &held);
    assert_eq!(view.held_bytes(), 0, "a source never looked at is not held");
    view.record(&id(), attempts(1));
    view.hold(&id(), &held);
    view.hold(&id(), &held);
    assert_eq!(view.held_bytes(), 9, "holding again replaces");
    view.record(&id(), attempts(2));
    assert_eq!(view.held_bytes(), 0, "a new revision lets go");
    lock(&view.inner).held_bytes = HOLD_BUDGET - 8;
    view.record(&id(), attempts(2));
    view.hold(&id(), &held);
    assert!(view.held(&id(), held.stamp).is_none(), "over the budget");
}

#[test]
fn key_counts_follow_payloads_coming_and_going() {
    let view = View::default();
    let other = SourceId::parse("t/other").expect("valid");
    view.record(&id(), attempts(1));
    view.record(&other, attempts(1));
    assert_eq!(view.keys_by_tier().get("t"), Some(&2));
    view.record(&id(), attempts(2));
    assert_eq!(view.keys_by_tier().get("t"), Some(&2), "a new revision");
    view.record(&id(), Look::default());
    assert_eq!(view.keys_by_tier().get("t"), Some(&1), "a payload removed");
    view.record(&other, Look::default());
    assert_eq!(view.keys_by_tier().get("t"), None, "none left");
    view.record(&other, attempts(3));
    assert_eq!(view.keys_by_tier().get("t"), Some(&1), "back");
}
