//! What the CLI prints, from the answer bodies both modes build: the same
//! bytes (`get`) or the same JSON shape (`--json`) whichever answered.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::{Exit, Fail};
use crate::cache::{Entry, RefreshState};
use crate::meta::Timestamp;
use crate::protocol::{
    self, GetBody, InvalidateBody, PruneBody, RefreshBody, RefreshResult, Response, Skipped,
    SourceStatus, StatusBody,
};
use crate::refresh::Refreshed;
use crate::source::SourceId;
use crate::stats::millis;

mod tier;

/// A duration for people, exact to the second: `1h3m`, `1m59s`, `42s`,
/// `850ms` (never rounded down past a unit: 1m59s is not "1m").
pub fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", millis(d));
    }
    let mut left = d.as_secs();
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if left >= size {
            text.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    text
}

/// The `get` answer built from what is on disk: the same body as the
/// socket's `get`, with the payload embedded verbatim and the sidecar when
/// `with_meta`.
///
/// # Errors
///
/// When the payload on disk is not JSON (it was damaged).
pub fn envelope(
    id: &SourceId,
    entry: Entry,
    state: RefreshState,
    with_meta: bool,
) -> anyhow::Result<GetBody> {
    let meta = match (with_meta, &entry.meta) {
        (true, Some(meta)) => Some(serde_json::to_value(meta)?),
        _ => None,
    };
    Ok(GetBody {
        age_ms: millis(entry.age),
        fresh: entry.fresh,
        stale: entry.stale(),
        expired: entry.expired,
        future: entry.future,
        stale_reason: entry.stale_reason.map(str::to_owned),
        revision: state.revision,
        fetched_at: protocol::timestamp(entry.fetched_at),
        refresh: Some(state),
        meta,
        data: Some(protocol::embed_payload(entry.data).map_err(|e| anyhow::anyhow!("{id}: {e}"))?),
    })
}

/// Exit 4 when the data is older than `--max-age`.
///
/// # Errors
///
/// The [`Fail`] with exit 4.
pub fn check_age(id: &SourceId, body: &GetBody, max_age: Option<Duration>) -> anyhow::Result<()> {
    let age = Duration::from_millis(body.age_ms);
    let Some(max) = max_age.filter(|max| body.future || age > *max) else {
        return Ok(());
    };
    let how_old = match body.future {
        true => format!("dated {} in the future", body.fetched_at),
        false => format!("{} old", duration(age)),
    };
    Err(Fail::exit(
        Exit::TooOld,
        format!(
            "{id}: data is {how_old}, older than --max-age {}",
            duration(max)
        ),
    ))
}

/// `get`: the payload on one line (line breaks as spaces, as the socket
/// carries it, and one newline at the end), or with `--meta` the whole
/// answer as one JSON line.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn print_get(body: &GetBody, meta: bool) -> anyhow::Result<()> {
    let mut text = if meta {
        protocol::to_line(&Response::success(None, body))?.into_bytes()
    } else {
        let data = body.data.as_deref().map_or("", |d| d.get());
        payload_line(data.as_bytes())
    };
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let mut out = io::stdout().lock();
    out.write_all(&text)?;
    out.flush()?;
    Ok(())
}

