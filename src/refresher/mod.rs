//! Refreshers: what produces a source's payload.
//!
//! The cache calls a refresher with a [`FetchContext`] (deadline, previous
//! validators) and expects [`Fetched`] data or "not modified" back, or a
//! [`FetchError`]. In the library any async closure will do; the daemon and
//! CLI build one of the [`Refresher`] kinds from the config.

pub mod command;
pub mod file;
pub mod http;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::SourceId;

/// Default cap on a refresher's output (command stdout, HTTP body, file size).
pub const DEFAULT_MAX_OUTPUT: usize = 32 << 20;

/// HTTP cache validators kept in the sidecar between refreshes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The `ETag` of the committed payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The `Last-Modified` of the committed payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// What a refresher produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A new payload. The cache checks it is JSON before committing it.
    Data {
        /// The payload bytes, committed verbatim.
        bytes: Vec<u8>,
        /// Validators to send on the next refresh.
        validators: Validators,
    },
    /// The origin says the committed payload is still current (HTTP 304):
    /// freshness is renewed, the payload and revision stay.
    NotModified {
        /// Validators to keep (the origin may send new ones with a 304).
        validators: Validators,
    },
}

impl Fetched {
    /// A payload with no validators.
    pub fn data(bytes: impl Into<Vec<u8>>) -> Self {
        Self::Data {
            bytes: bytes.into(),
            validators: Validators::default(),
        }
    }
}

/// What a refresh is given: which source, how long it may take, and the
/// validators of the payload on disk.
#[derive(Debug, Clone)]
pub struct FetchContext {
    /// The source being refreshed.
    pub source: SourceId,
    /// Time left until the refresh deadline; the refresher is dropped past it.
    pub timeout: Duration,
    /// Validators of the committed payload, for a conditional request.
    pub validators: Validators,
}

/// A refresher's failure: a message for people and, for rate-limited
/// origins, how long the origin asked us to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    message: String,
    retry_after: Option<Duration>,
}

impl FetchError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds the wait the origin asked for (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The message, one line.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The wait the origin asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for FetchError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        Self::new(message)
    }
}

/// A refresher from the config.
#[derive(Debug, Clone)]
pub enum Refresher {
    /// Run a command (argv, no shell) and take its stdout.
    Command(command::CommandSpec),
    /// GET a URL.
    Http(http::HttpSpec),
    /// Copy a local JSON file.
    File(file::FileSpec),
}

impl Refresher {
    /// Runs the refresher once.
    ///
    /// # Errors
    ///
    /// A [`FetchError`] saying what failed (exit status, HTTP status, IO).
    pub async fn fetch(&self, ctx: FetchContext) -> Result<Fetched, FetchError> {
        match self {
            Self::Command(spec) => command::run(spec, ctx.timeout).await.map(Fetched::data),
            Self::Http(spec) => http::fetch(spec, &ctx).await,
            Self::File(spec) => file::read(spec).await.map(Fetched::data),
        }
    }

    /// A one-line description for status output; never contains secrets.
    pub fn describe(&self) -> String {
        match self {
            Self::Command(spec) => {
                let pty = if spec.pty { " (pty)" } else { "" };
                format!("command {}{pty}", spec.argv.join(" "))
            }
            Self::Http(spec) => format!("http {}", http::shown(&spec.url, spec)),
            Self::File(spec) => format!("file {}", spec.path.display()),
        }
    }
}
