//! The TOML config: `[defaults]`, `[daemon]` and `[[source]]` tables.
//!
//! Parsing goes in two steps: `raw` reads the document into serde structs
//! that reject unknown keys and keep every value's span, then `check` and
//! `entry` validate each table on its own, so that one run reports every
//! problem, each with its line.

mod check;
mod definition;
mod entry;
mod guard;
mod paths;
mod raw;
mod seed;
mod shared;
mod value;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::refresher::Refresher;
use crate::source::{Policy, SourceId};
use check::{Base, Checker};
pub use entry::DEFAULT_MAX_REDIRECTS;
pub use paths::{default_path, default_root, default_socket};
use raw::{RawDaemon, RawPolicy, RawSource, decode};
use shared::RawShared;
pub use shared::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_NAMESPACE, OnDown, SharedSettings,
};

/// The config shipped inside the binary, used when no file exists.
pub const EMBEDDED_DEFAULT: &str = include_str!("default_config.toml");

/// Daemon-wide settings (`[daemon]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Most refreshes the daemon runs at once.
    pub max_concurrent_refreshes: usize,
    /// Fraction of the ttl after which a source is refreshed ahead of expiry.
    pub refresh_ahead: f64,
    /// How long in-flight refreshes may run on shutdown before being killed.
    pub shutdown_grace: Duration,
    /// How often stats are reconciled against the disk.
    pub reconcile_interval: Duration,
    /// Where `GET /metrics` is served over HTTP (a loopback address);
    /// `None`, the default, serves no HTTP.
    pub metrics_listen: Option<SocketAddr>,
    /// Run no refresher: serve what is on disk as it is.
    pub offline: bool,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            max_concurrent_refreshes: 4,
            refresh_ahead: 0.8,
            shutdown_grace: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(60),
            metrics_listen: None,
            offline: false,
        }
    }
}

/// One `[[source]]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `tier/name`.
    pub id: SourceId,
    /// ttl, deadline, max_stale and backoff, with `[defaults]` applied.
    pub policy: Policy,
    /// What produces the payload.
    pub refresher: Refresher,
    /// Why the source is disabled (a `${VAR}` it uses is unset), if it is:
    /// it is never refreshed, but stays configured (prune keeps its data).
    pub disabled: Option<String>,
    /// A JSON file committed as the first payload when the source has
    /// none (`seed = "file.json"`, relative to the config's directory).
    pub seed: Option<PathBuf>,
    /// Whether it goes through the shared tier when there is one
    /// (`shared = false` opts out).
    pub shared: bool,
    /// Its own `on_down`, over `[shared]`'s.
    pub on_down: Option<OnDown>,
}

/// A loaded, validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<embedded>`), for messages.
    pub origin: String,
    /// The file it was read from; `None` for the embedded default (or a
    /// text parsed directly). Prune runs only against a file.
    pub file: Option<PathBuf>,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// Every `[[source]]`, in file order.
    pub sources: Vec<SourceConfig>,
    /// `[shared]`: the shared tier, if configured (and its URL's variables
    /// are set).
    pub shared: Option<SharedSettings>,
    /// Unset `${VAR}`s (their sources are disabled), for [`Config::strict`].
    unset: Vec<Problem>,
}

/// Why `prune` refuses to run against a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PruneRefused {
    /// No config file exists: the embedded default names none of the user's
    /// sources, so pruning against it would delete them all.
    #[error(
        "refusing to prune: no config file (give --config, set $DISCOCACHE_CONFIG or create \
         $XDG_CONFIG_HOME/discocache/config.toml); the embedded default config is never used to prune"
    )]
    NoFile,
    /// The config file has no sources.
    #[error("refusing to prune: config {0} has no sources, so pruning would remove everything")]
    NoSources(String),
}

/// One thing wrong with a config, with its line when known. The message
/// names the table or source and the key, and never holds a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: Option<usize>,
    /// What is wrong, naming the key or source.
    pub message: String,
}

/// Why a config did not load. `Display` is one line (for logs);
/// [`ConfigError::render`] gives one line per problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("config {origin}: {}", .problems.iter().map(|p| match p.line { Some(l) => format!("line {l}: {}", p.message), None => p.message.clone() }).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub origin: String,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    fn one(origin: &str, line: Option<usize>, message: String) -> Self {
        Self {
            origin: origin.to_owned(),
            problems: vec![Problem { line, message }],
        }
    }

    /// One line per problem, `<origin>:<line>: <message>` (or
    /// `<origin>: <message>` when the line is unknown), for
    /// `discocache config check`.
    pub fn render(&self) -> String {
        let lines: Vec<String> = self
            .problems
            .iter()
            .map(|p| match p.line {
                Some(line) => format!("{}:{line}: {}", self.origin, p.message),
                None => format!("{}: {}", self.origin, p.message),
            })
            .collect();
        lines.join("\n")
    }
}

