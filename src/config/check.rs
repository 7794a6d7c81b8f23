//! Validation of the raw tables into policies, daemon settings and
//! refreshers. Every problem is recorded with its line; checking goes on
//! after a problem so that one run reports them all.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use humantime::format_duration;
use toml::{Spanned, Value};

use super::raw::{Field, RawDaemon, RawPolicy};
use super::value::{DURATION_HINT, SIZE_HINT, line_of};
use super::{DaemonSettings, Problem};
use crate::refresher::DEFAULT_MAX_OUTPUT;
use crate::source::Policy;

/// Longest accepted duration, so that adding one to a timestamp cannot
/// overflow anywhere downstream.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A resolved policy plus the output cap, as `[defaults]` gives it to sources.
#[derive(Debug, Clone)]
pub(super) struct Base {
    pub policy: Policy,
    pub max_output: usize,
}

impl Default for Base {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }
}

/// Collects problems against one config text.
pub(super) struct Checker<'a> {
    text: &'a str,
    /// Everything found so far.
    pub problems: Vec<Problem>,
    /// `${VAR}` lookup for header values.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Where relative `file` paths resolve.
    pub base_dir: Option<&'a Path>,
    /// Unset `${VAR}`s and unusable seeds: not problems of the config
    /// (their sources are disabled, or go without a seed), but `config
    /// check` reports them.
    pub unset: Vec<Problem>,
    /// Why the source being checked is disabled, if it is.
    pub disabled: Option<String>,
}

