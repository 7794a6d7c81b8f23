//! The `<name>.meta.json` sidecar and the `<name>.refreshing` marker.
//!
//! Both are small JSON documents, replaced by rename. Timestamps are RFC 3339
//! UTC strings with milliseconds; durations are integer milliseconds.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::refresher::Validators;
use crate::source::SourceId;

/// Version of the on-disk format written in every sidecar.
pub const FORMAT: u32 = crate::layout::FORMAT;

/// The oldest sidecar format still read (format 1's sidecar has the same
/// fields; only its place differs).
const OLDEST_FORMAT: u32 = 1;

/// A wall-clock instant, written as RFC 3339 UTC with milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// Now, truncated to milliseconds (what is written is what is compared).
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// The instant.
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> u64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// This instant plus `d`.
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Self::from(self.0 + d)
    }

    /// Time from `self` until `later`, zero if `later` is earlier.
    pub fn until(self, later: Self) -> Duration {
        later.0.duration_since(self.0).unwrap_or_default()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        Self(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s)
            .map(Self::from)
            .map_err(|e| serde::de::Error::custom(format!("timestamp {s:?}: {e}")))
    }
}

/// The sidecar: freshness, integrity and the failure record of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Always `FORMAT`.
    pub format: u32,
    /// The source's tier.
    pub tier: String,
    /// The source's name.
    pub name: String,
    /// +1 per committed payload; 0 before the first success.
    pub revision: u64,
    /// When the payload was last fetched or revalidated (= payload mtime).
    pub fetched_at: Option<Timestamp>,
    /// The ttl in force at that time, in milliseconds.
    pub ttl_ms: u64,
    /// `fetched_at + ttl`.
    pub expires_at: Option<Timestamp>,
    /// Payload size.
    pub bytes: Option<u64>,
    /// Hex SHA-256 of the payload.
    pub sha256: Option<String>,
    /// How long the last successful refresh took.
    pub duration_ms: Option<u64>,
    /// HTTP validators of the payload.
    #[serde(flatten)]
    pub validators: Validators,
    /// Start of the last attempt, successful or not.
    pub last_attempt_at: Option<Timestamp>,
    /// Error of the last attempt; `None` after a success.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// No background refresh before this instant.
    pub next_retry_at: Option<Timestamp>,
    /// Hash of the source's definition the payload was committed under
    /// ([`crate::Policy::definition`]); absent in older sidecars, which
    /// count as unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Inode of the payload file this record describes: a payload renamed
    /// in by someone else has another, even with the same size and mtime.
    /// Absent in older sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
}

impl Meta {
    /// An empty record for a source that has never been refreshed.
    pub fn new(id: &SourceId) -> Self {
        Self {
            format: FORMAT,
            tier: id.tier().to_owned(),
            name: id.name().to_owned(),
            revision: 0,
            fetched_at: None,
            ttl_ms: 0,
            expires_at: None,
            bytes: None,
            sha256: None,
            duration_ms: None,
            validators: Validators::default(),
            last_attempt_at: None,
            last_error: None,
            consecutive_failures: 0,
            next_retry_at: None,
            definition: None,
            inode: None,
        }
    }

    /// Parses a sidecar.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when it is not a format 1 or 2 sidecar.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            what: "sidecar",
            path: path.to_owned(),
            reason,
        };
        let mut meta: Self = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if !(OLDEST_FORMAT..=FORMAT).contains(&meta.format) {
            return Err(corrupt(format!("unsupported format {}", meta.format)));
        }
        meta.format = FORMAT;
        Ok(meta)
    }

    /// What identifies "an attempt finished" for cross-process waiters.
    pub fn outcome_key(&self) -> (u64, Option<Timestamp>, Option<Timestamp>) {
        (self.revision, self.last_attempt_at, self.fetched_at)
    }
}

/// A sidecar as found on disk. The payload is the truth: a missing or
/// damaged sidecar never stops the payload from being served, and the next
/// commit rewrites it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sidecar {
    /// No sidecar.
    Missing,
    /// A sidecar that parses.
    Intact(Box<Meta>),
    /// A sidecar that cannot be read or parsed.
    Damaged(Damage),
}

