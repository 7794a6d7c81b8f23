//! The socket server: a pool of threads that accept connections and serve
//! each with blocking reads and writes, newline-delimited JSON framing, the
//! connection cap, the idle timeout, peer credential checks and shutdown.
//!
//! A connection is served by the thread that accepted it (see `pool` and
//! `conn`), which reads a line, has the service answer it and writes the
//! answer. A request the service can answer from memory
//! ([`Service::answer_now`]) is answered right there: one wake-up, one read
//! and one write, with no event-loop hop. Any other runs on the runtime
//! with [`Handle::block_on`]. A `watch` is handed to an async task once its
//! first line is sent (see `watch`).
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

use tokio::net::UnixListener;
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

/// Answers requests. The server calls it once per parsed request line.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send;

    /// Answers a request that needs nothing but memory at once, writing
    /// its line (newline included) to `out`, on the connection's thread;
    /// false when it must go through [`Self::call`] (the default).
    fn answer_now(&self, _request: &Envelope, _out: &mut Vec<u8>) -> bool {
        false
    }
}

/// Serves connections on `listener` until `shutdown` is cancelled, on a
/// pool of threads (see `pool`; watches go on as tasks). Every thread and
/// task is tracked by `tracker`, and each connection ends at the next
/// request boundary after `shutdown`. When the pool cannot start (no
/// thread, no descriptor), it logs why and cancels `shutdown`.
pub async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let open = conn::Open::new();
    tracker.spawn(open.clone().close_on(shutdown.clone()));
    let conn = conn::Conn {
        service,
        limits,
        shutdown: shutdown.clone(),
        tracker,
        runtime: Handle::current(),
        open,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let started = listener
        .into_std()
        .and_then(|listener| pool::Pool::new(listener, conn, slots))
        .map(Arc::new)
        .and_then(|pool| pool.start().map(|()| pool));
    match started {
        Ok(pool) => {
            shutdown.cancelled().await;
            pool.stop();
        }
        Err(e) => {
            // A daemon that cannot answer on its socket stops rather than
            // run unreachable.
            tracing::error!("cannot serve the socket: {e}; stopping");
            shutdown.cancel();
        }
    }
}

mod conn;
mod pool;
mod watch;

#[cfg(test)]
mod tests;
