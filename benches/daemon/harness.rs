//! The pieces every daemon bench uses: a daemon process that owns its
//! paths and is killed on drop, a line client that keeps responses as raw
//! text, a one-source fixture, and `/proc` memory readings.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

/// The release binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_discocache");

/// The source of the one-source fixture.
pub const SOURCE: &str = "bench/x";

/// The `get` request line of [`SOURCE`], newline included.
pub const GET_LINE: &[u8] = b"{\"op\":\"get\",\"source\":\"bench/x\"}\n";

/// How long the bench waits for a daemon to listen or to get ready.
pub const START_DEADLINE: Duration = Duration::from_secs(600);
/// How often the bench asks a starting daemon whether it is ready.
const READY_POLL: Duration = Duration::from_secs(1);

/// Where a daemon keeps its things: root, socket, config and log.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    /// Paths under `dir` (the config file is written by the caller).
    pub fn under(dir: &Path) -> Self {
        Self {
            root: dir.join("root"),
            socket: dir.join("d.sock"),
            config: dir.join("config.toml"),
            log: dir.join("daemon.log"),
        }
    }

    /// The global options naming these paths.
    pub fn args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--root", &self.root),
            ("--socket", &self.socket),
            ("--config", &self.config),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        args
    }
}

/// A running `discocache serve`; killed on drop unless stopped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub paths: Paths,
}

