//! The socket server: an accept loop with one task per connection,
//! newline-delimited JSON framing, the connection cap, the idle timeout,
//! peer credential checks and shutdown.
//!
//! What each request does is the [`Service`]'s business; the server owns the
//! transport rules of protocol v1 (see [`crate::protocol`]): a malformed line
//! gets an error and the connection stays usable, an oversize line gets
//! `too_large` and the connection is closed, a connection past the cap gets
//! `busy` and is closed, and a peer with another uid (other than root) is
//! closed without an answer.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{
    Envelope, ErrorCode, Event, Line, Response, WireError, parse_request, read_line, to_line,
};
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

/// Serves connections on `listener` until `shutdown` is cancelled. Every
/// connection task is spawned on `tracker`, and each ends at the next
/// request boundary after `shutdown`.
pub async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let own_uid = nix::unistd::getuid().as_raw();
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
        let conn = Connection::new(stream, Arc::clone(&service), limits, shutdown.clone());
        tracker.spawn(conn.run(slot));
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

/// One client connection.
struct Connection<S> {
    reader: BufReader<OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    buf: Vec<u8>,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
}

impl<S: Service> Connection<S> {
    fn new(
        stream: UnixStream,
        service: Arc<S>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Self {
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
            buf: Vec::new(),
            service,
            limits,
            shutdown,
        }
    }

    async fn run(mut self, _slot: OwnedSemaphorePermit) {
        if let Err(e) = self.requests().await {
            tracing::debug!("connection ended: {e}");
        }
    }

    /// Reads requests and answers them in order until the client closes,
    /// idles out, sends an oversize line, or the daemon shuts down.
    ///
    /// The shutdown wait and the idle timer are set up once per connection,
    /// not per request: the timer is only pushed back when it fires early.
    async fn requests(&mut self) -> io::Result<()> {
        let shutdown = self.shutdown.clone();
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        let idle = self.limits.idle_timeout;
        let mut last = Instant::now();
        let timer = tokio::time::sleep_until(last + idle);
        tokio::pin!(timer);
        loop {
            let line = tokio::select! {
                biased;
                () = &mut stop => return Ok(()),
                line = read_line(&mut self.reader, &mut self.buf) => line?,
                () = &mut timer => {
                    if Instant::now() >= last + idle {
                        return Ok(());
                    }
                    timer.as_mut().reset(last + idle);
                    continue;
                }
            };
            let answer = match line {
                Line::Eof => return Ok(()),
                Line::TooLarge => {
                    let Answer::Line(text) = Answer::error(None, WireError::too_large()) else {
                        return Ok(());
                    };
                    return self.send(&text).await;
                }
                Line::Invalid(e) => {
                    let msg = format!("request line is not UTF-8: {e}");
                    Answer::error(None, WireError::bad_request(msg))
                }
                Line::Text(text) if text.trim().is_empty() => continue,
                Line::Text(text) => match parse_request(&text) {
                    Ok(request) => self.service.call(request).await,
                    Err(rejected) => Answer::of(&rejected.into_response(), None),
                },
            };
            match answer {
                Answer::Line(text) => self.send(&text).await?,
                Answer::Watch { first, stream } => {
                    self.send(&first).await?;
                    return self.watch(stream).await;
                }
            }
            last = Instant::now();
        }
    }

    /// Forwards events until the client closes or the daemon shuts down.
    /// Lines the client sends meanwhile are read and ignored.
    async fn watch(&mut self, mut stream: EventStream) -> io::Result<()> {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                read = read_line(&mut self.reader, &mut self.buf) => match read? {
                    Line::Eof | Line::TooLarge => return Ok(()),
                    Line::Text(_) | Line::Invalid(_) => {}
                },
                event = stream.next() => {
                    let Some(event) = event else { return Ok(()) };
                    let text = to_line(&event).map_err(io::Error::other)?;
                    self.send(&text).await?;
                }
            }
        }
    }

    /// Sends one line. Most answers fit the socket's buffer at once: they
    /// are written without arming a timer; the rest waits for the client
    /// up to the write timeout.
    async fn send(&mut self, text: &str) -> io::Result<()> {
        let bytes = text.as_bytes();
        let sent = match self.writer.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        match &bytes[sent..] {
            [] => Ok(()),
            rest => write_with_timeout(&mut self.writer, rest, self.limits.write_timeout).await,
        }
    }
}

async fn write_with_timeout<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take its response in time",
        )),
    }
}

#[cfg(test)]
mod tests;
