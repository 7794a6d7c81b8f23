//! The socket server: an accept loop, one thread per connection with
//! blocking reads and writes, newline-delimited JSON framing, the connection
//! cap, the idle timeout, peer credential checks and shutdown.
//!
//! A connection is served by its own thread (see `conn`), which reads a
//! line, runs the request on the runtime with [`Handle::block_on`] and
//! writes the answer. A hot request (a `get` answered from memory) never
//! waits for anything, so this is one wake-up, one read and one write per
//! request, with no event-loop hop in between. A `watch` is handed to an
//! async task once its first line is sent (see `watch`).
//!
//! What each request does is the [`Service`]'s business; the server owns the
//! transport rules of protocol v1 (see [`crate::protocol`]): a malformed line
//! gets an error and the connection stays usable, an oversize line gets
//! `too_large` and the connection is closed, a connection past the cap gets
//! `busy` and is closed, and a peer with another uid (other than root) is
//! closed without an answer.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{Envelope, ErrorCode, Event, Response, WireError, to_line};
use crate::source::SourceId;

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; past it a client gets `busy`.
    pub max_connections: usize,
    /// A connection with no request for this long is closed (watch
    /// connections are exempt).
    pub idle_timeout: Duration,
    /// A client that does not take a response within this is dropped.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
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

    /// The next event that passes the filter; `None` when the sender is gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.wants(&event) => return Some(event),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("a watch client fell behind; {n} events were dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn wants(&self, event: &Event) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.contains(&event.source))
    }
}

/// Answers requests. The server calls it once per parsed request line.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send;
}

/// Serves connections on `listener` until `shutdown` is cancelled: accepts
/// here, serves each connection on its own thread (watches on tasks). Every
/// connection is tracked by `tracker`, and each ends at the next request
/// boundary after `shutdown`.
pub async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let own_uid = nix::unistd::getuid().as_raw();
    let open = conn::Open::new();
    tracker.spawn(open.clone().close_on(shutdown.clone()));
    let runtime = Handle::current();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a moment, go on.
                tracing::warn!("accept on the socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !peer_allowed(&stream, own_uid) {
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracker.spawn(refuse_busy(stream, limits));
            continue;
        };
        let conn = conn::Conn {
            service: Arc::clone(&service),
            limits,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            runtime: runtime.clone(),
            open: open.clone(),
            slot,
        };
        conn.start(stream);
    }
}

/// True for a peer with our uid or root; logs and refuses everyone else.
fn peer_allowed(stream: &UnixStream, own_uid: u32) -> bool {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own_uid || cred.uid() == 0 => true,
        Ok(cred) => {
            let pid = cred.pid().unwrap_or(0);
            tracing::warn!("refused a connection from uid {} (pid {pid})", cred.uid());
            false
        }
        Err(e) => {
            tracing::warn!("refused a connection whose credentials are unknown: {e}");
            false
        }
    }
}

/// Answers `busy` to a connection past the cap and closes it.
async fn refuse_busy(mut stream: UnixStream, limits: Limits) {
    let msg = format!(
        "the daemon already serves {} connections; retry later",
        limits.max_connections
    );
    if let Answer::Line(line) = Answer::error(None, WireError::new(ErrorCode::Busy, msg)) {
        let _ = tokio::time::timeout(limits.write_timeout, stream.write_all(line.as_bytes())).await;
    }
}

mod conn;
mod watch;

#[cfg(test)]
mod tests;
