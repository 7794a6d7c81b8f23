//! One refresh of one source through the shared tier, across hosts: copy
//! down a newer shared copy, else take the lease and refresh (with the
//! shared validators) and commit under the fence, else wait for the holder
//! on the events stream and look again. This is the seam the refresh path
//! calls after its host-wide claim (src/cache/shared.rs); it touches no
//! local file.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::client::SharedTier;
use super::error::SharedError;
use super::types::{Commit, CommitKind, Committed, Failure, Lease, SharedCopy, Take};
use crate::source::{Policy, SourceId};

/// What the refresh closure produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Produced {
    /// A new payload, with the origin's validators.
    Fetched {
        /// The payload.
        payload: Vec<u8>,
        /// The origin's `ETag`.
        etag: Option<String>,
        /// The origin's `Last-Modified`.
        last_modified: Option<String>,
    },
    /// The origin answered 304 to the shared validators.
    NotModified,
}

/// Why the refresh closure failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What went wrong (secrets already redacted).
    pub message: String,
    /// The origin's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

/// The validators of the shared copy, for the refresher to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedValidators {
    /// `If-None-Match`.
    pub etag: Option<String>,
    /// `If-Modified-Since`.
    pub last_modified: Option<String>,
}

/// How one flight ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flight {
    /// This host refreshed and committed: write `copy` locally.
    Refreshed(SharedCopy),
    /// Another host's result, newer than the local one: write it locally
    /// with `fetched_at` as its mtime; no upstream call was made.
    CopyDown(SharedCopy),
    /// The shared backoff runs: no upstream call until then (ms since the
    /// Unix epoch, server time).
    Backoff(i64),
    /// This host's refresh failed; the shared backoff now runs until
    /// `next_retry_at_ms` when it was recorded. (A failure refused because a
    /// newer fence committed meanwhile ends as [`Flight::CopyDown`] of that
    /// copy instead.)
    Failed {
        /// The refresher's error.
        message: String,
        /// The shared backoff, when recorded.
        next_retry_at_ms: Option<i64>,
    },
    /// The deadline passed while another host held the lease.
    TimedOut,
}

/// Runs one flight for `source`: `newer_than_ms` is the origin time a
/// shared copy must beat to be copied down instead of refreshing (the local
/// copy's `fetched_at`, or now minus the ttl when that is later);
/// `deadline` bounds the whole flight, waits included.
///
/// # Errors
///
/// [`SharedError`] when the shared tier cannot be reached: the caller then
/// follows the source's `on_down`.
pub async fn fly<F, Fut>(
    tier: &SharedTier,
    source: &SourceId,
    policy: &Policy,
    newer_than_ms: i64,
    deadline: Duration,
    refresh: F,
) -> Result<Flight, SharedError>
where
    F: FnOnce(SharedValidators) -> Fut,
    Fut: Future<Output = Result<Produced, Refused>>,
{
    let until = Instant::now() + deadline;
    let hold = policy.refresh_deadline + LEASE_GRACE;
    loop {
        match tier.take_lease(source, hold, Some(newer_than_ms)).await? {
            Take::Newer => {
                let copy = tier.read_copy(source).await?;
                if let Some(copy) = copy.filter(|c| c.fetched_at_ms > newer_than_ms) {
                    return Ok(Flight::CopyDown(copy));
                }
                // Gone meanwhile (a wiped server): look again, within the
                // deadline.
                if Instant::now() >= until {
                    return Ok(Flight::TimedOut);
                }
            }
            Take::Leased(lease) => return hold_flight(tier, policy, &lease, refresh).await,
            Take::Backoff { next_retry_at_ms } => return Ok(Flight::Backoff(next_retry_at_ms)),
            Take::Busy { remaining, after } => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Flight::TimedOut);
                }
                tier.wait_for(source, &after, remaining.min(left)).await?;
            }
        }
    }
}

/// Added to the refresh deadline for the lease's expiry.
pub(crate) const LEASE_GRACE: Duration = Duration::from_secs(5);

/// The holder's part: refresh, then commit or record the failure.
async fn hold_flight<F, Fut>(
    tier: &SharedTier,
    policy: &Policy,
    lease: &Lease,
    refresh: F,
) -> Result<Flight, SharedError>
where
    F: FnOnce(SharedValidators) -> Fut,
    Fut: Future<Output = Result<Produced, Refused>>,
{
    let validators = SharedValidators {
        etag: lease.etag.clone(),
        last_modified: lease.last_modified.clone(),
    };
    let produced = match refresh(validators).await {
        Ok(produced) => produced,
        Err(refused) => return record(tier, policy, lease, refused).await,
    };
    let fetched_at_ms = now_ms();
    // Only a 304 needs the shared payload: the one its validators name.
    let copy = match produced {
        Produced::NotModified => tier.read_copy(&lease.source).await?,
        Produced::Fetched { .. } => None,
    };
    let (mine, kind) = match (produced, copy) {
        (
            Produced::Fetched {
                payload,
                etag,
                last_modified,
            },
            _,
        ) => {
            let mine = SharedCopy {
                sha256: hex::encode(Sha256::digest(&payload)),
                payload,
                fence: lease.fence,
                fetched_at_ms,
                etag,
                last_modified,
            };
            (mine, CommitKind::Fetched)
        }
        (Produced::NotModified, Some(copy)) => {
            let mine = SharedCopy {
                fence: lease.fence,
                fetched_at_ms,
                ..copy
            };
            (mine, CommitKind::NotModified)
        }
        (Produced::NotModified, None) => {
            let refused = Refused {
                message: "304 Not Modified without a shared copy to keep".into(),
                retry_after: None,
            };
            return record(tier, policy, lease, refused).await;
        }
    };
    let commit = Commit {
        kind,
        fetched_at_ms,
        payload: &mine.payload,
        sha256: &mine.sha256,
        etag: mine.etag.as_deref(),
        last_modified: mine.last_modified.as_deref(),
    };
    match tier.commit(lease, &commit).await? {
        Committed::Committed(_) => Ok(Flight::Refreshed(mine)),
        // A newer fence won while this host refreshed: take its copy.
        Committed::Stale(_) => match tier.read_copy(&lease.source).await? {
            Some(newer) => Ok(Flight::CopyDown(newer)),
            None => Ok(Flight::Refreshed(mine)),
        },
    }
}

async fn record(
    tier: &SharedTier,
    policy: &Policy,
    lease: &Lease,
    refused: Refused,
) -> Result<Flight, SharedError> {
    let failure = Failure {
        error: &refused.message,
        base: policy.backoff_base,
        cap: policy.backoff_cap,
        retry_after: refused.retry_after,
    };
    let next_retry_at_ms = tier.record_failure(lease, &failure).await?;
    // Refused as stale: a newer fence committed while this host refreshed
    // (it was paused past its lease, say): that copy is the outcome.
    if next_retry_at_ms.is_none()
        && let Some(newer) = tier.read_copy(&lease.source).await?
        && newer.fence > lease.fence
    {
        return Ok(Flight::CopyDown(newer));
    }
    Ok(Flight::Failed {
        message: refused.message,
        next_retry_at_ms,
    })
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
