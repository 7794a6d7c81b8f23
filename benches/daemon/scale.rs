//! §3: a daemon with many `file` sources (10,000, then 100,000): how long
//! it takes to seed them all from an empty root, how long `status` takes
//! (the socket op, and `discocache status --json` as a whole process), and
//! its resident memory over 20 consecutive `status` calls.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::harness::{BIN, Daemon, Paths, vm_kib};
use crate::common::{max, median, min, verdict};

/// Sources are spread over this many tiers.
const TIERS: usize = 10;
/// `status` calls in a row whose memory is watched.
const CALLS: usize = 20;
/// Goals.
const GOAL_STATUS_10K: Duration = Duration::from_millis(300);
const GOAL_STATUS_100K: Duration = Duration::from_secs(2);
const GOAL_SEED_100K: Duration = Duration::from_secs(150);
const GOAL_RSS_MIB: f64 = 256.0;
const GOAL_FLAT: f64 = 0.10;

fn source_id(i: usize) -> String {
    format!("t{}/s{i:06}", i % TIERS)
}

/// Writes `n` data files and a config naming them.
fn write_setup(dir: &Path, paths: &Paths, n: usize) -> Result<()> {
    let data = dir.join("data");
    fs::create_dir_all(&data)?;
    let mut config = String::from("[defaults]\nttl = \"24h\"\n");
    for i in 0..n {
        let file = data.join(format!("{i:06}.json"));
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

/// What one size measured.
struct Measured {
    n: usize,
    seed: Duration,
    status_op: Vec<f64>,
    status_cli: Vec<f64>,
    rss_mib: Vec<f64>,
}

/// Runs both sizes and prints their table.
///
/// # Errors
///
/// Any setup failure, or a daemon that does not seed or answer.
pub fn run() -> Result<()> {
    println!("\n## 3. Many `file` sources ({TIERS} tiers, ttl 24h), from an empty root\n");
    println!(
        "| sources | seeded (start → ready) s | `status` op median ms | `discocache status --json` median ms | VmRSS over {CALLS} status calls MiB (min–max) |"
    );
    println!("|---|---|---|---|---|");
    let small = measure(10_000, 5)?;
    print_row(&small);
    let large = measure(100_000, 3)?;
    print_row(&large);
    summarize(&small, &large);
    Ok(())
}

fn measure(n: usize, cli_runs: usize) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let paths = Paths::under(dir.path());
    write_setup(dir.path(), &paths, n)?;
    let t0 = Instant::now();
    let mut daemon = Daemon::spawn(&paths)?;
    let mut client = daemon.connect()?;
    client.wait_ready()?;
    let seed = t0.elapsed();
    let mut status_op = Vec::new();
    let mut rss_mib = Vec::new();
    for _ in 0..CALLS {
        let started = Instant::now();
        let answer = client.ask(b"{\"op\":\"status\"}\n")?;
        status_op.push(started.elapsed().as_secs_f64() * 1e3);
        if !answer.starts_with("{\"ok\":true") {
            bail!("status: {answer:.300}");
        }
        rss_mib.push(vm_kib(daemon.pid(), "VmRSS")? as f64 / 1024.0);
    }
    let mut status_cli = Vec::new();
    for _ in 0..cli_runs {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args(paths.args())
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        status_cli.push(started.elapsed().as_secs_f64() * 1e3);
        if !out.success() {
            bail!("discocache status --json exited {out}");
        }
    }
    daemon.stop()?;
    Ok(Measured {
        n,
        seed,
        status_op,
        status_cli,
        rss_mib,
    })
}

fn print_row(m: &Measured) {
    println!(
        "| {} | {:.1} | {:.0} | {:.0} | {:.1}–{:.1} |",
        m.n,
        m.seed.as_secs_f64(),
        median(&m.status_op),
        median(&m.status_cli),
        min(&m.rss_mib),
        max(&m.rss_mib)
    );
}

fn summarize(small: &Measured, large: &Measured) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let cli = median(&small.status_cli);
    println!(
        "\n10,000 sources, `discocache status --json`: **{cli:.0} ms** (goal < {:.0} ms: {})",
        ms(GOAL_STATUS_10K),
        verdict(cli < ms(GOAL_STATUS_10K))
    );
    let seed = large.seed;
    println!(
        "100,000 sources seeded from an empty root in **{:.1} s** (goal < {:.0} s: {})",
        seed.as_secs_f64(),
        GOAL_SEED_100K.as_secs_f64(),
        verdict(seed < GOAL_SEED_100K)
    );
    let cli = median(&large.status_cli);
    println!(
        "100,000 sources, `discocache status --json`: **{cli:.0} ms** (goal < {:.0} ms: {})",
        ms(GOAL_STATUS_100K),
        verdict(cli < ms(GOAL_STATUS_100K))
    );
    let (low, high) = (min(&large.rss_mib), max(&large.rss_mib));
    let spread = (high - low) / low;
    println!(
        "100,000 sources, VmRSS: **{high:.1} MiB** at most (goal < {GOAL_RSS_MIB} MiB: {}), \
         spread over {CALLS} status calls **{:.1} %** (goal ≤ {:.0} %: {})",
        verdict(high < GOAL_RSS_MIB),
        spread * 100.0,
        GOAL_FLAT * 100.0,
        verdict(spread <= GOAL_FLAT)
    );
}
