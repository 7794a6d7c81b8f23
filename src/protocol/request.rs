//! Requests: the typed [`Request`] and [`parse_request`], which turns one
//! line into it or into the error to answer with.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::{ErrorCode, WireError};
use super::response::Response;
use crate::source::SourceId;

/// What a `get` does about refreshing before it answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshMode {
    /// Answer with what is on disk; never start a refresh.
    Never,
    /// Answer at once with what is on disk; if it is stale, start a
    /// background refresh (joining one in flight). The default: the daemon
    /// keeps sources warm, so a read should never wait.
    #[default]
    IfStale,
    /// If the data is stale (or missing), wait for a refresh, then answer.
    WaitIfStale,
    /// Refresh now (joining one in flight), wait, then answer.
    Force,
}

/// The fields of a `get` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetRequest {
    /// The source to read.
    pub source: SourceId,
    /// Refresh behaviour; [`RefreshMode::IfStale`] when absent.
    pub refresh: RefreshMode,
    /// Data older than this counts as stale for `refresh`, even within its ttl.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Also return the source's sidecar record under `meta`.
    pub meta: bool,
}

/// Which sources a `refresh` request names: `{"sources": [...]}` or
/// `{"all": true}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshTarget {
    /// These sources (at least one).
    Sources(Vec<SourceId>),
    /// Every configured source.
    All,
}

impl Serialize for RefreshTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Self::Sources(sources) => map.serialize_entry("sources", sources)?,
            Self::All => map.serialize_entry("all", &true)?,
        }
        map.end()
    }
}

/// One request, tagged on `op`. Source names are validated [`SourceId`]s, so
/// a handler never sees a name that could escape the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Protocol and daemon version.
    Hello,
    /// Read one source.
    Get(GetRequest),
    /// Refresh sources and wait for every outcome.
    Refresh(RefreshTarget),
    /// The refresh state of one source.
    State {
        /// The source.
        source: SourceId,
    },
    /// Every configured source with its freshness and state.
    Status,
    /// Soft purge: mark stale, keep serving.
    Invalidate {
        /// The source.
        source: SourceId,
    },
    /// Stream events for these sources (`None`: all of them).
    Watch {
        /// The sources to watch, at least one when given.
        #[serde(skip_serializing_if = "Option::is_none")]
        sources: Option<Vec<SourceId>>,
    },
    /// Recover crash leftovers and remove sources not in the config.
    Prune {
        /// Report what would be removed without removing it.
        dry_run: bool,
    },
    /// The daemon's counters.
    Stats,
    /// The counters in Prometheus text format.
    Metrics,
    /// Reload the config.
    Reload,
}

/// Every op and the fields it accepts besides `op` and `id`.
const OPS: &[(&str, &[&str])] = &[
    ("hello", &[]),
    ("get", &["source", "refresh", "max_age_ms", "meta"]),
    ("refresh", &["sources", "all"]),
    ("state", &["source"]),
    ("status", &[]),
    ("invalidate", &["source"]),
    ("watch", &["sources"]),
    ("prune", &["dry_run"]),
    ("stats", &[]),
    ("metrics", &[]),
    ("reload", &[]),
];

/// A parsed request line: the request and the `id` to echo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// The client's `id`, any JSON value, echoed in the response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

impl Envelope {
    /// A request with an optional id (what a client sends).
    pub fn new(id: Option<Value>, request: Request) -> Self {
        Self { id, request }
    }
}

/// A request line that could not be parsed: the error to answer with and the
/// `id` to echo (recovered whenever the line was a JSON object).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The client's `id`, if it could be read.
    pub id: Option<Value>,
    /// Why the request was rejected.
    pub error: WireError,
}

impl Rejected {
    /// The failure response for this rejection.
    pub fn into_response(self) -> Response {
        Response::failure(self.id, self.error)
    }
}

/// Parses one request line (without its newline).
///
/// # Errors
///
/// A [`Rejected`] carrying the `id` (when the line was an object) and:
/// `bad_request` for malformed JSON (with serde's line and column), a
/// non-object, a field of the wrong type, a missing or unknown field;
/// `unknown_op` for a missing or unknown `op`; `invalid_source` for a source
/// name that breaks the `tier/name` rule.
pub fn parse_request(line: &str) -> Result<Envelope, Rejected> {
    let reject = |id: Option<Value>, error| Rejected { id, error };
    let mut fields = match serde_json::from_str::<Raw<'_>>(line) {
        Ok(Raw(fields)) => Fields { op: "", fields },
        Err(_) => return Err(reject(None, not_an_object(line))),
    };
    let id = fields.take("id").map(value_of);
    match fields.into_request() {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(reject(id, error)),
    }
}

/// Why a line that is not a JSON object was rejected.
fn not_an_object(line: &str) -> WireError {
    match serde_json::from_str::<Value>(line) {
        Err(e) => WireError::bad_request(format!("malformed JSON: {e}")),
        Ok(value) => {
            let kind = kind(&value);
            WireError::bad_request(format!("a request must be a JSON object, got {kind}"))
        }
    }
}

/// A parsed value as a tree (for `id`, and to name a field's type).
fn value_of(raw: &RawValue) -> Value {
    // A RawValue is always valid JSON.
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// A request object's fields, in order, borrowed from the line: each value
/// stays unparsed until its op asks for it.
struct Raw<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Key(key)) = map.next_key()? {
            fields.push((key, map.next_value()?));
        }
        Ok(Raw(fields))
    }
}

