//! The refresh state machine, synchronous part: what the holder of a
//! source's lock does (mark, commit or record the failure, unmark) and how a
//! waiter reads the outcome of someone else's refresh from the sidecar.
//!
//! The async orchestration (single flight, deadlines, waiting) is in
//! [`crate::cache`]; everything here runs on a blocking thread.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::backoff;
use crate::claim::{self, NotClaimed};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::lock::SourceLock;
use crate::meta::{Damage, Marker, Meta, Sidecar, Timestamp};
use crate::prune;
use crate::refresher::{FetchError, Fetched};
use crate::source::{Policy, SourceId};
use crate::store;

/// What a refresh did, as seen by one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// This caller's refresh committed a new payload.
    Committed {
        /// The new revision.
        revision: u64,
    },
    /// This caller's refresh was told "not modified": freshness renewed,
    /// payload and revision unchanged.
    NotModified {
        /// The unchanged revision.
        revision: u64,
    },
    /// Another caller's refresh (in this process or another) succeeded and
    /// this caller took its outcome.
    Joined {
        /// The revision that refresh left.
        revision: u64,
    },
}

impl Refreshed {
    /// The revision now on disk.
    pub fn revision(&self) -> u64 {
        match *self {
            Self::Committed { revision }
            | Self::NotModified { revision }
            | Self::Joined { revision } => revision,
        }
    }

    /// The same outcome as seen by someone who joined it.
    pub fn joined(self) -> Self {
        Self::Joined {
            revision: self.revision(),
        }
    }
}

/// Reads a source's sidecar: missing, intact, or damaged (unreadable or not
/// a sidecar). Never an error: a damaged sidecar must not stop anything.
pub fn read_sidecar(layout: &Layout, id: &SourceId) -> Sidecar {
    match read_sidecar_at(&layout.sidecar(id)) {
        // Not upgraded yet (its format 1 lock was held): the old place.
        Sidecar::Missing => read_sidecar_at(&layout.legacy_sidecar(id)),
        found => found,
    }
}

fn read_sidecar_at(path: &std::path::Path) -> Sidecar {
    match store::read_optional(path, "read sidecar") {
        Ok(bytes) => Sidecar::judge(bytes.as_deref(), path),
        Err(e) => Sidecar::Damaged(Damage {
            reason: e.to_string(),
            revision: None,
        }),
    }
}

/// Reads a source's sidecar; `Ok(None)` when there is none or it is
/// damaged (see [`read_sidecar`] to tell the two apart).
///
/// # Errors
///
/// None today; kept fallible for callers that propagate file errors.
pub fn read_meta(layout: &Layout, id: &SourceId) -> Result<Option<Meta>> {
    Ok(match read_sidecar(layout, id) {
        Sidecar::Intact(meta) => Some(*meta),
        Sidecar::Missing | Sidecar::Damaged(_) => None,
    })
}

