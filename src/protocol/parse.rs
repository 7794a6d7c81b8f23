//! Turning a request line into a [`Request`] with serde, plus the checks
//! serde does not make: a key given twice, a missing `op`, a source name
//! that breaks the rule (`invalid_source`, not `bad_request`), and which
//! field a type error is about.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::{ErrorCode, WireError};
use super::request::{Rejected, Request};
use crate::source::SourceId;

/// Reads a line as a JSON object whose keys are all different.
///
/// # Errors
///
/// `bad_request` (with the `id`, when the line was an object) for malformed
/// JSON, a value that is not an object, or a key given twice.
pub(super) fn object(line: &str) -> Result<Map<String, Value>, Rejected> {
    match serde_json::from_str::<Unique>(line) {
        Ok(Unique(map)) => Ok(map),
        Err(e) => Err(not_an_object(line, &e)),
    }
}

/// Why `line` is not a request object (`duplicate` is what the strict parse
/// said).
fn not_an_object(line: &str, duplicate: &serde_json::Error) -> Rejected {
    let (id, message) = match serde_json::from_str::<Value>(line) {
        Err(e) => (None, format!("malformed JSON: {e}")),
        Ok(Value::Object(mut map)) => (map.remove("id"), duplicate.to_string()),
        Ok(other) => {
            let kind = kind(&other);
            (None, format!("a request must be a JSON object, got {kind}"))
        }
    };
    Rejected {
        id,
        error: WireError::bad_request(message),
    }
}

/// The request an object (its `id` taken out) stands for.
///
/// # Errors
///
/// The [`WireError`] to answer with, as listed on
/// [`parse_request`](super::parse_request).
pub(super) fn request(object: Map<String, Value>) -> Result<Request, WireError> {
    let op = match object.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(other) => {
            let kind = kind(other);
            let msg = format!("field `op` must be a string, got {kind}");
            return Err(WireError::bad_request(msg));
        }
        None => {
            let msg = format!("missing field `op` (one of {})", ops().join(", "));
            return Err(WireError::bad_request(msg));
        }
    };
    check_source_names(&object)?;
    let object = Value::Object(object);
    Request::deserialize(&object).map_err(|e| {
        if !ops().contains(&op.as_str()) {
            let msg = format!("unknown op {op:?}; expected one of {}", ops().join(", "));
            return WireError::new(ErrorCode::UnknownOp, msg);
        }
        match field_at_fault(&object) {
            Some(field) => WireError::bad_request(format!("op `{op}`: field `{field}`: {e}")),
            None => WireError::bad_request(format!("op `{op}`: {e}")),
        }
    })
}

/// Every op of the protocol, as serde knows them from [`Request`]'s
/// variants: asked for a tag that names no variant, serde lists them.
pub fn ops() -> &'static [&'static str] {
    let probe = de::value::MapDeserializer::<_, OpList>::new(std::iter::once(("op", "")));
    match Request::deserialize(probe) {
        Err(OpList(ops)) => ops,
        Ok(_) => &[],
    }
}

/// The error [`ops`] reads serde's list of variants from.
#[derive(Debug)]
struct OpList(&'static [&'static str]);

impl fmt::Display for OpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ops: {}", self.0.join(", "))
    }
}

impl std::error::Error for OpList {}

impl de::Error for OpList {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self(&[])
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Self(expected)
    }
}

/// A `source` or `sources` string that is not a valid name is answered
/// `invalid_source` with the rule it breaks.
fn check_source_names(object: &Map<String, Value>) -> Result<(), WireError> {
    let single = object.get("source").into_iter();
    let listed = match object.get("sources") {
        Some(Value::Array(list)) => list.iter(),
        _ => [].iter(),
    };
    for name in single.chain(listed).filter_map(Value::as_str) {
        SourceId::parse(name)?;
    }
    Ok(())
}

/// The field whose value has the wrong type, to name it in the error.
fn field_at_fault(object: &Value) -> Option<&str> {
    let fits = |name: &str, v: &Value| match name {
        "source" => SourceId::deserialize(v).is_ok(),
        "sources" => Option::<Vec<SourceId>>::deserialize(v).is_ok(),
        "refresh" => Option::<super::RefreshMode>::deserialize(v).is_ok(),
        "max_age_ms" => Option::<u64>::deserialize(v).is_ok(),
        "meta" | "dry_run" | "all" => Option::<bool>::deserialize(v).is_ok(),
        _ => true,
    };
    let map = object.as_object()?;
    map.iter()
        .find(|(name, v)| !fits(name, v))
        .map(|(name, _)| name.as_str())
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

/// A JSON object read with every key checked against the ones before it.
struct Unique(Map<String, Value>);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Unique, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                let msg = format!("field `{key}` is given more than once");
                return Err(de::Error::custom(msg));
            }
            let value = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Unique(map))
    }
}
