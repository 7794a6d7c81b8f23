//! A small blocking client for the daemon's socket, typed with the
//! protocol's [`Request`] and answer bodies: one request line out, one
//! response line in; and a [`Watch`] stream of [`Event`]s.
//!
//! ```no_run
//! # fn main() -> Result<(), discocache::client::CallError> {
//! use discocache::client::Client;
//! let mut client = Client::connect("/run/user/1000/discocache.sock".as_ref())?;
//! let hello = client.hello()?;
//! println!("daemon {} serves {}", hello.version, hello.root.display());
//! # Ok(()) }
//! ```

use std::io::{self, BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self, MsgFlags, sockopt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::{
    Envelope, ErrorCode, Event, GetBody, GetRequest, HelloBody, InvalidateBody, MetricsBody,
    PruneBody, RefreshBody, RefreshTarget, ReloadBody, Request, StateBody, StatusBody, WatchBody,
    WireError,
};
use crate::source::SourceId;

/// How long a request waits for its response by default: long enough for
/// a `refresh` of a slow source.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a call got no answer body.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection failed: refused, reset, closed, timed out, or the
    /// answer was not a response line.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(WireError),
}

impl CallError {
    /// The daemon's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Daemon(e) => Some(e.code),
            Self::Io(_) => None,
        }
    }
}

/// What every response line starts with.
#[derive(Deserialize)]
struct Head {
    ok: bool,
    #[serde(default)]
    error: Option<WireError>,
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the daemon's socket. Fails at once (no retry) when no
    /// daemon listens there.
    ///
    /// # Errors
    ///
    /// The connect error: `NotFound` (no socket file), `ConnectionRefused`
    /// (a stale socket file), `PermissionDenied`.
    pub fn connect(socket: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// The uid of the process that bound the socket, from the kernel
    /// (`SO_PEERCRED`): who answers, whatever the socket file says.
    ///
    /// # Errors
    ///
    /// When the kernel does not tell.
    pub fn peer_uid(&self) -> io::Result<u32> {
        let creds = socket::getsockopt(self.reader.get_ref(), sockopt::PeerCredentials)?;
        Ok(creds.uid())
    }

    /// Sets how long a response may take (`None`: forever).
    ///
    /// # Errors
    ///
    /// When the socket option cannot be set.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// Sends one request and decodes the answer's body as `B`.
    ///
    /// # Errors
    ///
    /// [`CallError::Daemon`] for an error answer, [`CallError::Io`] when
    /// the connection fails or the answer is not the expected body.
    pub fn call<B: DeserializeOwned>(&mut self, request: Request) -> Result<B, CallError> {
        let line = self.call_line(request)?;
        decode(&line)
    }

    /// Sends one request and returns its success line as received (without
    /// the newline).
    fn call_line(&mut self, request: Request) -> Result<String, CallError> {
        let line = self.send(&Envelope::new(None, request))?;
        let head: Head = decode(&line)?;
        match (head.ok, head.error) {
            (true, _) => Ok(line),
            (false, Some(error)) => Err(CallError::Daemon(error)),
            (false, None) => Err(invalid("the answer has \"ok\": false but no error").into()),
        }
    }

    /// `hello`: the daemon's protocol, version, root, config and format.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn hello(&mut self) -> Result<HelloBody, CallError> {
        self.call(Request::Hello {})
    }

    /// `get`: the answer, with the payload kept verbatim, and the answer's
    /// line as received (what `get --meta` prints).
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn get(&mut self, request: GetRequest) -> Result<(GetBody, String), CallError> {
        let line = self.call_line(Request::Get(request))?;
        Ok((decode(&line)?, line))
    }