/// The record of the payload on disk, by the rule that a revision never
/// goes backwards. Its revision is the sidecar's, plus one when the payload
/// is newer or of another size than the sidecar records (a commit whose
/// sidecar was lost, or a payload written by another program); or the
/// revision still legible in a damaged sidecar; or, with none legible but a
/// payload present, the current time in Unix milliseconds (above any
/// revision counted one per commit since: a commit takes longer than 1 ms).
/// When the sidecar does not describe the payload, the record takes the
/// payload's mtime, size and inode, so that the next look agrees with it.
/// Another inode than the one recorded is another payload (renamed in by
/// someone else), even with the same size and mtime.
pub fn payload_record(layout: &Layout, id: &SourceId, sidecar: Sidecar) -> Meta {
    use std::os::unix::fs::MetadataExt;
    let payload = std::fs::symlink_metadata(layout.payload(id)).ok();
    let Some(payload) = payload else {
        return match sidecar {
            Sidecar::Intact(meta) => *meta,
            Sidecar::Missing | Sidecar::Damaged(_) => Meta::new(id),
        };
    };
    let modified = payload.modified().ok().map(Timestamp::from);
    let (mut meta, revision) = match sidecar {
        Sidecar::Intact(meta) => {
            let renamed = meta.inode.is_some_and(|i| i != payload.ino());
            let newer = renamed || meta.bytes != Some(payload.len()) || modified > meta.fetched_at;
            if !newer {
                return *meta;
            }
            let revision = match meta.revision {
                0 => 0,
                r => r.saturating_add(1),
            };
            (*meta, revision)
        }
        Sidecar::Damaged(Damage {
            revision: Some(r), ..
        }) => (Meta::new(id), r),
        Sidecar::Damaged(_) | Sidecar::Missing => (Meta::new(id), Timestamp::now().unix_ms()),
    };
    meta.revision = revision;
    meta.fetched_at = modified;
    meta.bytes = Some(payload.len());
    meta.inode = Some(payload.ino());
    meta.sha256 = None;
    meta
}

/// The inode of the payload file of `id` now.
fn payload_inode(layout: &Layout, id: &SourceId) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(layout.payload(id))
        .ok()
        .map(|m| m.ino())
}

/// Reads a source's marker; `Ok(None)` when there is none (or it is
/// unreadable: a marker is advisory).
pub fn read_marker(layout: &Layout, id: &SourceId) -> Option<Marker> {
    let path = layout.marker(id);
    let bytes = store::read_optional(&path, "read marker").ok()??;
    // A failure record (fizeau's cooldown, or ours) is no refresh running.
    if crate::fizeau::marker::FizeauMarker::parse(&bytes).is_some_and(|m| m.failed_record()) {
        return None;
    }
    Marker::parse(&bytes, &path).ok()
}

/// The holder of a source's lock, for the length of one refresh or write.
/// Dropping it removes its marker and releases the lock.
#[derive(Debug)]
pub struct Holder {
    layout: Layout,
    id: SourceId,
    /// The sidecar as it was when the lock was taken (a new record when it
    /// was missing or damaged), with the payload's revision; then as this
    /// holder last recorded it, saved or not.
    pub meta: Meta,
    unmarked: Option<String>,
    /// The error of the last sidecar write, when it failed: `meta` is then
    /// only in memory.
    unsaved: Option<Error>,
    marker: Marker,
    /// The last attempt's error, when it failed: the marker is left as a
    /// failure record fizeau honours.
    failed: Option<String>,
    joined: Option<Refreshed>,
    /// Format 1's flock, while format 1 processes may still run (dropped
    /// after `_lock`'s marker is removed: fields drop in order).
    format1: Option<std::sync::Arc<SourceLock>>,
    _lock: SourceLock,
}

impl Holder {
    /// Becomes the holder with `lock` taken: clears leftovers of a crashed
    /// holder (abandoned marker, temp files), reads the sidecar, and writes
    /// our marker.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the marker cannot be written or the sidecar read.
    pub fn start(
        layout: &Layout,
        id: &SourceId,
        lock: SourceLock,
        deadline: Duration,
    ) -> Result<Self> {
        // A commit since the lock was asked for (or since a wait for
        // fizeau's refresh began) is someone else's refresh: joined.
        let asked_at = lock.payload_before();
        let (marker, unmarked, waited_since, format1) = match claim::claim(layout, id, deadline) {
            Ok(claimed) => {
                if claimed.replaced {
                    prune::clear_temps(layout, id)?;
                }
                let format1 = claimed.format1.map(std::sync::Arc::new);
                (claimed.marker, None, claimed.waited_since, format1)
            }
            Err(NotClaimed::Unwritable(e)) => {
                let why = format!("cannot write the refresh marker: {e}");
                (Marker::new(deadline), Some(why), None, None)
            }
            Err(NotClaimed::FizeauFailed(error)) => {
                let why = format!("fizeau's refresh of this source just failed: {error}");
                (Marker::new(deadline), Some(why), None, None)
            }
            Err(NotClaimed::Timeout(e)) => return Err(e),
        };
        let sidecar = read_sidecar(layout, id);
        if let Some(damage) = sidecar.damage() {
            tracing::warn!("{id}: {}; the next commit rewrites it", damage.reason);
        }
        let recorded = sidecar.meta().map(|m| m.revision);
        let meta = payload_record(layout, id, sidecar);
        let mut holder = Self {
            layout: layout.clone(),
            id: id.clone(),
            meta,
            unmarked,
            unsaved: None,
            marker,
            failed: None,
            joined: None,
            format1,
            _lock: lock,
        };
        if recorded != Some(holder.meta.revision) {
            holder.adopt_payload();
        }
        if let Some(before) = asked_at.or(waited_since) {
            let changed = before.committed_since(claim::PayloadStamp::of(layout, id));
            holder.joined = changed.then_some(Refreshed::Joined {
                revision: holder.meta.revision,
            });
        }
        Ok(holder)
    }

