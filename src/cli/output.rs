//! What the CLI prints: the `get --meta` envelope, the status table, state
//! and prune reports.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use crate::cache::{Entry, RefreshState, Source};
use crate::meta::Timestamp;
use crate::protocol::{self, GetBody};
use crate::prune::Pruned;
use crate::refresh::Refreshed;
use crate::source::SourceId;

/// A duration for people: `1h 3m`, `42s`, `850ms`.
pub fn duration(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs() / 60 * 60)
    } else if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

/// The `get --meta` envelope: the same body as the socket's `get`, with
/// the payload embedded verbatim.
///
/// # Errors
///
/// When the payload on disk is not JSON (it was damaged).
pub fn envelope(id: &SourceId, entry: Entry, state: &RefreshState) -> anyhow::Result<GetBody> {
    let meta = entry.meta.as_ref().map(serde_json::to_value).transpose()?;
    let body = GetBody {
        age_ms: u64::try_from(entry.age.as_millis()).unwrap_or(u64::MAX),
        fresh: entry.fresh,
        stale: entry.stale(),
        expired: entry.expired,
        revision: entry.revision().unwrap_or(0),
        fetched_at: protocol::timestamp(entry.fetched_at),
        refresh: Some(state.clone()),
        meta,
        data: Some(protocol::embed_payload(entry.data).map_err(|e| anyhow::anyhow!("{id}: {e}"))?),
    };
    Ok(body)
}

/// What a refresh did, for one line of output.
pub fn refreshed(r: Refreshed) -> String {
    match r {
        Refreshed::Committed { revision } => format!("refreshed, revision {revision}"),
        Refreshed::NotModified { revision } => format!("not modified, revision {revision}"),
        Refreshed::Joined { revision } => {
            format!("joined a refresh in progress, revision {revision}")
        }
    }
}

/// One row of `status`.
#[derive(Debug, Serialize)]
pub struct Row {
    source: String,
    configured: bool,
    state: &'static str,
    age_ms: Option<u64>,
    ttl_ms: u64,
    revision: u64,
    fresh: bool,
    expired: bool,
    in_flight: bool,
    consecutive_failures: u32,
    last_error: Option<String>,
    last_attempt_at: Option<Timestamp>,
    next_retry_at: Option<Timestamp>,
}

impl Row {
    /// A row from what is on disk.
    pub fn new(
        source: &Source,
        configured: bool,
        entry: Option<&Entry>,
        state: RefreshState,
    ) -> Self {
        let label = match entry {
            None => "no data",
            Some(e) if e.expired => "expired",
            Some(e) if e.fresh => "fresh",
            Some(_) => "stale",
        };
        Self {
            source: source.id.to_string(),
            configured,
            state: label,
            age_ms: entry.map(|e| u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX)),
            ttl_ms: u64::try_from(source.policy.ttl.as_millis()).unwrap_or(u64::MAX),
            revision: state.revision,
            fresh: entry.is_some_and(|e| e.fresh),
            expired: entry.is_some_and(|e| e.expired),
            in_flight: state.in_flight,
            consecutive_failures: state.consecutive_failures,
            last_error: state.last_error,
            last_attempt_at: state.last_attempt_at,
            next_retry_at: state.next_retry_at,
        }
    }
}

impl Row {
    /// Marks the row of a source disabled by its config, with the reason.
    #[must_use]
    pub fn disabled(mut self, why: Option<&str>) -> Self {
        if let Some(why) = why {
            self.state = "disabled";
            self.last_error = Some(format!("disabled: {why}"));
        }
        self
    }

