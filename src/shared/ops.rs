//! The operations of the shared tier, each one script or command.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;
use redis::streams::StreamReadReply;

use super::client::SharedTier;
use super::error::SharedError;
use super::scripts::{COMMIT, EPOCH, RECORD_FAILURE, SEED, TAKE_LEASE};
use super::types::{
    Commit, CommitKind, Committed, EpochCheck, Event, Failure, Lease, SharedCopy, Take,
};
use crate::source::SourceId;

/// Events kept in the stream (approximately: `MAXLEN ~`).
const EVENTS_CAP: u64 = 10_000;

impl SharedTier {
    /// Takes the lease of `source` for `hold` (its refresh deadline plus a
    /// grace), unless the shared copy was fetched after `newer_than_ms`
    /// (when given: then it is to be copied down instead), another host
    /// holds the lease, or the shared backoff runs. One script: the look at
    /// the shared copy costs no round trip of its own.
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn take_lease(
        &self,
        source: &SourceId,
        hold: Duration,
        newer_than_ms: Option<i64>,
    ) -> Result<Take, SharedError> {
        const OP: &str = "take lease";
        let (k, holder) = (&self.keys, holder());
        let started = Instant::now();
        let mut inv = TAKE_LEASE.prepare_invoke();
        inv.key(k.lease(source))
            .key(k.fence(source))
            .key(k.fail(source))
            .key(k.events())
            .key(k.data(source))
            .arg(&holder)
            .arg(millis(hold).max(1))
            .arg(newer_than_ms.map(|ms| ms.to_string()).unwrap_or_default());
        let reply = self.invoke(OP, &inv).await?;
        let (tag, n) = tagged(&reply, 1);
        let items = array(&reply);
        let field = |i: usize| items.get(i).and_then(text).filter(|s| !s.is_empty());
        match (tag.as_deref(), n) {
            (Some("newer"), Some(_)) => Ok(Take::Newer),
            (Some("leased"), Some(fence)) => Ok(Take::Leased(Lease {
                source: source.clone(),
                fence: unsigned(fence),
                holder,
                expires: started + hold,
                etag: field(2),
                last_modified: field(3),
            })),
            (Some("busy"), Some(pttl)) => Ok(Take::Busy {
                remaining: Duration::from_millis(unsigned(pttl)),
                after: items.get(2).and_then(text).unwrap_or_else(|| "0-0".into()),
            }),
            (Some("backoff"), Some(at)) => Ok(Take::Backoff {
                next_retry_at_ms: at,
            }),
            _ => Err(self.odd(OP, &reply)),
        }
    }

    /// Writes a refresh's result under `lease`'s fence, unless a newer
    /// fence is stored; releases the lease if it is still this holder's.
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn commit(
        &self,
        lease: &Lease,
        commit: &Commit<'_>,
    ) -> Result<Committed, SharedError> {
        const OP: &str = "commit";
        let (k, source) = (&self.keys, &lease.source);
        let kind = match commit.kind {
            CommitKind::Fetched => "committed",
            CommitKind::NotModified => "not_modified",
        };
        let mut inv = COMMIT.prepare_invoke();
        inv.key(k.data(source))
            .key(k.lease(source))
            .key(k.events())
            .key(k.fail(source))
            .arg(lease.fence)
            .arg(&lease.holder)
            .arg(kind)
            .arg(commit.fetched_at_ms)
            .arg(commit.payload)
            .arg(commit.sha256)
            .arg(commit.etag.unwrap_or(""))
            .arg(commit.last_modified.unwrap_or(""))
            .arg(source.to_string())
            .arg(EVENTS_CAP);
        let reply = self.invoke(OP, &inv).await?;
        let (tag, n) = tagged(&reply, 1);
        match (tag.as_deref(), n) {
            (Some("committed"), Some(f)) => Ok(Committed::Committed(unsigned(f))),
            (Some("stale"), Some(f)) => Ok(Committed::Stale(unsigned(f))),
            _ => Err(self.odd(OP, &reply)),
        }
    }

    /// Records a failed refresh under `lease`: every host backs off until
    /// the returned `next_retry_at` (ms since the Unix epoch, server time).
    /// `Ok(None)` when a newer fence is already committed (ignored).
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn record_failure(
        &self,
        lease: &Lease,
        failure: &Failure<'_>,
    ) -> Result<Option<i64>, SharedError> {
        const OP: &str = "record failure";
        let (k, source) = (&self.keys, &lease.source);
        let mut inv = RECORD_FAILURE.prepare_invoke();
        inv.key(k.fail(source))
            .key(k.lease(source))
            .key(k.events())
            .key(k.data(source))
            .arg(lease.fence)
            .arg(&lease.holder)
            .arg(failure.error)
            .arg(millis(failure.base))
            .arg(millis(failure.cap))
            .arg(failure.retry_after.map_or(0, millis))
            .arg(source.to_string())
            .arg(EVENTS_CAP);
        let reply = self.invoke(OP, &inv).await?;
        let (tag, n) = tagged(&reply, 2);
        match (tag.as_deref(), n) {
            (Some("failed"), Some(next)) => Ok(Some(next)),
            (Some("stale"), _) => Ok(None),
            _ => Err(self.odd(OP, &reply)),
        }
    }

