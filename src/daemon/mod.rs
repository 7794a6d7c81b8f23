//! The daemon: `discocache serve`.

use std::path::PathBuf;

/// What `discocache serve` was asked to run with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The cache root.
    pub root: PathBuf,
    /// The socket path (ignored when a socket is passed by systemd).
    pub socket: PathBuf,
    /// The config file; `None` = the default path if it exists, else the
    /// embedded default.
    pub config: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM/SIGINT.
///
/// # Errors
///
/// Not implemented yet.
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    anyhow::bail!("serve is not implemented yet ({})", opts.root.display())
}