impl Config {
    /// Parses a config text, expanding `${VAR}` in header values from the
    /// process environment. Relative `file` paths are kept as written.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem found, each with its line.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, origin, None, &|name| std::env::var(name).ok())
    }

    /// Parses a config text with `env` as the environment for `${VAR}` in
    /// header values; relative `file` paths resolve against `base_dir` when
    /// given.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem found, each with its line: TOML
    /// syntax, unknown keys, bad values, bad sources, unset variables.
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        base_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            let problems = syntax
                .iter()
                .map(|e| Problem {
                    line: e.span().map(|s| value::line_of(text, s.start)),
                    message: format!("invalid TOML: {}", e.message()),
                })
                .collect();
            return Err(sorted(origin, problems));
        }
        let mut checker = Checker::new(text, env, base_dir);
        let built = build(&mut checker, doc.into_inner());
        match built {
            Some((daemon, sources, shared)) if checker.problems.is_empty() => Ok(Self {
                origin: origin.to_owned(),
                file: None,
                daemon,
                sources,
                shared,
                unset: checker.unset,
            }
            .with_on_down()),
            _ => Err(sorted(origin, checker.problems)),
        }
    }

    /// Reads and parses a config file; relative `file` paths resolve against
    /// its directory.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or does not parse.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(&origin, None, format!("cannot read: {e}")))?;
        let env = |name: &str| std::env::var(name).ok();
        let config = Self::parse_with_env(&text, &origin, path.parent(), &env)?;
        Ok(Self {
            file: Some(path.to_owned()),
            ..config
        })
    }

    /// The config with unset `${VAR}`s and unusable seeds counted as
    /// problems, as `config check` reports them (loading only disables
    /// those sources, or leaves them without a seed).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming each unset variable with its line.
    pub fn strict(self) -> Result<Self, ConfigError> {
        if self.unset.is_empty() {
            Ok(self)
        } else {
            Err(sorted(&self.origin, self.unset))
        }
    }

    /// The sources `prune` keeps: every configured one, disabled ones
    /// included.
    ///
    /// # Errors
    ///
    /// [`PruneRefused`] when the config is not from a file (the embedded
    /// default) or has no sources.
    pub fn prune_set(&self) -> Result<BTreeSet<SourceId>, PruneRefused> {
        if self.file.is_none() {
            return Err(PruneRefused::NoFile);
        }
        if self.sources.is_empty() {
            return Err(PruneRefused::NoSources(self.origin.clone()));
        }
        Ok(self.sources.iter().map(|s| s.id.clone()).collect())
    }

    /// Sources disabled by an unset `${VAR}`, with the reason.
    pub fn disabled(&self) -> impl Iterator<Item = (&SourceId, &str)> {
        self.sources
            .iter()
            .filter_map(|s| Some((&s.id, s.disabled.as_deref()?)))
    }

    /// The embedded default config.
    ///
    /// # Panics
    ///
    /// Never: a unit test parses [`EMBEDDED_DEFAULT`], which uses no
    /// environment variables and no relative paths.
    pub fn embedded() -> Self {
        Self::parse_with_env(EMBEDDED_DEFAULT, "<embedded>", None, &|_| None)
            .expect("embedded config is valid")
    }

    /// The source with this id.
    pub fn source(&self, id: &SourceId) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| &s.id == id)
    }

    /// What `source` does while the shared tier is down: its own
    /// `on_down`, else `[shared]`'s, else `local`.
    pub fn on_down(&self, source: &SourceConfig) -> OnDown {
        let tier = self.shared.as_ref().map(|s| s.on_down);
        source.on_down.or(tier).unwrap_or_default()
    }

    /// Puts each source's resolved `on_down` into its policy, where the
    /// refresh path reads it.
    fn with_on_down(mut self) -> Self {
        let resolved: Vec<OnDown> = self.sources.iter().map(|s| self.on_down(s)).collect();
        for (source, on_down) in self.sources.iter_mut().zip(resolved) {
            source.policy.on_down = on_down;
        }
        self
    }
}

fn sorted(origin: &str, mut problems: Vec<Problem>) -> ConfigError {
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    ConfigError {
        origin: origin.to_owned(),
        problems,
    }
}

/// The checked tables of a document.
type Built = (DaemonSettings, Vec<SourceConfig>, Option<SharedSettings>);