    /// `refresh`: waits for every outcome.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn refresh(&mut self, target: RefreshTarget) -> Result<RefreshBody, CallError> {
        self.call(Request::Refresh(target))
    }

    /// `state` of one source.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn state(&mut self, source: SourceId) -> Result<StateBody, CallError> {
        self.call(Request::State { source })
    }

    /// `status` of the daemon and every source.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn status(&mut self) -> Result<StatusBody, CallError> {
        self.call(Request::Status {})
    }

    /// `invalidate`: marks a source stale, or says why not.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn invalidate(&mut self, source: SourceId) -> Result<InvalidateBody, CallError> {
        self.call(Request::Invalidate { source })
    }

    /// `prune` (or, with `dry_run`, what it would remove).
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn prune(&mut self, dry_run: bool) -> Result<PruneBody, CallError> {
        self.call(Request::Prune { dry_run })
    }

    /// `stats`: the daemon's counters as JSON.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn stats(&mut self) -> Result<serde_json::Map<String, Value>, CallError> {
        let mut body: serde_json::Map<String, Value> = self.call(Request::Stats {})?;
        body.remove("ok");
        Ok(body)
    }

    /// `metrics`: Prometheus text.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn metrics(&mut self) -> Result<MetricsBody, CallError> {
        self.call(Request::Metrics {})
    }

    /// `reload` the daemon's config.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn reload(&mut self) -> Result<ReloadBody, CallError> {
        self.call(Request::Reload {})
    }

    /// Starts a watch (`None`: every source): the first answer, then the
    /// stream of events.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn watch(
        mut self,
        sources: Option<Vec<SourceId>>,
    ) -> Result<(WatchBody, Watch), CallError> {
        let first = self.call(Request::Watch { sources })?;
        self.set_timeout(None)?;
        Ok((first, Watch { client: self }))
    }

    /// Sends any JSON value as a request line and reads the answer as JSON,
    /// unchecked: for tools and tests that speak the protocol by hand.
    ///
    /// # Errors
    ///
    /// IO errors, `UnexpectedEof` when the daemon closed the connection,
    /// `InvalidData` when the answer is not JSON.
    pub fn request(&mut self, request: &Value) -> io::Result<Value> {
        let line = self.send(request)?;
        serde_json::from_str(&line).map_err(|e| invalid(&format!("answer is not JSON: {e}")))
    }

    /// Sends one request and hands back the connection to read its answer
    /// from, unread: for an answer too large to hold at once (`status` of
    /// 100,000 sources is tens of MiB), to be decoded as it arrives.
    ///
    /// # Errors
    ///
    /// When the request cannot be written.
    pub fn send_request(&mut self, request: Request) -> io::Result<&mut impl BufRead> {
        let mut text = serde_json::to_vec(&Envelope::new(None, request))
            .map_err(|e| invalid(&e.to_string()))?;
        text.push(b'\n');
        write_all(self.reader.get_ref(), &text)?;
        Ok(&mut self.reader)
    }

    /// Writes one request line and reads one answer line. A write the
    /// daemon refused (it closed after answering `busy`, say) still reads
    /// the answer it left.
    fn send<T: serde::Serialize + ?Sized>(&mut self, request: &T) -> io::Result<String> {
        let mut text = serde_json::to_vec(request).map_err(|e| invalid(&e.to_string()))?;
        text.push(b'\n');
        let written = write_all(self.reader.get_ref(), &text);
        match self.read_line() {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(written.err().unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                )
            })),
            Err(e) => Err(written.err().unwrap_or(e)),
        }
    }

    fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        while line.ends_with(['\n', '\r']) {
            line.pop();
        }
        Ok(Some(line))
    }
}

/// Writes all of `bytes` without raising SIGPIPE when the daemon has
/// closed (a CLI that restores SIGPIPE would otherwise die silently).
fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket::send(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            bytes,
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(line: &str) -> Result<T, CallError> {
    serde_json::from_str(line)
        .map_err(|e| CallError::Io(invalid(&format!("unexpected answer: {e}"))))
}

/// A line of a watch stream: an event, or the daemon's last word.
#[derive(Deserialize)]
#[serde(untagged)]
enum WatchLine {
    Event(Event),
    Closing { error: WireError },
}

/// The events of a watch; ends when the daemon closes.
#[derive(Debug)]
pub struct Watch {
    client: Client,
}

impl Watch {
    /// Waits for the next event (`Ok(None)`: the daemon closed the stream).
    ///
    /// # Errors
    ///
    /// IO errors, an unexpected line, or the error the daemon closed the
    /// stream with (`busy` for a watcher that fell too far behind).
    pub fn next_event(&mut self) -> Result<Option<Event>, CallError> {
        let Some(line) = self.client.read_line()? else {
            return Ok(None);
        };
        match decode(&line)? {
            WatchLine::Event(event) => Ok(Some(event)),
            WatchLine::Closing { error } => Err(CallError::Daemon(error)),
        }
    }
}

impl Iterator for Watch {
    type Item = Result<Event, CallError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}
