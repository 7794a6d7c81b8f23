//! Responses, the bodies with a fixed shape (`hello`, `get`), the client's
//! view of a response ([`Reply`]) and watch [`Event`]s.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::{ErrorCode, WireError};
use super::{FORMAT, PROTOCOL_VERSION};
use crate::cache::RefreshState;
use crate::meta::Timestamp;
use crate::source::SourceId;

/// A free-form response body: fields flattened into the response object.
pub type Fields = Map<String, Value>;

/// One response line: `ok`, the echoed `id`, the `error` on failure, and the
/// body's fields flattened in beside them.
///
/// `B` is any serialisable struct or map; a body must not have fields named
/// `ok`, `id` or `error`. A [`GetBody`] keeps the payload verbatim.
#[derive(Debug, Clone, Serialize)]
pub struct Response<B = Fields> {
    /// True on success, false when `error` is set.
    pub ok: bool,
    /// The request's `id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Why the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    /// The op's fields.
    #[serde(flatten)]
    pub body: Option<B>,
}

impl<B: Serialize> Response<B> {
    /// A success carrying `body`.
    pub fn success(id: Option<Value>, body: B) -> Self {
        Self {
            ok: true,
            id,
            error: None,
            body: Some(body),
        }
    }
}

impl Response {
    /// A success with no fields yet; add them with [`Response::with`].
    pub fn ok(id: Option<Value>) -> Self {
        Self::success(id, Fields::new())
    }

    /// A failure: `{"ok": false, "id": ..., "error": {code, message}}`.
    pub fn failure(id: Option<Value>, error: WireError) -> Self {
        Self {
            ok: false,
            id,
            error: Some(error),
            body: None,
        }
    }

    /// Adds one field to the body (replacing a field of the same name).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.body
            .get_or_insert_with(Fields::new)
            .insert(key.into(), value.into());
        self
    }
}

/// The body of a `hello` response: the protocol and version, and what the
/// daemon serves, so that a client can tell whether it is the daemon it
/// wants (same root) before trusting its answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloBody {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The daemon's crate version.
    pub version: String,
    /// The cache root it serves (absolute).
    pub root: PathBuf,
    /// Its config file, or `None` when it runs the embedded default.
    pub config: Option<PathBuf>,
    /// The on-disk format it reads and writes ([`FORMAT`]).
    pub format: u32,
    /// The shared tier's state; absent without `[shared]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<super::SharedStatus>,
}

impl HelloBody {
    /// This build's protocol, version and format, serving `root` with
    /// `config`.
    pub fn current(root: PathBuf, config: Option<PathBuf>) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            root,
            config,
            format: FORMAT,
            shared: None,
        }
    }
}

/// The body of a `get` response. `data` is the payload's JSON embedded
/// verbatim (see [`embed_payload`]), except that line breaks, which can only
/// be insignificant whitespace there, go out as spaces (see
/// [`to_line`](super::to_line)). A client decodes the whole response line as a
/// `GetBody` to get those bytes back without re-serialising them.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetBody {
    /// The payload; absent when it is not served (expired, not asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Age of the payload in milliseconds.
    pub age_ms: u64,
    /// Younger than its ttl.
    pub fresh: bool,
    /// Past its ttl (or the request's `max_age_ms`).
    pub stale: bool,
    /// Past its `max_stale`.
    pub expired: bool,
    /// Dated (mtime or `fetched_at`) in the future beyond a small clock
    /// skew: its age is unknown, so it counts as stale and as older than any
    /// `--max-age`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub future: bool,
    /// Why it is not fresh ("definition changed", "older than ttl"...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    /// The payload's revision (+1 per committed payload).
    pub revision: u64,
    /// When the payload was fetched, RFC 3339 UTC (see [`timestamp`]).
    pub fetched_at: String,
    /// The source's refresh state (in flight, last error, next retry...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshState>,
    /// The sidecar record, when the request asked for `meta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// Wraps a payload's bytes for [`GetBody::data`] without re-serialising them.
///
/// # Errors
///
/// `internal` when the bytes are not UTF-8 or not one JSON value (a payload
/// on disk is always valid JSON, so this means it was damaged).
pub fn embed_payload(payload: Vec<u8>) -> Result<Box<RawValue>, WireError> {
    let internal = |why: String| WireError::new(ErrorCode::Internal, why);
    let text = String::from_utf8(payload)
        .map_err(|e| internal(format!("payload is not UTF-8: {}", e.utf8_error())))?;
    RawValue::from_string(text).map_err(|e| internal(format!("payload is not valid JSON: {e}")))
}