/// An object key, borrowed unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

/// The `unknown_op` error, listing the ops there are.
fn unknown_op(what: &str) -> WireError {
    let ops: Vec<&str> = OPS.iter().map(|(name, _)| *name).collect();
    let msg = format!("{what}; expected one of {}", ops.join(", "));
    WireError::new(ErrorCode::UnknownOp, msg)
}

/// The JSON type of a value, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A request's fields (`id` taken out), each taken with its type checked
/// once the op is known and every field name is allowed for it.
struct Fields<'a> {
    /// The op, once read.
    op: &'a str,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Fields<'a> {
    /// Takes a field out; of repeated names the last counts, as in a map.
    fn take(&mut self, name: &str) -> Option<&'a RawValue> {
        let at = self.fields.iter().rposition(|(k, _)| k == name)?;
        let raw = self.fields[at].1;
        self.fields.retain(|(k, _)| k != name);
        Some(raw)
    }

    /// Reads `op` and checks every other field name against it.
    fn check_op(&mut self) -> Result<(), WireError> {
        let op = match self
            .take("op")
            .map(|raw| (raw, serde_json::from_str(raw.get())))
        {
            Some((_, Ok(op))) => op,
            Some((raw, Err(_))) => {
                let kind = kind(&value_of(raw));
                return Err(WireError::bad_request(format!(
                    "field `op` must be a string, got {kind}"
                )));
            }
            None => return Err(unknown_op("missing field `op`")),
        };
        let op: Cow<'_, str> = op;
        let Some((name, allowed)) = OPS.iter().find(|(name, _)| *name == op) else {
            return Err(unknown_op(&format!("unknown op {op:?}")));
        };
        self.op = name;
        if let Some((field, _)) = self.fields.iter().find(|(k, _)| !allowed.contains(&&**k)) {
            let expected = match allowed {
                [] => "it takes no fields".to_owned(),
                _ => format!("expected one of `{}`", allowed.join("`, `")),
            };
            let msg = format!("op `{op}`: unknown field `{field}` ({expected})");
            return Err(WireError::bad_request(msg));
        }
        Ok(())
    }

    fn into_request(mut self) -> Result<Request, WireError> {
        self.check_op()?;
        Ok(match self.op {
            "get" => Request::Get(GetRequest {
                source: self.source()?,
                refresh: self.optional("refresh")?.unwrap_or_default(),
                max_age_ms: self.optional("max_age_ms")?,
                meta: self.optional("meta")?.unwrap_or(false),
            }),
            "refresh" => Request::Refresh(self.refresh_target()?),
            "state" => Request::State {
                source: self.source()?,
            },
            "invalidate" => Request::Invalidate {
                source: self.source()?,
            },
            "watch" => Request::Watch {
                sources: self.sources()?,
            },
            "prune" => Request::Prune {
                dry_run: self.optional("dry_run")?.unwrap_or(false),
            },
            "status" => Request::Status,
            "stats" => Request::Stats,
            "metrics" => Request::Metrics,
            "reload" => Request::Reload,
            "hello" => Request::Hello,
            other => return Err(unknown_op(&format!("unknown op {other:?}"))),
        })
    }

    /// Takes a field; absent and `null` are both `None`.
    fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, WireError> {
        let Some(raw) = self.take(name) else {
            return Ok(None);
        };
        // Through a tree, so that a type error reads the same as in any
        // other JSON (serde's errors on text carry a line and column).
        match value_of(raw) {
            Value::Null => Ok(None),
            value => serde_json::from_value(value).map(Some).map_err(|e| {
                WireError::bad_request(format!("op `{}`: field `{name}`: {e}", self.op))
            }),
        }
    }

    /// Takes the required `source` field and validates it.
    fn source(&mut self) -> Result<SourceId, WireError> {
        let Some(name) = self.optional::<String>("source")? else {
            let msg = format!("op `{}` needs field `source` (\"tier/name\")", self.op);
            return Err(WireError::bad_request(msg));
        };
        Ok(SourceId::parse(&name)?)
    }

    /// Takes the optional `sources` list, validating every name; an empty
    /// list is an error, since it would name nothing.
    fn sources(&mut self) -> Result<Option<Vec<SourceId>>, WireError> {
        let Some(names) = self.optional::<Vec<String>>("sources")? else {
            return Ok(None);
        };
        if names.is_empty() {
            let msg = format!("op `{}`: field `sources` is empty", self.op);
            return Err(WireError::bad_request(msg));
        }
        let ids = names.iter().map(|name| SourceId::parse(name));
        Ok(Some(ids.collect::<Result<_, _>>()?))
    }

    /// `sources: [...]` or `all: true`, exactly one of them.
    fn refresh_target(&mut self) -> Result<RefreshTarget, WireError> {
        let sources = self.sources()?;
        let all = self.optional::<bool>("all")?.unwrap_or(false);
        match (sources, all) {
            (Some(sources), false) => Ok(RefreshTarget::Sources(sources)),
            (None, true) => Ok(RefreshTarget::All),
            (Some(_), true) => Err(WireError::bad_request(
                "op `refresh`: give either `sources` or `all: true`, not both",
            )),
            (None, false) => Err(WireError::bad_request(
                "op `refresh` needs `sources` (a list of \"tier/name\") or `all: true`",
            )),
        }
    }
}

#[cfg(test)]
mod tests;
