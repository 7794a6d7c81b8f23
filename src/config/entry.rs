//! One `[[source]]` table: its id, its policy over `[defaults]`, and exactly
//! one refresher (`command`, `http` or `file`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::{Spanned, Value};

use super::SourceConfig;
use super::check::{Base, Checker};
use super::raw::{Field, RawHttp, RawSource};
use super::value::{ExpandError, expand, expand_with_values, is_header_name};
use crate::refresher::command::CommandSpec;
use crate::refresher::file::FileSpec;
use crate::refresher::http::{HttpSpec, Secret};
use crate::refresher::{DEFAULT_MAX_OUTPUT, Refresher};
use crate::source::{Policy, SourceId};

/// Redirects followed when a source does not say.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// The id as written, when it is a string; used to name a source in
/// problems even before (or when) the rest of it fails.
pub(super) fn scope_of(index: usize, id: Option<&str>) -> String {
    match id.map(SourceId::parse) {
        Some(Ok(id)) => format!("source \"{id}\""),
        _ => format!("source #{}", index + 1),
    }
}

impl Checker<'_> {
    /// Checks one `[[source]]`; `span` is the table's own span and `scope`
    /// from [`scope_of`].
    pub fn source(
        &mut self,
        scope: &str,
        span: &Range<usize>,
        raw: &RawSource,
        base: &Base,
    ) -> Result<SourceConfig, ()> {
        self.disabled = None;
        let id = self.id(scope, span, &raw.id);
        let policy = self.policy(scope, &raw.policy(), base);
        let refresher = self.refresher(scope, span, raw, policy.as_ref().ok());
        let shared = self.shared_switch(scope, &raw.shared);
        let on_down = self.on_down(scope, &raw.on_down);
        let (policy, refresher, shared) = (policy?, refresher?, shared?);
        let definition = super::definition::hash(raw, &refresher);
        let seed = self.seed(scope, &raw.seed, policy.max_output);
        Ok(SourceConfig {
            id: id?,
            policy: Policy {
                definition: Some(definition),
                shared,
                ..policy.policy
            },
            refresher,
            disabled: self.disabled.take(),
            seed: seed?,
            shared,
            on_down: on_down?,
        })
    }

    fn id(&mut self, scope: &str, span: &Range<usize>, field: &Field) -> Result<SourceId, ()> {
        let Some(field) = field else {
            self.report(
                span,
                scope,
                "missing id (e.g. id = \"discovery/openrouter\")",
            );
            return Err(());
        };
        let Value::String(text) = field.get_ref() else {
            let msg = format!("id {}: expected a \"tier/name\" string", field.get_ref());
            return self.bad(field, scope, msg);
        };
        SourceId::parse(text).or_else(|e| self.bad(field, scope, format!("id: {e}")))
    }

    fn refresher(
        &mut self,
        scope: &str,
        span: &Range<usize>,
        raw: &RawSource,
        base: Option<&Base>,
    ) -> Result<Refresher, ()> {
        self.exactly_one_refresher(scope, span, raw)?;
        // A bad max_output was already reported with the policy; check the
        // refresher anyway so that its own problems show too.
        let cap = base.map_or(DEFAULT_MAX_OUTPUT, |b| b.max_output);
        if let Some(command) = &raw.command {
            self.command(scope, command, &raw.pty, cap)
                .map(Refresher::Command)
        } else if let Some(http) = &raw.http {
            self.http(scope, http, cap).map(Refresher::Http)
        } else if let Some(file) = &raw.file {
            self.file(scope, file, cap).map(Refresher::File)
        } else {
            Err(())
        }
    }

    /// Exactly one of `command`, `http` and `file`; `pty` only with `command`.
    fn exactly_one_refresher(
        &mut self,
        scope: &str,
        span: &Range<usize>,
        raw: &RawSource,
    ) -> Result<(), ()> {
        let mut given: Vec<(&str, Range<usize>)> = [
            ("command", raw.command.as_ref().map(Spanned::span)),
            ("http", raw.http.as_ref().map(Spanned::span)),
            ("file", raw.file.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(name, at)| at.map(|at| (name, at)))
        .collect();
        given.sort_by_key(|(_, at)| at.start);
        match (given.as_slice(), &raw.pty) {
            ([], _) => {
                let msg = "needs a refresher: one of command, http or file";
                self.report(span, scope, msg);
                Err(())
            }
            ([(first, _), (second, at), ..], _) => {
                let msg = format!("has both {first} and {second}; give exactly one refresher");
                self.report(at, scope, msg);
                Err(())
            }
            ([(kind, _)], Some(pty)) if *kind != "command" => {
                self.bad(pty, scope, "pty applies only to command sources".into())
            }
            ([_], _) => Ok(()),
        }
    }

    fn command(
        &mut self,
        scope: &str,
        field: &Spanned<Value>,
        pty: &Field,
        max_output: usize,
    ) -> Result<CommandSpec, ()> {
        let argv: Option<Vec<String>> = match field.get_ref() {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => None,
        };
        let argv = match argv {
            None => {
                let msg = "command: expected an array of strings (argv, no shell), e.g. [\"my-tool\", \"--json\"]";
                return self.bad(field, scope, msg.into());
            }
            Some(argv) if argv.first().is_none_or(String::is_empty) => {
                let msg = "command: the program (first element) is missing or empty";
                return self.bad(field, scope, msg.into());
            }
            Some(argv) => argv,
        };
        let pty = match pty {
            None => false,
            Some(f) => match f.get_ref() {
                Value::Boolean(b) => *b,
                other => return self.bad(f, scope, format!("pty {other}: expected true or false")),
            },
        };
        Ok(CommandSpec {
            argv,
            pty,
            max_output,
        })
    }

    fn file(
        &mut self,
        scope: &str,
        field: &Spanned<Value>,
        max_size: usize,
    ) -> Result<FileSpec, ()> {
        let path = self.path(scope, "file", field)?;
        Ok(FileSpec { path, max_size })
    }

    /// A non-empty path key (`file`, `seed`), relative to the config's
    /// directory unless absolute.
    pub(super) fn path(
        &mut self,
        scope: &str,
        key: &str,
        field: &Spanned<Value>,
    ) -> Result<PathBuf, ()> {
        let path = match field.get_ref() {
            Value::String(s) if !s.is_empty() => PathBuf::from(s),
            other => {
                return self.bad(
                    field,
                    scope,
                    format!("{key} {other}: expected a non-empty path"),
                );
            }
        };
        Ok(match self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        })
    }

    fn http(
        &mut self,
        scope: &str,
        raw: &Spanned<RawHttp>,
        max_body: usize,
    ) -> Result<HttpSpec, ()> {
        let http = raw.get_ref();
        let url = self.url(scope, &raw.span(), &http.url);
        let max_redirects = self.redirects(scope, &http.max_redirects);
        let headers = self.headers(scope, http.headers.as_ref());
        let (url, url_secrets) = url?;
        Ok(HttpSpec {
            url,
            headers: headers?,
            max_body,
            max_redirects: max_redirects?,
            url_secrets: url_secrets.into_iter().map(Secret::new).collect(),
            disabled: self.disabled.clone(),
        })
    }

    /// The URL with `${VAR}` expanded, and the values of those variables.
    /// With a variable unset the source is disabled and the URL kept as
    /// written (it is never fetched).
    fn url(
        &mut self,
        scope: &str,
        span: &Range<usize>,
        field: &Field,
    ) -> Result<(String, Vec<String>), ()> {
        let Some(field) = field else {
            self.report(span, scope, "http: missing url");
            return Err(());
        };
        let Value::String(written) = field.get_ref() else {
            let msg = format!(
                "http.url {}: expected an http:// or https:// URL",
                field.get_ref()
            );
            return self.bad(field, scope, msg);
        };
        let (url, values) = match expand_with_values(written, self.env) {
            Ok(expanded) => expanded,
            Err(e) => match unset_reason(&e) {
                Some(why) => {
                    self.unset_var(&field.span(), scope, format!("http.url: {why}"));
                    return Ok((written.clone(), Vec::new()));
                }
                None => return self.bad(field, scope, format!("http.url: {}", why_not(&e))),
            },
        };
        if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
            let msg = "http.url: contains a space or control character after expansion";
            return self.bad(field, scope, msg.into());
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            // Show the URL as written: an expanded one may hold a secret.
            let msg = format!("http.url {written:?}: expected an http:// or https:// URL");
            return self.bad(field, scope, msg);
        }
        Ok((url, values))
    }

    fn redirects(&mut self, scope: &str, field: &Field) -> Result<u32, ()> {
        let Some(field) = field else {
            return Ok(DEFAULT_MAX_REDIRECTS);
        };
        match field.get_ref() {
            Value::Integer(n) => u32::try_from(*n).ok(),
            _ => None,
        }
        .map_or_else(
            || {
                let msg = format!(
                    "http.max_redirects {}: expected a whole number, 0 or more",
                    field.get_ref()
                );
                self.bad(field, scope, msg)
            },
            Ok,
        )
    }

    fn headers(
        &mut self,
        scope: &str,
        headers: Option<&BTreeMap<String, Spanned<Value>>>,
    ) -> Result<Vec<(String, Secret)>, ()> {
        let mut out = Vec::new();
        let mut ok = true;
        for (name, value) in headers.into_iter().flatten() {
            match self.header(scope, name, value) {
                Ok(secret) => out.push((name.clone(), secret)),
                Err(()) => ok = false,
            }
        }
        if ok { Ok(out) } else { Err(()) }
    }

    /// One header; problems name the header and variable, never the value.
    fn header(&mut self, scope: &str, name: &str, value: &Spanned<Value>) -> Result<Secret, ()> {
        if !is_header_name(name) {
            return self.bad(
                value,
                scope,
                format!("header {name:?}: not a valid HTTP header name"),
            );
        }
        let Value::String(text) = value.get_ref() else {
            return self.bad(value, scope, format!("header {name}: expected a string"));
        };
        let why = match expand(text, self.env) {
            Ok(v) if v.contains(['\r', '\n', '\0']) => {
                "its value contains a line break or NUL after expansion".to_owned()
            }
            Ok(v) => return Ok(Secret::new(v)),
            Err(e) => match unset_reason(&e) {
                Some(why) => {
                    self.unset_var(&value.span(), scope, format!("header {name}: {why}"));
                    // Never sent: the source is disabled.
                    return Ok(Secret::new(String::new()));
                }
                None => why_not(&e),
            },
        };
        self.bad(value, scope, format!("header {name}: {why}"))
    }
}

/// Why a variable disables its source (unset or empty), or `None` for a
/// syntax error, which is a problem of the config.
fn unset_reason(e: &ExpandError) -> Option<String> {
    match e {
        ExpandError::Missing(var) => Some(format!("environment variable {var} is not set")),
        ExpandError::Empty(var) => Some(format!("environment variable {var} is set but empty")),
        ExpandError::Syntax(_) => None,
    }
}

/// An expansion error in words.
fn why_not(e: &ExpandError) -> String {
    match e {
        ExpandError::Syntax(why) => (*why).to_owned(),
        other => unset_reason(other).unwrap_or_default(),
    }
}