/// A payload as one line: surrounding whitespace dropped, line breaks
/// (insignificant whitespace in JSON) as spaces, a newline at the end.
pub fn payload_line(data: &[u8]) -> Vec<u8> {
    let start = data.iter().position(|b| !b.is_ascii_whitespace());
    let end = data.iter().rposition(|b| !b.is_ascii_whitespace());
    let trimmed = match (start, end) {
        (Some(s), Some(e)) => &data[s..=e],
        _ => &[],
    };
    let mut line: Vec<u8> = trimmed
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect();
    line.push(b'\n');
    line
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

/// `refresh` output, written as each source finishes: one line per
/// source (failures on stderr), then a summary when there were several;
/// with `--json`, the whole answer at the end instead.
#[derive(Debug, Clone, Copy)]
pub struct RefreshReport {
    /// Print the answer as JSON at the end, no lines.
    pub json: bool,
}

impl RefreshReport {
    /// One source's line, as soon as it is known.
    pub fn line(&self, result: &RefreshResult) {
        if self.json {
            return;
        }
        match result.refreshed() {
            Ok(done) => println!("{}: {}", result.source, refreshed(done)),
            Err(e) => eprintln!("discocache: {}", e.message),
        }
    }

    /// The end: the summary (or the JSON answer); exit 1 when any failed.
    ///
    /// # Errors
    ///
    /// When stdout cannot be written.
    pub fn finish(&self, body: &RefreshBody) -> anyhow::Result<Exit> {
        if self.json {
            print_json(body)?;
        } else if body.results.len() > 1 {
            println!("{}", refresh_summary(body));
        }
        Ok(match body.failed {
            0 => Exit::Ok,
            _ => Exit::Error,
        })
    }
}

/// `3 refreshed, 1 failed`.
pub fn refresh_summary(body: &RefreshBody) -> String {
    let ok = body.results.len() - body.failed;
    match body.failed {
        0 => format!("{ok} refreshed"),
        failed => format!("{ok} refreshed, {failed} failed"),
    }
}

/// `invalidate`: what happened (with `--json`, the answer); exit 3 when
/// there was no data, 1 when nothing else was invalidated.
///
/// # Errors
///
/// The [`Fail`] when the source was left as it was.
pub fn print_invalidate(body: &InvalidateBody, json: bool) -> anyhow::Result<Exit> {
    if json {
        print_json(body)?;
    }
    let id = &body.source;
    let (exit, why) = match body.skipped {
        None => {
            if !json {
                println!("{id}: invalidated (still served until refreshed)");
            }
            return Ok(Exit::Ok);
        }
        Some(Skipped::NoData) => (Exit::NoData, "it has no data"),
        Some(Skipped::AlreadyStale) => (Exit::Error, "it is stale already"),
        Some(Skipped::Refreshing) => (Exit::Error, "a refresh is running"),
    };
    Err(Fail::exit(exit, format!("{id}: not invalidated: {why}")))
}

/// Pretty JSON on stdout.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<Exit> {
    // Buffered: stdout flushes at every line.
    let mut out = io::BufWriter::new(io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(Exit::Ok)
}

/// `status`: `--json` for programs, a table for people.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn print_status(body: &StatusBody, json: bool) -> anyhow::Result<Exit> {
    if json {
        return print_json(body);
    }
    let mut out = io::stdout().lock();
    if let Some(d) = &body.daemon {
        let status = serde_json::to_value(d.status)?;
        let status = status.as_str().unwrap_or("?");
        writeln!(out, "daemon: {status} (pid {}, config {})", d.pid, d.config)?;
        if let Some(e) = &d.last_error {
            writeln!(out, "daemon error: {e}")?;
        }
    }
    if let Some(shared) = &body.shared {
        writeln!(out, "{}", tier::line(shared))?;
    }
    writeln!(out, "on-disk format: {}", body.format)?;
    if body.offline {
        writeln!(
            out,
            "offline: nothing is refreshed; serving what is on disk"
        )?;
    }
    table(&mut out, &body.sources)?;
    Ok(Exit::Ok)
}

/// A status line's state word.
fn label(s: &SourceStatus) -> &'static str {
    match (s.has_data, s.expired, s.fresh) {
        (false, _, _) => "no data",
        (true, true, _) => "expired",
        (true, false, true) => "fresh",
        (true, false, false) => "stale",
    }
}

