//! The socket server, in the shape of mini-redis's: a tokio accept loop,
//! a [`Semaphore`] for the connection cap, and one task per connection that
//! reads a line, has the [`Service`] answer it, and writes the answer, with
//! `select!` on the shutdown token around every wait.
//!
//! What each request does is the [`Service`]'s business; the server owns the
//! transport rules of protocol v1 (see [`crate::protocol`]):
//!
//! - a peer with another uid (other than root) is closed without an answer;
//! - past [`Limits::max_connections`] a client gets `busy` and is closed;
//! - a connection that has not finished a request line within
//!   [`Limits::idle_timeout`] of starting to wait for it is closed, however
//!   slowly it dribbles bytes;
//! - a malformed line gets an error and the connection stays usable; an
//!   oversize line gets `too_large` and the connection is closed;
//! - a client that does not take an answer within [`Limits::write_timeout`]
//!   is dropped;
//! - a `watch` moves to its own cap, [`Limits::max_watches`], and gives its
//!   request slot back, so watchers never starve requests.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{Envelope, ErrorCode, Event, Response, WireError, to_line};
use crate::source::SourceId;

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most request connections open at once; past it a client gets
    /// `busy`.
    pub max_connections: usize,
    /// Most `watch` connections open at once (counted apart from the
    /// others); past it a `watch` is answered `busy`.
    pub max_watches: usize,
    /// A request line must be complete within this of the connection
    /// starting to wait for it; else the connection is closed (watch
    /// connections are exempt).
    pub idle_timeout: Duration,
    /// A client that does not take a response within this is dropped.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_watches: 256,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What a [`Service`] answers to a request.
#[derive(Debug)]
pub enum Answer {
    /// One response line (as made by [`to_line`]).
    Line(String),
    /// One long response line, sent in chunks as they are made (so that
    /// the whole line is never held at once). The last chunk ends with the
    /// newline; a stream that ends without one closes the connection.
    Chunks(mpsc::Receiver<Vec<u8>>),
    /// The first line of a watch, then the events of `stream` until the
    /// client closes.
    Watch {
        /// The `{"ok": true, ...}` line.
        first: String,
        /// The events to forward.
        stream: EventStream,
    },
}

impl Answer {
    /// A response serialised as a line; a response that cannot be
    /// serialised becomes an `internal` error line.
    pub fn of<B: serde::Serialize>(response: &Response<B>, id: Option<serde_json::Value>) -> Self {
        match to_line(response) {
            Ok(line) => Self::Line(line),
            Err(e) => Self::error(id, WireError::new(ErrorCode::Internal, e.to_string())),
        }
    }

    /// A failure line.
    pub fn error(id: Option<serde_json::Value>, error: WireError) -> Self {
        let response = Response::failure(id, error);
        // A failure response is a plain map of strings: it always serialises.
        Self::Line(to_line(&response).unwrap_or_else(|_| "{\"ok\":false}\n".into()))
    }
}

/// Events for a watch connection, filtered by source.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
    filter: Option<BTreeSet<SourceId>>,
}

impl EventStream {
    /// Events of `rx` for the sources in `filter` (`None`: every source).
    pub fn new(rx: broadcast::Receiver<Event>, filter: Option<BTreeSet<SourceId>>) -> Self {
        Self { rx, filter }
    }

    /// The next event that passes the filter; `Ok(None)` when the sender
    /// is gone, `Err` with how many events were dropped when this stream
    /// fell more than the channel's capacity behind.
    async fn next(&mut self) -> Result<Option<Event>, u64> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.wants(&event) => return Ok(Some(event)),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(n),
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    fn wants(&self, event: &Event) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.contains(&event.source))
    }
}

/// Answers requests. The server calls it once per parsed request line,
/// on the connection's task.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send;
}

/// Serves connections on `listener` until `shutdown` is cancelled. Every
/// connection is a task tracked by `tracker`; each ends at its next wait
/// (for a request line, or for an event) after `shutdown`.
pub async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let ctx = Arc::new(conn::Ctx {
        service,
        limits,
        shutdown: shutdown.clone(),
        watches: Arc::new(Semaphore::new(limits.max_watches)),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let own_uid = nix::unistd::getuid().as_raw();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e, &shutdown).await;
                    continue;
                }
            },
        };
        if !peer_allowed(&stream, own_uid) {
            continue;
        }
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => tracker.spawn(conn::serve(stream, Arc::clone(&ctx), slot)),
            Err(_) => tracker.spawn(conn::busy(stream, limits.write_timeout)),
        };
    }
}

/// After a failed `accept` (out of descriptors, most often): log it and
/// pause a little, so that a lasting failure does not spin.
pub(crate) async fn accept_failed(e: &std::io::Error, shutdown: &CancellationToken) {
    tracing::warn!("cannot accept a connection: {e}");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}

/// A peer runs as our uid or as root (`SO_PEERCRED`); anything else, or a
/// peer whose credentials cannot be read, is refused.
fn peer_allowed(stream: &UnixStream, own_uid: u32) -> bool {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own_uid || cred.uid() == 0 => true,
        Ok(cred) => {
            tracing::warn!("refused a connection from uid {}", cred.uid());
            false
        }
        Err(e) => {
            tracing::warn!("refused a connection whose peer is unknown: {e}");
            false
        }
    }
}

mod conn;
mod watch;

#[cfg(test)]
mod tests;
