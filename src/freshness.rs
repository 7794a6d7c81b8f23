//! The one place that judges freshness: how old a payload is, whether it is
//! fresh, stale or expired, whether its date is in the future, and when a
//! failing source may be retried. The library, the CLI and the daemon all
//! ask here.

use std::time::{Duration, SystemTime};

use crate::meta::Timestamp;
use crate::source::Policy;

/// How far in the future a payload's mtime or `fetched_at` may be (clock
/// skew between processes, coarse file-system clocks) before it counts as
/// stale: an age cannot be vouched for from a date that has not come.
pub const FUTURE_SKEW: Duration = Duration::from_secs(5);

/// Where a payload stands against its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than its ttl.
    Fresh,
    /// Older than its ttl (or dated in the future): served, refreshed.
    Stale,
    /// Older than its `max_stale`: reported, not served unless asked.
    Expired,
}

/// A payload's age and freshness, judged at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// Time since it was fetched; zero when it is dated in the future.
    pub age: Duration,
    /// Fresh, stale or expired.
    pub freshness: Freshness,
    /// Dated more than [`FUTURE_SKEW`] after now: its age is unknown, so it
    /// counts as stale (never expired: stale data beats none).
    pub future: bool,
    /// Committed under another definition of the source than the current
    /// one (see [`Judgement::with_definition`]): stale at once.
    pub definition_changed: bool,
}

impl Judgement {
    /// Younger than its ttl.
    pub fn fresh(&self) -> bool {
        self.freshness == Freshness::Fresh
    }

    /// Older than its `max_stale`.
    pub fn expired(&self) -> bool {
        self.freshness == Freshness::Expired
    }

    /// Takes the source's definition into account: data committed under
    /// `recorded` (the sidecar's hash) is stale at once when the policy's
    /// current definition differs. Either missing (an older sidecar, a
    /// caller that does not track definitions) counts as unchanged.
    #[must_use]
    pub fn with_definition(mut self, recorded: Option<&str>, policy: &Policy) -> Self {
        self.definition_changed = definition_changed(recorded, policy);
        if self.definition_changed && self.freshness == Freshness::Fresh {
            self.freshness = Freshness::Stale;
        }
        self
    }

    /// Why the data is not fresh, in words; `None` when it is fresh.
    pub fn stale_reason(&self) -> Option<&'static str> {
        match self.freshness {
            Freshness::Fresh => None,
            Freshness::Expired => Some("older than max_stale"),
            Freshness::Stale if self.definition_changed => Some("definition changed"),
            Freshness::Stale if self.future => Some("dated in the future"),
            Freshness::Stale => Some("older than ttl"),
        }
    }
}

/// True when data committed under `recorded` (a sidecar's definition
/// hash) was made by another definition than the policy's. Either missing
/// counts as unchanged.
pub fn definition_changed(recorded: Option<&str>, policy: &Policy) -> bool {
    matches!((recorded, policy.definition.as_deref()), (Some(r), Some(c)) if r != c)
}

/// Judges a payload whose mtime is `modified` (and whose sidecar, when read,
/// records `recorded` as its `fetched_at`) at `now` under `policy`.
pub fn judge(
    modified: SystemTime,
    recorded: Option<SystemTime>,
    now: SystemTime,
    policy: &Policy,
) -> Judgement {
    let ahead = |t: SystemTime| t.duration_since(now).is_ok_and(|d| d > FUTURE_SKEW);
    if ahead(modified) || recorded.is_some_and(ahead) {
        return Judgement {
            age: Duration::ZERO,
            freshness: Freshness::Stale,
            future: true,
            definition_changed: false,
        };
    }
    let age = now.duration_since(modified).unwrap_or_default();
    let freshness = if policy.max_stale.is_some_and(|m| age > m) {
        Freshness::Expired
    } else if age < policy.ttl {
        Freshness::Fresh
    } else {
        Freshness::Stale
    };
    Judgement {
        age,
        freshness,
        future: false,
        definition_changed: false,
    }
}

