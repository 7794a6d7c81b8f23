//! §1: a socket `get` of a 1 KiB source, daemon vs a bare server.
//!
//! The bare server is this bench binary re-executed with `--bare-server`:
//! a std `UnixListener`, one thread per connection, that reads a request
//! line and writes back a prebuilt response line: the daemon's own answer
//! to the same `get`, captured at the start. Both are driven by the same
//! client code ([`LineClient`]), alternating batch by batch.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::harness::{GET_LINE, KillOnDrop, LineClient, OneSource, cpu_share, poll_until};
use crate::common::{json_of_len, median, percentile, verdict};

/// Payload size.
const PAYLOAD: usize = 1024;
/// Latency: rounds per side, and sequential requests per round.
const LAT_ROUNDS: usize = 20;
const LAT_BATCH: usize = 250;
/// Throughput: concurrent clients, requests per client, rounds per side.
const CLIENTS: usize = 64;
const PER_CLIENT: usize = 200;
const TPUT_ROUNDS: usize = 5;
/// How long the daemon's idle CPU use is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(1);
/// Goals: p50 latency ratio at most, throughput ratio at least.
const GOAL_P50: f64 = 1.3;
const GOAL_TPUT: f64 = 0.7;

/// Runs both measurements and prints their tables.
///
/// # Errors
///
/// Any setup or protocol failure.
pub fn run() -> Result<()> {
    let fixture = OneSource::start(&json_of_len(PAYLOAD))?;
    let daemon_sock = fixture.daemon.paths.socket.clone();
    let response = LineClient::connect(&daemon_sock)?.ask(GET_LINE)?.to_owned();
    let response_file = fixture.dir.path().join("response.line");
    fs::write(&response_file, &response)?;
    let bare_sock = fixture.dir.path().join("bare.sock");
    let _bare = spawn_bare(&bare_sock, &response_file)?;
    println!(
        "\n## 1. Socket get of a {PAYLOAD} B source (response line {} B)\n",
        response.len()
    );
    let idle = cpu_share(fixture.daemon.pid(), IDLE_WINDOW)?;
    println!(
        "daemon CPU while idle (no client), over {IDLE_WINDOW:?}: {:.1} % of one core\n",
        idle * 100.0
    );
    latency(&daemon_sock, &bare_sock)?;
    throughput(&daemon_sock, &bare_sock)
}

fn spawn_bare(socket: &Path, response: &Path) -> Result<KillOnDrop> {
    let exe = std::env::current_exe().context("locate the bench binary")?;
    let child = Command::new(exe)
        .arg("--bare-server")
        .args([socket, response])
        .stdin(Stdio::null())
        .spawn()
        .context("spawn the bare server")?;
    let guard = KillOnDrop(child);
    poll_until("the bare server to listen", || {
        Ok(LineClient::connect(socket).ok())
    })?;
    Ok(guard)
}

/// One client, sequential requests on one connection, per-request times.
fn latency(daemon: &Path, bare: &Path) -> Result<()> {
    let mut clients = [LineClient::connect(daemon)?, LineClient::connect(bare)?];
    let mut samples = [Vec::new(), Vec::new()];
    for (client, out) in clients.iter_mut().zip(&mut samples) {
        sample(client, LAT_BATCH, &mut Vec::new())?;
        out.reserve(LAT_ROUNDS * LAT_BATCH);
    }
    for round in 0..LAT_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            sample(&mut clients[side], LAT_BATCH, &mut samples[side])?;
        }
    }
    let [d, b] = &samples;
    println!("| side | requests | p50 µs | p90 µs | p99 µs |\n|---|---|---|---|---|");
    for (name, s) in [("daemon", d), ("bare server", b)] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            s.len(),
            median(s) / 1e3,
            percentile(s, 90.0) / 1e3,
            percentile(s, 99.0) / 1e3
        );
    }
    let ratio = median(d) / median(b);
    let p99 = percentile(d, 99.0) / percentile(b, 99.0);
    println!(
        "\np50 ratio daemon/bare: **{ratio:.2}** (goal ≤ {GOAL_P50}: {}); p99 ratio {p99:.2}\n",
        verdict(ratio <= GOAL_P50)
    );
    Ok(())
}

fn sample(client: &mut LineClient, n: usize, out: &mut Vec<f64>) -> Result<()> {
    for _ in 0..n {
        let start = Instant::now();
        let reply = client.ask(GET_LINE)?;
        out.push(start.elapsed().as_nanos() as f64);
        if !reply.starts_with("{\"ok\":true") {
            bail!("unexpected reply: {reply:.200}");
        }
    }
    Ok(())
}

/// `CLIENTS` connections at once, `PER_CLIENT` requests each; req/s.
fn throughput(daemon: &Path, bare: &Path) -> Result<()> {
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..TPUT_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let socket = [daemon, bare][side];
            rates[side].push(burst(socket)?);
        }
    }
    let [d, b] = &rates;
    println!(
        "| side | clients × requests | rounds | median req/s | min | max |\n|---|---|---|---|---|---|"
    );
    for (name, r) in [("daemon", d), ("bare server", b)] {
        println!(
            "| {name} | {CLIENTS} × {PER_CLIENT} | {} | {:.0} | {:.0} | {:.0} |",
            r.len(),
            median(r),
            crate::common::min(r),
            crate::common::max(r)
        );
    }
    let ratio = median(d) / median(b);
    println!(
        "\nthroughput ratio daemon/bare: **{ratio:.2}** (goal ≥ {GOAL_TPUT}: {})",
        verdict(ratio >= GOAL_TPUT)
    );
    Ok(())
}

/// One round: every client connects, then all start together; requests
/// per second from the start until the last client is done.
fn burst(socket: &Path) -> Result<f64> {
    let start_line = Arc::new(Barrier::new(CLIENTS + 1));
    let mut threads = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut client = LineClient::connect(socket)?;
        let start_line = Arc::clone(&start_line);
        threads.push(std::thread::spawn(move || -> Result<()> {
            start_line.wait();
            for _ in 0..PER_CLIENT {
                if !client.ask(GET_LINE)?.starts_with("{\"ok\":true") {
                    bail!("a concurrent get failed");
                }
            }
            Ok(())
        }));
    }
    start_line.wait();
    let start = Instant::now();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok((CLIENTS * PER_CLIENT) as f64 / start.elapsed().as_secs_f64())
}

/// The bare server: answers every request line on every connection with
/// the bytes of `response` (a line, newline included). Runs until killed.
///
/// # Errors
///
/// When the response cannot be read or the socket cannot be bound.
pub fn bare_server(socket: &Path, response: &Path) -> Result<()> {
    let line: Arc<[u8]> = fs::read(response)
        .with_context(|| format!("read {}", response.display()))?
        .into();
    let listener =
        UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))?;
    for stream in listener.incoming() {
        let stream = stream.context("accept")?;
        let line = Arc::clone(&line);
        std::thread::spawn(move || answer_all(stream, &line));
    }
    Ok(())
}

fn answer_all(stream: UnixStream, line: &[u8]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut request = Vec::new();
    loop {
        request.clear();
        if reader.read_until(b'\n', &mut request)? == 0 {
            return Ok(());
        }
        writer.write_all(line)?;
    }
}
