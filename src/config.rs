//! The TOML config: `[defaults]`, `[daemon]` and `[[source]]` tables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::refresher::Refresher;
use crate::source::{Policy, SourceId};

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
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            max_concurrent_refreshes: 4,
            refresh_ahead: 0.8,
            shutdown_grace: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(60),
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
}

/// A loaded, validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<embedded>`).
    pub origin: String,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// Every `[[source]]`, in file order.
    pub sources: Vec<SourceConfig>,
}

/// One thing wrong with a config, with its line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: Option<usize>,
    /// What is wrong, naming the key or source.
    pub message: String,
}

/// Why a config did not load.
#[derive(Debug, Clone, thiserror::Error)]
#[error("config {origin}: {}", .problems.iter().map(|p| match p.line { Some(l) => format!("line {l}: {}", p.message), None => p.message.clone() }).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub origin: String,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

impl Config {
    /// Parses a config text, expanding `${VAR}` from the process environment.
    ///
    /// # Errors
    ///
    /// Not implemented yet.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let _ = text;
        Err(ConfigError {
            origin: origin.to_owned(),
            problems: vec![Problem {
                line: None,
                message: "config parsing not implemented yet".into(),
            }],
        })
    }

    /// Reads and parses a config file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or does not parse.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            problems: vec![Problem {
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(&text, &origin)
    }

    /// The embedded default config.
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED_DEFAULT, "<embedded>").expect("embedded config is valid")
    }

    /// The source with this id.
    pub fn source(&self, id: &SourceId) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| &s.id == id)
    }
}

/// Where the config is looked for: `$XDG_CONFIG_HOME/discocache/config.toml`,
/// else `~/.config/discocache/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("discocache").join("config.toml"))
}
