//! Shared-tier benchmarks (issue 13), against a `redis-server` and a
//! 127.0.0.1 HTTP origin that this bench starts itself:
//!
//! 1. `waiter`: a waiter on host B sees host A's commit. Two `SharedTier`
//!    handles (two hosts) in one process: A holds the lease, B finds it
//!    busy and waits with `SharedTier::wait_for`; once Redis reports B
//!    blocked in `XREAD`, A commits. Latency = B's wake-up − the instant A
//!    called `commit` (an upper bound: it includes A's round trip); also
//!    shown from the instant `commit` returned (a lower bound). Goal: p99
//!    ≤ 5 ms.
//! 2. `refresh`: `Cache::refresh` of one HTTP source with the shared tier
//!    attached (`Cache::with_shared`) vs the same refresh on a cache
//!    without it, same origin, paired rounds in one run. Goal: ≤ 1.2×. The
//!    tier's command count per refresh is printed: 0 means the refresh
//!    path does not go through the tier (yet).
//! 3. `reads`: `INFO commandstats` (calls of every command) around 10,000
//!    socket `get`s through a daemon whose config has `[shared]`, minus the
//!    daemon's own epoch checks (its `shared.commands` counter) and the
//!    `INFO` itself; then around 10,000 `Cache::read`s of a cache with the
//!    tier attached. Goal: 0.
//!
//! Run with `cargo bench --bench shared` (add `waiter`, `refresh` or
//! `reads` after `--` to run only some). Results are printed as Markdown.

mod common;
#[allow(dead_code)]
#[path = "daemon/harness.rs"]
mod harness;
#[path = "shared/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use discocache::config::SharedSettings;
use discocache::refresher::http::HttpSpec;
use discocache::shared::{Commit, CommitKind, SharedTier, Take};
use discocache::{Cache, Policy, Refresher, Source, SourceId};
use serde_json::json;

use common::{json_of_len, mean, percentile, verdict};
use support::{Origin, Redis};

/// The waiter's p99 goal, in ms.
const WAITER_GOAL_MS: f64 = 5.0;
/// The refresh ratio goal.
const REFRESH_GOAL: f64 = 1.2;
/// Reads counted in the read-path part.
const READS: usize = 10_000;
/// How long a lease is held in the waiter part.
const HOLD: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| chosen.is_empty() || chosen.contains(&part);
    let Some(redis) = Redis::start()? else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("# discocache shared-tier benchmarks");
    if wanted("waiter") {
        runtime
            .block_on(waiter(&redis, 300))
            .context("waiter bench")?;
    }
    if wanted("refresh") {
        refresh(&runtime, &redis, 60, 10).context("refresh bench")?;
    }
    if wanted("reads") {
        reads(&redis).context("reads bench")?;
    }
    Ok(())
}

fn tier(redis: &Redis, namespace: &str) -> Result<Arc<SharedTier>> {
    let mut settings = SharedSettings::new(&redis.url());
    namespace.clone_into(&mut settings.namespace);
    Ok(Arc::new(SharedTier::new(settings)?))
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Microseconds from `from` to `to`, negative when `to` came first.
fn micros(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1e6,
        None => -(from.duration_since(to).as_secs_f64() * 1e6),
    }
}

/// Part 1: how long host B takes to see host A's commit.
async fn waiter(redis: &Redis, rounds: usize) -> Result<()> {
    let (a, b) = (tier(redis, "waiter")?, tier(redis, "waiter")?);
    let id = SourceId::parse("bench/waiter")?;
    let payload = json_of_len(1024);
    let (mut from_call, mut from_return) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let Take::Leased(lease) = a.take_lease(&id, HOLD, None).await? else {
            bail!("host A did not get the lease");
        };
        let Take::Busy { remaining, after } = b.take_lease(&id, HOLD, None).await? else {
            bail!("host B was not told the lease is busy");
        };
        let (b2, id2) = (Arc::clone(&b), id.clone());
        let waiting = tokio::spawn(async move {
            let event = b2.wait_for(&id2, &after, remaining).await;
            (event, Instant::now())
        });
        while redis.blocked_clients()? == 0 {
            tokio::task::yield_now().await;
        }
        let commit = Commit {
            kind: CommitKind::Fetched,
            fetched_at_ms: now_ms(),
            payload: &payload,
            sha256: "00",
            etag: None,
            last_modified: None,
        };
        let called = Instant::now();
        a.commit(&lease, &commit).await?;
        let returned = Instant::now();
        let (event, woke) = waiting.await?;
        let event = event?.context("host B saw no event")?;
        ensure!(
            event.fence == lease.fence,
            "host B saw fence {}",
            event.fence
        );
        if round > 0 {
            from_call.push(micros(called, woke));
            from_return.push(micros(returned, woke));
        }
    }
    let p99 = percentile(&from_call, 99.0);
    println!("\n## Waiter on host B sees host A's commit ({rounds} rounds)\n");
    println!("| measured from | p50 µs | p99 µs | max µs | mean µs |");
    println!("|---|---|---|---|---|");
    for (what, v) in [
        ("A calls commit", &from_call),
        ("commit returned", &from_return),
    ] {
        println!(
            "| {what} | {:.0} | {:.0} | {:.0} | {:.0} |",
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0),
            mean(v)
        );
    }
    println!(
        "\nGoal p99 ≤ {WAITER_GOAL_MS} ms (from the commit call): {} ({:.2} ms)",
        verdict(p99 / 1000.0 <= WAITER_GOAL_MS),
        p99 / 1000.0
    );
    Ok(())
}

