//! The warm-keeping queue: when to look at each source next, which sources
//! are due for a refresh, which are refreshing. Pure bookkeeping over
//! instants given by the caller; no IO, no clock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::source::SourceId;

/// Where a source is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// To be looked at (its due time read from disk) at this instant.
    Waiting(Instant),
    /// Its due time is being read; `again` if it was woken meanwhile.
    Looking { again: bool },
    /// Due: waits for a refresh permit.
    Ready,
    /// A refresh attempt is running.
    Running,
}

/// One source's entry.
#[derive(Debug, Clone)]
struct Scheduled {
    state: State,
    /// No look before this (the pause after an attempt).
    rest_until: Instant,
    /// The factor around `refresh_ahead`, redrawn after every attempt.
    jitter: f64,
    /// The source's ttl and backoff base, from the config in force.
    policy: Timing,
}

/// What the queue needs of a source's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// The source's ttl.
    pub ttl: Duration,
    /// How long to wait after an error that the sidecar does not record.
    pub backoff: Duration,
    /// The longest backoff: a recorded retry time past now + this is clamped.
    pub backoff_cap: Duration,
}

/// A source to look at: its id, jitter and timing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    /// The source.
    pub id: SourceId,
    /// Its current jitter factor.
    pub jitter: f64,
    /// Its timing.
    pub timing: Timing,
}

/// Every kept source, ordered by when to look at it next.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    slots: HashMap<SourceId, Scheduled>,
    timeline: BTreeSet<(Instant, SourceId)>,
    ready: VecDeque<SourceId>,
}

impl Queue {
    /// Whether this source is kept.
    pub fn contains(&self, id: &SourceId) -> bool {
        self.slots.contains_key(id)
    }

    /// Every kept source.
    pub fn ids(&self) -> impl Iterator<Item = &SourceId> {
        self.slots.keys()
    }

    /// Starts keeping a source: it is looked at `now`.
    pub fn insert(&mut self, id: SourceId, timing: Timing, jitter: f64, now: Instant) {
        self.remove(&id);
        let slot = Scheduled {
            state: State::Waiting(now),
            rest_until: now,
            jitter,
            policy: timing,
        };
        self.timeline.insert((now, id.clone()));
        self.slots.insert(id, slot);
    }

    /// Stops keeping a source. A refresh of it already running finishes.
    pub fn remove(&mut self, id: &SourceId) -> bool {
        let Some(slot) = self.slots.remove(id) else {
            return false;
        };
        if let State::Waiting(at) = slot.state {
            self.timeline.remove(&(at, id.clone()));
        }
        true
    }

