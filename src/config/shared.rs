//! The `[shared]` table and the per-source `shared` / `on_down` keys: where
//! the shared tier (Redis) is and what a source does while it is down.
//!
//! Without `[shared]` the config has no shared tier and nothing connects.
//! The URL's password usually comes from `${VAR}`; the expanded URL is kept
//! out of `Debug` and every message, which show [`SharedSettings::redacted_url`].
//! A `rediss://` URL connects with TLS, trusting the bundled web roots or,
//! with `ca_file`, only the CA certificates in that PEM file.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::Problem;
use super::check::Checker;
use super::raw::Field;
use super::value::expand_with_values;

/// The namespace when `[shared]` does not name one.
pub const DEFAULT_NAMESPACE: &str = "discocache";
/// How long connecting to the shared tier may take when not configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one command may take when not configured.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// What stands in for the password wherever the URL is shown.
const REDACTED: &str = "<redacted>";
/// Largest `ca_file` read: a bundle of CA certificates is far smaller.
const MAX_CA_FILE: u64 = 1 << 20;
/// What every PEM certificate starts with.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

pub use crate::source::OnDown;

/// `[shared]`: the Redis server the hosts share.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// `redis://` or `rediss://` URL with `${VAR}` expanded (may hold a
    /// password).
    url: String,
    /// Values expanded into the URL, redacted wherever it is shown.
    url_secrets: Vec<String>,
    /// Prefix of every key (`<namespace>:{tier/name}:lease`, ...).
    pub namespace: String,
    /// The default of each source's `on_down`.
    pub on_down: OnDown,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the answer to one command.
    pub command_timeout: Duration,
    /// PEM file of the CA certificates a `rediss://` server's certificate
    /// must chain to (instead of the bundled web roots); `None` for those.
    pub ca_file: Option<PathBuf>,
}

impl SharedSettings {
    /// Settings for `url` (taken as is, no `${VAR}`) with every default.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            url_secrets: Vec::new(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            on_down: OnDown::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            ca_file: None,
        }
    }

    /// The URL to connect to, password included: never show it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with its password and every `${VAR}` value replaced by
    /// `<redacted>`: the form for messages, logs and status.
    pub fn redacted_url(&self) -> String {
        redact(&self.url, &self.url_secrets)
    }

    /// The PEM bytes of `ca_file`, or `None` without one.
    ///
    /// # Errors
    ///
    /// A message naming the file and the cause when it cannot be read, is
    /// not a regular file, is over 1 MiB or holds no PEM certificate.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        self.ca_file.as_deref().map(read_ca_file).transpose()
    }
}

impl fmt::Debug for SharedSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSettings")
            .field("url", &self.redacted_url())
            .field("namespace", &self.namespace)
            .field("on_down", &self.on_down)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `url` with the password of its userinfo and each of `secrets` redacted.
fn redact(url: &str, secrets: &[String]) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority = rest.split('/').next().unwrap_or(rest);
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:{REDACTED}")
            } else {
                REDACTED.to_owned()
            };
            let tail = &rest[at..];
            shown = format!("{}{masked}{tail}", &url[..scheme_end + 3]);
        }
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        shown = shown.replace(secret.as_str(), REDACTED);
    }
    shown
}

/// The PEM bytes of a `ca_file`: a regular file (opened without blocking,
/// so a FIFO is refused rather than waited on) of at most 1 MiB holding at
/// least one certificate.
///
/// # Errors
///
/// A message naming `path` and the cause.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.len() > MAX_CA_FILE {
        return Err(format!("{shown}: larger than 1 MiB"));
    }
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{shown}: {e}"))?;
    if !pem
        .windows(PEM_CERTIFICATE.len())
        .any(|w| w == PEM_CERTIFICATE)
    {
        return Err(format!(
            "{shown}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        ));
    }
    Ok(pem)
}

/// `[shared]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    pub url: Field,
    pub namespace: Field,
    pub on_down: Field,
    pub connect_timeout: Field,
    pub command_timeout: Field,
    pub ca_file: Field,
}