    /// The shared copy of `source`, if any was committed.
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn read_copy(&self, source: &SourceId) -> Result<Option<SharedCopy>, SharedError> {
        const OP: &str = "read shared copy";
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.data(source));
        let mut fields: HashMap<String, Vec<u8>> = self.query(OP, &cmd).await?;
        let Some(payload) = fields.remove("payload") else {
            return Ok(None);
        };
        let mut field = |name: &str| {
            let bytes = fields.remove(name).unwrap_or_default();
            String::from_utf8(bytes).unwrap_or_default()
        };
        let fence = field("fence").parse().unwrap_or(0);
        let fetched_at_ms = field("fetched_at").parse().unwrap_or(0);
        let sha256 = field("sha256");
        let etag = Some(field("etag")).filter(|s| !s.is_empty());
        let last_modified = Some(field("last_modified")).filter(|s| !s.is_empty());
        Ok(Some(SharedCopy {
            payload,
            fence,
            fetched_at_ms,
            sha256,
            etag,
            last_modified,
        }))
    }

    /// Seeds the shared copy of `source` from a local copy (after a new
    /// epoch): no lease, no upstream call. Returns the fence written, or
    /// `None` when the store already holds a copy fetched at the same time
    /// or later (nothing goes backwards).
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn seed(
        &self,
        source: &SourceId,
        copy: &Commit<'_>,
    ) -> Result<Option<u64>, SharedError> {
        const OP: &str = "seed shared copy";
        let k = &self.keys;
        let mut inv = SEED.prepare_invoke();
        inv.key(k.data(source))
            .key(k.fence(source))
            .key(k.events())
            .arg(copy.fetched_at_ms)
            .arg(copy.payload)
            .arg(copy.sha256)
            .arg(copy.etag.unwrap_or(""))
            .arg(copy.last_modified.unwrap_or(""))
            .arg(source.to_string())
            .arg(EVENTS_CAP);
        let reply = self.invoke(OP, &inv).await?;
        let (tag, n) = tagged(&reply, 1);
        match (tag.as_deref(), n) {
            (Some("seeded"), Some(fence)) => {
                self.count_seed();
                Ok(Some(unsigned(fence)))
            }
            (Some("kept"), Some(_)) => Ok(None),
            _ => Err(self.odd(OP, &reply)),
        }
    }

    /// Reads the epoch, setting a fresh one on a server without (new or
    /// wiped); `changed` when it differs from the one seen before.
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn check_epoch(&self) -> Result<EpochCheck, SharedError> {
        const OP: &str = "check epoch";
        let fresh = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut inv = EPOCH.prepare_invoke();
        inv.key(self.keys.epoch()).arg(fresh);
        let reply = self.invoke(OP, &inv).await?;
        let items = array(&reply);
        let (Some(epoch), Some(created)) =
            (items.first().and_then(text), items.get(1).and_then(int))
        else {
            return Err(self.odd(OP, &reply));
        };
        let before = self.saw_epoch(&epoch);
        Ok(EpochCheck {
            changed: before.is_some_and(|b| b != epoch),
            created: created == 1,
            epoch,
        })
    }

    /// Waits up to `bound` for the next event of `source` after the stream
    /// id `after` (from [`Take::Busy`]); `Ok(None)` when none came. Lease
    /// expiry fires no event: bound the wait by the lease's remaining time.
    ///
    /// # Errors
    ///
    /// [`SharedError`] when the server cannot be reached or answers oddly.
    pub async fn wait_for(
        &self,
        source: &SourceId,
        after: &str,
        bound: Duration,
    ) -> Result<Option<Event>, SharedError> {
        const OP: &str = "wait for event";
        let deadline = Instant::now() + bound;
        let mut conn = self.dedicated(OP, bound).await?;
        let (name, mut after) = (source.to_string(), after.to_owned());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(millis(left).max(1));
            cmd.arg("STREAMS").arg(self.keys.events()).arg(&after);
            let read: Option<StreamReadReply> = match cmd.query_async(&mut conn).await {
                Ok(read) => read,
                Err(e) => return Err(self.failed(OP, e).await),
            };
            self.reached();
            for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                after.clone_from(&entry.id);
                let field = |f: &str| entry.map.get(f).and_then(text);
                if field("source").as_deref() == Some(&name) {
                    return Ok(Some(Event {
                        fence: field("fence").and_then(|f| f.parse().ok()).unwrap_or(0),
                        kind: field("kind").unwrap_or_default(),
                        id: entry.id.clone(),
                    }));
                }
            }
        }
    }

    async fn invoke(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, SharedError> {
        let mut conn = self.connection(op).await?;
        match inv.invoke_async::<Value>(&mut conn).await {
            Ok(value) => {
                self.reached();
                Ok(value)
            }
            Err(e) => Err(self.failed(op, e).await),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, SharedError> {
        let mut conn = self.connection(op).await?;
        match cmd.query_async(&mut conn).await {
            Ok(value) => {
                self.reached();
                Ok(value)
            }
            Err(e) => Err(self.failed(op, e).await),
        }
    }

    fn odd(&self, op: &'static str, reply: &Value) -> SharedError {
        SharedError::Reply {
            op,
            url: self.settings.redacted_url(),
            what: format!("{reply:?}"),
        }
    }
}

/// The lease value: this host's name, pid and a random token.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host} {} {:016x}", std::process::id(), fastrand::u64(..))
}

/// A script's reply `[tag, ..., n]`: its first item as text and its item
/// `at` as an integer.
fn tagged(reply: &Value, at: usize) -> (Option<String>, Option<i64>) {
    let items = array(reply);
    (items.first().and_then(text), items.get(at).and_then(int))
}

fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(_) | Value::SimpleString(_) => text(value)?.parse().ok(),
        _ => None,
    }
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
