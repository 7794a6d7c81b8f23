//! The warm-keeping queue of every configured source and what wakes its
//! scheduler ([`super::warm`]): the part of warm-keeping that the shared
//! state holds and that anyone may wake.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::mutex::lock;
use super::queue::Queue;
use crate::source::SourceId;

/// The jitter around `refresh_ahead`: ±5 %.
const JITTER: f64 = 0.05;

/// The queue, the scheduler's wake-up, and whether it runs.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(super) queue: Mutex<Queue>,
    pub(super) kick: Notify,
    pub(super) started: AtomicBool,
}

impl Registry {
    /// Makes the scheduler look at a source again now (after a change on
    /// disk, a reload or an invalidation); a source resting after an
    /// attempt is looked at when its pause ends.
    pub fn wake(&self, id: &SourceId) {
        if lock(&self.queue).wake(id, Instant::now()) {
            self.kick.notify_one();
        }
    }

    /// An attempt of a source ended: it rests for `pause`, then is looked
    /// at again with a new jitter.
    pub(super) fn finished(&self, id: &SourceId, pause: Duration) {
        let rest_until = Instant::now() + pause;
        lock(&self.queue).finished(id, rest_until, draw_jitter());
        self.kick.notify_one();
    }
}

/// A factor around 1 that spreads the refreshes of sources with equal ttls.
pub(super) fn draw_jitter() -> f64 {
    1.0 - JITTER + 2.0 * JITTER * fastrand::f64()
}
