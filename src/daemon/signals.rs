//! Signals, turned into the daemon's tokens in this one place: the first
//! SIGTERM or SIGINT cancels `shutdown` (stop accepting, let refreshes
//! finish within the grace); a second one cancels `abort` (stop waiting:
//! in-flight refreshes are dropped at once, which kills their process
//! groups). SIGHUP asks for a config reload.

use std::io;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::reload::Trigger;
use super::state::Daemon;

/// Installs the handlers and spawns the task that serves them. The task is
/// not tracked: it must outlive the shutdown it starts, to see a second
/// signal.
///
/// # Errors
///
/// When a handler cannot be installed.
pub(crate) fn spawn(d: &Arc<Daemon>, reloads: mpsc::Sender<Trigger>) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let d = Arc::clone(d);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = reloads.try_send(Trigger::Signal);
                    continue;
                }
            };
            if d.shutdown.is_cancelled() {
                tracing::warn!("{name} again: stopping in-flight refreshes now");
                d.abort.cancel();
            } else {
                tracing::info!("{name}: shutting down");
                d.shutdown.cancel();
            }
        }
    });
    Ok(())
}
