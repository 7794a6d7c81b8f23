//! A real `redis-server` on 127.0.0.1, on a free port of its own with a temp
//! dir of its own, no persistence, killed on drop.
//!
//! When `redis-server` is not installed (`.ci/install-test-tools` installs
//! it), [`RedisServer::start`] prints why and returns `None` (the test
//! skips), and panics instead when the `CI` environment variable is set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the server may take to accept connections.
const READY: Duration = Duration::from_secs(10);

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server, or `None` (skip) when `redis-server` is missing.
    /// Panics when it is missing and `CI` is set, or when it does not start.
    pub fn start() -> Option<Self> {
        if let Err(why) = Command::new("redis-server").arg("--version").output() {
            let why = format!("redis-server not runnable ({why}); run .ci/install-test-tools");
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("shared tier test cannot run: {why} (CI is set: failing, not skipping)");
            }
            eprintln!("skipping shared tier test: {why}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Self::start_in(dir, free_port()))
    }

    fn start_in(dir: TempDir, port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = Self { child, port, dir };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server (SIGKILL) and starts an empty one on the same port:
    /// a wiped or failed-over server.
    pub fn restart_empty(self) -> Self {
        let port = self.port;
        let mut this = self;
        this.kill();
        let dir = std::mem::replace(&mut this.dir, tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, port)
    }

    /// One command over a plain RESP connection, its reply as raw text
    /// (for `INFO`-style checks that must not use the client under test).
    pub fn raw(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        reader.read_line(&mut head).expect("reply");
        match head.strip_prefix('$') {
            Some(len) => {
                let len: usize = len.trim().parse().expect("bulk length");
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).expect("bulk body");
                String::from_utf8_lossy(&body[..len]).into_owned()
            }
            None => head.trim_end().to_owned(),
        }
    }

    /// `total_commands_processed` of `INFO stats`.
    pub fn commands_processed(&self) -> u64 {
        let info = self.raw(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_commands_processed in INFO stats")
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut pong = [0; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut pong).is_ok() {
                    return;
                }
            }
            assert!(
                start.elapsed() < READY,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

impl RedisServer {
    /// Stops the server (SIGKILL), keeping its port for
    /// [`RedisServer::start_again`]: the tier is down until then.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts an empty server on the port of a stopped one: the tier comes
    /// back wiped (as after a restart without persistence or a failover).
    pub fn start_again(&mut self) {
        let dir = tempfile::tempdir().expect("temp dir");
        *self = Self::start_in(dir, self.port);
    }
}

/// The certificate files of a TLS-only server.
pub struct TlsFiles<'a> {
    /// PEM of the CA that signed `cert` (redis-server wants one).
    pub ca: &'a std::path::Path,
    /// PEM of the server's certificate.
    pub cert: &'a std::path::Path,
    /// PEM of its private key.
    pub key: &'a std::path::Path,
}

impl RedisServer {
    /// Starts a server that speaks TLS only (no plain port), or `None`
    /// (skip) when `redis-server` is missing; panics like [`Self::start`].
    /// Clients need not present a certificate. Reach it at
    /// [`Self::tls_url`]; [`Self::url`] and [`Self::raw`] do not apply.
    pub fn start_tls(files: &TlsFiles<'_>) -> Option<Self> {
        if let Err(why) = Command::new("redis-server").arg("--version").output() {
            skip_or_fail(&format!("redis-server not runnable ({why})"));
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--tls-auth-clients", "no"])
            .arg("--tls-ca-cert-file")
            .arg(files.ca)
            .arg("--tls-cert-file")
            .arg(files.cert)
            .arg("--tls-key-file")
            .arg(files.key)
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut server = Self { child, port, dir };
        server.wait_listening(&log);
        Some(server)
    }

    /// `rediss://127.0.0.1:<port>/0`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// Waits until the port accepts connections (a TLS server does not
    /// answer a plain `PING`); panics with the server's log if it exits.
    fn wait_listening(&mut self, log: &std::path::Path) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                panic!("redis-server with TLS exited ({status}); built without TLS?\n{said}");
            }
            assert!(
                start.elapsed() < READY,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Prints why a test that needs an outside program skips, or panics when
/// `CI` is set (CI installs every such program: `.ci/install-test-tools`).
pub fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("shared tier test cannot run: {why} (CI is set: failing, not skipping)");
    }
    eprintln!("skipping shared tier test: {why}; run .ci/install-test-tools");
}
