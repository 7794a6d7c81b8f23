//! The daemon's view of every source: what it last saw on disk (so that
//! each change is published once, as an event), the refresh record of the
//! sidecar and the marker, and, once a client has asked for the source, its
//! payload, checked and ready to embed in a `get` answer.
//!
//! A `get` of a held payload costs one `stat` of the payload file, on the
//! connection's task: when the file's [`Stamp`] is the one held, the held
//! payload is served as it is, without opening a file or leaving the task.
//! A new stamp (a commit by anyone, an invalidation, a hand edit) makes the
//! next `get` read the file again, with its sidecar. The sidecar and the
//! marker are kept current by the root watcher and by the daemon's own
//! refreshes ([`super::state`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;

use super::mutex::lock;
use crate::cache::{Attempts, RefreshState};
use crate::error::{Error, Result};
use crate::freshness;
use crate::layout::Layout;
use crate::meta::{Marker, Sidecar};
use crate::protocol::timestamp;
use crate::refresh;
use crate::source::{Policy, SourceId};
use crate::store;

/// Payloads larger than this are read from disk at every `get` instead of
/// being held in memory.
pub(crate) const HOLD_MAX: u64 = 1 << 20;

/// The most payload bytes held at once; past it, payloads are read from
/// disk at every `get`.
pub(crate) const HOLD_BUDGET: u64 = 64 << 20;

/// What `stat` says about a payload file. It changes whenever the file is
/// replaced (a commit renames a new inode in), touched (an invalidation) or
/// written in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the payload at `path`; `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `stat` fails for another reason than "not found".
    pub fn probe(path: &Path) -> Result<Option<Self>> {
        Ok(stat(path)?.map(|meta| Self::of(&meta)))
    }

    /// The mtime of the payload at `path`; `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// As [`Stamp::probe`].
    pub fn probe_modified(path: &Path) -> Result<Option<SystemTime>> {
        let Some(meta) = stat(path)? else {
            return Ok(None);
        };
        let modified = meta
            .modified()
            .map_err(|e| Error::io("stat payload", path, e))?;
        Ok(Some(modified))
    }
}

/// `stat` of a payload; `Ok(None)` when there is none.
fn stat(path: &Path) -> Result<Option<Metadata>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat payload", path, e)),
    }
}

/// A payload as `get` serves it.
#[derive(Debug)]
pub(crate) struct Held {
    /// The file it was read from.
    pub stamp: Stamp,
    /// Its mtime: when it was fetched or last revalidated.
    pub modified: SystemTime,
    /// `modified` as the protocol writes it.
    pub fetched_at: String,
    /// The bytes, checked to be one JSON value, on one line.
    pub data: Box<RawValue>,
}

impl Held {
    /// Reads and checks the payload at `path`; `Ok(None)` when there is
    /// none. Line breaks between tokens become spaces (a JSON string cannot
    /// hold a raw one), so the payload fits a protocol line as it is.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be read, [`Error::TooLarge`] over
    /// `max` bytes (its source's `max_output`; it is not read),
    /// [`Error::Corrupt`] when it is not UTF-8 or not one JSON value.
    pub fn load(path: &Path, max: u64) -> Result<Option<Self>> {
        let Some((file, meta, modified)) = store::open_payload(path)? else {
            return Ok(None);
        };
        let bytes = store::read_bounded(file, &meta, max, "payload", path)?;
        let mut text =
            String::from_utf8(bytes).map_err(|_| corrupt(path, "it is not UTF-8".into()))?;
        if text.contains(['\n', '\r']) {
            text = text.replace(['\n', '\r'], " ");
        }
        let data = RawValue::from_string(text)
            .map_err(|e| corrupt(path, format!("it is not one JSON value: {e}")))?;
        Ok(Some(Self {
            stamp: Stamp::of(&meta),
            modified,
            fetched_at: timestamp(modified),
            data,
        }))
    }
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupt {
        what: "payload",
        path: path.to_path_buf(),
        reason,
    }
}

/// What a `get` serves of a source: its payload, how old it is, and its
/// refresh state.
#[derive(Debug)]
pub(crate) struct Served {
    pub held: Arc<Held>,
    pub age: Duration,
    /// Younger than its ttl.
    pub fresh: bool,
    /// Older than its `max_stale`.
    pub expired: bool,
    /// Dated in the future beyond the clock skew.
    pub future: bool,
    /// Why it is not fresh.
    pub stale_reason: Option<&'static str>,
    pub state: RefreshState,
}

impl Served {
    /// Ages `held` by the clock, under `policy`.
    pub fn new(held: Arc<Held>, policy: &Policy, state: RefreshState) -> Self {
        let judged = freshness::judge(held.modified, None, SystemTime::now(), policy)
            .with_definition(state.definition.as_deref(), policy);
        Self {
            stale_reason: judged.stale_reason(),
            fresh: judged.fresh(),
            expired: judged.expired(),
            future: judged.future,
            held,
            age: judged.age,
            state,
        }
    }
}