/// Splits the document into its tables and checks each; `None` when any
/// part failed (the problems are in `checker`).
fn build(checker: &mut Checker<'_>, doc: DeTable<'_>) -> Option<Built> {
    let (mut defaults, mut daemon, mut sources) = (None, None, None);
    let mut shared = None;
    for (key, value) in doc {
        match key.get_ref().as_ref() {
            "defaults" => defaults = Some(value),
            "daemon" => daemon = Some(value),
            "source" => sources = Some(value),
            "shared" => shared = Some(value),
            other => checker.note(
                &key.span(),
                format!(
                    "unknown key {other:?}: the top level has [defaults], [daemon], [shared] and [[source]]"
                ),
            ),
        }
    }
    let base = defaults.map_or(Ok(Base::default()), |v| check_defaults(checker, v));
    let daemon = daemon.map_or(Ok(DaemonSettings::default()), |v| check_daemon(checker, v));
    let fallback = Base::default();
    let sources = sources.map_or(Ok(Vec::new()), |v| {
        check_sources(checker, v, base.as_ref().unwrap_or(&fallback))
    });
    let shared = shared.map_or(Ok(None), |v| check_shared(checker, v));
    base.ok()?;
    Some((daemon.ok()?, sources.ok()?, shared.ok()?))
}

fn check_shared(
    checker: &mut Checker<'_>,
    value: Spanned<DeValue<'_>>,
) -> Result<Option<SharedSettings>, ()> {
    let span = value.span();
    let raw: RawShared =
        decode(&value).map_err(|e| checker.report(&e.span, "[shared]", e.message))?;
    checker.shared(&span, &raw)
}

fn check_defaults(checker: &mut Checker<'_>, value: Spanned<DeValue<'_>>) -> Result<Base, ()> {
    const SCOPE: &str = "[defaults]";
    let raw: RawPolicy = decode(&value).map_err(|e| checker.report(&e.span, SCOPE, e.message))?;
    checker.policy(SCOPE, &raw, &Base::default())
}

fn check_daemon(
    checker: &mut Checker<'_>,
    value: Spanned<DeValue<'_>>,
) -> Result<DaemonSettings, ()> {
    let raw: RawDaemon =
        decode(&value).map_err(|e| checker.report(&e.span, "[daemon]", e.message))?;
    checker.daemon(&raw)
}

/// Checks every `[[source]]` on its own, then that no id repeats.
fn check_sources(
    checker: &mut Checker<'_>,
    value: Spanned<DeValue<'_>>,
    base: &Base,
) -> Result<Vec<SourceConfig>, ()> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        checker.note(&span, "source: expected [[source]] tables".into());
        return Err(());
    };
    // Sized once: growing it by doubling left every smaller copy behind as
    // free memory that the allocator kept.
    let mut out = Vec::with_capacity(items.len());
    let mut first_seen: HashMap<SourceId, usize> = HashMap::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.iter().enumerate() {
        let span = item.span();
        let written = id_entry(item.get_ref());
        let scope = entry::scope_of(index, written.as_ref().map(|(id, _)| *id));
        if let Some((Ok(id), at)) = written.map(|(text, at)| (SourceId::parse(text), at)) {
            ok &= unique(checker, &scope, &mut first_seen, id, &at);
        }
        let checked = decode::<RawSource>(item)
            .map_err(|e| checker.report(&e.span, &scope, e.message))
            .and_then(|raw| checker.source(&scope, &span, &raw, base));
        match checked {
            Ok(source) => out.push(source),
            Err(()) => ok = false,
        }
    }
    if ok { Ok(out) } else { Err(()) }
}

/// Reports a repeated id at the repeat, naming the first one's line; false
/// when it repeats.
fn unique(
    checker: &mut Checker<'_>,
    scope: &str,
    first_seen: &mut HashMap<SourceId, usize>,
    id: SourceId,
    at: &Range<usize>,
) -> bool {
    if let Some(&first) = first_seen.get(&id) {
        // Lines are counted only for a report: counting them for every
        // source made large configs quadratic to load.
        let first = checker.line(first);
        let msg = format!("duplicate id (first defined on line {first})");
        checker.report(at, scope, msg);
        return false;
    }
    first_seen.insert(id, at.start);
    true
}

/// The `id` of a source table as written, with its span, if it is a string.
fn id_entry<'a>(value: &'a DeValue<'_>) -> Option<(&'a str, Range<usize>)> {
    let DeValue::Table(table) = value else {
        return None;
    };
    let (_, id) = table.iter().find(|(k, _)| k.get_ref() == "id")?;
    Some((id.get_ref().as_str()?, id.span()))
}

#[cfg(test)]
mod tests;
