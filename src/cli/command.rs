//! The client commands, written once: each asks the daemon when one fit to
//! serve it answered, else the library directly, gets the same answer body
//! either way, and prints it.

use std::io::Write;
use std::time::Duration;

use super::args::{Command, GetOpts};
use super::direct::Direct;
use super::{Ctx, Exit, Fail, output, parse_source, remote, stream};
use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::protocol::{
    ErrorCode, GetBody, GetRequest, InvalidateBody, PruneBody, RefreshBody, RefreshMode,
    RefreshResult, RefreshTarget, StateBody, StatusBody, WireError,
};
use crate::source::SourceId;

/// How long an answer that runs no refresh may take before the daemon
/// counts as stalled and the command goes direct.
const QUICK: Duration = Duration::from_secs(30);

/// Where a command's answers come from: the daemon while it serves, then
/// the library on the root.
struct Backend<'a> {
    ctx: &'a Ctx,
    client: Option<Client>,
    direct: Option<Direct>,
}

impl<'a> Backend<'a> {
    /// The library on the root, opened the first time it is needed.
    fn direct(&mut self) -> anyhow::Result<&Direct> {
        if self.direct.is_none() {
            self.direct = Some(Direct::open(self.ctx)?);
        }
        Ok(self.direct.as_ref().expect("just opened"))
    }

    /// Asks the daemon, if there is one, waiting up to `patience` for the
    /// answer. `Ok(None)`: there is none, or it could not serve this (gone,
    /// reset, timed out, busy); that is noted once and the command goes
    /// direct.
    fn daemon<T>(
        &mut self,
        patience: Duration,
        ask: impl FnOnce(&mut Client) -> Result<T, crate::client::CallError>,
    ) -> Result<Option<T>, WireError> {
        let Some(client) = self.client.as_mut() else {
            return Ok(None);
        };
        let asked = client.set_timeout(Some(patience)).map_err(Into::into);
        match asked.and_then(|()| ask(client)) {
            Ok(answer) => Ok(Some(answer)),
            Err(e) => match remote::unreachable(self.ctx, &e) {
                Some(why) => {
                    remote::note(self.ctx, &why);
                    self.client = None;
                    Ok(None)
                }
                None => Err(match e {
                    crate::client::CallError::Daemon(e) => e,
                    crate::client::CallError::Io(e) => {
                        WireError::new(ErrorCode::Internal, e.to_string())
                    }
                }),
            },
        }
    }

