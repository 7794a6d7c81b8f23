//! What the shared tier's operations take and return.

use std::time::{Duration, Instant};

use crate::source::SourceId;

/// What [`SharedTier::take_lease`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// The shared copy was fetched after the time given: copy it down
    /// ([`SharedTier::read_copy`]); no lease was taken.
    Newer,
    /// This host holds the lease.
    Leased(Lease),
    /// Another host holds it for `remaining` more; wait for events after
    /// `after` (see [`SharedTier::wait_for`]).
    Busy {
        /// The lease's remaining time.
        remaining: Duration,
        /// The last event id when the lease was tried.
        after: String,
    },
    /// The shared backoff runs until this server time (ms since the epoch).
    Backoff {
        /// When a refresh may be tried again, in ms since the Unix epoch.
        next_retry_at_ms: i64,
    },
}

/// A held lease: the fence to commit with and the holder's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The source leased.
    pub source: SourceId,
    /// The fencing token of this lease.
    pub fence: u64,
    /// The lease value: host, pid and a random token.
    pub holder: String,
    /// When the lease runs out, by this host's clock.
    pub expires: Instant,
    /// The shared copy's `ETag` when the lease was taken.
    pub etag: Option<String>,
    /// The shared copy's `Last-Modified` when the lease was taken.
    pub last_modified: Option<String>,
}

/// What a refresh produced, for [`SharedTier::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// A new payload.
    Fetched,
    /// The origin said 304: keep the stored payload, move `fetched_at`.
    NotModified,
}

/// One commit.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// Fetched or not modified.
    pub kind: CommitKind,
    /// When the origin answered, in ms since the Unix epoch.
    pub fetched_at_ms: i64,
    /// The payload. For [`CommitKind::NotModified`], the payload the
    /// validators belong to: written only when the store has none (a wiped
    /// server), so a 304 never leaves an empty shared copy.
    pub payload: &'a [u8],
    /// Its sha256, hex.
    pub sha256: &'a str,
    /// The origin's validators.
    pub etag: Option<&'a str>,
    /// The origin's `Last-Modified`.
    pub last_modified: Option<&'a str>,
}

/// The outcome of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written with this fence.
    Committed(u64),
    /// Refused: the store already holds this newer (or equal) fence, or a
    /// copy fetched later.
    Stale(u64),
}

/// A failed refresh, for [`SharedTier::record_failure`].
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// What went wrong (redacted by the caller).
    pub error: &'a str,
    /// The first backoff delay.
    pub base: Duration,
    /// The longest backoff delay.
    pub cap: Duration,
    /// The origin's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

/// The shared copy of a source, for copy-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCopy {
    /// The payload, byte for byte.
    pub payload: Vec<u8>,
    /// The fence it was committed with.
    pub fence: u64,
    /// When the origin answered, ms since the Unix epoch (the mtime to give
    /// the local copy).
    pub fetched_at_ms: i64,
    /// Its sha256, hex.
    pub sha256: String,
    /// The origin's `ETag`.
    pub etag: Option<String>,
    /// The origin's `Last-Modified`.
    pub last_modified: Option<String>,
}

/// One entry of the events stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its stream id.
    pub id: String,
    /// The fence it was written with.
    pub fence: u64,
    /// `committed`, `not_modified` or `failed`.
    pub kind: String,
}

/// The server's epoch as [`SharedTier::check_epoch`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochCheck {
    /// The epoch now.
    pub epoch: String,
    /// This check set it: the server had none (new or wiped).
    pub created: bool,
    /// It differs from the one this handle saw before.
    pub changed: bool,
}