    /// The payload was written by someone else (fizeau, or a commit whose
    /// sidecar was lost): record it, with its sha256, under the new
    /// revision [`payload_record`] gave it.
    fn adopt_payload(&mut self) {
        let mut meta = self.meta.clone();
        if crate::adopt::describe(&self.layout, &self.id, &mut meta) {
            self.save(meta);
        }
    }

    /// When this holder waited for a fizeau refresh that committed a
    /// payload meanwhile: that refresh's outcome, to be taken instead of
    /// running the refresher again.
    pub fn joined(&self) -> Option<Refreshed> {
        self.joined
    }

    /// Continues from `record`, a newer record than the sidecar's that was
    /// kept in memory because it could not be written (its failure count
    /// and backoff go on), never lowering the revision.
    pub fn adopt(&mut self, record: Meta) {
        let revision = self.meta.revision.max(record.revision);
        self.meta = Meta { revision, ..record };
    }

    /// Why the refresh must not call the origin: the marker could not be
    /// written (no space, no inodes), or fizeau's refresh just failed and
    /// is cooling down. The refresh is then a failure, recorded, without
    /// running the refresher.
    pub fn unmarked(&self) -> Option<&str> {
        self.unmarked.as_deref()
    }

    /// A hook that records the refresher's process group in our marker,
    /// under fizeau's short lock like every marker change (or format 1's
    /// flock, held meanwhile), and only while the marker is ours.
    pub fn group_hook(&self) -> crate::refresher::command::group::GroupHook {
        let (layout, id) = (self.layout.clone(), self.id.clone());
        let (token, format1) = (self.marker.token.clone(), self.format1.clone());
        std::sync::Arc::new(move |pgid| {
            let recorded = claim::record_group(&layout, &id, &token, pgid, format1.as_deref());
            if let Err(e) = recorded {
                tracing::warn!("{id}: cannot record the refresher's process group: {e}");
            }
        })
    }

    /// Records what the refresher returned: commits data, renews on "not
    /// modified", or records the failure (keeping the old payload).
    ///
    /// # Errors
    ///
    /// [`Error::RefreshFailed`] for a failed refresh (a failed commit
    /// included), after recording it; when the sidecar cannot be written the
    /// record is kept in memory ([`Holder::unsaved`]) and the message says so.
    pub fn finish(
        &mut self,
        outcome: Result<Fetched, FetchError>,
        policy: &Policy,
        started: Timestamp,
    ) -> Result<Refreshed> {
        let took = started.until(Timestamp::now());
        let result = match outcome {
            Ok(Fetched::Data { bytes, validators }) => self
                .vet(&bytes, policy)
                .and_then(|()| self.commit(&bytes, validators, policy, started, took, None)),
            Ok(Fetched::NotModified { validators }) => self.renew(validators, policy, started),
            Err(e) => Err(e),
        };
        result.map_err(|e| self.failed(&e, policy, started))
    }