    /// Sets a source's timing (the config may have changed).
    pub fn set_timing(&mut self, id: &SourceId, timing: Timing) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.policy = timing;
        }
    }

    /// Looks at a source again as soon as its pause allows. Returns whether
    /// the next instant to act may have moved earlier.
    pub fn wake(&mut self, id: &SourceId, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(id) else {
            return false;
        };
        match slot.state {
            State::Waiting(at) => {
                let soon = now.max(slot.rest_until);
                if soon >= at {
                    return false;
                }
                slot.state = State::Waiting(soon);
                self.timeline.remove(&(at, id.clone()));
                self.timeline.insert((soon, id.clone()));
                true
            }
            State::Looking { .. } => {
                slot.state = State::Looking { again: true };
                false
            }
            // Re-checked after the permit, and looked at after the attempt.
            State::Ready | State::Running => false,
        }
    }

    /// Takes up to `max` sources whose time to be looked at has come.
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<Pending> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some((at, _)) = self.timeline.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some((_, id)) = self.timeline.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.state = State::Looking { again: false };
                taken.push(Pending {
                    id,
                    jitter: slot.jitter,
                    timing: slot.policy,
                });
            }
        }
        taken
    }

    /// Records a look: `Some(due)` is when the source needs a refresh
    /// (due now or before: it becomes ready), `None` that its state could
    /// not be read (looked at again after its backoff). Returns whether the
    /// source is still kept and not due, i.e. it needs nothing now.
    pub fn looked(&mut self, id: &SourceId, due: Option<Instant>, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(id) else {
            return false;
        };
        let State::Looking { again } = slot.state else {
            return false;
        };
        let at = match due {
            Some(due) if due <= now => {
                slot.state = State::Ready;
                self.ready.push_back(id.clone());
                return false;
            }
            _ if again => now,
            Some(due) => due,
            None => now + slot.policy.backoff,
        };
        slot.state = State::Waiting(at);
        self.timeline.insert((at, id.clone()));
        true
    }

    /// Whether some source waits for a refresh permit.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next ready source, now running.
    pub fn start_next(&mut self) -> Option<Pending> {
        while let Some(id) = self.ready.pop_front() {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            if slot.state != State::Ready {
                continue;
            }
            slot.state = State::Running;
            return Some(Pending {
                id,
                jitter: slot.jitter,
                timing: slot.policy,
            });
        }
        None
    }

    /// An attempt ended: the source rests until `rest_until`, then is
    /// looked at again with a fresh `jitter`.
    pub fn finished(&mut self, id: &SourceId, rest_until: Instant, jitter: f64) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.state != State::Running {
            return;
        }
        slot.state = State::Waiting(rest_until);
        slot.rest_until = rest_until;
        slot.jitter = jitter;
        self.timeline.insert((rest_until, id.clone()));
    }

    /// The earliest instant a source is to be looked at.
    pub fn next_at(&self) -> Option<Instant> {
        self.timeline.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SourceId {
        SourceId::parse(s).expect("valid id")
    }

    fn timing() -> Timing {
        Timing {
            ttl: Duration::from_secs(100),
            backoff: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
        }
    }

    fn ids(looks: &[Pending]) -> Vec<String> {
        looks.iter().map(|l| l.id.to_string()).collect()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn sources_are_looked_at_in_due_order_and_only_once_due() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        for name in ["t/a", "t/b", "t/c"] {
            q.insert(id(name), timing(), 1.0, t0);
        }
        assert_eq!(q.take_due(t0, 10).len(), 3);
        assert!(q.looked(&id("t/a"), Some(t0 + secs(30)), t0));
        assert!(q.looked(&id("t/b"), Some(t0 + secs(10)), t0));
        assert!(q.looked(&id("t/c"), Some(t0 + secs(20)), t0));
        assert_eq!(q.next_at(), Some(t0 + secs(10)));
        assert!(q.take_due(t0 + secs(9), 10).is_empty());
        assert_eq!(ids(&q.take_due(t0 + secs(25), 10)), ["t/b", "t/c"]);
        assert_eq!(q.next_at(), Some(t0 + secs(30)));
    }

    #[test]
    fn take_due_takes_at_most_a_batch() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        for n in 0..5 {
            q.insert(id(&format!("t/s{n}")), timing(), 1.0, t0);
        }
        assert_eq!(q.take_due(t0, 2).len(), 2);
        assert_eq!(q.take_due(t0, 2).len(), 2);
        assert_eq!(q.take_due(t0, 2).len(), 1);
        assert!(q.take_due(t0, 2).is_empty());
    }

    #[test]
    fn a_source_due_now_becomes_ready_and_runs_once() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.insert(id("t/a"), timing(), 1.0, t0);
        q.take_due(t0, 10);
        assert!(!q.looked(&id("t/a"), Some(t0), t0), "due: not resting");
        assert!(q.has_ready());
        let started = q.start_next().expect("ready");
        assert_eq!(started.id, id("t/a"));
        assert!(q.start_next().is_none());
        assert_eq!(q.next_at(), None, "running: not on the timeline");
    }

    #[test]
    fn wake_brings_a_waiting_source_forward_to_now() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.insert(id("t/a"), timing(), 1.0, t0);
        q.take_due(t0, 10);
        q.looked(&id("t/a"), Some(t0 + secs(80)), t0);
        let now = t0 + secs(5);
        assert!(q.wake(&id("t/a"), now));
        assert_eq!(q.next_at(), Some(now));
        assert_eq!(ids(&q.take_due(now, 10)), ["t/a"]);
        assert!(!q.wake(&id("t/unknown"), now));
    }

    #[test]
    fn wake_while_looking_looks_again_at_once() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.insert(id("t/a"), timing(), 1.0, t0);
        q.take_due(t0, 10);
        q.wake(&id("t/a"), t0);
        q.looked(&id("t/a"), Some(t0 + secs(80)), t0);
        assert_eq!(q.next_at(), Some(t0), "the look may predate the change");
    }

    #[test]
    fn an_attempt_rests_and_wake_does_not_cut_the_pause() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.insert(id("t/a"), timing(), 1.0, t0);
        q.take_due(t0, 10);
        q.looked(&id("t/a"), Some(t0), t0);
        q.start_next().expect("ready");
        assert!(!q.wake(&id("t/a"), t0), "running: nothing to move");
        let rest = t0 + secs(10);
        q.finished(&id("t/a"), rest, 1.02);
        assert!(!q.wake(&id("t/a"), t0 + secs(1)), "resting");
        assert!(q.take_due(t0 + secs(9), 10).is_empty());
        let looks = q.take_due(rest, 10);
        assert_eq!(ids(&looks), ["t/a"]);
        assert!(
            (looks[0].jitter - 1.02).abs() < f64::EPSILON,
            "jitter redrawn"
        );
    }

    #[test]
    fn an_unreadable_source_backs_off() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.insert(id("t/a"), timing(), 1.0, t0);
        q.take_due(t0, 10);
        assert!(q.looked(&id("t/a"), None, t0));
        assert_eq!(q.next_at(), Some(t0 + timing().backoff));
    }

    #[test]
    fn a_removed_source_leaves_timeline_and_ready_list() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.insert(id("t/a"), timing(), 1.0, t0);
        q.insert(id("t/b"), timing(), 1.0, t0);
        q.take_due(t0, 1);
        q.looked(&id("t/a"), Some(t0), t0);
        assert!(q.remove(&id("t/a")));
        assert!(q.remove(&id("t/b")));
        assert!(!q.remove(&id("t/b")));
        assert!(q.start_next().is_none());
        assert_eq!(q.next_at(), None);
        assert!(!q.contains(&id("t/a")));
        q.finished(&id("t/a"), t0, 1.0);
        assert_eq!(q.next_at(), None, "a late finish does not bring it back");
    }
}
