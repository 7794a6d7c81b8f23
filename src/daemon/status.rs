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
use serde_json::Value;
use tokio::sync::mpsc;

use super::state::Daemon;
use super::view::{Look, Stamp};
use crate::config::{Config, SourceConfig};
use crate::freshness;
use crate::protocol::{DaemonStatus, Response, SharedStatus, SourceStatus, timestamp};

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
        offline: config.daemon.offline,
        format: d.cache.format(),
        shared: super::tier::status(d),
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

/// The `status` body, written as it is serialised: the same shape as
/// [`crate::protocol::StatusBody`], whose `sources` are made one at a time.
#[derive(Serialize)]
struct Body<'a> {
    daemon: DaemonStatus,
    offline: bool,
    format: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<SharedStatus>,
    sources: Lines<'a>,
}

/// The daemon's own part of `status`.
fn daemon(d: &Daemon, config: &Config) -> DaemonStatus {
    let snap = d.stats.summary();
    DaemonStatus {
        status: snap.status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        root: d.cache.layout().root().to_owned(),
        socket: d.socket.clone(),
        config: config.origin.clone(),
        started_at: timestamp(d.started_at),
        last_error: snap.last_error,
        keys_total: snap.keys_total,
        held_bytes: d.view.held_bytes(),
        offline: config.daemon.offline,
    }
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

/// One source's line from what the view records and one `stat` of its
/// payload (no payload read).
fn source_line(d: &Daemon, sc: &SourceConfig) -> SourceStatus {
    let mut line = SourceStatus {
        disabled: sc.disabled.clone(),
        ..SourceStatus::blank(&sc.id, Some(sc.refresher.describe()), sc.policy.ttl)
    };
    let layout = d.cache.layout();
    let record = match d.view.record_of(&sc.id) {
        Some(record) => Ok(record),
        None => Look::take(layout, &sc.id).map(|look| (look.attempts, look.marker)),
    };
    let looked = record.and_then(|r| Ok((r, Stamp::probe_modified(&layout.payload(&sc.id))?)));
    match looked {
        Ok(((attempts, marker), modified)) => {
            let state = d.cache.state_of(&sc.id, &attempts, marker.as_ref());
            if let Some(modified) = modified {
                let judged = freshness::judge(modified, None, SystemTime::now(), &sc.policy)
                    .with_definition(state.definition.as_deref(), &sc.policy);
                let (fresh, expired) = (judged.fresh(), judged.expired());
                line.payload(
                    modified,
                    judged.age,
                    (fresh, expired),
                    judged.stale_reason(),
                );
            }
            line.revision = state.revision;
            line.refresh = state;
        }
        Err(e) => line.error = Some(e.to_string()),
    }
    line
}
