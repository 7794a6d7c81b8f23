//! §3: a daemon with 10,000 `file` sources: its memory, and how long a
//! restart takes until it serves them all.
//!
//! Cold start: the daemon seeds every source (one refresh each: read the
//! small file, commit it). Then SIGTERM and a restart, twice: the payloads
//! are on disk and fresh (ttl 24 h), so nothing is refetched. "ready" is
//! measured from the spawn until `stats` says `ready` and a `get` of the
//! last source answers with data; "all served" until a `get` of every
//! source (sequential, one connection) has answered with data.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::harness::{Daemon, LineClient, Paths, cpu_share, vm_kib};
use crate::common::verdict;

/// Sources, spread over `TIERS` tiers.
const SOURCES: usize = 10_000;
const TIERS: usize = 10;
/// Goals: resident memory below, restart-to-serving below.
const GOAL_RSS_MIB: f64 = 64.0;
const GOAL_RESTART: Duration = Duration::from_secs(2);
/// How long the daemon's CPU use is sampled once every source is served.
const IDLE_WINDOW: Duration = Duration::from_secs(1);
/// Restarts measured after the cold start.
const RESTARTS: usize = 2;

fn source_id(i: usize) -> String {
    format!("t{}/s{i:05}", i % TIERS)
}

/// Writes the data files and the config.
fn write_setup(dir: &Path, paths: &Paths) -> Result<()> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    let mut config = String::from("[defaults]\nttl = \"24h\"\n");
    for i in 0..SOURCES {
        let file = data.join(format!("{i:05}.json"));
        fs::write(
            &file,
            format!("{{\"n\":{i},\"models\":[\"a-{i}\",\"b-{i}\"]}}\n"),
        )?;
        let file = file.display().to_string();
        write!(
            config,
            "\n[[source]]\nid = \"{}\"\nfile = {file:?}\n",
            source_id(i)
        )?;
    }
    fs::write(&paths.config, config)?;
    Ok(())
}

/// One start, measured.
struct Start {
    listening: Duration,
    ready: Duration,
    all: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    idle_cpu: f64,
}

/// Spawns the daemon and waits until it serves every source.
fn start(paths: &Paths) -> Result<(Daemon, Start)> {
    let t0 = Instant::now();
    let mut daemon = Daemon::spawn(paths)?;
    let mut client = daemon.connect()?;
    let listening = t0.elapsed();
    client.wait_ready()?;
    client.get_ok(&source_id(SOURCES - 1))?;
    let ready = t0.elapsed();
    get_all(&mut client)?;
    let all = t0.elapsed();
    let start = Start {
        listening,
        ready,
        all,
        rss_kib: vm_kib(daemon.pid(), "VmRSS")?,
        hwm_kib: vm_kib(daemon.pid(), "VmHWM")?,
        idle_cpu: cpu_share(daemon.pid(), IDLE_WINDOW)?,
    };
    Ok((daemon, start))
}

fn get_all(client: &mut LineClient) -> Result<()> {
    for i in 0..SOURCES {
        client.get_ok(&source_id(i))?;
    }
    Ok(())
}

/// Runs the cold start and the restarts, and prints their table.
///
/// # Errors
///
/// Any setup failure, a daemon that does not serve every source, or an
/// unclean exit on SIGTERM.
pub fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let paths = Paths::under(dir.path());
    write_setup(dir.path(), &paths)?;
    println!("\n## 3. {SOURCES} file sources ({TIERS} tiers, ttl 24h)\n");
    println!(
        "| start | listening ms | ready + last get ms | every source served ms | VmRSS MiB | VmHWM MiB | CPU after, no client | stop (SIGTERM→exit) ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    let (mut daemon, mut measured) = start(&paths)?;
    for n in 0..=RESTARTS {
        let stop = daemon.stop()?;
        print_row(n, &measured, stop);
        rows.push(measured);
        if n == RESTARTS {
            break;
        }
        (daemon, measured) = start(&paths)?;
    }
    summarize(&rows);
    Ok(())
}

fn print_row(n: usize, s: &Start, stop: Duration) {
    let name = if n == 0 {
        "cold (seeds every source)".to_owned()
    } else {
        format!("restart {n}")
    };
    println!(
        "| {name} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} % | {:.0} |",
        ms(s.listening),
        ms(s.ready),
        ms(s.all),
        s.rss_kib as f64 / 1024.0,
        s.hwm_kib as f64 / 1024.0,
        s.idle_cpu * 100.0,
        ms(stop)
    );
}

fn summarize(rows: &[Start]) {
    let rss = rows.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    println!(
        "\nlargest VmRSS with every source served: **{rss:.1} MiB** (goal < {GOAL_RSS_MIB} MiB: {})",
        verdict(rss < GOAL_RSS_MIB)
    );
    let restarts = &rows[1..];
    let ready = restarts.iter().map(|s| s.ready).max().unwrap_or_default();
    let all = restarts.iter().map(|s| s.all).max().unwrap_or_default();
    println!(
        "slowest restart to ready + last get: **{:.0} ms**; to every source served: **{:.0} ms** (goal < {:.0} ms: {} / {})",
        ms(ready),
        ms(all),
        ms(GOAL_RESTART),
        verdict(ready < GOAL_RESTART),
        verdict(all < GOAL_RESTART)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
