//! A test daemon: the real binary serving a temp root on a temp socket,
//! killed when dropped. Its stderr goes to a file, shown when a wait fails.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use discocache::client::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it returns `Some`, failing after [`DEADLINE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon on a temp root.
pub struct TestDaemon {
    pub dir: TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    runs: usize,
}

impl TestDaemon {
    /// Writes `config` and starts the daemon; returns once it answers.
    pub fn start(config: &str) -> Self {
        let mut d = Self::new(config);
        d.spawn();
        d
    }

    /// Writes `config` without starting anything.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("conf").join("config.toml");
        std::fs::create_dir_all(config_path.parent().expect("parent")).expect("conf dir");
        std::fs::write(&config_path, config).expect("write config");
        Self {
            root: dir.path().join("root"),
            socket: dir.path().join("d.sock"),
            config: config_path,
            dir,
            child: None,
            runs: 0,
        }
    }

    /// A file in the temp dir (for counters and pid files of refreshers).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command line, environment and stderr file of a run.
    pub fn command(&mut self) -> Command {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_discocache"));
        cmd.arg("--root").arg(&self.root);
        cmd.arg("--socket").arg(&self.socket);
        cmd.arg("--config").arg(&self.config);
        cmd.arg("serve");
        cmd.env("DISCOCACHE_LOG", "debug");
        cmd.env("XDG_CONFIG_HOME", self.dir.path().join("xdg"));
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("daemon-{}.log", self.runs))
    }

    /// Everything the current run logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts a run and waits until it answers `hello`.
    pub fn spawn(&mut self) {
        let mut cmd = self.command();
        self.spawn_with(&mut cmd);
    }

    /// Starts `cmd` as the daemon and waits until it answers `hello`.
    pub fn spawn_with(&mut self, cmd: &mut Command) {
        self.child = Some(cmd.spawn().expect("spawn daemon"));
        let socket = self.socket.clone();
        self.wait("the daemon to answer hello", || {
            let mut c = Client::connect(&socket).ok()?;
            c.request(&json!({"op": "hello"}))
                .ok()
                .filter(|r| r["ok"] == true)
        });
    }

    /// Like [`eventually`], but fails at once, with the log, if the daemon
    /// exits.
    pub fn wait<T>(&mut self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "daemon exited ({status}) while waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("daemon running");
        i32::try_from(child.id()).expect("pid fits")
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal daemon");
    }

    /// Waits for the daemon to exit and returns how.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("daemon did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait, and check it exited 0.
    pub fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit();
        assert!(status.success(), "daemon exited {status}:\n{}", self.log());
    }

    /// One request on a fresh connection.
    pub fn request(&self, request: Value) -> Value {
        let mut c = Client::connect(&self.socket).expect("connect");
        c.request(&request).expect("request")
    }

    /// A raw connection for hand-written lines.
    pub fn raw(&self) -> Raw {
        Raw::connect(&self.socket)
    }

    /// Replaces the config file (by rename, as editors do).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write new config");
        std::fs::rename(&tmp, &self.config).expect("replace config");
    }

    /// The status entry of one source, if configured.
    pub fn source_status(&self, source: &str) -> Option<Value> {
        let status = self.request(json!({"op": "status"}));
        let sources = status["sources"].as_array()?.clone();
        sources.into_iter().find(|s| s["source"] == source)
    }

    /// Waits until `get never` serves the source and no refresh of it is
    /// running (so that its lock is free), and returns the answer.
    pub fn wait_data(&mut self, source: &str) -> Value {
        let socket = self.socket.clone();
        self.wait(&format!("data for {source}"), || {
            let mut c = Client::connect(&socket).ok()?;
            let r = c
                .request(&json!({"op": "get", "source": source, "refresh": "never"}))
                .ok()?;
            (r["ok"] == true && r["refresh"]["in_flight"] == false).then_some(r)
        })
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A connection written and read line by line.
pub struct Raw {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl Raw {
    pub fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        Self {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    /// Sends one line (a newline is added).
    pub fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write newline");
    }

    /// Reads one line as JSON; `None` at EOF.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read");
        (n > 0).then(|| serde_json::from_str(&line).expect("response is JSON"))
    }

    /// Sends a line and reads the answer.
    pub fn ask(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv().expect("an answer")
    }
}

/// A config with these `[[source]]` tables (and a short grace).
pub fn config(sources: &str) -> String {
    format!("[daemon]\nshutdown_grace = \"2s\"\nreconcile_interval = \"1h\"\n\n{sources}")
}

/// A `[[source]]` whose command appends a line to `counter` and prints the
/// line count as `{"n": N}`.
pub fn counter_source(id: &str, ttl: &str, counter: &Path) -> String {
    let script = format!(
        "echo x >> '{}'; printf '{{\"n\":%s}}' $(wc -l < '{}')",
        counter.display(),
        counter.display()
    );
    format!(
        "[[source]]\nid = \"{id}\"\nttl = \"{ttl}\"\ncommand = [\"sh\", \"-c\", {}]\n\n",
        toml_str(&script)
    )
}

/// A `[[source]]` running `script` under `sh -c`.
pub fn sh_source(id: &str, ttl: &str, deadline: &str, script: &str) -> String {
    format!(
        "[[source]]\nid = \"{id}\"\nttl = \"{ttl}\"\nrefresh_deadline = \"{deadline}\"\ncommand = [\"sh\", \"-c\", {}]\n\n",
        toml_str(script)
    )
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// How many lines a counter file has (how many times its command ran).
pub fn count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}