/// The `status` table.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn table(out: &mut impl Write, rows: &[SourceStatus]) -> io::Result<()> {
    let width = rows.iter().map(|r| r.source.to_string().len()).max();
    let width = width.unwrap_or(6).max(6);
    writeln!(
        out,
        "{:width$}  {:8}  {:>8}  {:>8}  {:>4}  {:>5}  {:>9}  ERROR",
        "SOURCE", "STATE", "AGE", "TTL", "REV", "FAILS", "RETRY IN"
    )?;
    let now = Timestamp::now();
    for r in rows {
        let mut state = label(r).to_owned();
        if r.refresh.in_flight {
            state.push('*');
        }
        let age = r
            .age_ms
            .map_or("-".into(), |a| duration(Duration::from_millis(a)));
        let retry = r.refresh.next_retry_at.filter(|t| *t > now);
        let retry = retry.map_or("-".into(), |t| duration(now.until(t)));
        let reason = r.stale_reason.as_ref().filter(|_| r.has_data && !r.fresh);
        let reason = reason.map(|why| format!("(stale: {why})"));
        let error = r.error.as_deref().or(r.refresh.last_error.as_deref());
        let error = error.or(reason.as_deref());
        let unconfigured = if r.configured { "" } else { " (not in config)" };
        writeln!(
            out,
            "{:width$}  {state:8}  {age:>8}  {:>8}  {:>4}  {:>5}  {retry:>9}  {}{unconfigured}",
            r.source.to_string(),
            duration(Duration::from_millis(r.ttl_ms)),
            r.revision,
            r.refresh.consecutive_failures,
            error.unwrap_or(""),
        )?;
    }
    if rows.iter().any(|r| r.refresh.in_flight) {
        writeln!(out, "* refresh in progress")?;
    }
    Ok(())
}

/// `state`: JSON for programs, lines for people.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn print_state(id: &SourceId, state: &RefreshState, json: bool) -> anyhow::Result<Exit> {
    let mut out = io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(state)?;
        value["source"] = id.to_string().into();
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        human_state(&mut out, id, state)?;
    }
    Ok(Exit::Ok)
}

fn human_state(out: &mut impl Write, id: &SourceId, s: &RefreshState) -> io::Result<()> {
    let opt = |t: Option<Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
    writeln!(out, "source:               {id}")?;
    writeln!(out, "revision:             {}", s.revision)?;
    writeln!(out, "in flight:            {}", s.in_flight)?;
    if let Some(pid) = s.pid {
        let abandoned = if s.abandoned { " (abandoned)" } else { "" };
        writeln!(out, "refresh pid:          {pid}{abandoned}")?;
        writeln!(out, "started at:           {}", opt(s.started_at))?;
        writeln!(out, "deadline:             {}", opt(s.deadline))?;
    }
    writeln!(out, "failed:               {}", s.failed)?;
    writeln!(out, "consecutive failures: {}", s.consecutive_failures)?;
    writeln!(out, "last attempt at:      {}", opt(s.last_attempt_at))?;
    let error = s.last_error.as_deref().unwrap_or("-");
    writeln!(out, "last error:           {error}")?;
    writeln!(out, "next retry at:        {}", opt(s.next_retry_at))
}

/// The `prune` report.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn print_prune(report: &PruneBody) -> anyhow::Result<Exit> {
    let mut out = io::stdout().lock();
    for path in &report.recovered {
        writeln!(out, "recovered: removed leftover {}", path.display())?;
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
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
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_line_is_the_socket_form_of_a_payload() {
        assert_eq!(payload_line(b"{\"n\":1}"), b"{\"n\":1}\n");
        assert_eq!(
            payload_line(b"\n{\r\n  \"a\": \"x\\ny\"\n}\n"),
            b"{    \"a\": \"x\\ny\" }\n"
        );
    }

    #[test]
    fn retry_in_of_1m59s_is_not_rounded_down_to_1m() {
        assert_eq!(duration(Duration::from_secs(119)), "1m59s");
        assert_eq!(duration(Duration::from_millis(119_900)), "1m59s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(duration(Duration::from_secs(2 * 86_400 + 60)), "2d1m");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn refresh_summary_counts_successes_and_failures() {
        let id = SourceId::parse("t/a").unwrap();
        let ok = RefreshResult::new(id.clone(), &Ok(Refreshed::Committed { revision: 1 }));
        let bad = RefreshResult::new(id, &Err(crate::Error::Internal("boom".into())));
        let body = RefreshBody::new(vec![ok.clone(), ok.clone(), ok, bad]);
        assert_eq!(refresh_summary(&body), "3 refreshed, 1 failed");
    }
}
