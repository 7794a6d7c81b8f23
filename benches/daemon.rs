//! Daemon benchmarks, each judged as a ratio against the raw operation
//! measured in the same run (or against a goal for memory and restart):
//!
//! 1. a socket `get` of a 1 KiB source vs a bare Unix-socket server in its
//!    own process sending the same bytes: p50 latency of one sequential
//!    client (goal ≤ 1.3×) and throughput of 64 concurrent clients (goal
//!    ≥ 0.7×);
//! 2. `discocache get` as a whole process vs `cat` of the payload file
//!    (goal ≤ 1.4×) and vs a cached `bkt` hit;
//! 3. daemons with 10,000 and 100,000 `file` sources: seeding time from an
//!    empty root (goal < 150 s for 100,000), `status --json` (goals
//!    < 0.3 s and < 2 s), and VmRSS over 20 `status` calls (goal < 256 MiB
//!    and within ±10 %).
//!
//! Run with `cargo bench --bench daemon` (add `socket`, `process` or
//! `scale` after `--` to run only some). Results are printed as Markdown.

mod common;
#[path = "daemon/harness.rs"]
mod harness;
#[path = "daemon/process.rs"]
mod process;
#[path = "daemon/scale.rs"]
mod scale;
#[path = "daemon/socket.rs"]
mod socket;

use std::path::Path;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--bare-server") {
        let socket = args.get(at + 1).context("--bare-server SOCKET RESPONSE")?;
        let response = args.get(at + 2).context("--bare-server SOCKET RESPONSE")?;
        return socket::bare_server(Path::new(socket), Path::new(response));
    }
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| chosen.is_empty() || chosen.contains(&part);
    println!("# discocache daemon benchmarks (binary: {})", harness::BIN);
    if wanted("socket") {
        socket::run().context("socket bench")?;
    }
    if wanted("process") {
        process::run().context("process bench")?;
    }
    if wanted("scale") {
        scale::run().context("scale bench")?;
    }
    Ok(())
}