/// Formats a time as RFC 3339 UTC with milliseconds, as the protocol's
/// `fetched_at` and `at` fields carry it.
pub fn timestamp(at: SystemTime) -> String {
    Timestamp::from(at).to_string()
}

/// What happened to a watched source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new payload revision was committed.
    Committed,
    /// A refresh failed; the old payload stays.
    Failed,
    /// The source's files were removed (prune).
    Removed,
    /// The source was marked stale (invalidate).
    Invalidated,
}

/// One event line of a `watch` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// To which source.
    pub source: SourceId,
    /// The committed revision (for `committed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The refresh error (for `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it happened, RFC 3339 UTC.
    pub at: String,
}

impl Event {
    /// An event at `at` with no revision or error yet.
    pub fn new(event: EventKind, source: SourceId, at: SystemTime) -> Self {
        Self {
            event,
            source,
            revision: None,
            error: None,
            at: timestamp(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::to_line;

    fn line<B: Serialize>(response: &Response<B>) -> String {
        to_line(response).expect("serialise response")
    }

    fn get_body(data: &str) -> GetBody {
        GetBody {
            future: false,
            stale_reason: None,
            data: Some(embed_payload(data.as_bytes().to_vec()).expect("valid payload")),
            age_ms: 12,
            fresh: true,
            stale: false,
            expired: false,
            revision: 3,
            fetched_at: "2026-01-02T03:04:05.678Z".into(),
            refresh: None,
            meta: None,
        }
    }

    #[test]
    fn failure_has_ok_false_id_and_error() {
        let err = WireError::new(ErrorCode::Busy, "too many connections");
        let text = line(&Response::failure(Some(Value::from("r1")), err));
        assert_eq!(
            text,
            "{\"ok\":false,\"id\":\"r1\",\"error\":{\"code\":\"busy\",\"message\":\"too many connections\"}}\n"
        );
    }

    #[test]
    fn success_without_id_has_only_ok_and_fields() {
        let text = line(&Response::ok(None).with("text", "# HELP x\n"));
        assert_eq!(text, "{\"ok\":true,\"text\":\"# HELP x\\n\"}\n");
    }

    #[test]
    fn hello_body_carries_protocol_and_crate_version() {
        let body = HelloBody::current("/r".into(), None);
        let text = line(&Response::success(Some(7.into()), body));
        let v: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(v["ok"], true);
        assert_eq!(v["id"], 7);
        assert_eq!(v["protocol"], 1);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["root"], "/r");
        assert_eq!(v["config"], Value::Null);
        assert_eq!(v["format"], 2);
    }

    #[test]
    fn get_payload_is_embedded_byte_for_byte() {
        let payload = r#"{"b":1,  "a":[1.50,2]}"#;
        let text = line(&Response::success(Some(1.into()), get_body(payload)));
        let expected = format!("\"data\":{payload},");
        assert!(text.contains(&expected), "{text}");
        let back: GetBody = serde_json::from_str(&text).expect("decode get body");
        assert_eq!(back.data.expect("data").get(), payload);
        assert_eq!(back.revision, 3);
    }

    #[test]
    fn pretty_printed_payload_stays_on_one_line_and_means_the_same() {
        let payload = "{\r\n  \"models\": [\n    \"a\\nb\"\n  ]\n}";
        let text = line(&Response::success(None, get_body(payload)));
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let v: Value = serde_json::from_str(&text).expect("parse");
        let original: Value = serde_json::from_str(payload).expect("parse payload");
        assert_eq!(v["data"], original);
    }

    #[test]
    fn damaged_payload_is_internal() {
        let err = embed_payload(b"{\"a\":".to_vec()).expect_err("truncated");
        assert_eq!(err.code, ErrorCode::Internal);
        let err = embed_payload(vec![b'"', 0xff, b'"']).expect_err("not utf-8");
        assert!(err.message.contains("UTF-8"), "{}", err.message);
    }

    #[test]
    fn event_line_round_trips() {
        let source = SourceId::parse("discovery/openrouter").expect("valid");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let mut event = Event::new(EventKind::Committed, source, at);
        event.revision = Some(4);
        let text = to_line(&event).expect("serialise");
        assert_eq!(
            text,
            "{\"event\":\"committed\",\"source\":\"discovery/openrouter\",\"revision\":4,\"at\":\"1970-01-01T00:00:01.500Z\"}\n"
        );
        let back: Event = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, event);
    }
}