/// One look at a source's files (not the payload's bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Look {
    /// A payload exists.
    pub payload: bool,
    /// A sidecar exists.
    pub sidecar: bool,
    /// What the sidecar records (the default without one).
    pub attempts: Attempts,
    /// The marker of a refresh, if one is there.
    pub marker: Option<Marker>,
}

impl Look {
    /// Looks at a source's payload, sidecar and marker.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Corrupt`] from the sidecar.
    pub fn take(layout: &Layout, id: &SourceId) -> Result<Self> {
        let sidecar = refresh::read_sidecar(layout, id);
        Ok(Self {
            payload: layout.payload(id).exists(),
            sidecar: sidecar != Sidecar::Missing,
            attempts: Attempts::of_sidecar(&sidecar),
            marker: refresh::read_marker(layout, id),
        })
    }

    /// Anything of the source on disk.
    pub fn present(&self) -> bool {
        self.payload || self.sidecar
    }
}

#[derive(Debug, Default)]
struct Kept {
    look: Look,
    held: Option<Arc<Held>>,
}

/// Every source's last look and held payload.
#[derive(Debug, Default)]
pub(crate) struct View {
    inner: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    by_id: HashMap<SourceId, Kept>,
    /// The bytes of every held payload, at most [`HOLD_BUDGET`].
    held_bytes: u64,
    /// How many sources have a payload, by tier, kept as looks are
    /// recorded (counting them afresh at every commit would make seeding
    /// quadratic in the number of sources).
    keys: BTreeMap<String, u64>,
}

impl Slots {
    /// Counts a source's payload in (`add`) or out of its tier's count.
    fn count_key(&mut self, id: &SourceId, add: bool) {
        let count = self.keys.entry(id.tier().to_owned()).or_insert(0);
        match add {
            true => *count += 1,
            false => *count = count.saturating_sub(1),
        }
        if *count == 0 {
            self.keys.remove(id.tier());
        }
    }

    /// Lets go of a source's held payload.
    fn release(&mut self, id: &SourceId) {
        let Some(slot) = self.by_id.get_mut(id) else {
            return;
        };
        if let Some(held) = slot.held.take() {
            self.held_bytes -= held.stamp.len;
        }
    }
}

impl View {
    /// Records a new look at a source and returns the previous one (`None`
    /// the first time). A held payload is let go when the revision moved
    /// or the payload went: the next `get` reads the new one.
    pub fn record(&self, id: &SourceId, look: Look) -> Option<Look> {
        let mut slots = lock(&self.inner);
        let Some(slot) = slots.by_id.get_mut(id) else {
            if look.payload {
                slots.count_key(id, true);
            }
            let slot = Kept {
                look,
                ..Kept::default()
            };
            slots.by_id.insert(id.clone(), slot);
            return None;
        };
        let moved = !look.payload || look.attempts.revision != slot.look.attempts.revision;
        let before = std::mem::replace(&mut slot.look, look);
        let now = slot.look.payload;
        if before.payload != now {
            slots.count_key(id, now);
        }
        if moved {
            slots.release(id);
        }
        Some(before)
    }

    /// The held payload, when its stamp is still `stamp`.
    pub fn held(&self, id: &SourceId, stamp: Stamp) -> Option<Arc<Held>> {
        let slots = lock(&self.inner);
        let held = slots.by_id.get(id)?.held.as_ref()?;
        (held.stamp == stamp).then(|| Arc::clone(held))
    }

    /// Keeps a payload for the next `get`s, when it is at most
    /// [`HOLD_MAX`] and the payloads held stay within [`HOLD_BUDGET`].
    pub fn hold(&self, id: &SourceId, held: &Arc<Held>) {
        let mut slots = lock(&self.inner);
        slots.release(id);
        let fits = slots.held_bytes + held.stamp.len <= HOLD_BUDGET;
        let Some(slot) = slots.by_id.get_mut(id) else {
            return;
        };
        if held.stamp.len <= HOLD_MAX && fits {
            slot.held = Some(Arc::clone(held));
            slots.held_bytes += held.stamp.len;
        }
    }

    /// The sidecar's record and the marker of the last look; `None` when
    /// the source was never looked at.
    pub fn record_of(&self, id: &SourceId) -> Option<(Attempts, Option<Marker>)> {
        let slots = lock(&self.inner);
        let look = &slots.by_id.get(id)?.look;
        Some((look.attempts.clone(), look.marker.clone()))
    }

    /// How many sources have a payload, by tier.
    pub fn keys_by_tier(&self) -> BTreeMap<String, u64> {
        lock(&self.inner).keys.clone()
    }

    /// The bytes of the payloads held now.
    pub fn held_bytes(&self) -> u64 {
        lock(&self.inner).held_bytes
    }
}

#[cfg(test)]
mod tests;