/// When a failing source may be retried: its recorded `next_retry_at`,
/// but never later than `policy.backoff_cap` after the last attempt (a date
/// far in the future, from a bad clock or written by hand, must not stop
/// refreshes for ever). A last attempt dated in the future (past
/// [`FUTURE_SKEW`]) or missing anchors nothing: no backoff then.
pub fn retry_at(
    recorded: Option<Timestamp>,
    last_attempt: Option<Timestamp>,
    now: Timestamp,
    policy: &Policy,
) -> Option<Timestamp> {
    clamp_retry(recorded, last_attempt, now, policy.backoff_cap)
}

/// [`retry_at`] for a caller that holds only the backoff cap.
pub fn clamp_retry(
    recorded: Option<Timestamp>,
    last_attempt: Option<Timestamp>,
    now: Timestamp,
    cap: Duration,
) -> Option<Timestamp> {
    let anchor = last_attempt
        .filter(|t| *t <= now.plus(FUTURE_SKEW))
        .unwrap_or(Timestamp::from(SystemTime::UNIX_EPOCH));
    recorded.map(|t| t.min(anchor.plus(cap)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy {
            ttl: 60 * S,
            max_stale: Some(600 * S),
            backoff_cap: 300 * S,
            ..Policy::default()
        }
    }

    #[test]
    fn age_decides_fresh_stale_expired() {
        let now = SystemTime::now();
        let at = |age: u32| judge(now - age * S, None, now, &policy());
        assert_eq!(at(10).freshness, Freshness::Fresh);
        assert_eq!(at(10).age, 10 * S);
        assert_eq!(at(60).freshness, Freshness::Stale);
        assert_eq!(at(601).freshness, Freshness::Expired);
    }

    #[test]
    fn a_date_past_the_skew_is_stale_with_its_age_unknown() {
        let now = SystemTime::now();
        let within = judge(now + FUTURE_SKEW, None, now, &policy());
        assert!(within.fresh() && !within.future);
        let year_2100 = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        let j = judge(year_2100, None, now, &policy());
        assert!(j.future && !j.fresh() && !j.expired(), "{j:?}");
        let recorded = judge(now, Some(now + FUTURE_SKEW + S), now, &policy());
        assert!(recorded.future && !recorded.fresh());
    }

    #[test]
    fn a_changed_definition_is_stale_at_once() {
        let now = SystemTime::now();
        let p = Policy {
            definition: Some("new".into()),
            ..policy()
        };
        let fresh = judge(now, None, now, &p);
        assert!(fresh.fresh());
        let changed = fresh.with_definition(Some("old"), &p);
        assert!(!changed.fresh() && changed.definition_changed);
        assert_eq!(changed.stale_reason(), Some("definition changed"));
        assert!(fresh.with_definition(Some("new"), &p).fresh());
        // An older sidecar, or a caller that tracks no definition: unchanged.
        assert!(fresh.with_definition(None, &p).fresh());
        assert!(fresh.with_definition(Some("old"), &policy()).fresh());
        let expired = judge(now - 601 * S, None, now, &p).with_definition(Some("old"), &p);
        assert!(expired.expired());
        assert_eq!(expired.stale_reason(), Some("older than max_stale"));
    }

    #[test]
    fn retry_is_clamped_to_last_attempt_plus_cap() {
        let now = Timestamp::now();
        let last = Some(now);
        let year_9999 =
            Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799));
        let p = policy();
        assert_eq!(
            retry_at(Some(year_9999), last, now, &p),
            Some(now.plus(300 * S))
        );
        let soon = now.plus(10 * S);
        assert_eq!(retry_at(Some(soon), last, now, &p), Some(soon));
        assert_eq!(retry_at(None, last, now, &p), None);
        // A last attempt in the future anchors nothing: no backoff.
        let got = retry_at(Some(year_9999), Some(year_9999), now, &p).unwrap();
        assert!(got < now, "{got:?}");
    }
}
