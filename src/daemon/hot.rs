//! A `get` answered from memory, on the connection's thread, before the
//! request goes to the runtime.
//!
//! Once a `get` has checked a held payload against the file (see
//! [`super::view`]) and the source has no refresh running, the view keeps
//! the answer's fields after `age_ms` (the one field that moves with the
//! clock) as bytes, next to the payload. While no change to the payload
//! file is queued (see [`super::changes`]) and the source's record stays
//! the same, a fresh `get` is the payload, a number and those bytes: no
//! `stat`, no serialising, no task. Anything else (stale, expired, unknown, `meta`, `force`, a refresh in
//! flight) goes the usual way, which answers the same bytes.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::state::Daemon;
use super::view::Held;
use crate::cache::RefreshState;
use crate::freshness;
use crate::protocol::{Envelope, GetBody, RefreshMode, Request, Response, to_line};
use crate::stats::{Counter, millis};

/// What every success line starts with.
const OK: &str = "{\"ok\":true,";
/// The fields around the payload, which comes first in a `get` body.
const DATA: &str = "\"data\":";
const AGE: &str = ",\"age_ms\":";

/// A fresh `get` answer of one held payload, but for its `age_ms`.
#[derive(Debug)]
pub(crate) struct Hot {
    /// The payload, embedded after `"data":`.
    held: Arc<Held>,
    /// From the `,` after `age_ms` up to and including the newline.
    tail: Box<str>,
    /// The definition hash the payload was committed under.
    definition: Option<String>,
}

impl Hot {
    /// The answer to a fresh `get` of `held` in `state`, cut out of the
    /// line the usual way makes. `None` when that line is not cut where
    /// expected (it always is: `data` is the body's first field).
    pub fn new(held: &Arc<Held>, state: RefreshState) -> Option<Self> {
        let definition = state.definition.clone();
        let body = GetBody {
            data: Some(held.data.clone()),
            age_ms: 0,
            fresh: true,
            stale: false,
            expired: false,
            future: false,
            stale_reason: None,
            revision: state.revision,
            fetched_at: held.fetched_at.clone(),
            refresh: Some(state),
            meta: None,
        };
        let line = to_line(&Response::success(None, body)).ok()?;
        let tail = line
            .strip_prefix(OK)?
            .strip_prefix(DATA)?
            .strip_prefix(held.data.get())?
            .strip_prefix(AGE)?
            .strip_prefix('0')?;
        Some(Self {
            held: Arc::clone(held),
            tail: tail.into(),
            definition,
        })
    }

    /// Writes the answer line, with `id` echoed when the request had one.
    fn write(&self, id: Option<&Value>, age_ms: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(OK.as_bytes());
        if let Some(id) = id {
            out.extend_from_slice(b"\"id\":");
            // A `Value` always serialises; a line break in it is escaped.
            let _ = serde_json::to_writer(&mut *out, id);
            out.push(b',');
        }
        out.extend_from_slice(DATA.as_bytes());
        out.extend_from_slice(self.held.data.get().as_bytes());
        out.extend_from_slice(AGE.as_bytes());
        let _ = write!(out, "{age_ms}");
        out.extend_from_slice(self.tail.as_bytes());
    }
}

impl Daemon {
    /// Answers `envelope` into `out` when it is a `get` of a fresh payload
    /// that the view vouches for; false when it must go the usual way.
    pub fn answer_now(&self, envelope: &Envelope, out: &mut Vec<u8>) -> bool {
        let Request::Get(req) = &envelope.request else {
            return false;
        };
        if req.meta || req.refresh == RefreshMode::Force {
            return false;
        }
        let Some(sc) = self.source(&req.source) else {
            return false;
        };
        let Some(hot) = self.view.hot(&req.source) else {
            return false;
        };
        let judged = freshness::judge(hot.held.modified, None, SystemTime::now(), &sc.policy)
            .with_definition(hot.definition.as_deref(), &sc.policy);
        let age = judged.age;
        let fresh = judged.fresh()
            && req
                .max_age_ms
                .is_none_or(|m| !judged.future && judged.age <= Duration::from_millis(m));
        if !fresh || self.cache.in_flight_here(&req.source) {
            return false;
        }
        self.stats.count(&req.source, Counter::FreshHit);
        hot.write(envelope.id.as_ref(), millis(age), out);
        true
    }
}

#[cfg(test)]
mod tests;