/// What is known of a damaged sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Why it was rejected, naming the file.
    pub reason: String,
    /// The revision still legible in its bytes, if any.
    pub revision: Option<u64>,
}

impl Sidecar {
    /// Judges the bytes read from `path` (`None`: no file).
    pub fn judge(bytes: Option<&[u8]>, path: &Path) -> Self {
        let Some(bytes) = bytes else {
            return Self::Missing;
        };
        match Meta::parse(bytes, path) {
            Ok(meta) => Self::Intact(Box::new(meta)),
            Err(e) => Self::Damaged(Damage {
                reason: e.to_string(),
                revision: salvage_revision(bytes),
            }),
        }
    }

    /// The parsed sidecar, if intact.
    pub fn meta(&self) -> Option<&Meta> {
        match self {
            Self::Intact(meta) => Some(meta.as_ref()),
            _ => None,
        }
    }

    /// Why the sidecar is damaged, if it is.
    pub fn damage(&self) -> Option<&Damage> {
        match self {
            Self::Damaged(damage) => Some(damage),
            _ => None,
        }
    }
}

/// The value of the first `"revision": <digits>` in a damaged sidecar's
/// bytes (a truncated or foreign-format sidecar usually still has it).
pub fn salvage_revision(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"revision\"";
    let at = bytes.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = bytes[at + KEY.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The `.refreshing` marker, present only while a refresh runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Process running the refresh.
    pub pid: u32,
    /// When the refresh started.
    pub started_at: Timestamp,
    /// When the refresher will be killed.
    pub deadline: Timestamp,
    /// Random: tells one refresh's marker from the next. Empty in
    /// fizeau's markers, which have none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Process group of the refresher, once one runs (fizeau's markers and
    /// older ones lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
}

impl Marker {
    /// A marker for a refresh starting now in this process.
    pub fn new(deadline: Duration) -> Self {
        let started_at = Timestamp::now();
        Self {
            pid: std::process::id(),
            started_at,
            deadline: started_at.plus(deadline),
            token: format!("{:016x}", fastrand::u64(..)),
            pgid: None,
        }
    }

    /// SIGKILLs the refresher process group this (abandoned) marker names,
    /// if it still runs, so that a crashed holder's refresher never runs
    /// beside the next one. Never signals this process's own group, nor a
    /// group whose id was given to someone else since.
    pub fn kill_group(&self) {
        let Some(pgid) = self.pgid else { return };
        let window = (self.started_at.system_time(), self.deadline.system_time());
        match crate::refresher::command::group::kill_abandoned(pgid, window.0, window.1) {
            Ok(true) => tracing::warn!(
                "killed process group {pgid} of an abandoned refresh (holder pid {})",
                self.pid
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("cannot kill process group {pgid} of an abandoned refresh: {e}");
            }
        }
    }

    /// Parses a marker.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when it does not parse.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: "marker",
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// How an observer judges a marker without touching the lock: its
    /// process is alive and its deadline (plus `grace`) has not passed.
    pub fn looks_live(&self, now: Timestamp, grace: Duration) -> bool {
        now <= self.deadline.plus(grace) && pid_alive(self.pid)
    }
}

/// True when a process with this pid exists (ours or another user's).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fizeau_marker_parses_without_a_token() {
        let bytes = br#"{"pid":1,"started_at":"2026-11-28T10:00:00.123456789Z","deadline":"2026-11-28T10:00:10.123456789Z"}"#;
        let m = super::Marker::parse(bytes, std::path::Path::new("x.refreshing")).unwrap();
        assert_eq!((m.pid, m.token.as_str(), m.pgid), (1, "", None));
        assert!(m.deadline > m.started_at);
    }

    use super::*;

    #[test]
    fn sidecar_records_the_payload_inode_and_older_sidecars_still_parse() {
        let id = SourceId::parse("t/x").unwrap();
        let mut meta = Meta::new(&id);
        let old = serde_json::to_vec(&meta).unwrap();
        assert!(!String::from_utf8_lossy(&old).contains("inode"));
        assert_eq!(Meta::parse(&old, Path::new("m")).unwrap().inode, None);
        meta.inode = Some(1234);
        let new = serde_json::to_vec(&meta).unwrap();
        assert_eq!(Meta::parse(&new, Path::new("m")).unwrap().inode, Some(1234));
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let t = Timestamp::from(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.unix_ms(), 1_700_000_000_123);
    }

    #[test]
    fn sidecar_round_trips_and_flattens_validators() {
        let id = SourceId::parse("discovery/x").unwrap();
        let mut meta = Meta::new(&id);
        meta.revision = 3;
        meta.validators.etag = Some("\"abc\"".into());
        meta.last_error = Some("boom".into());
        let json = serde_json::to_vec(&meta).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"etag\":\"\\\"abc\\\"\""), "{text}");
        assert!(text.contains("\"format\":2"), "{text}");
        assert_eq!(Meta::parse(&json, Path::new("x")).unwrap(), meta);
    }

    #[test]
    fn sidecar_parse_rejects_garbage_and_other_formats() {
        let p = Path::new("/r/t/x.meta.json");
        let err = Meta::parse(b"{not json", p).unwrap_err().to_string();
        assert!(err.contains("corrupt sidecar /r/t/x.meta.json"), "{err}");
        let id = SourceId::parse("t/x").unwrap();
        let mut meta = Meta::new(&id);
        for bad in [0, 3] {
            meta.format = bad;
            let err = Meta::parse(&serde_json::to_vec(&meta).unwrap(), p).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("unsupported format {bad}"))
            );
        }
        // Format 1's sidecar has the same fields: read, and written as 2.
        meta.format = 1;
        let read = Meta::parse(&serde_json::to_vec(&meta).unwrap(), p).unwrap();
        assert_eq!(read.format, FORMAT);
    }

    #[test]
    fn damaged_sidecars_keep_a_legible_revision() {
        let p = Path::new("/r/t/x.meta.json");
        let id = SourceId::parse("t/x").unwrap();
        let mut meta = Meta::new(&id);
        meta.revision = 41;
        let good = serde_json::to_vec_pretty(&meta).unwrap();
        assert_eq!(
            Sidecar::judge(Some(&good), p),
            Sidecar::Intact(Box::new(meta))
        );
        assert_eq!(Sidecar::judge(None, p), Sidecar::Missing);
        let half = Sidecar::judge(Some(&good[..good.len() / 2]), p);
        let damage = half.damage().expect("damaged");
        assert_eq!(damage.revision, Some(41));
        assert!(
            damage.reason.contains("/r/t/x.meta.json"),
            "{}",
            damage.reason
        );
        let garbage = Sidecar::judge(Some(b"\x00\xff"), p);
        assert_eq!(garbage.damage().map(|d| d.revision), Some(None));
        assert_eq!(salvage_revision(b"{\"revision\" :  7,"), Some(7));
        assert_eq!(salvage_revision(b"{\"revision\": -1"), None);
        assert_eq!(
            salvage_revision(b"{\"revision\": 99999999999999999999999"),
            None
        );
    }

    #[test]
    fn marker_liveness_uses_pid_and_deadline() {
        let m = Marker::new(Duration::from_secs(10));
        assert_eq!(m.pid, std::process::id());
        let parsed = Marker::parse(&serde_json::to_vec(&m).unwrap(), Path::new("m")).unwrap();
        assert_eq!(parsed, m);
        let old = r#"{"pid":1,"started_at":"2023-11-14T22:13:20.123Z","deadline":"2023-11-14T22:13:20.123Z","token":"x"}"#;
        let old =
            Marker::parse(old.as_bytes(), Path::new("m")).expect("a marker without pgid parses");
        assert_eq!(old.pgid, None);
        assert!(m.looks_live(Timestamp::now(), Duration::ZERO));
        let late = m.deadline.plus(Duration::from_secs(1));
        assert!(!m.looks_live(late, Duration::ZERO));
        let dead = Marker {
            pid: u32::MAX - 1,
            ..m.clone()
        };
        assert!(!dead.looks_live(Timestamp::now(), Duration::ZERO));
    }
}
