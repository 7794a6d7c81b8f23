//! The shared tier in the refresh path (docs/SHARED.md): with the host-wide
//! claim held, one flight across hosts ([`crate::shared::fly`]), and what
//! each way it ends means for the local copy.
//!
//! - this host refreshed: its payload is committed locally with the time the
//!   origin answered as its mtime (a 304 only moves that time);
//! - another host's newer copy: copied down the same way, no upstream call,
//!   and the caller sees [`Refreshed::Joined`] (it took another refresh's
//!   outcome, as a waiter on this host would);
//! - the shared backoff runs, or this host's refresh failed: a failure
//!   recorded with the shared `next_retry_at`;
//! - the wait for another host's lease ran out: [`Error::Timeout`];
//! - the tier is unreachable: the source's [`OnDown`]: `local` refreshes as
//!   without a tier (logged once per outage), `hold` makes no upstream call
//!   and records a failure naming the tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::holding::run_refresher;
use super::{Source, WAIT_GRACE};
use crate::error::{Error, Result};
use crate::meta::Timestamp;
use crate::refresh::{Holder, Refreshed};
use crate::refresher::{FetchContext, FetchError, Fetched, Validators};
use crate::shared::{
    Flight, LEASE_GRACE, Produced, Refused, SharedCopy, SharedError, SharedTier, SharedValidators,
};
use crate::source::{OnDown, Policy};

/// A cache's shared tier, and whether its outage was logged already.
#[derive(Debug)]
pub(crate) struct Link {
    tier: Arc<SharedTier>,
    down: AtomicBool,
}

impl Link {
    /// A link to `tier`, taken as up.
    pub fn new(tier: Arc<SharedTier>) -> Self {
        Self {
            tier,
            down: AtomicBool::new(false),
        }
    }

    /// The tier.
    pub fn tier(&self) -> &Arc<SharedTier> {
        &self.tier
    }

    /// Logs the start of an outage once, not once per refresh.
    fn went_down(&self, e: &SharedError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!("{e}; until it is back each source follows its on_down");
        }
    }

    /// Logs the end of an outage, once.
    fn back_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("shared tier {} is back", self.tier.status().url);
        }
    }
}

/// How long a holder keeps a source whose refresh goes through the tier:
/// a wait for another host's lease (its deadline plus the lease's grace),
/// then its own refresh.
pub(super) fn hold_for(policy: &Policy) -> Duration {
    flight_bound(policy) + policy.refresh_deadline
}

/// The longest wait for another host's lease before giving up.
fn flight_bound(policy: &Policy) -> Duration {
    policy.refresh_deadline + LEASE_GRACE + WAIT_GRACE
}

/// What the holder does with the local copy once the flight is over.
pub(super) enum Landing {
    /// Finish as without a tier, with this refresher result.
    Local(Result<Fetched, FetchError>),
    /// Write this copy locally; `joined` when another host fetched it.
    Copy {
        /// The shared copy.
        copy: SharedCopy,
        /// Fetched by another host.
        joined: bool,
    },
    /// Gave up waiting for another host's refresh after this long.
    TimedOut(Duration),
}

impl Landing {
    /// Applies the landing to the local copy (on a blocking thread).
    pub fn apply(
        self,
        holder: &mut Holder,
        source: &Source,
        started: Timestamp,
    ) -> Result<Refreshed> {
        match self {
            Self::Local(fetched) => holder.finish(fetched, &source.policy, started),
            Self::Copy { copy, joined } => {
                let validators = Validators {
                    etag: copy.etag,
                    last_modified: copy.last_modified,
                };
                let fetched = UNIX_EPOCH + Duration::from_millis(copy.fetched_at_ms.max(0) as u64);
                let landed = holder.land(&copy.payload, validators, fetched, &source.policy)?;
                Ok(if joined { landed.joined() } else { landed })
            }
            Self::TimedOut(waited) => Err(Error::Timeout {
                id: source.id.clone(),
                waited,
                holder: None,
            }),
        }
    }
}