    /// Records a failure and returns it as the caller's error.
    fn failed(&mut self, e: &FetchError, policy: &Policy, started: Timestamp) -> Error {
        let mut message = e.message().to_owned();
        self.record_failure(e, policy, started);
        if let Some((_, unsaved)) = self.unsaved() {
            message = format!("{message} (and the failure record was not saved: {unsaved})");
        }
        Error::RefreshFailed {
            id: self.id.clone(),
            message,
            joined: false,
        }
    }

    /// Fails unless `bytes` is JSON that the policy's guard lets replace
    /// the current payload.
    ///
    /// # Errors
    ///
    /// The [`FetchError`] to record.
    pub fn vet(&self, bytes: &[u8], policy: &Policy) -> Result<(), FetchError> {
        check_json(bytes).and_then(|()| self.guard(bytes, policy))
    }

    /// Refuses a payload that the policy's guard refuses against the
    /// current payload (see [`crate::Guard`]).
    fn guard(&self, bytes: &[u8], policy: &Policy) -> Result<(), FetchError> {
        if !policy.guard.enabled {
            return Ok(());
        }
        let current = self.current_worth_keeping(policy.max_output);
        match policy.guard.refuses(bytes, current) {
            Some(why) => Err(FetchError::new(why)),
            None => Ok(()),
        }
    }

