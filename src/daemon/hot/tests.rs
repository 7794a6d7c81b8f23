use serde_json::json;

use super::*;
use crate::protocol::to_line;

#[test]
fn the_pieces_and_an_age_make_the_line_the_usual_way_makes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("x.json");
    // A payload that itself holds the field the answer is cut at.
    std::fs::write(&path, "{\"age_ms\":0,\n \"fresh\": \"\\u00e9\"}").expect("write");
    let held = Arc::new(Held::load(&path).expect("load").expect("held"));
    let state = RefreshState {
        revision: 7,
        failed: true,
        consecutive_failures: 2,
        last_error: Some("exit 1: \"no\"\nsecond line".into()),
        ..RefreshState::default()
    };
    let hot = Hot::new(&held, state.clone()).expect("cut");
    for id in [None, Some(json!(1)), Some(json!({"a": ["x\ny", null]}))] {
        for age_ms in [0, 9, 86_399_999] {
            let body = GetBody {
                data: Some(held.data.clone()),
                age_ms,
                fresh: true,
                stale: false,
                expired: false,
                future: false,
                stale_reason: None,
                revision: 7,
                fetched_at: held.fetched_at.clone(),
                refresh: Some(state.clone()),
                meta: None,
            };
            let usual = to_line(&Response::success(id.clone(), body)).expect("line");
            let mut out = Vec::new();
            hot.write(id.as_ref(), age_ms, &mut out);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), usual);
        }
    }
}
