//! Talking to systemd: READY, STATUS, WATCHDOG and STOPPING through
//! `$NOTIFY_SOCKET` (nothing happens when it is not set).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

/// READY=1 with a status line.
pub(crate) fn ready(stats: &Stats) {
    send(&[NotifyState::Ready, NotifyState::Status(&status_line(stats))]);
}

/// STATUS= with the current status line.
pub(crate) fn report(stats: &Stats) {
    send(&[NotifyState::Status(&status_line(stats))]);
}

/// STOPPING=1.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The one-line status shown by `systemctl status`.
pub(crate) fn status_line(stats: &Stats) -> String {
    // The summary, not a snapshot: that copies every source's counters.
    let snap = stats.summary();
    let mut line = format!(
        "{}: {} sources with data",
        snap.status.as_str(),
        snap.keys_total
    );
    if let Some(e) = snap.last_error {
        line.push_str("; ");
        line.push_str(&e);
    }
    line
}

/// Sends WATCHDOG=1 at half the interval systemd asked for, until `stop`
/// is cancelled (it is not cancelled by the shutdown, so that a long grace
/// does not trip the watchdog).
pub(crate) fn spawn_watchdog(stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
