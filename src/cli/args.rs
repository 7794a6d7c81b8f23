//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A cache daemon and library for slow discovery data.
#[derive(Debug, Parser)]
#[command(name = "discocache", version, about)]
pub struct Cli {
    /// Cache root [default: $XDG_CACHE_HOME/discocache or ~/.cache/discocache]
    #[arg(long, global = true, env = "DISCOCACHE_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Daemon socket [default: $XDG_RUNTIME_DIR/discocache.sock or ROOT/discocache.sock]
    #[arg(long, global = true, env = "DISCOCACHE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Config file [default: $XDG_CONFIG_HOME/discocache/config.toml if it exists, else the embedded default]
    #[arg(long, global = true, env = "DISCOCACHE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use the cache directly even if a daemon is running.
    #[arg(long, global = true)]
    pub no_daemon: bool,
    /// Refresh nothing: serve what is on disk (seeds included). `get` and
    /// `refresh` read the root directly; `serve` runs no refresher.
    #[arg(long, global = true, env = "DISCOCACHE_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Print a source's payload.
    Get {
        /// tier/name
        source: String,
        /// How to answer.
        #[command(flatten)]
        opts: GetOpts,
    },
    /// Refresh sources now and wait for the outcome.
    Refresh {
        /// tier/name ...
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sources: Vec<String>,
        /// Every configured source.
        #[arg(long)]
        all: bool,
        /// Machine-readable output: the whole answer at the end.
        #[arg(long)]
        json: bool,
    },
    /// Every source: freshness, revision, failures.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One source's refresh state.
    State {
        /// tier/name
        source: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stream change events (needs the daemon).
    Watch {
        /// tier/name ... (none: all)
        sources: Vec<String>,
    },
    /// Mark a source stale; it keeps being served until refreshed.
    Invalidate {
        /// tier/name
        source: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove sources no longer in the config (after recovering crash leftovers).
    Prune {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Counters, as JSON.
    Stats,
    /// Counters, in Prometheus text format.
    Metrics,
    /// Config file tools.
    Config {
        /// What to do with the config.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a shell completion script (e.g. `discocache completions bash > /etc/bash_completion.d/discocache`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `discocache man | man -l -`.
    Man,
}

/// What `get` was asked for.
#[derive(Debug, Args)]
pub struct GetOpts {
    /// Print the envelope (age, freshness, revision, refresh state) as JSON.
    #[arg(long)]
    pub meta: bool,
    /// Exit 4 when the data is older than this (e.g. 90s, 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
    /// When to refresh before answering.
    #[arg(long, value_enum, default_value_t = RefreshArg::IfStale)]
    pub refresh: RefreshArg,
    /// Print data past its max_stale instead of failing.
    #[arg(long)]
    pub allow_expired: bool,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate a config file and explain each error with its line.
    Check {
        /// The file [default: --config, else the default path]
        file: Option<PathBuf>,
        /// Machine-readable output (the problems too, on stdout).
        #[arg(long)]
        json: bool,
    },
}

/// `get --refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefreshArg {
    /// Only read.
    Never,
    /// Read at once; refresh in the background when stale (direct mode: wait only when there is no data).
    IfStale,
    /// Wait for a refresh when stale.
    WaitIfStale,
    /// Refresh, wait, then read.
    Force,
}

impl From<RefreshArg> for crate::protocol::RefreshMode {
    fn from(arg: RefreshArg) -> Self {
        match arg {
            RefreshArg::Never => Self::Never,
            RefreshArg::IfStale => Self::IfStale,
            RefreshArg::WaitIfStale => Self::WaitIfStale,
            RefreshArg::Force => Self::Force,
        }
    }
}
