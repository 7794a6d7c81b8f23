//! Client commands run on the library directly (`--no-daemon`, or when no
//! daemon answers). Refreshes run in this process and are still single
//! flight host-wide.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::args::{Command, GetOpts, RefreshArg};
use super::output::{self, Row};
use super::{Ctx, Exit, Fail, parse_source};
use crate::cache::{Cache, Ensured, Entry, Source};
use crate::config::{Config, ConfigError, SourceConfig};
use crate::refresher::Refresher;
use crate::source::{Policy, SourceId};
use crate::{Error, Refreshed};

/// The cache and the config a direct command works with.
struct Direct {
    cache: Cache,
    config: Result<Config, ConfigError>,
}

impl Direct {
    fn open(ctx: &Ctx) -> anyhow::Result<Self> {
        let cache = Cache::open(&ctx.root)
            .with_context(|| format!("cannot open cache root {}", ctx.root.display()))?;
        Ok(Self {
            cache,
            config: ctx.load_config(),
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

    /// The configured source and its refresher.
    fn refreshable(&self, id: &SourceId) -> crate::Result<(Source, Refresher)> {
        let sc = self
            .configured(id)
            .ok_or_else(|| Error::Internal(format!("{id} is not configured")))?;
        Ok((
            Source::new(id.clone(), sc.policy.clone()),
            sc.refresher.clone(),
        ))
    }

    /// A forced refresh. The future owns what it needs, so it can be
    /// spawned.
    fn refresh(
        &self,
        id: &SourceId,
    ) -> impl Future<Output = crate::Result<Refreshed>> + Send + 'static {
        let cache = self.cache.clone();
        let found = self.refreshable(id);
        async move {
            let (source, refresher) = found?;
            cache
                .refresh(
                    &source,
                    move |ctx| async move { refresher.fetch(ctx).await },
                )
                .await
        }
    }

    /// A refresh if stale and not backing off.
    async fn ensure(&self, id: &SourceId) -> crate::Result<Ensured> {
        let (source, refresher) = self.refreshable(id)?;
        self.cache
            .maybe_refresh_sync(
                &source,
                move |ctx| async move { refresher.fetch(ctx).await },
            )
            .await
    }
}

/// Runs a client command directly on the root.
///
/// # Errors
///
/// Whatever the command fails with; the error carries its exit code.
pub async fn run(ctx: &Ctx, command: Command) -> anyhow::Result<Exit> {
    let direct = Direct::open(ctx)?;
    match command {
        Command::Get { source, opts } => {
            let id = parse_source(&source)?;
            get(&direct, &id, opts).await
        }
        Command::Refresh { sources, all } => refresh(&direct, &sources, all).await,
        Command::Status { json } => status(&direct, json),
        Command::State { source, json } => state(&direct, &parse_source(&source)?, json),
        Command::Prune { dry_run } => prune(&direct, dry_run),
        Command::Watch { .. } | Command::Invalidate { .. } | Command::Stats | Command::Metrics => {
            Err(anyhow::anyhow!(
                "this command needs a running daemon (none answers on {})",
                ctx.socket.display()
            ))
        }
        Command::Serve | Command::Config { .. } => unreachable!("handled by the caller"),
    }
}

async fn get(direct: &Direct, id: &SourceId, opts: GetOpts) -> anyhow::Result<Exit> {
    let source = direct.source(id);
    let entry = direct.cache.read(&source)?;
    let due = match opts.refresh {
        RefreshArg::Never => false,
        RefreshArg::IfStale => entry.is_none(),
        RefreshArg::WaitIfStale => entry.as_ref().is_none_or(Entry::stale),
        RefreshArg::Force => true,
    };
    if due && direct.configured(id).is_some() {
        let refreshed = match opts.refresh {
            RefreshArg::Force => direct.refresh(id).await.map(drop),
            _ => direct.ensure(id).await.map(drop),
        };
        if let Err(e) = refreshed {
            if entry.is_none() || opts.refresh == RefreshArg::Force {
                return Err(Fail::exit(exit_for(&e), e.to_string()));
            }
            eprintln!("discocache: {e}; serving the data on disk");
        }
    } else if due && opts.refresh == RefreshArg::Force {
        direct.require(id)?;
    }
    let Some(entry) = direct.cache.read_with_meta(&source)? else {
        let why = direct
            .cache
            .meta(id)?
            .and_then(|m| m.last_error)
            .map_or_else(
                || "never refreshed".to_owned(),
                |e| format!("last error: {e}"),
            );
        return Err(Fail::exit(Exit::NoData, format!("{id}: no data ({why})")));
    };
    check_age(id, &entry, &source.policy, &opts)?;
    let mut out = std::io::stdout().lock();
    if opts.meta {
        let state = direct.cache.refresh_state(id)?;
        serde_json::to_writer(&mut out, &output::envelope(id, entry, &state)?)?;
        writeln!(out)?;
    } else {
        out.write_all(&entry.data)?;
    }
    out.flush()?;
    Ok(Exit::Ok)
}

fn check_age(id: &SourceId, entry: &Entry, policy: &Policy, opts: &GetOpts) -> anyhow::Result<()> {
    let age = output::duration(entry.age);
    if let Some(max) = opts.max_age.filter(|m| entry.older_than(*m)) {
        let max = output::duration(max);
        return Err(Fail::exit(
            Exit::TooOld,
            format!("{id}: data is {age} old, older than --max-age {max}"),
        ));
    }
    if entry.expired && !opts.allow_expired && !opts.meta {
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

async fn refresh(direct: &Direct, sources: &[String], all: bool) -> anyhow::Result<Exit> {
    let ids: Vec<SourceId> = if all {
        direct
            .config()?
            .sources
            .iter()
            .map(|s| s.id.clone())
            .collect()
    } else {
        let ids = sources
            .iter()
            .map(|s| parse_source(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for id in &ids {
            direct.require(id)?;
        }
        ids
    };
    // Concurrently: each refresh mostly waits on its own refresher.
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(direct.refresh(id)))
        .collect();
    let mut exit = Exit::Ok;
    for (id, task) in ids.iter().zip(tasks) {
        let outcome = task
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("refresh of {id}: {e}"))));
        match outcome {
            Ok(r) => println!("{id}: {}", output::refreshed(r)),
            Err(e) => {
                eprintln!("discocache: {e}");
                exit = Exit::Error;
            }
        }
    }
    Ok(exit)
}

fn status(direct: &Direct, json: bool) -> anyhow::Result<Exit> {
    let mut ids: BTreeSet<SourceId> = direct.cache.sources_on_disk()?.into_iter().collect();
    if let Ok(config) = &direct.config {
        ids.extend(config.sources.iter().map(|s| s.id.clone()));
    } else if let Err(e) = &direct.config {
        eprintln!("discocache: {e}");
    }
    let rows = ids
        .iter()
        .map(|id| {
            let source = direct.source(id);
            let entry = direct.cache.read(&source)?;
            let state = direct.cache.refresh_state(id)?;
            let configured = direct.configured(id);
            let disabled = configured.and_then(|sc| sc.disabled.as_deref());
            Ok(Row::new(&source, configured.is_some(), entry.as_ref(), state).disabled(disabled))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        output::table(&mut out, &rows)?;
    }
    Ok(Exit::Ok)
}

fn state(direct: &Direct, id: &SourceId, json: bool) -> anyhow::Result<Exit> {
    output::print_state(id, &direct.cache.refresh_state(id)?, json)?;
    Ok(Exit::Ok)
}

fn prune(direct: &Direct, dry_run: bool) -> anyhow::Result<Exit> {
    let config = direct
        .config
        .as_ref()
        .map_err(|e| anyhow::anyhow!("refusing to prune: {e}"))?;
    let active = config.prune_set()?;
    let report = direct.cache.prune(&active, dry_run)?;
    output::pruned(&mut std::io::stdout().lock(), &report, dry_run)?;
    Ok(Exit::Ok)
}

/// Prints a source's payload from disk, whatever its age (`get
/// --allow-expired` when the daemon declines to serve expired data).
///
/// # Errors
///
/// Exit 3 when there is no payload.
pub fn print_expired(ctx: &Ctx, id: &SourceId) -> anyhow::Result<Exit> {
    super::init_logging(false);
    let direct = Direct::open(ctx)?;
    let entry = direct.cache.read(&direct.source(id))?;
    let entry = entry.ok_or_else(|| Fail::exit(Exit::NoData, format!("{id}: no data")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&entry.data)?;
    out.flush()?;
    Ok(Exit::Ok)
}

/// `config check [FILE]`.
///
/// # Errors
///
/// Exit 1 with every problem, one per line, when the config does not load.
pub fn config_check(ctx: &Ctx, file: Option<PathBuf>) -> anyhow::Result<Exit> {
    let result = match file.or_else(|| ctx.config_path()) {
        Some(path) => Config::load(&path).and_then(Config::strict),
        None => Ok(Config::embedded()),
    };
    match result {
        Ok(config) => {
            let n = config.sources.len();
            println!(
                "{}: ok, {n} source{}",
                config.origin,
                if n == 1 { "" } else { "s" }
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprint!("{}", e.render());
            let n = e.problems.len();
            Err(Fail::exit(
                Exit::Error,
                format!("{}: {n} problem{}", e.origin, if n == 1 { "" } else { "s" }),
            ))
        }
    }
}
