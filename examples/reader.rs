//! Reads one source of a discocache root with the library: what a Rust
//! program that only wants the data does (no daemon, no lock, no waiting).
//!
//! ```sh
//! cargo run --example reader -- ~/.cache/discocache discovery/openrouter
//! ```
//!
//! Prints one JSON line, like the readers in `examples/readers/`:
//! `{"source", "age_seconds", "fresh", "revision", "data"}`. Exit 3 when
//! the source has no data. It needs no async runtime: reads are plain
//! blocking calls.

use std::process::ExitCode;

use discocache::{Cache, Source};
use serde_json::{Value, json};

/// The reader's answer for `source` under `root`: `Ok(None)` when it has no
/// data yet.
///
/// # Errors
///
/// A bad source name, or a payload that exists but cannot be read.
pub fn report(root: &str, source: &str) -> Result<Option<Value>, Box<dyn std::error::Error>> {
    let cache = Cache::open(root)?;
    let source = Source::parse(source)?;
    let Some(entry) = cache.read_with_meta(&source)? else {
        return Ok(None);
    };
    // Freshness by the ttl the sidecar recorded, as the other readers do
    // (the sidecar is optional: without it, freshness is unknown).
    let meta = entry.meta.as_ref();
    let fresh = meta.map(|m| entry.age.as_millis() < u128::from(m.ttl_ms));
    Ok(Some(json!({
        "source": source.id.to_string(),
        "age_seconds": entry.age.as_secs_f64(),
        "fresh": fresh,
        "revision": meta.map(|m| m.revision),
        "data": serde_json::from_slice::<Value>(&entry.data)?,
    })))
}

#[allow(dead_code)] // The tests use `report` alone.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, source] = args.as_slice() else {
        eprintln!("usage: reader ROOT TIER/NAME");
        return ExitCode::from(2);
    };
    match report(root, source) {
        Ok(Some(line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("reader: {source}: no data");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("reader: {source}: {e}");
            ExitCode::FAILURE
        }
    }
}
