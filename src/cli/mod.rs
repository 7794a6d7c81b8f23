//! The command line: argument parsing, exit codes, and dispatch to the
//! daemon or, when none answers, to the library on the root directly.

mod args;
mod command;
mod direct;
mod output;
mod remote;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

pub use args::{Cli, Command};

use crate::config::{self, Config, ConfigError};
use crate::daemon::{self, ServeOptions};
use crate::source::SourceId;

/// Exit codes of §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any error.
    Error = 1,
    /// Bad usage (bad arguments, bad source name).
    Usage = 2,
    /// The source has no data.
    NoData = 3,
    /// The data is older than `--max-age` (or expired).
    TooOld = 4,
}

/// An error that ends the command with a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fail {
    /// The exit code.
    pub exit: Exit,
    /// One line for stderr.
    pub message: String,
}

impl Fail {
    /// An error with this exit code.
    pub fn exit(exit: Exit, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            exit,
            message: message.into(),
        })
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let serve = matches!(cli.command, Command::Serve);
    if !serve {
        // A client piped into `head` ends quietly, like `cat`.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match run(cli) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("discocache: {e:#}");
            e.downcast_ref::<Fail>().map_or(Exit::Error, |f| f.exit)
        }
    };
    ExitCode::from(code as u8)
}

/// Installs the stderr log subscriber (`DISCOCACHE_LOG`, default `info` for
/// the daemon, `warn` otherwise). Only the paths that run library code
/// call it: a client answered by the daemon logs nothing and skips the
/// cost.
pub(crate) fn init_logging(daemon: bool) {
    crate::logging::init(if daemon { "info" } else { "warn" });
}

/// Resolved global options.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The cache root.
    pub root: PathBuf,
    /// The daemon socket.
    pub socket: PathBuf,
    /// `--config`, when given.
    pub config: Option<PathBuf>,
    /// `--offline` or `DISCOCACHE_OFFLINE`.
    pub offline: bool,
}

impl Ctx {
    fn from_cli(cli: &Cli) -> Self {
        let root = cli.root.clone().unwrap_or_else(config::default_root);
        let socket = cli
            .socket
            .clone()
            .unwrap_or_else(|| config::default_socket(&root));
        Self {
            root,
            socket,
            config: cli.config.clone(),
            offline: cli.offline,
        }
    }

    /// The config in force: `--config`, else the default path if it exists,
    /// else the embedded default.
    ///
    /// # Errors
    ///
    /// When the chosen file does not load.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match self.config_path() {
            Some(path) => Config::load(&path)?,
            None => Config::embedded(),
        };
        config.daemon.offline |= self.offline;
        Ok(config)
    }

    fn config_path(&self) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| config::default_path().filter(|p| p.exists()))
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    let ctx = Ctx::from_cli(&cli);
    match cli.command {
        Command::Serve => {
            init_logging(true);
            let config = ctx.config_path();
            daemon::run(ServeOptions {
                root: ctx.root,
                socket: ctx.socket,
                config,
                offline: ctx.offline,
            })?;
            Ok(Exit::Ok)
        }
        Command::Config { action } => {
            let args::ConfigAction::Check { file, json } = action;
            init_logging(false);
            config_check(&ctx, file, json)
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "discocache", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(Exit::Ok)
        }
        other => {
            // Offline, `get` and `refresh` ask no daemon to refresh: they
            // read the root directly. The other commands refresh nothing.
            let refreshes = matches!(other, Command::Get { .. } | Command::Refresh { .. });
            let client = remote::connect(&ctx, cli.no_daemon || (ctx.offline && refreshes));
            command::run(&ctx, client, other)
        }
    }
}

/// `config check [FILE] [--json]`.
///
/// # Errors
///
/// Exit 1 with every problem, one per line, when the config does not load.
fn config_check(ctx: &Ctx, file: Option<PathBuf>, json: bool) -> anyhow::Result<Exit> {
    let result = match file.or_else(|| ctx.config_path()) {
        Some(path) => Config::load(&path).and_then(Config::strict),
        None => Ok(Config::embedded()),
    };
    if json {
        return config_check_json(&result);
    }
    match result {
        Ok(config) => {
            let n = config.sources.len();
            let s = if n == 1 { "" } else { "s" };
            println!("{}: ok, {n} source{s}", config.origin);
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprint!("{}", e.render());
            let n = e.problems.len();
            let s = if n == 1 { "" } else { "s" };
            let msg = format!("{}: {n} problem{s}", e.origin);
            Err(Fail::exit(Exit::Error, msg))
        }
    }
}

/// `config check --json`: `{"origin", "ok", "sources": [...], "problems":
/// [{"line", "message"}]}` on stdout; exit 1 when there are problems.
fn config_check_json(result: &Result<Config, ConfigError>) -> anyhow::Result<Exit> {
    let answer = match result {
        Ok(config) => serde_json::json!({
            "origin": config.origin,
            "ok": true,
            "sources": config.sources.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(),
            "problems": [],
        }),
        Err(e) => serde_json::json!({
            "origin": e.origin,
            "ok": false,
            "sources": [],
            "problems": e.problems.iter().map(|p| serde_json::json!({
                "line": p.line,
                "message": p.message,
            })).collect::<Vec<_>>(),
        }),
    };
    output::print_json(&answer)?;
    Ok(if result.is_ok() {
        Exit::Ok
    } else {
        Exit::Error
    })
}

/// Parses a `tier/name` argument; a bad one is a usage error.
fn parse_source(arg: &str) -> anyhow::Result<SourceId> {
    SourceId::parse(arg).map_err(|e| Fail::exit(Exit::Usage, e.to_string()))
}
