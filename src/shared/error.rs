//! Errors of the shared tier: each names the operation, the server (URL
//! with its password redacted) and the cause.

/// Why a shared-tier operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The tier is down and the next reconnect is not due yet.
    #[error("shared tier {url} is down (retrying in {retry_in_ms} ms): {last_error}")]
    Down {
        /// The server, password redacted.
        url: String,
        /// Until the next connection attempt.
        retry_in_ms: u64,
        /// The error that took it down.
        last_error: String,
    },
    /// A command or a connection failed.
    #[error("shared tier {url}: {op}: {source}")]
    Redis {
        /// What was being done (`"take lease"`, `"commit"`, ...).
        op: &'static str,
        /// The server, password redacted.
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The server answered something a script never returns.
    #[error("shared tier {url}: {op}: unexpected reply: {what}")]
    Reply {
        /// What was being done.
        op: &'static str,
        /// The server, password redacted.
        url: String,
        /// What was wrong with it.
        what: String,
    },
}
