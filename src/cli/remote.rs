//! Client commands through the daemon's socket.

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::args::{Command, GetOpts, RefreshArg};
use super::output::{self, Row};
use super::{Ctx, Exit, Fail, parse_source};
use crate::cache::RefreshState;
use crate::client::Client;
use crate::refresh::Refreshed;
use crate::source::SourceId;

/// Connects to the daemon unless told not to; when none answers, says so
/// once on stderr and returns `None` (the caller goes direct).
pub fn connect(ctx: &Ctx, no_daemon: bool) -> Option<Client> {
    if no_daemon {
        return None;
    }
    match Client::connect(&ctx.socket) {
        Ok(client) => Some(client),
        Err(_) => {
            eprintln!(
                "discocache: note: no daemon answers on {}; using {} directly",
                ctx.socket.display(),
                ctx.root.display()
            );
            None
        }
    }
}

/// Runs a client command through the daemon.
///
/// # Errors
///
/// The daemon's error, with the exit code its error code maps to.
pub fn run(ctx: &Ctx, mut client: Client, command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Get { source, opts } => {
            let id = parse_source(&source)?;
            get(ctx, &mut client, &id, &opts)
        }
        Command::Refresh { sources, all } => refresh(&mut client, &sources, all),
        Command::Status { json } => status(&mut client, json),
        Command::State { source, json } => state(&mut client, &parse_source(&source)?, json),
        Command::Watch { sources } => watch(client, &sources),
        Command::Invalidate { source } => {
            let id = parse_source(&source)?;
            ask(&mut client, json!({"op": "invalidate", "source": id}))?;
            println!("{id}: invalidated (still served until refreshed)");
            Ok(Exit::Ok)
        }
        Command::Prune { dry_run } => {
            let reply = ask(&mut client, json!({"op": "prune", "dry_run": dry_run}))?;
            print_json(&reply)
        }
        Command::Stats => print_json(&ask(&mut client, json!({"op": "stats"}))?),
        Command::Metrics => {
            let reply = ask(&mut client, json!({"op": "metrics"}))?;
            print!("{}", reply["text"].as_str().unwrap_or_default());
            Ok(Exit::Ok)
        }
        Command::Serve | Command::Config { .. } => unreachable!("handled by the caller"),
    }
}

/// Sends a request; a failure response becomes an error with its exit code.
fn ask(client: &mut Client, request: Value) -> anyhow::Result<Value> {
    let reply = client.request(&request)?;
    if reply["ok"] == true {
        return Ok(reply);
    }
    Err(failure(&reply["error"]))
}

fn failure(error: &Value) -> anyhow::Error {
    let code = error["code"].as_str().unwrap_or("internal");
    let message = error["message"]
        .as_str()
        .unwrap_or("the daemon gave no reason");
    let exit = match code {
        "invalid_source" | "bad_request" => Exit::Usage,
        "no_data" => Exit::NoData,
        _ => Exit::Error,
    };
    Fail::exit(exit, message.to_owned())
}

fn print_json(reply: &Value) -> anyhow::Result<Exit> {
    let mut body = reply.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("ok");
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &body)?;
    writeln!(out)?;
    Ok(Exit::Ok)
}

/// A `get` request, serialised without building a JSON tree.
#[derive(Serialize)]
struct GetRequest<'a> {
    op: &'static str,
    source: &'a SourceId,
    refresh: &'a str,
    meta: bool,
}

/// The parts of a `get` answer the CLI needs, with the payload kept verbatim.
#[derive(Deserialize)]
struct GetReply {
    ok: bool,
    #[serde(default)]
    error: Value,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    age_ms: u64,
}

