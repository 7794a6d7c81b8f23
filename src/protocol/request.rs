//! Requests: the typed [`Request`] (every op named once, as a variant) and
//! [`parse_request`], which turns one line into it or into the error to
//! answer with (see `parse`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::WireError;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The source to read.
    pub source: SourceId,
    /// Refresh behaviour; [`RefreshMode::IfStale`] when absent.
    #[serde(default, deserialize_with = "null_is_default")]
    pub refresh: RefreshMode,
    /// Data older than this counts as stale for `refresh`, even within its ttl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Also return the source's sidecar record under `meta`.
    #[serde(default, deserialize_with = "null_is_default")]
    pub meta: bool,
}

/// Which sources a `refresh` request names: `{"sources": [...]}` or
/// `{"all": true}` on the wire, exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TargetFields", into = "TargetFields")]
pub enum RefreshTarget {
    /// These sources (at least one).
    Sources(Vec<SourceId>),
    /// Every configured source.
    All,
}

/// The wire form of a [`RefreshTarget`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sources: Option<Vec<SourceId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
}

impl TryFrom<TargetFields> for RefreshTarget {
    type Error = String;

    fn try_from(f: TargetFields) -> Result<Self, String> {
        match (f.sources, f.all.unwrap_or(false)) {
            (Some(list), false) if list.is_empty() => Err("field `sources` is empty".into()),
            (Some(list), false) => Ok(Self::Sources(list)),
            (None, true) => Ok(Self::All),
            (Some(_), true) => Err("give either `sources` or `all: true`, not both".into()),
            (None, false) => Err("needs `sources` (a list of \"tier/name\") or `all: true`".into()),
        }
    }
}

impl From<RefreshTarget> for TargetFields {
    fn from(target: RefreshTarget) -> Self {
        match target {
            RefreshTarget::Sources(list) => Self {
                sources: Some(list),
                all: None,
            },
            RefreshTarget::All => Self {
                sources: None,
                all: Some(true),
            },
        }
    }
}

/// One request, tagged on `op`. Source names are validated [`SourceId`]s, so
/// a handler never sees a name that could escape the root.
///
/// Ops without fields are empty struct variants (`Hello {}`), so that a
/// field given to them is refused like any unknown field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Protocol and daemon version, and what the daemon serves.
    Hello {},
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
    Status {},
    /// Soft purge: mark stale, keep serving.
    Invalidate {
        /// The source.
        source: SourceId,
    },
    /// Stream events for these sources (`None`: all of them).
    Watch {
        /// The sources to watch, at least one when given.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "non_empty"
        )]
        sources: Option<Vec<SourceId>>,
    },
    /// Recover crash leftovers and remove sources not in the config.
    Prune {
        /// Report what would be removed without removing it.
        #[serde(default, deserialize_with = "null_is_default")]
        dry_run: bool,
    },
    /// The daemon's counters.
    Stats {},
    /// The counters in Prometheus text format.
    Metrics {},
    /// Reload the config.
    Reload {},
}

/// An optional field: absent and `null` both mean the default.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An optional list that, when given, names at least one source.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<SourceId>>, D::Error> {
    let list = Option::<Vec<SourceId>>::deserialize(d)?;
    if list.as_ref().is_some_and(Vec::is_empty) {
        return Err(serde::de::Error::custom("field `sources` is empty"));
    }
    Ok(list)
}

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
/// non-object, a repeated key, a missing `op`, a field of the wrong type, a
/// missing or unknown field; `unknown_op` for an `op` that names no op;
/// `invalid_source` for a source name that breaks the `tier/name` rule.
pub fn parse_request(line: &str) -> Result<Envelope, Rejected> {
    let mut object = super::parse::object(line)?;
    let id = object.remove("id");
    match super::parse::request(object) {
        Ok(request) => Ok(Envelope { id, request }),
        Err(error) => Err(Rejected { id, error }),
    }
}

#[cfg(test)]
mod tests;
