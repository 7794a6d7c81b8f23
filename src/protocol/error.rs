//! The wire error: a stable [`ErrorCode`] and a one-line message.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::source::InvalidSource;

/// The stable machine-readable reason of a failed request.
///
/// Serialised as its snake_case name (`"bad_request"`, ...). Clients branch on
/// the code, people read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not valid UTF-8 or JSON, not an object, or a field is
    /// missing, unknown or of the wrong type.
    BadRequest,
    /// `op` is missing or names no operation of this protocol.
    UnknownOp,
    /// A source name breaks the `tier/name` rule.
    InvalidSource,
    /// A well-formed source name that the daemon's config does not have.
    UnknownSource,
    /// The source has no payload to serve (never refreshed, or only expired
    /// data that was not asked for).
    NoData,
    /// The refresh that was run or joined failed; the message is its error.
    RefreshFailed,
    /// Waiting for a refresh took longer than its deadline.
    Timeout,
    /// The request line is longer than [`MAX_LINE`](super::MAX_LINE); the
    /// daemon closes the connection after this answer.
    TooLarge,
    /// The daemon is at a limit (connections, refreshes); retry later.
    Busy,
    /// A fault inside the daemon (an IO error, a bug); see the message.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (for docs, tests and metric labels).
    pub const ALL: [Self; 10] = [
        Self::BadRequest,
        Self::UnknownOp,
        Self::InvalidSource,
        Self::UnknownSource,
        Self::NoData,
        Self::RefreshFailed,
        Self::Timeout,
        Self::TooLarge,
        Self::Busy,
        Self::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::InvalidSource => "invalid_source",
            Self::UnknownSource => "unknown_source",
            Self::NoData => "no_data",
            Self::RefreshFailed => "refresh_failed",
            Self::Timeout => "timeout",
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed response: `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// The stable reason.
    pub code: ErrorCode,
    /// One line for people, naming what was wrong.
    pub message: String,
}

impl WireError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A `bad_request` error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The `too_large` error the daemon sends before closing a connection.
    pub fn too_large() -> Self {
        Self::new(
            ErrorCode::TooLarge,
            format!(
                "request line is longer than {} bytes; closing the connection",
                super::MAX_LINE
            ),
        )
    }
}

impl From<InvalidSource> for WireError {
    fn from(e: InvalidSource) -> Self {
        Self::new(ErrorCode::InvalidSource, e.to_string())
    }
}

impl From<&crate::Error> for WireError {
    /// Maps a library error at the edge: rejected names, failed refreshes and
    /// timeouts keep their meaning; everything else is `internal`.
    fn from(e: &crate::Error) -> Self {
        let code = match e {
            crate::Error::InvalidSource(_) => ErrorCode::InvalidSource,
            crate::Error::RefreshFailed { .. } | crate::Error::Offline { .. } => {
                ErrorCode::RefreshFailed
            }
            crate::Error::Timeout { .. } => ErrorCode::Timeout,
            crate::Error::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_stable_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialise code");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parse code");
            assert_eq!(back, code);
        }
    }

    #[test]
    fn wire_error_is_an_object_with_code_and_message() {
        let e = WireError::new(ErrorCode::NoData, "discovery/x has no payload yet");
        assert_eq!(
            serde_json::to_string(&e).expect("serialise"),
            r#"{"code":"no_data","message":"discovery/x has no payload yet"}"#
        );
        assert_eq!(e.to_string(), "no_data: discovery/x has no payload yet");
    }

    #[test]
    fn library_errors_map_to_codes() {
        let bad = crate::Error::from(crate::SourceId::parse("A/b").expect_err("bad"));
        assert_eq!(WireError::from(&bad).code, ErrorCode::InvalidSource);
        let internal = crate::Error::Internal("boom".into());
        assert_eq!(WireError::from(&internal).code, ErrorCode::Internal);
        let huge = crate::Error::TooLarge {
            what: "payload",
            path: "/r/t/x.json".into(),
            size: 2 << 30,
            max: 1 << 20,
        };
        assert_eq!(WireError::from(&huge).code, ErrorCode::TooLarge);
    }
}
