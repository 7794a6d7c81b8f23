//! One connection on a pool thread: blocking reads, with the idle timeout
//! as the socket's read timeout, and blocking writes, with the write
//! timeout as its write timeout. A request the service can answer from
//! memory ([`Service::answer_now`]) is answered on this thread; any other
//! runs on the runtime through [`Handle::block_on`].

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Answer, EventStream, Limits, Service, watch};
use crate::protocol::{Line, WireError, parse_request, read_line_blocking};

/// The connections being served, so that shutdown can end their reads.
#[derive(Debug, Clone)]
pub(super) struct Open {
    /// `None` once shut down: no connection is served after that.
    streams: Arc<Mutex<Option<HashMap<u64, StdStream>>>>,
    next: Arc<AtomicU64>,
}

impl Open {
    pub fn new() -> Self {
        Self {
            streams: Arc::new(Mutex::new(Some(HashMap::new()))),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<HashMap<u64, StdStream>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection; `None` after shutdown (or when its
    /// descriptor cannot be duplicated).
    fn add(&self, stream: &StdStream) -> Option<u64> {
        let copy = stream.try_clone().ok()?;
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().as_mut()?.insert(key, copy);
        Some(key)
    }

    fn remove(&self, key: u64) {
        if let Some(streams) = self.lock().as_mut() {
            streams.remove(&key);
        }
    }

    /// At shutdown, ends the reads of every connection (a thread in the
    /// middle of a request still sends its answer) and refuses new ones.
    pub async fn close_on(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        let streams = self.lock().take();
        for stream in streams.into_iter().flat_map(HashMap::into_values) {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }
}

/// What serving a connection needs, shared by the connection threads.
pub(super) struct Conn<S> {
    pub service: Arc<S>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub runtime: Handle,
    pub open: Open,
}

impl<S: Service> Conn<S> {
    /// Serves `stream` on this thread until it closes (a watch goes on as
    /// a task). `slot` is its place under the connection cap.
    pub fn serve(&self, stream: StdStream, slot: OwnedSemaphorePermit) {
        let Some(key) = self.open.add(&stream) else {
            return;
        };
        let served = self.requests(&stream);
        self.open.remove(key);
        match served {
            Ok(Some(events)) => self.watch(stream, events, slot),
            Ok(None) => {}
            Err(e) => tracing::debug!("connection ended: {e}"),
        }
    }

    /// Reads requests and answers them in order until the client closes,
    /// idles out, sends an oversize line, or the daemon shuts down. Returns
    /// the events to forward when the client asked to watch.
    fn requests(&self, stream: &StdStream) -> io::Result<Option<EventStream>> {
        stream.set_read_timeout(Some(self.limits.idle_timeout))?;
        stream.set_write_timeout(Some(self.limits.write_timeout))?;
        let (mut reader, mut writer) = (BufReader::new(stream), stream);
        let (mut buf, mut ready) = (Vec::new(), Vec::new());
        while !self.shutdown.is_cancelled() {
            let line = match read_line_blocking(&mut reader, &mut buf) {
                Ok(line) => line,
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let answer = match line {
                Line::Eof => return Ok(None),
                Line::TooLarge => {
                    if let Answer::Line(text) = Answer::error(None, WireError::too_large()) {
                        send(&mut writer, text.as_bytes())?;
                    }
                    return Ok(None);
                }
                Line::Invalid(e) => {
                    let msg = format!("request line is not UTF-8: {e}");
                    Answer::error(None, WireError::bad_request(msg))
                }
                Line::Text(text) if text.trim().is_empty() => continue,
                Line::Text(text) => match parse_request(&text) {
                    Ok(request) if self.service.answer_now(&request, &mut ready) => {
                        send(&mut writer, &ready)?;
                        continue;
                    }
                    Ok(request) => self.runtime.block_on(self.service.call(request)),
                    Err(rejected) => Answer::of(&rejected.into_response(), None),
                },
            };
            match answer {
                Answer::Line(text) => send(&mut writer, text.as_bytes())?,
                Answer::Watch { first, stream } => {
                    send(&mut writer, first.as_bytes())?;
                    return Ok(Some(stream));
                }
            }
        }
        Ok(None)
    }

    /// Hands a watching connection to a task on the runtime: it waits for
    /// events, not requests.
    fn watch(&self, stream: StdStream, events: EventStream, slot: OwnedSemaphorePermit) {
        let _context = self.runtime.enter();
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(stream));
        match stream {
            Ok(stream) => {
                let shutdown = self.shutdown.clone();
                let task = watch::forward(stream, events, self.limits, shutdown, slot);
                self.tracker.spawn_on(task, &self.runtime);
            }
            Err(e) => tracing::warn!("cannot hand a watch over to the runtime: {e}"),
        }
    }
}

/// A read or write that ran into the socket's timeout.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes one line; a client that does not take it within the socket's
/// write timeout is an error (and the connection closes).
fn send(writer: &mut &StdStream, line: &[u8]) -> io::Result<()> {
    writer.write_all(line).map_err(|e| match is_timeout(&e) {
        true => io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take its response in time",
        ),
        false => e,
    })
}