    /// A row from one source of the daemon's `status` answer.
    pub fn from_daemon(v: &serde_json::Value) -> Self {
        let refresh: RefreshState =
            serde_json::from_value(v["refresh"].clone()).unwrap_or_default();
        let flag = |k: &str| v[k].as_bool().unwrap_or(false);
        let state = match (flag("has_data"), flag("expired"), flag("fresh")) {
            (false, _, _) => "no data",
            (true, true, _) => "expired",
            (true, false, true) => "fresh",
            (true, false, false) => "stale",
        };
        Self {
            source: v["source"].as_str().unwrap_or("?").to_owned(),
            configured: true,
            state,
            age_ms: v["age_ms"].as_u64(),
            ttl_ms: v["ttl_ms"].as_u64().unwrap_or(0),
            revision: v["revision"].as_u64().unwrap_or(0),
            fresh: flag("fresh"),
            expired: flag("expired"),
            in_flight: refresh.in_flight,
            consecutive_failures: refresh.consecutive_failures,
            last_error: refresh.last_error,
            last_attempt_at: refresh.last_attempt_at,
            next_retry_at: refresh.next_retry_at,
        }
        .disabled(v["disabled"].as_str())
    }
}

/// The `status` table.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    let width = rows
        .iter()
        .map(|r| r.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:width$}  {:8}  {:>8}  {:>8}  {:>4}  {:>5}  {:>9}  ERROR",
        "SOURCE", "STATE", "AGE", "TTL", "REV", "FAILS", "RETRY IN"
    )?;
    let now = Timestamp::now();
    for r in rows {
        let state = if r.in_flight {
            format!("{}*", r.state)
        } else {
            r.state.to_owned()
        };
        let age = r
            .age_ms
            .map_or("-".into(), |a| duration(Duration::from_millis(a)));
        let retry = r
            .next_retry_at
            .filter(|t| *t > now)
            .map_or("-".into(), |t| duration(now.until(t)));
        let error = r.last_error.as_deref().unwrap_or("");
        let unconfigured = if r.configured { "" } else { " (not in config)" };
        writeln!(
            out,
            "{:width$}  {state:8}  {age:>8}  {:>8}  {:>4}  {:>5}  {retry:>9}  {error}{unconfigured}",
            r.source,
            duration(Duration::from_millis(r.ttl_ms)),
            r.revision,
            r.consecutive_failures,
        )?;
    }
    if rows.iter().any(|r| r.in_flight) {
        writeln!(out, "* refresh in progress")?;
    }
    Ok(())
}

/// `state`: JSON for programs, lines for people.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn print_state(id: &SourceId, state: &RefreshState, json: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(state)?;
        value["source"] = id.to_string().into();
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        human_state(&mut out, id, state)?;
    }
    Ok(())
}

fn human_state(out: &mut impl Write, id: &SourceId, s: &RefreshState) -> io::Result<()> {
    let opt = |t: Option<Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
    writeln!(out, "source:               {id}")?;
    writeln!(out, "revision:             {}", s.revision)?;
    writeln!(out, "in flight:            {}", s.in_flight)?;
    if let Some(pid) = s.pid {
        writeln!(
            out,
            "refresh pid:          {pid}{}",
            if s.abandoned { " (abandoned)" } else { "" }
        )?;
        writeln!(out, "started at:           {}", opt(s.started_at))?;
        writeln!(out, "deadline:             {}", opt(s.deadline))?;
    }
    writeln!(out, "failed:               {}", s.failed)?;
    writeln!(out, "consecutive failures: {}", s.consecutive_failures)?;
    writeln!(out, "last attempt at:      {}", opt(s.last_attempt_at))?;
    writeln!(
        out,
        "last error:           {}",
        s.last_error.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "next retry at:        {}", opt(s.next_retry_at))
}

/// The `prune` report.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn pruned(out: &mut impl Write, report: &Pruned, dry_run: bool) -> io::Result<()> {
    for path in &report.recovered.removed {
        writeln!(out, "recovered: removed leftover {}", path.display())?;
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for id in &report.sources {
        writeln!(out, "{verb} {id}")?;
    }
    for path in &report.files {
        writeln!(out, "  {}", path.display())?;
    }
    for id in &report.in_flight {
        writeln!(out, "skipped {id}: a refresh is in progress")?;
    }
    if report.sources.is_empty() {
        writeln!(out, "nothing to prune")?;
    }
    Ok(())
}