    /// The size of the payload on disk, unless there is none or it is
    /// empty (`[]`, `{}`...): no good data for the guard to keep.
    fn current_worth_keeping(&self, max_output: usize) -> Option<u64> {
        let path = self.layout.payload(&self.id);
        let size = std::fs::symlink_metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)?
            .len();
        // Only a small payload can be empty: read no more than that.
        if size > 64 {
            return Some(size);
        }
        let max = (max_output as u64).min(64);
        let payload = store::read_payload_within(&path, max).ok()??;
        (!crate::source::is_empty_json(&payload.bytes)).then_some(size)
    }

    /// Commits a payload: payload file (with `at` as its mtime when given),
    /// then sidecar, then directory fsync.
    fn commit(
        &mut self,
        bytes: &[u8],
        validators: crate::Validators,
        policy: &Policy,
        started: Timestamp,
        took: Duration,
        at: Option<SystemTime>,
    ) -> Result<Refreshed, FetchError> {
        let prefix = Layout::temp_prefix(&self.id);
        let path = self.layout.payload(&self.id);
        let mtime = match at {
            Some(at) => store::write_atomic_at(&path, &prefix, bytes, at),
            None => store::write_atomic(&path, &prefix, bytes),
        }
        .map_err(|e| FetchError::new(format!("commit failed: {e}")))?;
        let mut meta = self.meta.clone();
        let fetched = Timestamp::from(mtime);
        // Saturates: u64::MAX stays u64::MAX (a revision never wraps to 0).
        meta.revision = meta.revision.saturating_add(1);
        meta.bytes = Some(bytes.len() as u64);
        meta.sha256 = Some(hex::encode(Sha256::digest(bytes)));
        meta.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        meta.validators = validators;
        meta.inode = payload_inode(&self.layout, &self.id);
        self.succeeded(meta, fetched, policy, started);
        // The payload's rename must be durable before the commit counts.
        store::sync_dir(&self.layout.tier_dir(&self.id))
            .map_err(|e| FetchError::new(format!("commit failed: {e}")))?;
        Ok(Refreshed::Committed {
            revision: self.meta.revision,
        })
    }

    /// "Not modified": touch the payload's mtime and renew the sidecar.
    fn renew(
        &mut self,
        validators: crate::Validators,
        policy: &Policy,
        started: Timestamp,
    ) -> Result<Refreshed, FetchError> {
        let payload = self.layout.payload(&self.id);
        if self.meta.revision == 0 || !payload.exists() {
            return Err(FetchError::new(
                "refresher answered \"not modified\" but there is no payload to keep",
            ));
        }
        let now = Timestamp::now();
        store::touch(&payload, now.system_time()).map_err(|e| FetchError::new(e.to_string()))?;
        let mut meta = self.meta.clone();
        if validators != crate::Validators::default() {
            meta.validators = validators;
        }
        meta.inode = payload_inode(&self.layout, &self.id);
        self.succeeded(meta, now, policy, started);
        Ok(Refreshed::NotModified {
            revision: self.meta.revision,
        })
    }

    /// Records a success. The payload is the truth: a sidecar that cannot be
    /// written does not undo it (the record stays in memory, and the next
    /// holder derives the revision from the payload).
    fn succeeded(
        &mut self,
        mut meta: Meta,
        fetched: Timestamp,
        policy: &Policy,
        started: Timestamp,
    ) {
        meta.fetched_at = Some(fetched);
        meta.ttl_ms = u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX);
        meta.expires_at = Some(fetched.plus(policy.ttl));
        meta.last_attempt_at = Some(started);
        meta.last_error = None;
        meta.consecutive_failures = 0;
        meta.next_retry_at = None;
        meta.definition.clone_from(&policy.definition);
        self.failed = None;
        self.save(meta);
    }

    fn record_failure(&mut self, e: &FetchError, policy: &Policy, started: Timestamp) {
        let mut meta = self.meta.clone();
        meta.last_attempt_at = Some(started);
        meta.last_error = Some(e.message().to_owned());
        meta.consecutive_failures = meta.consecutive_failures.saturating_add(1);
        let wait = e.retry_after().map_or_else(
            || {
                let n = meta.consecutive_failures;
                backoff::delay(
                    policy.backoff_base,
                    policy.backoff_cap,
                    n,
                    backoff::random_jitter(),
                )
            },
            |after| after.min(policy.backoff_cap),
        );
        meta.next_retry_at = Some(Timestamp::now().plus(wait));
        self.failed = Some(e.message().to_owned());
        self.save(meta);
    }

    /// Makes `meta` the record, and writes the sidecar without fsync: it can
    /// be rebuilt (the payload is the truth and the revision is derived from
    /// it when the sidecar is lost), and the payload's directory fsync in a
    /// commit makes its rename durable too.
    fn save(&mut self, meta: Meta) {
        let bytes = serde_json::to_vec_pretty(&meta).expect("sidecar serialises");
        let prefix = Layout::temp_prefix(&self.id);
        let written = store::write_advisory(&self.layout.sidecar(&self.id), &prefix, &bytes);
        self.unsaved = written.err();
        if let Some(e) = &self.unsaved {
            tracing::warn!("{}: the record is kept in memory only: {e}", self.id);
        }
        self.meta = meta;
    }

    /// The record, when its last sidecar write failed (it is then only in
    /// memory), with that write's error.
    pub fn unsaved(&self) -> Option<(&Meta, &Error)> {
        self.unsaved.as_ref().map(|e| (&self.meta, e))
    }

    /// Commits bytes produced elsewhere (the library's `write`); the guard
    /// does not apply (the caller chose these bytes).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the payload or sidecar cannot be written.
    pub fn commit_external(mut self, bytes: &[u8], policy: &Policy) -> Result<u64> {
        let now = Timestamp::now();
        let validators = crate::Validators::default();
        check_json(bytes)
            .and_then(|()| self.commit(bytes, validators, policy, now, Duration::ZERO, None))
            .map(|r| r.revision())
            .map_err(|e| Error::RefreshFailed {
                id: self.id.clone(),
                message: e.message().to_owned(),
                joined: false,
            })
    }
}

