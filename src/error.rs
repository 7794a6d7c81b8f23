//! The library's error type. IO errors carry the operation and the path.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::{InvalidSource, SourceId};

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `tier/name` was rejected before any path was built.
    #[error(transparent)]
    InvalidSource(#[from] InvalidSource),

    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"persist payload"`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A sidecar or marker file could not be parsed.
    #[error("corrupt {what} {}: {reason}", path.display())]
    Corrupt {
        /// `"sidecar"` or `"marker"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },

    /// The refresh (ours, or the one we joined) failed; the old payload stays.
    #[error("refresh of {id} failed: {message}")]
    RefreshFailed {
        /// The source.
        id: SourceId,
        /// The refresher's error, one line.
        message: String,
        /// True when the failed refresh was someone else's that we joined.
        joined: bool,
    },

    /// Waiting for another process's (or, through the shared tier, another
    /// host's) refresh took longer than its deadline.
    #[error(
        "{id}: waited {} for the refresh held by {}; it did not finish",
        whole_millis(*.waited),
        holder_name(*.holder)
    )]
    Timeout {
        /// The source.
        id: SourceId,
        /// How long we waited.
        waited: Duration,
        /// The pid its marker names, when there is one.
        holder: Option<u32>,
    },

    /// Something other than a regular file (or a real directory) sits where
    /// a layout file (or directory) belongs. It is never followed, blocked
    /// on, changed or deleted through.
    #[error("refusing to {op} {}: it is {what}", path.display())]
    Refused {
        /// What was being done, e.g. `"read payload"`.
        op: &'static str,
        /// The offending file or directory.
        path: PathBuf,
        /// What it is: `"a symlink"`, `"a FIFO"`, `"a directory"`, ...
        what: &'static str,
    },

    /// The root or a tier directory belongs to another user.
    #[error("{} is owned by {owner} (uid {uid}), not by uid {euid} that runs discocache; refusing to use it", path.display())]
    NotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner's name, or `uid N` when it has none.
        owner: String,
        /// Its owner's uid.
        uid: u32,
        /// The effective uid of this process.
        euid: u32,
    },

    /// A file is larger than the bound its reader accepts; it was not read.
    #[error("{what} {} is {size} bytes, over its limit of {max} bytes; refusing to read it", path.display())]
    TooLarge {
        /// `"payload"`, `"sidecar"`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },

    /// A refresh was asked for while refreshes are off.
    #[error(
        "refusing to refresh {id}: offline (--offline, DISCOCACHE_OFFLINE=1 or [daemon] offline = true); only what is on disk is served"
    )]
    Offline {
        /// The source.
        id: SourceId,
    },

    /// Prune was asked to run without a known set of active sources.
    #[error("refusing to prune: {0}")]
    PruneRefused(String),

    /// A background task died (a panic or a runtime shutting down).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an IO error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// A wait as an error shows it: to the millisecond.
fn whole_millis(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}

/// The holder of a refresh, as an error names it: a pid on this host, or
/// (no marker here: a wait through the shared tier) another process or
/// host.
fn holder_name(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another process or host".into(),
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_without_a_pid_does_not_claim_the_holder_is_on_this_host() {
        let id = SourceId::parse("discovery/models").expect("valid");
        let waited = Duration::from_millis(1500);
        let shown = Error::Timeout {
            id: id.clone(),
            waited,
            holder: None,
        };
        assert_eq!(
            shown.to_string(),
            "discovery/models: waited 1s 500ms for the refresh held by another process or host; it did not finish"
        );
        let local = Error::Timeout {
            id,
            waited,
            holder: Some(42),
        };
        assert!(local.to_string().contains("held by pid 42;"), "{local}");
    }
}
