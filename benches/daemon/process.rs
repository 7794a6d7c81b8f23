//! §2: `discocache get` as a whole process (through the daemon) vs `cat`
//! of the payload file and vs a cached hit of `bkt`.
//!
//! Each command is spawned `RUNS` times with its stdout captured, in
//! rotating order; every output is checked against the payload. Two more
//! rows say where the time goes: `get --no-daemon` (the same read without
//! the daemon) and `--version` (the binary's own start-up and exit).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::harness::{BIN, OneSource, SOURCE};
use crate::common::{json_of_len, median, percentile, verdict};

/// Payload size.
const PAYLOAD: usize = 1024;
/// Spawns per command.
const RUNS: usize = 200;
/// Goal: `discocache get` at most this many times `cat`.
const GOAL_CAT: f64 = 1.4;

/// One command under test.
struct Subject {
    name: &'static str,
    command: Command,
    times: Vec<f64>,
    /// Whether its stdout must be the payload (else only exit 0).
    prints_payload: bool,
}

impl Subject {
    fn new(name: &'static str, program: impl AsRef<std::ffi::OsStr>) -> Self {
        Self {
            name,
            command: Command::new(program),
            times: Vec::with_capacity(RUNS),
            prints_payload: true,
        }
    }

    /// Runs once; fails unless it exits 0 printing the payload.
    fn run(&mut self, payload: &[u8]) -> Result<f64> {
        let start = Instant::now();
        let out = self
            .command
            .output()
            .with_context(|| format!("spawn {}", self.name))?;
        let ns = start.elapsed().as_nanos() as f64;
        let printed = !self.prints_payload || out.stdout.trim_ascii_end() == payload;
        if !out.status.success() || !printed {
            bail!(
                "{} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(ns)
    }
}

/// Runs the comparison and prints its table.
///
/// # Errors
///
/// Any setup failure, or a command that does not print the payload.
pub fn run() -> Result<()> {
    let payload = json_of_len(PAYLOAD);
    let fixture = OneSource::start(&payload)?;
    let paths = &fixture.daemon.paths;
    let mut get = Subject::new("discocache get", BIN);
    get.command.args(paths.args()).args(["get", SOURCE]);
    let mut direct = Subject::new("discocache get --no-daemon", BIN);
    direct
        .command
        .args(paths.args())
        .args(["get", "--no-daemon", SOURCE]);
    let mut cat = Subject::new("cat FILE", "cat");
    cat.command.arg(&fixture.payload);
    let mut version = Subject::new("discocache --version (startup only)", BIN);
    version.command.arg("--version");
    version.prints_payload = false;
    let mut subjects = vec![get, cat, direct, version];
    match find_bkt() {
        Some(bkt) => subjects.push(bkt_subject(&bkt, fixture.dir.path(), &fixture.payload)),
        None => println!(
            "\nbkt is not installed: the bkt comparison is skipped \
             (run benches/install-tools.sh, or `cargo install bkt --locked`)"
        ),
    }
    for subject in &mut subjects {
        subject.run(&payload)?; // warms bkt's cache and the page cache
    }
    for round in 0..RUNS {
        let n = subjects.len();
        for k in 0..n {
            let subject = &mut subjects[(round + k) % n];
            let ns = subject.run(&payload)?;
            subject.times.push(ns);
        }
    }
    report(&subjects);
    Ok(())
}

fn bkt_subject(bkt: &Path, dir: &Path, payload: &Path) -> Subject {
    let mut subject = Subject::new("bkt --ttl=1h -- cat FILE (cached hit)", bkt);
    subject
        .command
        .arg("--ttl=1h")
        .arg("--cache-dir")
        .arg(dir.join("bkt-cache"))
        .args(["--", "cat"])
        .arg(payload);
    subject
}

/// `bkt` on `PATH` or in `~/.cargo/bin`.
fn find_bkt() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bkt"))
        .find(|p| p.is_file())
}

fn report(subjects: &[Subject]) {
    println!("\n## 2. `discocache get` as a process ({PAYLOAD} B payload, {RUNS} spawns each)\n");
    let cat = median(&subjects[1].times);
    println!("| command | median µs | p90 µs | / cat |\n|---|---|---|---|");
    for s in subjects {
        let m = median(&s.times);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            s.name,
            m / 1e3,
            percentile(&s.times, 90.0) / 1e3,
            m / cat
        );
    }
    let get = median(&subjects[0].times);
    let ratio = get / cat;
    println!(
        "\n`discocache get` / `cat`: **{ratio:.2}** (goal ≤ {GOAL_CAT}: {})",
        verdict(ratio <= GOAL_CAT)
    );
    if let Some(bkt) = subjects.get(4) {
        let ratio = get / median(&bkt.times);
        println!(
            "`discocache get` / `bkt` cached hit: **{ratio:.2}** (goal < 1, faster: {})",
            verdict(ratio < 1.0)
        );
    }
}