impl Daemon {
    /// Spawns `discocache serve` (logs appended to `paths.log`).
    ///
    /// # Errors
    ///
    /// When the log cannot be opened or the binary cannot be spawned.
    pub fn spawn(paths: &Paths) -> Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .with_context(|| format!("open {}", paths.log.display()))?;
        let child = Command::new(BIN)
            .args(paths.args())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {BIN} serve"))?;
        Ok(Self {
            child: Some(child),
            paths: paths.clone(),
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Connects once the daemon listens, polling until `START_DEADLINE`.
    ///
    /// # Errors
    ///
    /// When the daemon exits first or the deadline passes.
    pub fn connect(&mut self) -> Result<LineClient> {
        let socket = self.paths.socket.clone();
        let child = self.child.as_mut().context("the daemon was stopped")?;
        poll_until("the daemon to listen", || {
            if let Some(status) = child.try_wait()? {
                bail!("the daemon exited ({status}) before listening");
            }
            Ok(LineClient::connect(&socket).ok())
        })
    }

    /// SIGTERM, then waits for the exit; returns how long the exit took.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent or the daemon exits unsuccessfully.
    pub fn stop(mut self) -> Result<Duration> {
        let mut child = self.child.take().context("the daemon was stopped")?;
        let start = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).context("SIGTERM the daemon")?;
        let status = child.wait().context("wait for the daemon")?;
        if !status.success() {
            bail!("the daemon exited with {status} after SIGTERM");
        }
        Ok(start.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed on drop (the bare server).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Calls `probe` every 2 ms until it yields a value, fails, or
/// `START_DEADLINE` passes.
///
/// # Errors
///
/// The probe's error, or the deadline naming `what`.
pub fn poll_until<T>(what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {START_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One connection; requests are raw lines, responses kept as text.
#[derive(Debug)]
pub struct LineClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: String,
}

impl LineClient {
    /// Connects to `socket`.
    ///
    /// # Errors
    ///
    /// The connect error.
    pub fn connect(socket: &Path) -> std::io::Result<Self> {
        let writer = UnixStream::connect(socket)?;
        writer.set_read_timeout(Some(START_DEADLINE))?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
            line: String::new(),
        })
    }

    /// Sends `request` (one line, newline included) and returns the
    /// response line (newline included).
    ///
    /// # Errors
    ///
    /// IO errors, or the server closing the connection.
    pub fn ask(&mut self, request: &[u8]) -> Result<&str> {
        self.writer.write_all(request).context("send a request")?;
        self.line.clear();
        if self
            .reader
            .read_line(&mut self.line)
            .context("read a response")?
            == 0
        {
            bail!("the server closed the connection");
        }
        Ok(&self.line)
    }

    /// Sends `request` as one JSON line and parses the response.
    ///
    /// # Errors
    ///
    /// As [`LineClient::ask`], or a response that is not JSON.
    pub fn ask_json(&mut self, request: &Value) -> Result<Value> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        let text = self.ask(&line)?;
        serde_json::from_str(text).with_context(|| format!("response is not JSON: {text:.200}"))
    }

    /// `get` of `source`; fails unless the answer is ok with data.
    ///
    /// # Errors
    ///
    /// As [`LineClient::ask_json`], or a failure response.
    pub fn get_ok(&mut self, source: &str) -> Result<Value> {
        let reply = self.ask_json(&serde_json::json!({"op": "get", "source": source}))?;
        if reply["ok"] != true || reply["data"].is_null() {
            bail!("get {source}: {reply:.300}");
        }
        Ok(reply)
    }

    /// Polls `stats` until the daemon says `ready`.
    ///
    /// # Errors
    ///
    /// As [`LineClient::ask_json`], status `error`, or the deadline.
    pub fn wait_ready(&mut self) -> Result<()> {
        // `stats` carries every source's counters: with 100,000 sources an
        // answer is about 13 MB and 150 ms of the daemon's time. Asked every
        // 200 ms it took a third of a core from the seeding it measures;
        // once a second it takes a few per cent.
        let request = serde_json::json!({"op": "stats"});
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let reply = self.ask_json(&request)?;
            match reply["status"].as_str() {
                Some("ready") => return Ok(()),
                Some("seeding") if Instant::now() < deadline => {}
                Some("seeding") => bail!("not ready after {START_DEADLINE:?}"),
                _ => bail!("stats: {reply:.300}"),
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

/// A daemon serving one `file` source ([`SOURCE`]) of a given payload,
/// with a day's ttl, and the payload file it reads.
#[derive(Debug)]
pub struct OneSource {
    pub dir: TempDir,
    pub payload: PathBuf,
    pub daemon: Daemon,
}

impl OneSource {
    /// Writes the payload and config, starts the daemon, waits until
    /// [`SOURCE`] is served.
    ///
    /// # Errors
    ///
    /// Any file, spawn or protocol error on the way.
    pub fn start(payload: &[u8]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let paths = Paths::under(dir.path());
        let payload_path = dir.path().join("payload.json");
        fs::write(&payload_path, payload)?;
        let config = format!(
            "[defaults]\nttl = \"24h\"\n\n[[source]]\nid = \"{SOURCE}\"\nfile = {:?}\n",
            payload_path.display().to_string()
        );
        fs::write(&paths.config, config)?;
        let mut daemon = Daemon::spawn(&paths)?;
        let mut client = daemon.connect()?;
        poll_until("the first get", || Ok(client.get_ok(SOURCE).ok()))?;
        Ok(Self {
            dir,
            payload: payload_path,
            daemon,
        })
    }
}

/// A `Vm*` field of `/proc/<pid>/status`, in KiB.
///
/// # Errors
///
/// When the file cannot be read or has no such field.
pub fn vm_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("no {field} in {path}"))?;
    let kib = line[field.len() + 1..].trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("{field} in {path}: {line:?}"))
}

/// The share of one CPU that process `pid` used over `window` (user +
/// system time from `/proc/<pid>/stat`), e.g. 0.05 for 5 %.
///
/// # Errors
///
/// When the stat file cannot be read or parsed.
pub fn cpu_share(pid: u32, window: Duration) -> Result<f64> {
    let before = cpu_ticks(pid)?;
    let start = Instant::now();
    std::thread::sleep(window);
    let used = cpu_ticks(pid)? - before;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(used as f64 / hz.max(1) as f64 / start.elapsed().as_secs_f64())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields after the command name (which may hold spaces) end at ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {i} of {path}"))
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Ok(field(11)? + field(12)?)
}