impl Checker<'_> {
    /// Checks `[shared]`. `Ok(None)` when its URL uses an unset `${VAR}`:
    /// the tier is then off (reported by `config check`).
    pub fn shared(
        &mut self,
        span: &Range<usize>,
        raw: &RawShared,
    ) -> Result<Option<SharedSettings>, ()> {
        const SCOPE: &str = "[shared]";
        let url = self.shared_url(span, raw);
        let namespace = self.namespace(&raw.namespace);
        let on_down = self.on_down(SCOPE, &raw.on_down);
        let connect = self.duration(SCOPE, "connect_timeout", &raw.connect_timeout);
        let command = self.duration(SCOPE, "command_timeout", &raw.command_timeout);
        let ca_file = self.ca_file(raw, url.as_ref().ok().and_then(Option::as_ref));
        let Some((url, url_secrets)) = url? else {
            return Ok(None);
        };
        Ok(Some(SharedSettings {
            url,
            url_secrets,
            namespace: namespace?,
            on_down: on_down?.unwrap_or_default(),
            connect_timeout: connect?.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            command_timeout: command?.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
            ca_file: ca_file?,
        }))
    }

    /// `ca_file`, resolved against the config's directory: readable PEM,
    /// and only with a `rediss://` URL (`url` when it checked out).
    fn ca_file(
        &mut self,
        raw: &RawShared,
        url: Option<&(String, Vec<String>)>,
    ) -> Result<Option<PathBuf>, ()> {
        const SCOPE: &str = "[shared]";
        let Some(field) = &raw.ca_file else {
            return Ok(None);
        };
        let path = self.path(SCOPE, "ca_file", field)?;
        if let Some((url, _)) = url
            && !url.starts_with("rediss://")
        {
            let msg = "ca_file: only used with TLS; the url must start with rediss://";
            return self.bad(field, SCOPE, msg.into());
        }
        match read_ca_file(&path) {
            Ok(_) => Ok(Some(path)),
            Err(why) => self.bad(field, SCOPE, format!("ca_file {why}")),
        }
    }

    /// A source's (or `[shared]`'s) `on_down`.
    pub fn on_down(&mut self, scope: &str, field: &Field) -> Result<Option<OnDown>, ()> {
        let Some(field) = field else { return Ok(None) };
        match field.get_ref() {
            Value::String(s) if s == "local" => Ok(Some(OnDown::Local)),
            Value::String(s) if s == "hold" => Ok(Some(OnDown::Hold)),
            other => {
                let msg = format!("on_down {other}: expected \"local\" or \"hold\"");
                self.bad(field, scope, msg)
            }
        }
    }

    /// A source's `shared` switch; true when absent.
    pub fn shared_switch(&mut self, scope: &str, field: &Field) -> Result<bool, ()> {
        let Some(field) = field else { return Ok(true) };
        match field.get_ref() {
            Value::Boolean(b) => Ok(*b),
            other => self.bad(
                field,
                scope,
                format!("shared {other}: expected true or false"),
            ),
        }
    }

    fn namespace(&mut self, field: &Field) -> Result<String, ()> {
        let Some(field) = field else {
            return Ok(DEFAULT_NAMESPACE.to_owned());
        };
        match field.get_ref() {
            Value::String(s) if is_namespace(s) => Ok(s.clone()),
            other => {
                let msg =
                    format!("namespace {other}: expected 1 to 64 letters, digits, '_', '-' or '.'");
                self.bad(field, "[shared]", msg)
            }
        }
    }

    /// The URL, expanded; `Ok(None)` when a `${VAR}` in it is unset.
    fn shared_url(
        &mut self,
        span: &Range<usize>,
        raw: &RawShared,
    ) -> Result<Option<(String, Vec<String>)>, ()> {
        const SCOPE: &str = "[shared]";
        let Some(field) = &raw.url else {
            let msg = "missing url (e.g. url = \"redis://127.0.0.1:6379/0\")";
            self.report(span, SCOPE, msg);
            return Err(());
        };
        let Value::String(written) = field.get_ref() else {
            let msg = format!(
                "url {}: expected a redis:// or rediss:// URL",
                field.get_ref()
            );
            return self.bad(field, SCOPE, msg);
        };
        let (url, secrets) = match expand_with_values(written, self.env) {
            Ok(expanded) => expanded,
            Err(e) => return self.shared_url_unexpanded(field, written, &e),
        };
        let shown = redact(&url, &secrets);
        let host = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"));
        if host.is_none_or(str::is_empty) {
            let msg = format!("url {shown:?}: expected a redis:// or rediss:// URL");
            return self.bad(field, SCOPE, msg);
        }
        if url.contains('#') {
            let msg = format!(
                "url {shown:?}: a #fragment (such as #insecure) is not accepted; certificates are always verified (name a private CA with ca_file)"
            );
            return self.bad(field, SCOPE, msg);
        }
        if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
            let msg = "url: contains a space or control character after expansion";
            return self.bad(field, SCOPE, msg.into());
        }
        Ok(Some((url, secrets)))
    }

    /// An unset `${VAR}` turns the tier off (and `config check` says so);
    /// any other expansion problem is an error.
    fn shared_url_unexpanded(
        &mut self,
        field: &Spanned<Value>,
        written: &str,
        e: &super::value::ExpandError,
    ) -> Result<Option<(String, Vec<String>)>, ()> {
        use super::value::ExpandError;
        let why = match e {
            ExpandError::Missing(name) => format!("${{{name}}} is not set"),
            ExpandError::Empty(name) => format!("${{{name}}} is empty"),
            ExpandError::Syntax(how) => {
                return self.bad(field, "[shared]", format!("url {written:?}: {how}"));
            }
        };
        let line = Some(self.line(field.span().start));
        self.unset.push(Problem {
            line,
            message: format!("[shared]: url: {why}; the shared tier is off"),
        });
        Ok(None)
    }
}

fn is_namespace(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_redacted_in_the_shown_url() {
        let secrets = vec!["hunter22".to_owned()];
        assert_eq!(
            redact("redis://app:hunter22@h:6379/0", &secrets),
            "redis://app:<redacted>@h:6379/0"
        );
        assert_eq!(
            redact("redis://:pw@h:6379", &[]),
            "redis://:<redacted>@h:6379"
        );
        assert_eq!(redact("redis://tok@h", &[]), "redis://<redacted>@h");
        assert_eq!(redact("redis://h:6379/0", &[]), "redis://h:6379/0");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let settings = SharedSettings::new("redis://u:sekrit-pass@h:1/0");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("sekrit-pass"), "{shown}");
        assert_eq!(settings.url(), "redis://u:sekrit-pass@h:1/0");
    }
}