impl Holder {
    /// Commits a seed file's bytes as a payload fetched at `fetched` (the
    /// seed's mtime), so that an old seed is served as stale: the payload's
    /// mtime and the sidecar's `fetched_at` are set to it.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshFailed`] when `bytes` is not JSON or cannot be
    /// written.
    pub fn commit_seed(
        mut self,
        bytes: &[u8],
        policy: &Policy,
        fetched: SystemTime,
    ) -> Result<u64> {
        let fetched = Timestamp::from(fetched).system_time();
        let started = Timestamp::now();
        let validators = crate::Validators::default();
        check_json(bytes)
            .and_then(|()| {
                self.commit(
                    bytes,
                    validators,
                    policy,
                    started,
                    Duration::ZERO,
                    Some(fetched),
                )
            })
            .map(|r| r.revision())
            .map_err(|e| Error::RefreshFailed {
                id: self.id.clone(),
                message: e.message().to_owned(),
                joined: false,
            })
    }

    /// Lands a payload the origin produced at `fetched` (the shared tier's
    /// copy, fetched by this host or another): committed with `fetched` as
    /// its mtime and `fetched_at` (clamped to now: a skewed clock elsewhere
    /// never dates a payload in the future), with its validators. The same
    /// bytes as the current payload only move its freshness forward
    /// ([`Refreshed::NotModified`]); a copy not newer than the current
    /// payload is never written (nothing goes backwards), and the outcome
    /// is then [`Refreshed::NotModified`] with the revision unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::RefreshFailed`] when `bytes` is not JSON or cannot be
    /// written, after recording the failure.
    pub fn land(
        &mut self,
        bytes: &[u8],
        validators: crate::Validators,
        fetched: SystemTime,
        policy: &Policy,
    ) -> Result<Refreshed> {
        let started = Timestamp::now();
        let fetched = Timestamp::from(fetched.min(SystemTime::now()));
        let payload = self.layout.payload(&self.id);
        let current = payload.exists().then_some(self.meta.fetched_at).flatten();
        let kept = Refreshed::NotModified {
            revision: self.meta.revision,
        };
        let same = self.meta.revision > 0
            && current.is_some()
            && self.meta.sha256.as_deref() == Some(&hex::encode(Sha256::digest(bytes)));
        if current.is_some_and(|c| c >= fetched) {
            return Ok(kept);
        }
        let result = if same {
            let mut meta = self.meta.clone();
            meta.validators = validators;
            store::touch(&payload, fetched.system_time())
                .map(|()| self.succeeded(meta, fetched, policy, started))
                .map(|()| kept)
                .map_err(|e| FetchError::new(e.to_string()))
        } else {
            let at = Some(fetched.system_time());
            check_json(bytes)
                .and_then(|()| self.commit(bytes, validators, policy, started, Duration::ZERO, at))
        };
        result.map_err(|e| self.failed(&e, policy, started))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.unmarked.is_some() {
            return;
        }
        // Under fizeau's short lock, and only if it is still ours.
        let (token, format1) = (&self.marker.token, self.format1.as_deref());
        let done = match &self.failed {
            Some(error) => claim::leave_failure(&self.layout, &self.id, token, error, format1),
            None => claim::release(&self.layout, &self.id, token, format1),
        };
        if let Err(e) = done {
            tracing::warn!("{}: our refresh marker is left behind: {e}", self.id);
        }
    }
}

/// Fails unless `bytes` is one complete JSON document.
fn check_json(bytes: &[u8]) -> Result<(), FetchError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(drop)
        .map_err(|e| {
            let len = bytes.len();
            FetchError::new(format!("refresher output ({len} bytes) is not JSON: {e}"))
        })
}