impl<'a> Checker<'a> {
    pub fn new(
        text: &'a str,
        env: &'a dyn Fn(&str) -> Option<String>,
        base_dir: Option<&'a Path>,
    ) -> Self {
        Self {
            text,
            problems: Vec::new(),
            env,
            base_dir,
            unset: Vec::new(),
            disabled: None,
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// Records a problem at `span`, prefixed with its scope.
    pub fn report(&mut self, span: &Range<usize>, scope: &str, message: impl Display) {
        self.note(span, format!("{scope}: {message}"));
    }

    /// Records an unset variable at `span`: the source is disabled with
    /// `why` as the reason, and `config check` reports it.
    pub fn unset_var(&mut self, span: &Range<usize>, scope: &str, why: String) {
        self.disabled.get_or_insert_with(|| why.clone());
        self.unset.push(Problem {
            line: Some(self.line(span.start)),
            message: format!("{scope}: {why}"),
        });
    }

    /// Records a problem at `span` as it is worded.
    pub fn note(&mut self, span: &Range<usize>, message: String) {
        self.problems.push(Problem {
            line: Some(self.line(span.start)),
            message,
        });
    }

    /// A duration key: `Ok(None)` when absent, `Err(())` when reported bad.
    pub fn duration(
        &mut self,
        scope: &str,
        key: &str,
        field: &Field,
    ) -> Result<Option<Duration>, ()> {
        let Some(field) = field else { return Ok(None) };
        let parsed = match field.get_ref() {
            Value::String(s) => super::value::duration(s),
            _ => None,
        };
        let why = match parsed {
            Some(d) if d.is_zero() => "must be more than zero",
            Some(d) if d > MAX_DURATION => "must be at most 100 years",
            Some(d) => return Ok(Some(d)),
            None => DURATION_HINT,
        };
        self.bad(field, scope, format!("{key} {}: {why}", field.get_ref()))
    }

    /// A byte-size key (integer or `"32MiB"`), more than zero.
    pub fn size(&mut self, scope: &str, key: &str, field: &Field) -> Result<Option<usize>, ()> {
        let Some(field) = field else { return Ok(None) };
        let parsed = match field.get_ref() {
            Value::Integer(n) => u64::try_from(*n).ok(),
            Value::String(s) => super::value::size(s),
            _ => None,
        };
        let why = match parsed.map(usize::try_from) {
            Some(Ok(0)) => "must be more than zero",
            Some(Ok(n)) => return Ok(Some(n)),
            Some(Err(_)) => "is too large for this machine",
            None => SIZE_HINT,
        };
        self.bad(field, scope, format!("{key} {}: {why}", field.get_ref()))
    }

    /// Reports at a field and fails.
    pub fn bad<T>(
        &mut self,
        field: &Spanned<Value>,
        scope: &str,
        message: String,
    ) -> Result<T, ()> {
        self.report(&field.span(), scope, message);
        Err(())
    }

    /// Resolves policy keys over `base`, checking each and their relations.
    /// Relations are checked only when this table sets one of their keys, so
    /// a bad `[defaults]` is reported once, not once per source.
    pub fn policy(&mut self, scope: &str, raw: &RawPolicy, base: &Base) -> Result<Base, ()> {
        let ttl = self.duration(scope, "ttl", &raw.ttl);
        let deadline = self.duration(scope, "refresh_deadline", &raw.refresh_deadline);
        let max_stale = self.duration(scope, "max_stale", &raw.max_stale);
        let backoff_base = self.duration(scope, "backoff_base", &raw.backoff_base);
        let backoff_cap = self.duration(scope, "backoff_cap", &raw.backoff_cap);
        let max_output = self.size(scope, "max_output", &raw.max_output);
        let guard = self.guard(scope, &raw.guard, base.policy.guard);
        let b = &base.policy;
        let max_output = max_output?.unwrap_or(base.max_output);
        let resolved = Base {
            policy: Policy {
                ttl: ttl?.unwrap_or(b.ttl),
                refresh_deadline: deadline?.unwrap_or(b.refresh_deadline),
                max_stale: max_stale?.or(b.max_stale),
                backoff_base: backoff_base?.unwrap_or(b.backoff_base),
                backoff_cap: backoff_cap?.unwrap_or(b.backoff_cap),
                max_output,
                guard: guard?,
                ..Policy::default()
            },
            max_output,
        };
        self.relations(scope, raw, &resolved.policy)?;
        Ok(resolved)
    }

    fn relations(&mut self, scope: &str, raw: &RawPolicy, p: &Policy) -> Result<(), ()> {
        let mut ok = true;
        if let Some(at) = raw.backoff_base.as_ref().or(raw.backoff_cap.as_ref())
            && p.backoff_base > p.backoff_cap
        {
            let msg = format!(
                "backoff_base {} is longer than backoff_cap {}",
                format_duration(p.backoff_base),
                format_duration(p.backoff_cap)
            );
            self.report(&at.span(), scope, msg);
            ok = false;
        }
        if let (Some(max_stale), Some(at)) =
            (p.max_stale, raw.max_stale.as_ref().or(raw.ttl.as_ref()))
            && max_stale < p.ttl
        {
            let msg = format!(
                "max_stale {} is shorter than ttl {}",
                format_duration(max_stale),
                format_duration(p.ttl)
            );
            self.report(&at.span(), scope, msg);
            ok = false;
        }
        if ok { Ok(()) } else { Err(()) }
    }

    /// Resolves `[daemon]` over the built-in settings.
    pub fn daemon(&mut self, raw: &RawDaemon) -> Result<DaemonSettings, ()> {
        const SCOPE: &str = "[daemon]";
        let d = DaemonSettings::default();
        let concurrent = self.concurrency(SCOPE, &raw.max_concurrent_refreshes);
        let ahead = self.fraction(SCOPE, "refresh_ahead", &raw.refresh_ahead);
        let grace = self.duration(SCOPE, "shutdown_grace", &raw.shutdown_grace);
        let reconcile = self.duration(SCOPE, "reconcile_interval", &raw.reconcile_interval);
        let listen = self.loopback(SCOPE, "metrics_listen", &raw.metrics_listen);
        let offline = self.flag(SCOPE, "offline", &raw.offline);
        Ok(DaemonSettings {
            max_concurrent_refreshes: concurrent?.unwrap_or(d.max_concurrent_refreshes),
            refresh_ahead: ahead?.unwrap_or(d.refresh_ahead),
            shutdown_grace: grace?.unwrap_or(d.shutdown_grace),
            reconcile_interval: reconcile?.unwrap_or(d.reconcile_interval),
            metrics_listen: listen?,
            offline: offline?.unwrap_or(d.offline),
        })
    }

    /// A `"host:port"` key whose host is a loopback IP address. Anything
    /// else is refused: the metrics name every source, and the endpoint has
    /// no authentication, so it is not offered to other machines.
    fn loopback(
        &mut self,
        scope: &str,
        key: &str,
        field: &Field,
    ) -> Result<Option<SocketAddr>, ()> {
        let Some(field) = field else { return Ok(None) };
        let parsed = match field.get_ref() {
            Value::String(s) => s.parse::<SocketAddr>().ok(),
            _ => None,
        };
        let why = match parsed {
            Some(addr) if addr.ip().is_loopback() => return Ok(Some(addr)),
            Some(_) => {
                "is not a loopback address (only 127.0.0.0/8 or [::1] are served; put a proxy in front to expose it)"
            }
            None => "expected \"ip:port\", e.g. \"127.0.0.1:9464\"",
        };
        self.bad(field, scope, format!("{key} {}: {why}", field.get_ref()))
    }

    /// A boolean key.
    pub fn flag(&mut self, scope: &str, key: &str, field: &Field) -> Result<Option<bool>, ()> {
        let Some(field) = field else { return Ok(None) };
        match field.get_ref() {
            Value::Boolean(b) => Ok(Some(*b)),
            other => self.bad(
                field,
                scope,
                format!("{key} {other}: expected true or false"),
            ),
        }
    }

    fn concurrency(&mut self, scope: &str, field: &Field) -> Result<Option<usize>, ()> {
        let Some(field) = field else { return Ok(None) };
        match field.get_ref() {
            Value::Integer(n) if *n >= 1 => Ok(Some(usize::try_from(*n).unwrap_or(usize::MAX))),
            other => self.bad(
                field,
                scope,
                format!("max_concurrent_refreshes {other}: expected a whole number of at least 1"),
            ),
        }
    }

    fn fraction(&mut self, scope: &str, key: &str, field: &Field) -> Result<Option<f64>, ()> {
        let Some(field) = field else { return Ok(None) };
        let value = match field.get_ref() {
            Value::Float(x) => Some(*x),
            Value::Integer(n) => Some(*n as f64),
            _ => None,
        };
        match value {
            Some(x) if x > 0.0 && x <= 1.0 => Ok(Some(x)),
            _ => self.bad(
                field,
                scope,
                format!("{key} {}: expected a fraction of the ttl, more than 0 and at most 1 (e.g. 0.8)", field.get_ref()),
            ),
        }
    }
}
