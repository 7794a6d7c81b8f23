//! The config as written: serde structs that reject unknown keys and keep
//! every value with its byte span, so each problem can name its line.
//!
//! Leaf values stay [`toml::Value`]s: [`super::check`] checks their types
//! itself, so one wrong value does not hide the problems of its neighbours.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::{Spanned, Value};

/// An optional leaf key with its span.
pub(super) type Field = Option<Spanned<Value>>;

/// `[defaults]`: the policy keys a source may override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub ttl: Field,
    pub refresh_deadline: Field,
    pub max_stale: Field,
    pub backoff_base: Field,
    pub backoff_cap: Field,
    pub max_output: Field,
    pub guard: Field,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub max_concurrent_refreshes: Field,
    pub refresh_ahead: Field,
    pub shutdown_grace: Field,
    pub reconcile_interval: Field,
    pub metrics_listen: Field,
    pub offline: Field,
}

/// One `[[source]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub id: Field,
    pub ttl: Field,
    pub refresh_deadline: Field,
    pub max_stale: Field,
    pub backoff_base: Field,
    pub backoff_cap: Field,
    pub max_output: Field,
    pub guard: Field,
    pub command: Field,
    pub pty: Field,
    pub http: Option<Spanned<RawHttp>>,
    pub file: Field,
    pub seed: Field,
    pub shared: Field,
    pub on_down: Field,
}

impl RawSource {
    /// The policy keys of this source.
    pub fn policy(&self) -> RawPolicy {
        RawPolicy {
            ttl: self.ttl.clone(),
            refresh_deadline: self.refresh_deadline.clone(),
            max_stale: self.max_stale.clone(),
            backoff_base: self.backoff_base.clone(),
            backoff_cap: self.backoff_cap.clone(),
            max_output: self.max_output.clone(),
            guard: self.guard.clone(),
        }
    }
}

/// A source's `http = { ... }` table.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { url = \"https://...\" }"
)]
pub(super) struct RawHttp {
    pub url: Field,
    pub headers: Option<BTreeMap<String, Spanned<Value>>>,
    pub max_redirects: Field,
}

/// A serde failure on one table, located.
#[derive(Debug)]
pub(super) struct RawError {
    /// Where in the document.
    pub span: Range<usize>,
    /// One line, naming the key; never echoes a header value.
    pub message: String,
}

/// Deserializes one table of the document (`[defaults]`, `[daemon]` or one
/// `[[source]]`) into `T`.
///
/// # Errors
///
/// [`RawError`] for an unknown key or a value of the wrong shape.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    value: &Spanned<DeValue<'_>>,
) -> Result<T, RawError> {
    let whole = value.span();
    let DeValue::Table(table) = value.get_ref() else {
        return Err(RawError {
            span: whole,
            message: format!("expected a table, found {}", value.get_ref().type_str()),
        });
    };
    // The deserializer consumes what it is given: it gets a copy, and the
    // table itself stays to name the key of an error.
    T::deserialize(ValueDeserializer::from(value.clone())).map_err(|e| {
        let span = e.span().unwrap_or(whole);
        let path = key_path_at(table, span.start);
        RawError {
            message: describe(&path, e.message()),
            span,
        }
    })
}

/// Words a serde message so that it names its key and leaks no header value.
fn describe(path: &[String], message: &str) -> String {
    if path.len() >= 2 && path[0] == "http" && path[1] == "headers" {
        return "http.headers: expected a table of header names to string values".into();
    }
    let shown = if message.starts_with("unknown field") {
        &path[..path.len().saturating_sub(1)]
    } else {
        path
    };
    let message = message.replace("unknown field", "unknown key");
    if shown.is_empty() {
        message
    } else {
        format!("{}: {message}", shown.join("."))
    }
}

/// The dotted key path (`["http", "max_redirects"]`) whose key or value holds
/// byte `offset`, innermost last.
pub(super) fn key_path_at(table: &DeTable<'_>, offset: usize) -> Vec<String> {
    let mut path = Vec::new();
    let mut current = table;
    'descend: loop {
        for (key, value) in current {
            let hit = key.span().contains(&offset) || value.span().contains(&offset);
            if hit {
                path.push(key.get_ref().to_string());
                match value.get_ref() {
                    DeValue::Table(inner) => {
                        current = inner;
                        continue 'descend;
                    }
                    _ => break 'descend,
                }
            }
        }
        break;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_table(text: &str) -> Spanned<DeValue<'_>> {
        let doc = DeTable::parse(text).unwrap().into_inner();
        doc.into_iter().next().unwrap().1
    }

    #[test]
    fn unknown_key_is_named_with_its_span() {
        let text = "[defaults]\nttl = \"1h\"\ntll = \"2h\"\n";
        let err = decode::<RawPolicy>(&first_table(text)).unwrap_err();
        assert!(
            err.message.starts_with("unknown key `tll`"),
            "{}",
            err.message
        );
        assert_eq!(&text[err.span], "tll");
    }

    #[test]
    fn nested_unknown_key_names_its_parent() {
        let text = "[s]\nhttp = { url = \"https://x\", urll = 1 }\n";
        let err = decode::<RawSource>(&first_table(text)).unwrap_err();
        assert!(
            err.message.starts_with("http: unknown key `urll`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn header_shape_errors_do_not_echo_the_value() {
        let text = "[s]\nhttp = { url = \"https://x\", headers = \"Bearer sk-LITERAL\" }\n";
        let err = decode::<RawSource>(&first_table(text)).unwrap_err();
        assert!(
            err.message.starts_with("http.headers: expected a table"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("sk-LITERAL"));
    }

    #[test]
    fn a_non_table_is_refused() {
        let text = "defaults = 3\n";
        let err = decode::<RawPolicy>(&first_table(text)).unwrap_err();
        assert_eq!(err.message, "expected a table, found integer");
    }
}
