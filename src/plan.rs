//! What a `get` does about refreshing: one pure decision, used by the
//! daemon's `get` and by the CLI in direct mode alike.

use crate::protocol::RefreshMode;

/// What the reader found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No payload.
    Nothing,
    /// A payload within its ttl (and the reader's max age).
    Fresh,
    /// A payload past its ttl (or the reader's max age).
    Stale,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// What the request asked for.
    pub mode: RefreshMode,
    /// What is on disk.
    pub found: Found,
    /// The last attempt failed and its retry time has not come.
    pub backing_off: bool,
    /// A refresh of the source runs now.
    pub in_flight: bool,
    /// The caller lives on after answering, so a refresh started in the
    /// background completes (the daemon: yes; a CLI process: no).
    pub lives_on: bool,
}

/// What to do before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Answer with what is on disk.
    Serve,
    /// Answer with what is on disk and start a refresh nobody waits for.
    ServeAndRefresh,
    /// Refresh (joining one in flight), wait, then answer. A failed refresh
    /// fails the read only when `failure_fails`; otherwise the old data is
    /// served (stale data beats no data).
    Wait {
        /// The refresh's error is the answer.
        failure_fails: bool,
    },
}

/// Decides what a `get` does. `force` always refreshes, backoff or not (an
/// explicit refresh does not wait for its retry time); every other mode
/// leaves fresh data alone and leaves a backing-off source alone.
pub fn plan(s: Situation) -> Plan {
    let missing = s.found == Found::Nothing;
    let needs = s.found != Found::Fresh;
    match s.mode {
        RefreshMode::Force => Plan::Wait {
            failure_fails: true,
        },
        RefreshMode::Never => Plan::Serve,
        _ if !needs || s.backing_off => Plan::Serve,
        RefreshMode::WaitIfStale => Plan::Wait {
            failure_fails: missing,
        },
        RefreshMode::IfStale if s.in_flight => Plan::Serve,
        RefreshMode::IfStale if s.lives_on => Plan::ServeAndRefresh,
        // A process about to exit cannot refresh in the background: with
        // nothing to serve it waits, else it serves what it has.
        RefreshMode::IfStale if missing => Plan::Wait {
            failure_fails: true,
        },
        RefreshMode::IfStale => Plan::Serve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation(mode: RefreshMode, found: Found) -> Situation {
        Situation {
            mode,
            found,
            backing_off: false,
            in_flight: false,
            lives_on: true,
        }
    }

    #[test]
    fn fresh_data_is_served_unless_forced() {
        for mode in [
            RefreshMode::Never,
            RefreshMode::IfStale,
            RefreshMode::WaitIfStale,
        ] {
            assert_eq!(plan(situation(mode, Found::Fresh)), Plan::Serve, "{mode:?}");
        }
        let forced = plan(situation(RefreshMode::Force, Found::Fresh));
        assert_eq!(
            forced,
            Plan::Wait {
                failure_fails: true
            }
        );
    }

    #[test]
    fn if_stale_refreshes_in_the_background_only_where_that_can_finish() {
        let daemon = situation(RefreshMode::IfStale, Found::Stale);
        assert_eq!(plan(daemon), Plan::ServeAndRefresh);
        let cli = Situation {
            lives_on: false,
            ..daemon
        };
        assert_eq!(plan(cli), Plan::Serve);
        let empty = Situation {
            found: Found::Nothing,
            ..cli
        };
        assert_eq!(
            plan(empty),
            Plan::Wait {
                failure_fails: true
            }
        );
        let running = Situation {
            in_flight: true,
            ..daemon
        };
        assert_eq!(plan(running), Plan::Serve);
    }

    #[test]
    fn wait_if_stale_fails_only_a_miss() {
        let stale = situation(RefreshMode::WaitIfStale, Found::Stale);
        assert_eq!(
            plan(stale),
            Plan::Wait {
                failure_fails: false
            }
        );
        let missing = situation(RefreshMode::WaitIfStale, Found::Nothing);
        assert_eq!(
            plan(missing),
            Plan::Wait {
                failure_fails: true
            }
        );
    }

    #[test]
    fn backing_off_is_left_alone_except_by_force() {
        for mode in [RefreshMode::IfStale, RefreshMode::WaitIfStale] {
            let s = Situation {
                backing_off: true,
                ..situation(mode, Found::Stale)
            };
            assert_eq!(plan(s), Plan::Serve, "{mode:?}");
        }
        let forced = Situation {
            backing_off: true,
            ..situation(RefreshMode::Force, Found::Stale)
        };
        assert_eq!(
            plan(forced),
            Plan::Wait {
                failure_fails: true
            }
        );
    }
}