/// Part 2: a refresh through the shared tier vs the same without it.
fn refresh(
    runtime: &tokio::runtime::Runtime,
    redis: &Redis,
    rounds: usize,
    batch: usize,
) -> Result<()> {
    let origin = Origin::start(4096)?;
    let dir = tempfile::tempdir()?;
    let shared_tier = tier(redis, "refresh")?;
    let with = Cache::open(dir.path().join("with"))?.with_shared(Arc::clone(&shared_tier));
    let without = Cache::open(dir.path().join("without"))?;
    let source = Source::new(SourceId::parse("bench/refresh")?, Policy::default());
    let spec = HttpSpec::new(origin.url.clone());
    let run = |cache: &Cache| -> Result<()> {
        let refresher = Refresher::Http(spec.clone());
        let fetch = move |ctx| async move { refresher.fetch(ctx).await };
        runtime.block_on(cache.refresh(&source, fetch))?;
        Ok(())
    };
    let (served, sent) = (origin.served(), shared_tier.status().commands);
    let paired = common::paired(rounds, batch, || run(&with), || run(&without))?;
    let refreshes = ((rounds + 1) * batch) as f64;
    let per_refresh = (shared_tier.status().commands - sent) as f64 / refreshes;
    let origin_calls = (origin.served() - served) as f64 / (2.0 * refreshes);
    let ratio = paired.median_of_ratios();
    println!("\n## Refresh through the shared tier vs without ({rounds} rounds of {batch})\n");
    println!(
        "| with tier p50 µs | without p50 µs | ratio of medians | median of ratios | tier commands per refresh | origin calls per refresh |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {:.0} | {:.0} | {:.3} | {ratio:.3} | {per_refresh:.2} | {origin_calls:.2} |",
        paired.subject_median() / 1000.0,
        paired.base_median() / 1000.0,
        paired.ratio_of_medians(),
    );
    println!(
        "\nGoal ≤ {REFRESH_GOAL}×: {} ({ratio:.3}×){}",
        verdict(ratio <= REFRESH_GOAL),
        if per_refresh == 0.0 {
            "; the refresh path sent no command to the tier: both sides ran the plain path"
        } else {
            ""
        }
    );
    Ok(())
}

/// Part 3: Redis commands sent on the read path.
fn reads(redis: &Redis) -> Result<()> {
    let origin = Origin::start(1024)?;
    let dir = tempfile::tempdir()?;
    let paths = harness::Paths::under(dir.path());
    let config = format!(
        "[shared]\nurl = \"{}\"\nnamespace = \"reads\"\n\n[[source]]\nid = \"{}\"\nttl = \"24h\"\nhttp = {{ url = \"{}\" }}\n",
        redis.url(),
        harness::SOURCE,
        origin.url
    );
    std::fs::write(&paths.config, config)?;
    let mut daemon = harness::Daemon::spawn(&paths)?;
    let mut client = daemon.connect()?;
    harness::poll_until("the shared tier up and the data served", || {
        let status = client.ask_json(&json!({"op": "status"}))?;
        let served = client.ask_json(&json!({"op": "get", "source": harness::SOURCE}))?;
        Ok((status["shared"]["up"] == true && served["ok"] == true).then_some(()))
    })?;
    let heartbeat = |client: &mut harness::LineClient| -> Result<u64> {
        let status = client.ask_json(&json!({"op": "status"}))?;
        status["shared"]["commands"]
            .as_u64()
            .context("status has shared.commands")
    };
    let (own_before, (calls_before, _)) = (heartbeat(&mut client)?, redis.command_calls()?);
    let started = Instant::now();
    for _ in 0..READS {
        client.get_ok(harness::SOURCE)?;
    }
    let took = started.elapsed();
    let (calls_after, _) = redis.command_calls()?;
    let own = heartbeat(&mut client)? - own_before;
    let total = calls_after - calls_before;
    // The first INFO counts itself; the daemon's epoch checks are its own.
    let get_path = total.saturating_sub(1 + own);
    drop(client);
    daemon.stop()?;

    let tier = tier(redis, "reads")?;
    let cache = Cache::open(&paths.root)?.with_shared(Arc::clone(&tier));
    let source = Source::parse(harness::SOURCE)?;
    let (before, _) = redis.command_calls()?;
    for _ in 0..READS {
        cache.read(&source)?.context("the payload is there")?;
    }
    let (after, _) = redis.command_calls()?;
    let read_path = after - before - 1;
    println!("\n## Redis commands on the read path\n");
    println!(
        "| reads | Redis commands in the window | of which the daemon's epoch checks | of which INFO | on the read path |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {READS} socket `get`s ({:.2} s) | {total} | {own} | 1 | **{get_path}** |",
        took.as_secs_f64()
    );
    println!(
        "| {READS} `Cache::read`s | {} | 0 | 1 | **{read_path}** |",
        after - before
    );
    println!(
        "\nGoal 0: {}",
        verdict(get_path == 0 && read_path == 0 && tier.status().commands == 0)
    );
    Ok(())
}
