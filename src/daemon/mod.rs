//! The daemon: `discocache serve`.
//!
//! [`run`] builds the runtime and wires the parts (private modules): the
//! config (`reload`), the socket (`socket`) and its server
//! ([`crate::server`]) answering the ops (`ops`), warm-keeping (`warm`),
//! file watching (`watch`), the periodic reconcile (`reconcile`), signals
//! (`signals`) and systemd notifications (`notify`), and with `[shared]`
//! the shared tier's epoch watch and re-seeding (`tier`, `reseed`). The
//! shared state is in `state`.
//!
//! Shutdown: a SIGTERM/SIGINT stops accepting and serving, lets in-flight
//! refreshes run up to `shutdown_grace`, then drops them (a command's
//! process group is killed, its lock released and its marker removed),
//! persists the counters, removes the socket and returns `Ok`.

mod configured;
mod events;
mod metrics;
mod mutex;
mod notify;
mod ops;
mod permits;
mod queue;
mod reconcile;
mod registry;
mod reload;
#[cfg(feature = "shared")]
mod reseed;
mod seeds;
mod signals;
mod socket;
mod state;
mod status;
mod tier;
mod view;
mod warm;
mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::server::{self, Limits};
use crate::stats::Stats;
use state::{Daemon, blocking};

/// How long dropped tasks get to wind down after the grace.
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// What `discocache serve` was asked to run with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The cache root.
    pub root: PathBuf,
    /// The socket path (ignored when a socket is passed by systemd).
    pub socket: PathBuf,
    /// The config file; `None` = the default path if it exists, else the
    /// embedded default.
    pub config: Option<PathBuf>,
    /// `--offline` / `DISCOCACHE_OFFLINE`: refresh nothing, whatever the
    /// config says.
    pub offline: bool,
}

/// Runs the daemon until SIGTERM/SIGINT, logging to stderr (filter with
/// `DISCOCACHE_LOG`, e.g. `debug`; default `info`).
///
/// # Errors
///
/// When the daemon cannot start: the config does not load (every problem
/// with its line), the root cannot be created, another daemon already
/// serves on the socket, or the socket cannot be bound.
pub fn run(mut opts: ServeOptions) -> anyhow::Result<()> {
    init_logging();
    // Made absolute once, so that the watcher sees the file a relative
    // `--config` names, and a reload reads the same file.
    if let Some(file) = opts.config.take() {
        let absolute = std::path::absolute(&file)
            .with_context(|| format!("resolve the config path {}", file.display()))?;
        opts.config = Some(absolute);
    }
    let config =
        reload::resolve(opts.config.as_deref()).map_err(|e| anyhow::anyhow!("{}", e.render()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads(&config))
        .enable_all()
        .thread_name("discocache")
        .build()
        .context("start the async runtime")?;
    let served = runtime.block_on(serve(opts, config));
    // Drops every task still running: refreshers are killed, locks released.
    runtime.shutdown_timeout(ABORT_WAIT);
    let stopped = served?;
    if let Err(e) = stopped.daemon.stats.persist() {
        tracing::warn!("cannot persist the counters: {e}");
    }
    drop(stopped.socket);
    tracing::info!("stopped");
    Ok(())
}

fn init_logging() {
    crate::logging::init("info");
}

/// Blocking threads beside the refreshes' own, for the short file work.
const SHORT_WORK_THREADS: usize = 4;

/// The most blocking threads. At most `max_concurrent_refreshes` of them
/// (4 by default) are held long (an HTTP fetch); everything else on the
/// pool is file work of microseconds to milliseconds (reads, looks,
/// commits, `status`), which [`SHORT_WORK_THREADS`] more threads keep
/// moving. A burst (many clients, 100,000 sources seeded) queues for a
/// thread instead of growing the pool: every thread costs a stack and, as
/// it allocates, a malloc arena that keeps what it once held. A reload that
/// raises `max_concurrent_refreshes` does not grow the pool: the extra
/// refreshes wait for a thread.
fn blocking_threads(config: &crate::config::Config) -> usize {
    config.daemon.max_concurrent_refreshes + SHORT_WORK_THREADS
}

/// What is left to do once the runtime is gone.
struct Stopped {
    daemon: Arc<Daemon>,
    socket: Option<socket::SocketGuard>,
}

/// Starts everything, serves until the shutdown signal, and waits for
/// in-flight work up to the grace.
async fn serve(opts: ServeOptions, config: crate::config::Config) -> anyhow::Result<Stopped> {
    let cache = Cache::open(&opts.root)
        .with_context(|| format!("open the cache root {}", opts.root.display()))?;
    #[cfg(feature = "shared")]
    let cache = crate::shared::attach(cache, config.shared.as_ref())?;
    let c = cache.clone();
    let recovered = blocking(move || c.recover())
        .await
        .context("recover the cache root")?;
    if !recovered.removed.is_empty() {
        tracing::info!(
            "recovery removed {} leftover files",
            recovered.removed.len()
        );
    }
    let stats = Stats::load(&cache.layout().state_dir()).unwrap_or_else(|e| {
        tracing::warn!("{e}; counting from zero");
        Stats::empty(&cache.layout().state_dir())
    });
    let listening = socket::listen(&opts.socket)?;
    let metrics_listener = match config.daemon.metrics_listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    tracing::info!("config {}: {} sources", config.origin, config.sources.len());
    for (id, why) in config.disabled() {
        tracing::warn!("{id} is disabled: {why}");
    }
    let d = Arc::new(Daemon::new(
        cache,
        opts.socket.clone(),
        config,
        opts.config.clone(),
        stats,
        opts.offline,
    ));
    d.prime().await;
    seeds::plant(&d).await;
    if d.offline() {
        tracing::info!("offline: no refresher runs; serving what is on disk");
        d.start_seeding(BTreeSet::new());
    } else {
        d.start_seeding(empty_sources(&d));
    }
    let (reloads, triggers) = mpsc::channel(8);
    signals::spawn(&d, reloads.clone()).context("install signal handlers")?;
    let _watcher = watch::start(&d, reloads);
    d.tracker.spawn(reload::run(Arc::clone(&d), triggers));
    d.tracker.spawn(reconcile::run(Arc::clone(&d)));
    warm::sync(&d);
    tier::spawn(&d);
    let service = Arc::clone(&d);
    let (shutdown, tracker) = (d.shutdown.clone(), d.tracker.clone());
    d.tracker.spawn(server::serve(
        listening.listener,
        service,
        Limits::default(),
        shutdown,
        tracker,
    ));
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        d.tracker.spawn(metrics::serve(Arc::clone(&d), listener));
    }
    let watchdog = CancellationToken::new();
    notify::spawn_watchdog(watchdog.clone());
    notify::ready(&d.stats);
    d.shutdown.cancelled().await;
    notify::stopping();
    wind_down(&d).await;
    watchdog.cancel();
    Ok(Stopped {
        daemon: d,
        socket: listening.guard,
    })
}

/// Configured sources with no payload on disk.
fn empty_sources(d: &Daemon) -> BTreeSet<crate::source::SourceId> {
    let layout = d.cache.layout();
    d.config()
        .sources
        .iter()
        .filter(|s| !layout.payload(&s.id).exists())
        .map(|s| s.id.clone())
        .collect()
}

/// Waits for tracked work to finish, up to the grace (or a second signal).
async fn wind_down(d: &Daemon) {
    d.tracker.close();
    let grace = d.config().daemon.shutdown_grace;
    tokio::select! {
        () = d.tracker.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("refreshes still running after the grace of {}; stopping them", humantime::format_duration(grace));
        }
        () = d.abort.cancelled() => {}
    }
}