    fn get(&mut self, id: &SourceId, opts: &GetOpts) -> anyhow::Result<GetBody> {
        let mode = RefreshMode::from(opts.refresh);
        let request = |refresh| GetRequest {
            source: id.clone(),
            refresh,
            max_age_ms: None,
            meta: opts.meta,
        };
        let patience = match mode {
            RefreshMode::Never => QUICK,
            _ => DEFAULT_TIMEOUT,
        };
        let asked = self.daemon(patience, |c| match c.get(request(mode)) {
            // As in direct mode: with nothing to serve, wait for a refresh
            // rather than fail (the daemon answers `if_stale` at once).
            Err(e) if mode == RefreshMode::IfStale && e.code() == Some(ErrorCode::NoData) => {
                c.get(request(RefreshMode::WaitIfStale))
            }
            other => other,
        });
        match asked {
            Ok(Some((body, _line))) => Ok(body),
            Ok(None) => self.direct()?.get(id, opts),
            // Nothing the daemon serves: what is on disk says why (never
            // refreshed, last error, expired), as in direct mode.
            Err(e) if e.code == ErrorCode::NoData => self.direct()?.read_only(id, opts),
            // Not in the daemon's config, but perhaps on disk: read it as
            // direct mode would (nothing could refresh it either way).
            Err(e) if e.code == ErrorCode::UnknownSource && mode != RefreshMode::Force => {
                self.direct()?.read_only(id, opts)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Refreshes the target, calling `done` with each source's result as
    /// it finishes. Through the daemon, one request per source in turn (its
    /// `refresh` op answers once at the end); directly, all at once.
    fn refresh(
        &mut self,
        target: RefreshTarget,
        done: &mut dyn FnMut(&RefreshResult),
    ) -> anyhow::Result<RefreshBody> {
        let Some(ids) = self.daemon_targets(&target)? else {
            let ids = match target {
                RefreshTarget::All => None,
                RefreshTarget::Sources(ids) => Some(ids),
            };
            return self.refresh_direct(ids, done);
        };
        let mut results = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let one = RefreshTarget::Sources(vec![id.clone()]);
            let Some(body) = self
                .daemon(DEFAULT_TIMEOUT, |c| c.refresh(one))
                .map_err(fail)?
            else {
                // The daemon went away: the rest directly.
                let rest = self.refresh_direct(Some(ids[i..].to_vec()), done)?;
                results.extend(rest.results);
                break;
            };
            for result in body.results {
                done(&result);
                results.push(result);
            }
        }
        Ok(RefreshBody::new(results))
    }

    /// The sources the daemon would refresh for `target` (every source in
    /// its config for `--all`), checked before any runs; `None` without a
    /// daemon.
    fn daemon_targets(&mut self, target: &RefreshTarget) -> anyhow::Result<Option<Vec<SourceId>>> {
        let Some(status) = self.daemon(QUICK, Client::status).map_err(fail)? else {
            return Ok(None);
        };
        let configured: Vec<SourceId> = status
            .sources
            .into_iter()
            .filter(|s| s.configured)
            .map(|s| s.source)
            .collect();
        match target {
            RefreshTarget::All => Ok(Some(configured)),
            RefreshTarget::Sources(ids) => {
                if let Some(id) = ids.iter().find(|id| !configured.contains(id)) {
                    let msg = format!("{id} is not a source of this daemon's config");
                    return Err(fail(WireError::new(ErrorCode::UnknownSource, msg)));
                }
                Ok(Some(ids.clone()))
            }
        }
    }

    fn refresh_direct(
        &mut self,
        ids: Option<Vec<SourceId>>,
        done: &mut dyn FnMut(&RefreshResult),
    ) -> anyhow::Result<RefreshBody> {
        self.direct()?.refresh(ids, done)
    }

    fn status(&mut self) -> anyhow::Result<StatusBody> {
        match self.daemon(QUICK, Client::status).map_err(fail)? {
            Some(body) => Ok(body),
            None => self.direct()?.status(),
        }
    }

    /// `status --json`: the daemon's answer printed as it arrives (see
    /// [`stream`]), else the library's.
    fn print_status_json(&mut self) -> anyhow::Result<Exit> {
        // Buffered: stdout flushes at every line, and the pretty answer of
        // 100,000 sources is millions of lines.
        let (printed, flushed) = {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let printed = self.daemon(QUICK, |c| stream::status_json(c, &mut out));
            (printed, out.flush())
        };
        match printed.map_err(fail)? {
            Some(()) => flushed.map(|()| Exit::Ok).map_err(Into::into),
            None => output::print_status(&self.direct()?.status()?, true),
        }
    }

    fn state(&mut self, id: &SourceId) -> anyhow::Result<StateBody> {
        match self.daemon(QUICK, |c| c.state(id.clone())) {
            Ok(Some(body)) => Ok(body),
            // A source only on disk has a state too, as in direct mode.
            Ok(None) => self.direct()?.state(id),
            Err(e) if e.code == ErrorCode::UnknownSource => self.direct()?.state(id),
            Err(e) => Err(fail(e)),
        }
    }

    fn invalidate(&mut self, id: &SourceId) -> anyhow::Result<InvalidateBody> {
        match self
            .daemon(QUICK, |c| c.invalidate(id.clone()))
            .map_err(fail)?
        {
            Some(body) => Ok(body),
            None => self.direct()?.invalidate(id),
        }
    }

    fn prune(&mut self, dry_run: bool) -> anyhow::Result<PruneBody> {
        match self
            .daemon(DEFAULT_TIMEOUT, |c| c.prune(dry_run))
            .map_err(fail)?
        {
            Some(body) => Ok(body),
            None => self.direct()?.prune(dry_run),
        }
    }

    /// The daemon, for the commands only it can answer.
    fn only_daemon(&mut self) -> anyhow::Result<&mut Client> {
        let socket = self.ctx.socket.display();
        self.client.as_mut().ok_or_else(|| {
            anyhow::anyhow!("this command needs a running daemon serving this root on {socket}")
        })
    }
}

/// A daemon's error answer, with the exit code its code maps to.
fn fail(e: WireError) -> anyhow::Error {
    let exit = match e.code {
        ErrorCode::InvalidSource | ErrorCode::BadRequest => Exit::Usage,
        ErrorCode::NoData => Exit::NoData,
        _ => Exit::Error,
    };
    Fail::exit(exit, e.message)
}

/// Runs a client command, through `client` when given.
///
/// # Errors
///
/// The command's error, carrying its exit code.
pub fn run(ctx: &Ctx, client: Option<Client>, command: Command) -> anyhow::Result<Exit> {
    let mut b = Backend {
        ctx,
        client,
        direct: None,
    };
    match command {
        Command::Get { source, opts } => {
            let id = parse_source(&source)?;
            let body = b.get(&id, &opts)?;
            output::check_age(&id, &body, opts.max_age)?;
            output::print_get(&body, opts.meta)?;
            Ok(Exit::Ok)
        }
        Command::Refresh { sources, all, json } => {
            let target = match all {
                true => RefreshTarget::All,
                false => RefreshTarget::Sources(parse_sources(&sources)?),
            };
            let report = output::RefreshReport { json };
            let body = b.refresh(target, &mut |r| report.line(r))?;
            report.finish(&body)
        }
        Command::Status { json: true } => b.print_status_json(),
        Command::Status { json: false } => output::print_status(&b.status()?, false),
        Command::State { source, json } => {
            let id = parse_source(&source)?;
            output::print_state(&id, &b.state(&id)?.refresh, json)
        }
        Command::Invalidate { source, json } => {
            let id = parse_source(&source)?;
            output::print_invalidate(&b.invalidate(&id)?, json)
        }
        Command::Prune { dry_run, json } => match json {
            true => output::print_json(&b.prune(dry_run)?),
            false => output::print_prune(&b.prune(dry_run)?),
        },
        Command::Watch { sources } => {
            b.only_daemon()?;
            watch(b.client.take().expect("checked"), &sources)
        }
        Command::Stats => {
            let stats = b.only_daemon()?.stats().map_err(call_fail)?;
            output::print_json(&stats)
        }
        Command::Metrics => {
            let metrics = b.only_daemon()?.metrics().map_err(call_fail)?;
            print!("{}", metrics.text);
            Ok(Exit::Ok)
        }
        Command::Serve | Command::Config { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled by the caller")
        }
    }
}

fn call_fail(e: crate::client::CallError) -> anyhow::Error {
    match e {
        crate::client::CallError::Daemon(e) => fail(e),
        crate::client::CallError::Io(e) => anyhow::Error::new(e).context("the daemon"),
    }
}

fn parse_sources(names: &[String]) -> anyhow::Result<Vec<SourceId>> {
    names.iter().map(|s| parse_source(s)).collect()
}

/// `watch`: one event per line until the daemon closes.
fn watch(client: Client, sources: &[String]) -> anyhow::Result<Exit> {
    let ids = parse_sources(sources)?;
    let filter = (!ids.is_empty()).then_some(ids);
    let (_, events) = client.watch(filter).map_err(call_fail)?;
    let mut out = std::io::stdout().lock();
    for event in events {
        let event = event.map_err(call_fail)?;
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
        out.flush()?;
    }
    Ok(Exit::Ok)
}