/// The outcome of someone else's refresh, read from the sidecar after their
/// lock was released: `None` when nothing happened since `before` (the holder
/// died without an outcome).
pub fn outcome_since(
    before: Option<&Meta>,
    now: Option<&Meta>,
    id: &SourceId,
) -> Option<Result<Refreshed>> {
    let now = now?;
    if before.map(Meta::outcome_key) == Some(now.outcome_key()) {
        return None;
    }
    let revision_before = before.map_or(0, |m| m.revision);
    if now.revision > revision_before || now.last_error.is_none() {
        return Some(Ok(Refreshed::Joined {
            revision: now.revision,
        }));
    }
    Some(Err(Error::RefreshFailed {
        id: id.clone(),
        message: now.last_error.clone().unwrap_or_default(),
        joined: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SourceId {
        SourceId::parse("t/x").unwrap()
    }

    #[test]
    fn no_change_means_no_outcome() {
        let m = Meta::new(&id());
        assert!(outcome_since(Some(&m), Some(&m), &id()).is_none());
        assert!(outcome_since(None, None, &id()).is_none());
    }

    #[test]
    fn new_revision_is_a_joined_success() {
        let before = Meta::new(&id());
        let mut after = before.clone();
        after.revision = 1;
        after.last_attempt_at = Some(Timestamp::now());
        let got = outcome_since(Some(&before), Some(&after), &id())
            .unwrap()
            .unwrap();
        assert_eq!(got, Refreshed::Joined { revision: 1 });
    }

    #[test]
    fn recorded_failure_is_a_joined_failure() {
        let before = Meta::new(&id());
        let mut after = before.clone();
        after.last_attempt_at = Some(Timestamp::now());
        after.last_error = Some("boom".into());
        after.consecutive_failures = 1;
        let err = outcome_since(Some(&before), Some(&after), &id())
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, Error::RefreshFailed { joined: true, ref message, .. } if message == "boom")
        );
    }

    /// A holder of `t/x` on a fresh root under `dir`.
    fn holder(dir: &std::path::Path) -> Holder {
        let layout = Layout::new(dir);
        store::ensure_source_dirs(&layout, &id()).unwrap();
        let lock = SourceLock::try_acquire(&layout.lock(&id()))
            .unwrap()
            .unwrap();
        Holder::start(&layout, &id(), lock, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn landed_copy_keeps_the_origin_time_and_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::default();
        let mut h = holder(dir.path());
        let now = SystemTime::now();
        let at = |s: u64| now - Duration::from_secs(s);
        let landed = h.land(b"[2]", crate::Validators::default(), at(10), &policy);
        assert_eq!(landed.unwrap(), Refreshed::Committed { revision: 1 });
        let path = h.layout.payload(&id());
        let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(Timestamp::from(mtime(&path)), Timestamp::from(at(10)));
        // An older copy is not written.
        let older = h.land(b"[1]", crate::Validators::default(), at(60), &policy);
        assert_eq!(older.unwrap(), Refreshed::NotModified { revision: 1 });
        assert_eq!(std::fs::read(&path).unwrap(), b"[2]");
        // The same bytes, fetched later: only the time moves.
        let later = h.land(b"[2]", crate::Validators::default(), at(1), &policy);
        assert_eq!(later.unwrap(), Refreshed::NotModified { revision: 1 });
        assert_eq!(Timestamp::from(mtime(&path)), Timestamp::from(at(1)));
        // A copy dated in the future (a skewed clock) is dated now.
        let future = SystemTime::now() + Duration::from_secs(3600);
        let skewed = h.land(b"[3]", crate::Validators::default(), future, &policy);
        assert_eq!(skewed.unwrap(), Refreshed::Committed { revision: 2 });
        assert!(mtime(&path) <= SystemTime::now());
    }

    #[test]
    fn json_check_rejects_garbage_and_trailing_data() {
        assert!(check_json(b"{\"a\":[1,2]}").is_ok());
        assert!(check_json(b" [1] \n").is_ok());
        let err = check_json(b"hello").unwrap_err();
        assert!(err.message().contains("is not JSON"), "{err}");
        assert!(check_json(b"{} {}").is_err());
        assert!(check_json(b"").is_err());
    }
}
