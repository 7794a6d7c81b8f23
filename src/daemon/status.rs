//! `status` for any number of sources: one line per configured source,
//! serialised straight into the answer from what the view records and one
//! `stat` of each payload, with no payload read, and streamed to the
//! client in chunks, so that neither a JSON tree of every source nor the
//! whole answer is held at once.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::state::Daemon;
use super::view::{Look, Stamp};
use crate::cache::RefreshState;
use crate::config::{Config, SourceConfig};
use crate::protocol::{Response, timestamp};
use crate::source::SourceId;
use crate::stats::millis;

/// How many bytes of the answer are sent at a time.
const CHUNK: usize = 64 * 1024;

/// The `status` answer line, with `id` echoed, made on a blocking thread
/// and handed over in chunks as it is written: with 100,000 sources the
/// whole line is tens of MiB, and it is never held at once.
pub(crate) fn chunks(d: &Arc<Daemon>, id: Option<Value>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(2);
    let d = Arc::clone(d);
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            buf: Vec::with_capacity(CHUNK),
            tx,
        };
        if let Err(e) = write(&d, id, &mut out) {
            tracing::debug!("the status answer was not sent to its end: {e}");
        }
    });
    rx
}

fn write(d: &Daemon, id: Option<Value>, out: &mut Chunks) -> io::Result<()> {
    let config = d.config();
    let body = Body {
        daemon: daemon(d, &config),
        sources: Lines { d, config: &config },
    };
    serde_json::to_writer(&mut *out, &Response::success(id, body))?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A writer that hands its bytes over in chunks of about [`CHUNK`].
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.buf.is_empty() {
            true => Ok(()),
            false => self.hand_over(),
        }
    }
}

impl Chunks {
    fn hand_over(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client is gone"))
    }
}

#[derive(Serialize)]
struct Body<'a> {
    daemon: Value,
    sources: Lines<'a>,
}

/// The daemon's own part of `status`.
fn daemon(d: &Daemon, config: &Config) -> Value {
    let snap = d.stats.summary();
    json!({
        "status": snap.status,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "root": d.cache.layout().root(),
        "socket": d.socket,
        "config": config.origin,
        "started_at": timestamp(d.started_at),
        "last_error": snap.last_error,
        "keys_total": snap.keys_total,
        "held_bytes": d.view.held_bytes(),
    })
}

/// Every configured source's line, each made as it is written.
struct Lines<'a> {
    d: &'a Daemon,
    config: &'a Config,
}

impl Serialize for Lines<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.config.sources.len()))?;
        for sc in &self.config.sources {
            seq.serialize_element(&source_line(self.d, sc))?;
        }
        seq.end()
    }
}

/// One source in `status`.
#[derive(Serialize)]
struct SourceLine<'a> {
    source: &'a SourceId,
    refresher: String,
    ttl_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_data: Option<bool>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    freshness: Option<Freshness>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<RefreshState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A payload's age and freshness, from its mtime.
#[derive(Serialize)]
struct Freshness {
    age_ms: u64,
    fresh: bool,
    stale: bool,
    expired: bool,
    fetched_at: String,
}

/// Blocking: one `stat` of the payload, and a look at the source's files
/// only when the view has none yet.
fn source_line<'a>(d: &Daemon, sc: &'a SourceConfig) -> SourceLine<'a> {
    let mut line = SourceLine {
        source: &sc.id,
        refresher: sc.refresher.describe(),
        ttl_ms: millis(sc.policy.ttl),
        has_data: None,
        freshness: None,
        revision: None,
        refresh: None,
        error: None,
    };
    let layout = d.cache.layout();
    let record = match d.view.record_of(&sc.id) {
        Some(record) => Ok(record),
        None => Look::take(layout, &sc.id).map(|look| (look.attempts, look.marker)),
    };
    let looked = record.and_then(|r| Ok((r, Stamp::probe_modified(&layout.payload(&sc.id))?)));
    match looked {
        Ok(((attempts, marker), modified)) => {
            line.has_data = Some(modified.is_some());
            line.freshness = modified.map(|m| freshness(sc, m));
            let state = d.cache.state_of(&sc.id, &attempts, marker.as_ref());
            line.revision = Some(state.revision);
            line.refresh = Some(state);
        }
        Err(e) => line.error = Some(e.to_string()),
    }
    line
}

fn freshness(sc: &SourceConfig, modified: SystemTime) -> Freshness {
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    let fresh = age < sc.policy.ttl;
    Freshness {
        age_ms: millis(age),
        fresh,
        stale: !fresh,
        expired: sc.policy.max_stale.is_some_and(|m| age > m),
        fetched_at: timestamp(modified),
    }
}
