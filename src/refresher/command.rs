//! The `command` refresher: argv without a shell, in its own process group.

use std::time::Duration;

use super::{DEFAULT_MAX_OUTPUT, FetchError};

/// A command to run for a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    /// Run under a pseudo-terminal.
    pub pty: bool,
    /// Most stdout bytes accepted; more is a failure.
    pub max_output: usize,
}

impl CommandSpec {
    /// A plain (non-pty) command with the default output cap.
    pub fn new(argv: Vec<String>) -> Self {
        Self {
            argv,
            pty: false,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }
}

/// Runs the command and returns its stdout.
///
/// # Errors
///
/// Not implemented yet.
pub async fn run(spec: &CommandSpec, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let _ = (spec, timeout);
    Err(FetchError::new("command refresher not implemented yet"))
}