fn get(ctx: &Ctx, client: &mut Client, id: &SourceId, opts: &GetOpts) -> anyhow::Result<Exit> {
    let mode = match opts.refresh {
        RefreshArg::Never => "never",
        RefreshArg::IfStale => "if_stale",
        RefreshArg::WaitIfStale => "wait_if_stale",
        RefreshArg::Force => "force",
    };
    let mut ask_get = |refresh: &str| -> anyhow::Result<(String, GetReply)> {
        let request = GetRequest {
            op: "get",
            source: id,
            refresh,
            meta: opts.meta,
        };
        let line = client.request_raw(&request)?;
        let reply = serde_json::from_str(&line)?;
        Ok((line, reply))
    };
    let (mut line, mut reply) = ask_get(mode)?;
    if opts.refresh == RefreshArg::IfStale && !reply.ok && reply.error["code"] == "no_data" {
        // As in direct mode: with nothing to serve, wait for a refresh
        // rather than fail (the daemon answers `if_stale` at once).
        (line, reply) = ask_get("wait_if_stale")?;
    }
    if !reply.ok {
        if opts.allow_expired && reply.error["code"] == "no_data" {
            // Expired data is not served by the daemon; read it from disk.
            return super::direct::print_expired(ctx, id);
        }
        return Err(failure(&reply.error));
    }
    let age = Duration::from_millis(reply.age_ms);
    if let Some(max) = opts.max_age.filter(|m| age > *m) {
        return Err(Fail::exit(
            Exit::TooOld,
            format!(
                "{id}: data is {} old, older than --max-age {}",
                output::duration(age),
                output::duration(max)
            ),
        ));
    }
    let printed = if opts.meta {
        Some(line.trim_end())
    } else {
        reply.data.as_deref().map(RawValue::get)
    };
    if let Some(text) = printed {
        // One write: the text and its newline together.
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        let mut out = std::io::stdout().lock();
        out.write_all(&buf)?;
        out.flush()?;
    }
    Ok(Exit::Ok)
}

fn refresh(client: &mut Client, sources: &[String], all: bool) -> anyhow::Result<Exit> {
    let request = if all {
        json!({"op": "refresh", "all": true})
    } else {
        let ids = sources
            .iter()
            .map(|s| parse_source(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        json!({"op": "refresh", "sources": ids})
    };
    let reply = ask(client, request)?;
    let mut exit = Exit::Ok;
    for r in reply["results"].as_array().into_iter().flatten() {
        let source = r["source"].as_str().unwrap_or("?");
        if r["ok"] == true {
            let revision = r["revision"].as_u64().unwrap_or(0);
            let done = match r["outcome"].as_str() {
                Some("not_modified") => Refreshed::NotModified { revision },
                Some("joined") => Refreshed::Joined { revision },
                _ => Refreshed::Committed { revision },
            };
            println!("{source}: {}", output::refreshed(done));
        } else {
            let why = r["error"]["message"].as_str().unwrap_or("failed");
            eprintln!("discocache: {why}");
            exit = Exit::Error;
        }
    }
    Ok(exit)
}

fn status(client: &mut Client, json: bool) -> anyhow::Result<Exit> {
    let reply = ask(client, json!({"op": "status"}))?;
    if json {
        return print_json(&reply);
    }
    let rows: Vec<Row> = reply["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Row::from_daemon)
        .collect();
    let daemon = &reply["daemon"];
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "daemon: {} (pid {}, config {})",
        daemon["status"].as_str().unwrap_or("?"),
        daemon["pid"],
        daemon["config"].as_str().unwrap_or("?")
    )?;
    if let Some(e) = daemon["last_error"].as_str() {
        writeln!(out, "daemon error: {e}")?;
    }
    output::table(&mut out, &rows)?;
    Ok(Exit::Ok)
}

fn state(client: &mut Client, id: &SourceId, json: bool) -> anyhow::Result<Exit> {
    let reply = ask(client, json!({"op": "state", "source": id}))?;
    let mut state: RefreshState = serde_json::from_value(reply["refresh"].clone())?;
    state.revision = reply["revision"].as_u64().unwrap_or(0);
    output::print_state(id, &state, json)?;
    Ok(Exit::Ok)
}

fn watch(client: Client, sources: &[String]) -> anyhow::Result<Exit> {
    for s in sources {
        parse_source(s)?;
    }
    let (first, mut events) = client.watch(sources)?;
    if first["ok"] != true {
        return Err(failure(&first["error"]));
    }
    let mut out = std::io::stdout().lock();
    while let Some(event) = events.next_event()? {
        // The daemon's last line to a watch that fell too far behind.
        if event["ok"] == false {
            return Err(failure(&event["error"]));
        }
        writeln!(out, "{event}")?;
        out.flush()?;
    }
    Ok(Exit::Ok)
}
