//! A small blocking client for the daemon's socket: one request line out,
//! one response line in; and a watch stream of event lines.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut client = discocache::client::Client::connect("/run/user/1000/discocache.sock".as_ref())?;
//! let reply = client.request(&serde_json::json!({"op": "get", "source": "demo/host"}))?;
//! assert_eq!(reply["ok"], true);
//! # Ok(()) }
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// How long [`Client::request`] waits for a response by default: long
/// enough for a `refresh` of a slow source.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    /// The connection; requests are written through `get_ref()`.
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

    /// Sets how long a response may take (`None`: forever).
    ///
    /// # Errors
    ///
    /// When the socket option cannot be set.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// Sends one request and reads its response (a failure response is
    /// still `Ok`: look at its `ok` and `error`).
    ///
    /// # Errors
    ///
    /// IO errors, `UnexpectedEof` when the daemon closed the connection,
    /// `InvalidData` when the response is not JSON.
    pub fn request(&mut self, request: &Value) -> io::Result<Value> {
        let line = self.request_raw(request)?;
        serde_json::from_str(&line).map_err(|e| invalid(format!("response is not JSON: {e}")))
    }

    /// Sends one request (any value that serialises to the request's JSON
    /// object) and returns its response line as received (without the
    /// newline), e.g. to decode a `get` as [`crate::protocol::GetBody`]
    /// and keep the payload verbatim.
    ///
    /// # Errors
    ///
    /// As [`Client::request`].
    pub fn request_raw<T: Serialize + ?Sized>(&mut self, request: &T) -> io::Result<String> {
        let mut text = serde_json::to_vec(request).map_err(|e| invalid(e.to_string()))?;
        text.push(b'\n');
        let mut writer = self.reader.get_ref();
        writer.write_all(&text)?;
        self.read_line()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )
        })
    }

    /// Starts a watch (`sources` empty: every source). Returns the first
    /// response (which may be a failure) and the stream of event lines.
    ///
    /// # Errors
    ///
    /// As [`Client::request`].
    pub fn watch(mut self, sources: &[String]) -> io::Result<(Value, Watch)> {
        let mut request = serde_json::json!({"op": "watch"});
        if !sources.is_empty() {
            request["sources"] = serde_json::json!(sources);
        }
        let first = self.request(&request)?;
        self.set_timeout(None)?;
        Ok((first, Watch { client: self }))
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

/// The event lines of a watch, as JSON values; ends when the daemon closes.
#[derive(Debug)]
pub struct Watch {
    client: Client,
}

impl Watch {
    /// Waits for the next event (`Ok(None)`: the daemon closed the stream).
    ///
    /// # Errors
    ///
    /// IO errors, `InvalidData` for a line that is not JSON.
    pub fn next_event(&mut self) -> io::Result<Option<Value>> {
        let Some(line) = self.client.read_line()? else {
            return Ok(None);
        };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| invalid(format!("event is not JSON: {e}")))
    }
}

impl Iterator for Watch {
    type Item = io::Result<Value>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
