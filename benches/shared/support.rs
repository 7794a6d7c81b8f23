//! What the shared-tier bench runs against: a `redis-server` of its own on
//! 127.0.0.1 (no persistence, killed on drop) and a 127.0.0.1 HTTP origin
//! that counts requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// How long a server may take to start answering.
const READY: Duration = Duration::from_secs(10);

/// A running `redis-server`.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Redis {
    /// Starts one on a free port; `Ok(None)` (with the reason printed)
    /// when `redis-server` is not installed and `CI` is not set.
    ///
    /// # Errors
    ///
    /// When it is missing under `CI`, or does not start.
    pub fn start() -> Result<Option<Self>> {
        if let Err(e) = Command::new("redis-server").arg("--version").output() {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                bail!("redis-server is needed under CI (.ci/install-test-tools): {e}");
            }
            println!("skipping: cannot run redis-server ({e}); run .ci/install-test-tools");
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn redis-server")?;
        let redis = Self {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while redis.raw(&["PING"]).is_err() {
            if start.elapsed() > READY {
                bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Some(redis))
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command over a plain RESP connection (not the client under
    /// test); a bulk reply's text, or the first line of any other reply.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn raw(&self, args: &[&str]) -> Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(READY))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        reader.read_line(&mut head)?;
        let Some(len) = head.strip_prefix('$') else {
            return Ok(head.trim_end().to_owned());
        };
        let len: usize = len.trim().parse().context("bulk length")?;
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body[..len]).into_owned())
    }

    /// The sum of `calls` over every command of `INFO commandstats`, and
    /// the calls per command.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn command_calls(&self) -> Result<(u64, Vec<(String, u64)>)> {
        let info = self.raw(&["INFO", "commandstats"])?;
        let mut per = Vec::new();
        for line in info.lines() {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            let Some(name) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            per.push((name.to_owned(), calls));
        }
        Ok((per.iter().map(|(_, n)| n).sum(), per))
    }

    /// `blocked_clients` of `INFO clients`: clients waiting in `XREAD`.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn blocked_clients(&self) -> Result<u64> {
        let info = self.raw(&["INFO", "clients"])?;
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .context("blocked_clients in INFO clients")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 origin on 127.0.0.1 answering every GET with a JSON
/// payload of `len` bytes (`Connection: close`), counting requests. Each
/// answer differs from the one before (it carries the request's number), so
/// every refresh commits new bytes.
pub struct Origin {
    pub url: String,
    pub requests: Arc<AtomicU64>,
}

impl Origin {
    /// Starts it on an ephemeral port, in a thread of its own.
    ///
    /// # Errors
    ///
    /// When it cannot bind.
    pub fn start(len: usize) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/models", listener.local_addr()?);
        let requests = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = counted.fetch_add(1, Ordering::Relaxed);
                let _ = answer(stream, &response(n, len));
            }
        });
        Ok(Self { url, requests })
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The `n`th answer: `{"n":"<n, 20 digits>","pad":"x..."}`, `len` bytes.
fn response(n: u64, len: usize) -> Vec<u8> {
    let head = format!("{{\"n\":\"{n:020}\",\"pad\":\"");
    let pad = len.saturating_sub(head.len() + 2);
    let payload = format!("{head}{}\"}}", "x".repeat(pad));
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    response.extend_from_slice(payload.as_bytes());
    response
}

fn answer(stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" {
        line.clear();
    }
    reader.get_mut().write_all(response)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