/// Runs one flight across hosts for the source `holder` holds, `f` as the
/// refresher (sent the shared copy's validators) when this host takes the
/// lease; `ctx` is the local context, used when the tier is down.
pub(super) async fn fly<F, Fut>(
    link: &Link,
    holder: &Holder,
    source: &Source,
    ctx: FetchContext,
    f: F,
) -> Landing
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    let policy = &source.policy;
    let (mut slot, mut ran) = (Some(f), None);
    let (taken, outcome, flight_ctx) = (&mut slot, &mut ran, ctx.clone());
    let refresh = move |shared: SharedValidators| {
        let f = taken.take();
        let ctx = FetchContext {
            validators: Validators {
                etag: shared.etag,
                last_modified: shared.last_modified,
            },
            ..flight_ctx
        };
        async move {
            let f = f.expect("the flight runs its refresher once");
            let deadline = policy.refresh_deadline;
            let fetched = run_refresher(f, ctx, deadline, holder.group_hook()).await;
            let produced = produced(holder, policy, &fetched);
            *outcome = Some(fetched);
            produced
        }
    };
    let newer_than = newer_than_ms(holder, policy);
    let flown = crate::shared::fly(
        link.tier(),
        &source.id,
        policy,
        newer_than,
        flight_bound(policy),
        refresh,
    )
    .await;
    match flown {
        Ok(flight) => {
            link.back_up();
            landing(flight, ran, policy)
        }
        Err(e) => {
            link.went_down(&e);
            match (ran, slot) {
                // The upstream answered before the tier failed: keep it.
                (Some(fetched), _) => Landing::Local(fetched),
                (None, Some(f)) if policy.on_down == OnDown::Local => {
                    let deadline = policy.refresh_deadline;
                    Landing::Local(run_refresher(f, ctx, deadline, holder.group_hook()).await)
                }
                (None, _) => Landing::Local(Err(held(&e, policy))),
            }
        }
    }
}

/// The origin time a shared copy must beat to be copied down: the local
/// copy's, or the oldest still fresh when that is later (a shared copy
/// that is stale anyway is refreshed, not copied).
fn newer_than_ms(holder: &Holder, policy: &Policy) -> i64 {
    let local = holder.meta.fetched_at.map_or(0, Timestamp::unix_ms);
    let fresh_from = SystemTime::now()
        .checked_sub(policy.ttl)
        .map_or(0, |t| Timestamp::from(t).unix_ms());
    i64::try_from(local.max(fresh_from)).unwrap_or(i64::MAX)
}

/// What the refresher's result is to the flight: a payload vetted here
/// (JSON, guard) before any host sees it, a 304, or a refusal.
fn produced(
    holder: &Holder,
    policy: &Policy,
    fetched: &Result<Fetched, FetchError>,
) -> Result<Produced, Refused> {
    let refused = |e: &FetchError| Refused {
        message: e.message().to_owned(),
        retry_after: e.retry_after(),
    };
    match fetched {
        Ok(Fetched::Data { bytes, validators }) => match holder.vet(bytes, policy) {
            Ok(()) => Ok(Produced::Fetched {
                payload: bytes.clone(),
                etag: validators.etag.clone(),
                last_modified: validators.last_modified.clone(),
            }),
            Err(e) => Err(refused(&e)),
        },
        Ok(Fetched::NotModified { .. }) => Ok(Produced::NotModified),
        Err(e) => Err(refused(e)),
    }
}

/// The landing of a flight that reached the tier.
fn landing(flight: Flight, ran: Option<Result<Fetched, FetchError>>, policy: &Policy) -> Landing {
    match flight {
        Flight::Refreshed(copy) => Landing::Copy {
            copy,
            joined: false,
        },
        Flight::CopyDown(copy) => Landing::Copy { copy, joined: true },
        Flight::Backoff(at) => {
            let message = format!(
                "the shared tier backs off (a refresh on some host failed): no upstream call before {}",
                Timestamp::from(UNIX_EPOCH + Duration::from_millis(at.max(0) as u64))
            );
            Landing::Local(Err(FetchError::new(message).with_retry_after(until(at))))
        }
        Flight::Failed {
            message,
            next_retry_at_ms,
        } => {
            let error = match ran {
                Some(Err(e)) => e,
                _ => FetchError::new(message),
            };
            Landing::Local(Err(match next_retry_at_ms {
                Some(at) => error.with_retry_after(until(at)),
                None => error,
            }))
        }
        Flight::TimedOut => Landing::TimedOut(flight_bound(policy)),
    }
}

/// The failure a `hold` source records while the tier is down: no
/// upstream call, retried after the source's first backoff delay.
fn held(e: &SharedError, policy: &Policy) -> FetchError {
    let message = format!("{e}; on_down = \"hold\": no upstream call, serving what is on disk");
    FetchError::new(message).with_retry_after(policy.backoff_base)
}

/// From now until `at_ms` (ms since the Unix epoch); zero when past.
fn until(at_ms: i64) -> Duration {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms.max(0) as u64);
    at.duration_since(SystemTime::now()).unwrap_or_default()
}
