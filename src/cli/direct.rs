//! Client commands on the library directly (`--no-daemon`, or when the
//! daemon should not or cannot serve them): each builds the same answer
//! body the daemon would send. Refreshes run in this process and are still
//! single flight host-wide.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;

use super::args::GetOpts;
use super::{Ctx, Exit, Fail, output};
use crate::cache::{Cache, Entry, Source};
use crate::config::{Config, ConfigError, SourceConfig};
use crate::meta::Timestamp;
use crate::plan::{Found, Plan, Situation, plan};
use crate::protocol::{
    GetBody, InvalidateBody, PruneBody, RefreshBody, RefreshMode, RefreshResult, SourceStatus,
    StateBody, StatusBody,
};
use crate::refresher::Refresher;
use crate::source::{Policy, SourceId};
use crate::{Error, Refreshed};

/// The cache, the config and a runtime for refreshes.
pub struct Direct {
    cache: Cache,
    config: Result<Config, ConfigError>,
    runtime: tokio::runtime::Runtime,
    /// Refreshes are off (`--offline`, `DISCOCACHE_OFFLINE`, or the
    /// config's `[daemon] offline`).
    offline: bool,
}

impl Direct {
    /// Opens the root and loads the config (a config that does not load is
    /// kept as its error: reads work without it).
    ///
    /// # Errors
    ///
    /// When the root cannot be opened or the runtime not built.
    pub fn open(ctx: &Ctx) -> anyhow::Result<Self> {
        super::init_logging(false);
        let cache = Cache::open(&ctx.root)
            .with_context(|| format!("cannot open cache root {}", ctx.root.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let config = ctx.load_config();
        #[cfg(feature = "shared")]
        let cache = match &config {
            Ok(config) => crate::shared::attach(cache, config.shared.as_ref())?,
            Err(_) => cache,
        };
        let offline = ctx.offline || config.as_ref().is_ok_and(|c| c.daemon.offline);
        Ok(Self {
            cache,
            config,
            runtime,
            offline,
        })
    }

    fn config(&self) -> anyhow::Result<&Config> {
        self.config.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn configured(&self, id: &SourceId) -> Option<&SourceConfig> {
        self.config.as_ref().ok()?.source(id)
    }

    /// The configured source, or an error naming the config.
    fn require(&self, id: &SourceId) -> anyhow::Result<&SourceConfig> {
        let config = self.config()?;
        config
            .source(id)
            .ok_or_else(|| anyhow::anyhow!("unknown source {id}: not in config {}", config.origin))
    }

    /// The policy to judge freshness by: the config's, else the ttl the
    /// sidecar recorded, else the default.
    fn source(&self, id: &SourceId) -> Source {
        if let Some(sc) = self.configured(id) {
            return Source::new(id.clone(), sc.policy.clone());
        }
        let mut policy = Policy::default();
        if let Ok(Some(meta)) = self.cache.meta(id)
            && meta.ttl_ms > 0
        {
            policy.ttl = Duration::from_millis(meta.ttl_ms);
        }
        Source::new(id.clone(), policy)
    }

    /// A forced refresh (joining one in flight) of configured sources, all
    /// at once.
    fn refresh_all(&self, ids: &[SourceId], forced: bool) -> Vec<crate::Result<Refreshed>> {
        let tasks: Vec<_> = ids.iter().map(|id| self.refresh_task(id, forced)).collect();
        self.runtime.block_on(async {
            let mut results = Vec::with_capacity(tasks.len());
            for (id, task) in ids.iter().zip(tasks) {
                let joined = task.await;
                results.push(
                    joined
                        .unwrap_or_else(|e| Err(Error::Internal(format!("refresh of {id}: {e}")))),
                );
            }
            results
        })
    }

    /// A refresh of a configured source; `forced`: the guard does not apply.
    fn refresh_task(
        &self,
        id: &SourceId,
        forced: bool,
    ) -> tokio::task::JoinHandle<crate::Result<Refreshed>> {
        let cache = self.cache.clone();
        let found: Option<(Source, Refresher)> = self.configured(id).map(|sc| {
            (
                Source::new(id.clone(), sc.policy.clone()),
                sc.refresher.clone(),
            )
        });
        let id = id.clone();
        let offline = self.offline;
        self.runtime.spawn(async move {
            if offline {
                return Err(Error::Offline { id });
            }
            let (source, refresher) =
                found.ok_or_else(|| Error::Internal(format!("{id} is not configured")))?;
            let fetch = move |ctx| async move { refresher.fetch(ctx).await };
            match forced {
                true => cache.refresh(&source, fetch).await,
                false => cache.refresh_guarded(&source, fetch).await,
            }
        })
    }

    /// `get`: reads, refreshes as [`plan`] decides (this process cannot
    /// finish a refresh in the background), reads again.
    ///
    /// # Errors
    ///
    /// A failed refresh that fails the read, no data (exit 3), expired
    /// data without `--allow-expired` (exit 4).
    pub fn get(&self, id: &SourceId, opts: &GetOpts) -> anyhow::Result<GetBody> {
        let source = self.source(id);
        self.plant_seed(&source);
        let mode = match (self.offline, RefreshMode::from(opts.refresh)) {
            (false, mode) => mode,
            (true, RefreshMode::Force) => {
                let e = Error::Offline { id: id.clone() };
                return Err(Fail::exit(Exit::Error, e.to_string()));
            }
            (true, _) => RefreshMode::Never,
        };
        let entry = self.cache.read(&source)?;
        let state = self.cache.refresh_state(id)?;
        let now = Timestamp::now();
        let situation = Situation {
            mode,
            found: match &entry {
                None => Found::Nothing,
                Some(e) if e.fresh => Found::Fresh,
                Some(_) => Found::Stale,
            },
            backing_off: crate::freshness::retry_at(
                state.next_retry_at,
                state.last_attempt_at,
                now,
                &source.policy,
            )
            .is_some_and(|t| t > now),
            in_flight: state.in_flight,
            lives_on: false,
        };
        let wait = match plan(situation) {
            Plan::Wait { failure_fails } => Some(failure_fails),
            Plan::Serve | Plan::ServeAndRefresh => None,
        };
        let forced = situation.mode == RefreshMode::Force;
        if let Some(failure_fails) = wait.filter(|_| forced || self.configured(id).is_some()) {
            self.require(id)?;
            let refreshed = self.refresh_all(std::slice::from_ref(id), forced).remove(0);
            if let Err(e) = refreshed {
                if failure_fails {
                    return Err(Fail::exit(exit_for(&e), e.to_string()));
                }
                eprintln!("discocache: {e}; serving the data on disk");
            }
        }
        self.read_body(&source, opts)
    }

    /// The `get` answer from disk, as it is now.
    fn read_body(&self, source: &Source, opts: &GetOpts) -> anyhow::Result<GetBody> {
        let id = &source.id;
        let Some(entry) = self.cache.read_with_meta(source)? else {
            if self.configured(id).is_none() {
                let origin = self.config().map_or("", |c| c.origin.as_str());
                let msg = format!("unknown source {id}: not in config {origin}, nothing on disk");
                return Err(Fail::exit(Exit::Error, msg));
            }
            let why = self.cache.meta(id)?.and_then(|m| m.last_error).map_or_else(
                || "never refreshed".to_owned(),
                |e| format!("last error: {e}"),
            );
            return Err(Fail::exit(Exit::NoData, format!("{id}: no data ({why})")));
        };
        check_expired(id, &entry, &source.policy, opts)?;
        let state = self.cache.refresh_state(id)?;
        output::envelope(id, entry, state, opts.meta)
    }

    /// `get` of what is on disk, refreshing nothing (what the daemon
    /// declined to serve: no data, or expired data).
    ///
    /// # Errors
    ///
    /// As [`Direct::get`].
    pub fn read_only(&self, id: &SourceId, opts: &GetOpts) -> anyhow::Result<GetBody> {
        let source = self.source(id);
        self.plant_seed(&source);
        self.read_body(&source, opts)
    }

    /// Commits the source's seed when it has one and no payload yet.
    /// A seed that cannot be planted is reported, and the read goes on.
    fn plant_seed(&self, source: &Source) {
        let Some(seed) = self.configured(&source.id).and_then(|sc| sc.seed.as_ref()) else {
            return;
        };
        if let Err(e) = crate::seed::plant(&self.cache, source, seed) {
            eprintln!("discocache: {}: cannot plant the seed: {e}", source.id);
        }
    }

    /// `refresh` of these sources, or of every configured one, all at
    /// once; `done` gets each source's result as it finishes.
    ///
    /// # Errors
    ///
    /// An unknown source, or a config that does not load.
    pub fn refresh(
        &self,
        ids: Option<Vec<SourceId>>,
        done: &mut dyn FnMut(&RefreshResult),
    ) -> anyhow::Result<RefreshBody> {
        let ids: Vec<SourceId> = match ids {
            None => self
                .config()?
                .sources
                .iter()
                .map(|s| s.id.clone())
                .collect(),
            Some(ids) => {
                for id in &ids {
                    self.require(id)?;
                }
                ids
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        for (index, id) in ids.iter().enumerate() {
            let (task, tx, id) = (self.refresh_task(id, true), tx.clone(), id.clone());
            self.runtime.spawn(async move {
                let result = task
                    .await
                    .unwrap_or_else(|e| Err(Error::Internal(format!("refresh of {id}: {e}"))));
                let _ = tx.send((index, RefreshResult::new(id, &result)));
            });
        }
        drop(tx);
        let mut results: Vec<Option<RefreshResult>> = vec![None; ids.len()];
        for (index, result) in rx {
            done(&result);
            results[index] = Some(result);
        }
        Ok(RefreshBody::new(results.into_iter().flatten().collect()))
    }

    /// `status`: every configured source and every source on disk.
    ///
    /// # Errors
    ///
    /// When the root cannot be listed.
    pub fn status(&self) -> anyhow::Result<StatusBody> {
        let mut ids: BTreeSet<SourceId> = self.cache.sources_on_disk()?.into_iter().collect();
        match &self.config {
            Ok(config) => ids.extend(config.sources.iter().map(|s| s.id.clone())),
            Err(e) => eprintln!("discocache: {e}"),
        }
        let sources = ids.iter().map(|id| {
            let source = self.source(id);
            let refresher = self.configured(id).map(|sc| sc.refresher.describe());
            let read = self
                .cache
                .read(&source)
                .and_then(|entry| Ok((entry, self.cache.refresh_state(id)?)));
            SourceStatus {
                disabled: self.configured(id).and_then(|sc| sc.disabled.clone()),
                ..SourceStatus::new(&source, refresher, read)
            }
        });
        Ok(StatusBody {
            daemon: None,
            offline: self.offline,
            format: self.cache.format(),
            shared: self.shared_status(),
            sources: sources.collect(),
        })
    }

    /// The shared tier's state after one epoch check, so that up or down
    /// is current; `None` without `[shared]`.
    fn shared_status(&self) -> Option<crate::protocol::SharedStatus> {
        #[cfg(feature = "shared")]
        {
            let tier = self.cache.shared_tier()?;
            if let Err(e) = self.runtime.block_on(tier.check_epoch()) {
                tracing::debug!("{e}");
            }
            Some(tier.status().into())
        }
        #[cfg(not(feature = "shared"))]
        None
    }

    /// `state` of one source.
    ///
    /// # Errors
    ///
    /// When its sidecar cannot be read.
    pub fn state(&self, id: &SourceId) -> anyhow::Result<StateBody> {
        Ok(StateBody::new(id.clone(), self.cache.refresh_state(id)?))
    }

    /// `invalidate` of a configured source.
    ///
    /// # Errors
    ///
    /// An unknown source, or an IO error marking it.
    pub fn invalidate(&self, id: &SourceId) -> anyhow::Result<InvalidateBody> {
        let sc = self.require(id)?;
        let done = self
            .cache
            .invalidate(&Source::new(id.clone(), sc.policy.clone()))?;
        Ok(InvalidateBody::new(id.clone(), done))
    }

    /// `prune`: only against a config that loads and names sources.
    ///
    /// # Errors
    ///
    /// Refusals, and IO errors removing files.
    pub fn prune(&self, dry_run: bool) -> anyhow::Result<PruneBody> {
        let config = self
            .config
            .as_ref()
            .map_err(|e| anyhow::anyhow!("refusing to prune: {e}"))?;
        let active = config.prune_set()?;
        let report = self.cache.prune(&active, dry_run)?;
        Ok(PruneBody::new(report, dry_run))
    }
}

/// Expired data is not served unless asked (or the envelope is asked for).
fn check_expired(
    id: &SourceId,
    entry: &Entry,
    policy: &Policy,
    opts: &GetOpts,
) -> anyhow::Result<()> {
    if entry.expired && !opts.allow_expired && !opts.meta {
        let age = output::duration(entry.age);
        let limit = policy.max_stale.map(output::duration).unwrap_or_default();
        return Err(Fail::exit(
            Exit::TooOld,
            format!(
                "{id}: data is expired ({age} old, max_stale {limit}); --allow-expired prints it"
            ),
        ));
    }
    Ok(())
}

fn exit_for(e: &Error) -> Exit {
    match e {
        Error::InvalidSource(_) => Exit::Usage,
        _ => Exit::Error,
    }
}
