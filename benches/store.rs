//! Library reads and durable commits, each as a ratio against the raw file
//! operation timed in the same run.
//!
//! - read: `Cache::read` vs `std::fs::read` + `std::fs::metadata` of the same
//!   payload file (1 KiB and 64 KiB). Goal: <= 1.3x.
//! - commit: `Cache::write` vs a bare temp file + write + fsync + rename +
//!   directory fsync of the same bytes in the same directory. Goal: <= 1.3x.
//!   The commit is also broken down (the library without the runtime; the
//!   raw file steps of today's commit and of the former two-fsync commit)
//!   to show where it goes.
//!
//! Run with `cargo bench --bench store`. Set `DISCOCACHE_BENCH_DIR` to put
//! the scratch root on another filesystem (default: the system temp dir).

mod common;

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use discocache::lock::SourceLock;
use discocache::refresh::Holder;
use discocache::{Cache, Source};

use common::{Paired, json_of_len, paired, verdict};

/// The ratio goal of both benchmarks.
const GOAL: f64 = 1.3;
/// Size of the sidecar-like and marker-like files of the raw breakdown
/// (about what the real ones are).
const SIDECAR_LEN: usize = 420;
const MARKER_LEN: usize = 120;

fn main() -> Result<()> {
    let base = std::env::var_os("DISCOCACHE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let scratch =
        tempfile::tempdir_in(&base).with_context(|| format!("scratch dir in {base:?}"))?;
    let cache = Cache::open(scratch.path()).context("open cache")?;
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    println!(
        "discocache store benchmarks: {} cpus, scratch root {}, tokio multi-thread runtime",
        std::thread::available_parallelism().map_or(0, usize::from),
        scratch.path().display()
    );
    bench_reads(&cache, &rt)?;
    bench_commits(&cache, &rt)?;
    Ok(())
}

fn bench_reads(cache: &Cache, rt: &tokio::runtime::Runtime) -> Result<()> {
    println!("\n## read: Cache::read vs fs::read + fs::metadata (goal <= {GOAL}x)\n");
    header();
    for (label, len, rounds, batch) in [("1 KiB", 1024, 300, 200), ("64 KiB", 65536, 300, 100)] {
        let source = Source::parse(&format!("bench/read-{len}"))?;
        rt.block_on(cache.write(&source, json_of_len(len)))?;
        let path = cache.layout().payload(&source.id);
        let run = paired(
            rounds,
            batch,
            || {
                let entry = cache.read(&source)?.context("payload vanished")?;
                black_box(entry);
                Ok(())
            },
            || {
                black_box(fs::read(&path)?);
                black_box(fs::metadata(&path)?);
                Ok(())
            },
        )?;
        row("Cache::read", label, &run);
    }
    Ok(())
}

/// Commits per timed batch, and timed rounds per row.
const COMMIT_BATCH: usize = 5;
const COMMIT_ROUNDS: usize = 100;

fn bench_commits(cache: &Cache, rt: &tokio::runtime::Runtime) -> Result<()> {
    println!("\n## commit: vs bare temp + write + fsync + rename + dir fsync (goal <= {GOAL}x)\n");
    header();
    for (label, len) in [("1 KiB", 1024), ("64 KiB", 65536)] {
        let source = Source::parse(&format!("bench/commit-{len}"))?;
        let bytes = json_of_len(len);
        rt.block_on(cache.write(&source, bytes.clone()))?;
        let dir = cache.layout().tier_dir(&source.id);
        let write = || {
            let _revision = rt.block_on(cache.write(&source, bytes.clone()))?;
            Ok(())
        };
        let raw = || raw_commit(&dir, &[("raw.json", &bytes)]);
        let run = paired(COMMIT_ROUNDS, COMMIT_BATCH, write, raw)?;
        row("Cache::write", label, &run);
        if len == 1024 {
            commit_breakdown(cache, &source, &bytes)?;
        }
    }
    Ok(())
}

/// Where a commit's time goes: the library without its runtime, then the
/// raw file steps of today's commit (payload fsync'd, sidecar and marker
/// not) and of the former one (payload and sidecar both fsync'd). Each
/// against the raw one-file commit.
fn commit_breakdown(cache: &Cache, source: &Source, bytes: &[u8]) -> Result<()> {
    let dir = cache.layout().tier_dir(&source.id);
    let (sidecar, marker) = (json_of_len(SIDECAR_LEN), json_of_len(MARKER_LEN));
    let two = [("raw.json", bytes), ("raw.meta.json", &sidecar[..])];
    let unmark = || fs::remove_file(dir.join("raw.refreshing"));
    let plain_mark = || fs::write(dir.join("raw.refreshing"), &marker);
    type Step<'a> = Box<dyn FnMut() -> Result<()> + 'a>;
    let steps: [(&str, Step); 3] = [
        (
            "lock + Holder commit, no runtime",
            Box::new(|| holder_commit(cache, source, bytes)),
        ),
        (
            "raw: plain marker + fsync'd payload + plain sidecar, 2 renames + dir fsync + unlink",
            Box::new(|| {
                plain_mark()?;
                payload_synced_commit(&dir, bytes, &sidecar)?;
                Ok(unmark()?)
            }),
        ),
        (
            "raw: 2 fsync'd renames + dir fsync (the former commit's floor)",
            Box::new(|| raw_commit(&dir, &two)),
        ),
    ];
    for (name, step) in steps {
        let raw = || raw_commit(&dir, &[("raw.json", bytes)]);
        row(
            name,
            "1 KiB",
            &paired(COMMIT_ROUNDS, COMMIT_BATCH, step, raw)?,
        );
    }
    Ok(())
}

/// What `Cache::write` does, minus the runtime: take the lock, mark, commit
/// payload and sidecar, unmark, unlock.
fn holder_commit(cache: &Cache, source: &Source, bytes: &[u8]) -> Result<()> {
    let lock = SourceLock::try_acquire(&cache.layout().lock(&source.id))?.context("lock busy")?;
    let holder = Holder::start(
        cache.layout(),
        &source.id,
        lock,
        source.policy.refresh_deadline,
    )?;
    holder.commit_external(bytes, &source.policy)?;
    Ok(())
}

/// The raw durable commit: for each file a temp file, write, fsync, rename;
/// then one directory fsync.
fn raw_commit(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    for (name, bytes) in files {
        let tmp = dir.join(format!(".{name}.raw.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Today's commit, raw: the payload through an fsync'd temp file and a
/// rename, the sidecar through a temp file and a rename without fsync (it
/// can be rebuilt), then one directory fsync.
fn payload_synced_commit(dir: &Path, payload: &[u8], sidecar: &[u8]) -> Result<()> {
    let tmp = dir.join(".raw.json.raw.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(payload)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("raw.json"))?;
    let tmp = dir.join(".raw.meta.json.raw.tmp");
    fs::write(&tmp, sidecar)?;
    fs::rename(&tmp, dir.join("raw.meta.json"))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn header() {
    println!(
        "| operation | payload | median µs | raw median µs | ratio of medians | median paired ratio | goal {GOAL}x |"
    );
    println!("|---|---|---|---|---|---|---|");
}

/// One table row; only rows of the library's own calls are judged against
/// the goal (the breakdown rows are there to explain them).
fn row(op: &str, payload: &str, run: &Paired) {
    let ratio = run.ratio_of_medians();
    let judged = op.starts_with("Cache::");
    let met = ratio <= GOAL && run.median_of_ratios() <= GOAL;
    println!(
        "| {op} | {payload} | {:.1} | {:.1} | {ratio:.2} | {:.2} | {} |",
        run.subject_median() / 1000.0,
        run.base_median() / 1000.0,
        run.median_of_ratios(),
        if judged { verdict(met) } else { "-" },
    );
}
