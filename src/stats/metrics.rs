//! The statistics in the Prometheus text exposition format (0.0.4).
//!
//! Labels are bounded: `status`, `tier`, `source` and `outcome`. Only the
//! sources configured now are shown: a source removed from the config (or
//! pruned) leaves the output, and no request can add one.

use std::fmt::{self, Display, Write};
use std::time::Duration;

use super::{Counters, Snapshot, Status};
use crate::source::SourceId;

/// What the metrics show of one configured source besides its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGauge<'a> {
    /// The source.
    pub id: &'a SourceId,
    /// How long ago its payload was fetched; `None` when it has none.
    pub age: Option<Duration>,
    /// Whether its payload is fresh (within its ttl).
    pub fresh: bool,
}

/// What the metrics show of the shared tier (only with `[shared]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedGauge {
    /// The last operation reached the server.
    pub up: bool,
    /// Operations sent to the server.
    pub commands: u64,
    /// Local copies written to it after a new epoch.
    pub seeded: u64,
}

/// An outcome label and how to read its counter.
type Outcome = (&'static str, fn(&Counters) -> u64);

/// A label's value, written as it is (see [`line`]).
type Label<'a> = (&'static str, &'a dyn Display);

/// About how many bytes the lines of one source take (9 samples).
const BYTES_PER_SOURCE: usize = 9 * 112;

/// Renders the daemon-level figures of `head` as Prometheus text, with the
/// gauges and counters of the configured `sources` (in their order) and no
/// others. Each source's counters are read through `counters` (zeros for a
/// source not counted yet), so that no copy of every counter is made. The
/// text is written into one `String` sized up front, with no allocation per
/// sample.
pub fn render_with(
    snap: &Snapshot,
    sources: &[SourceGauge<'_>],
    counters: impl Fn(&SourceId) -> Counters,
) -> String {
    let mut out = String::with_capacity(4096 + sources.len() * BYTES_PER_SOURCE);
    family(
        &mut out,
        "discocache_status",
        "gauge",
        "1 for the daemon's current status.",
    );
    for status in Status::ALL {
        let value = u8::from(snap.status == status);
        line(
            &mut out,
            "discocache_status",
            &[("status", &status.as_str())],
            value,
        );
    }
    family(
        &mut out,
        "discocache_keys_stored",
        "gauge",
        "Sources with a payload on disk.",
    );
    line(&mut out, "discocache_keys_stored", &[], snap.keys_total);
    family(
        &mut out,
        "discocache_keys",
        "gauge",
        "Sources with a payload on disk, per tier.",
    );
    for (tier, n) in &snap.keys_by_tier {
        line(&mut out, "discocache_keys", &[("tier", tier)], *n);
    }
    reconcile(&mut out, snap);
    ages(&mut out, sources);
    reads(&mut out, sources, &counters);
    refreshes(&mut out, sources, &counters);
    out
}

/// Appends the shared tier's families to `out` (after [`render_with`]).
pub fn shared(out: &mut String, tier: &SharedGauge) {
    let name = "discocache_shared_up";
    let help = "1 when the last operation reached the shared tier (Redis), else 0.";
    family(out, name, "gauge", help);
    line(out, name, &[], u8::from(tier.up));
    let name = "discocache_shared_commands_total";
    family(out, name, "counter", "Operations sent to the shared tier.");
    line(out, name, &[], tier.commands);
    let name = "discocache_shared_seeded_total";
    let help = "Local copies written to the shared tier after it came back new.";
    family(out, name, "counter", help);
    line(out, name, &[], tier.seeded);
}

fn reconcile(out: &mut String, snap: &Snapshot) {
    let name = "discocache_last_reconcile_duration_seconds";
    family(
        out,
        name,
        "gauge",
        "How long the last reconcile against the disk took.",
    );
    let ms = snap.last_duration_ms.unwrap_or(0);
    line(out, name, &[], Seconds(Duration::from_millis(ms)));
}

/// The per-source age and freshness gauges.
fn ages(out: &mut String, sources: &[SourceGauge<'_>]) {
    let name = "discocache_source_age_seconds";
    family(
        out,
        name,
        "gauge",
        "Seconds since the source's payload was fetched (absent when it has none).",
    );
    for s in sources {
        if let Some(age) = s.age {
            let labels: [Label<'_>; 2] = [("tier", &s.id.tier()), ("source", s.id)];
            line(out, name, &labels, Seconds(age));
        }
    }
    let name = "discocache_source_fresh";
    family(
        out,
        name,
        "gauge",
        "1 when the source's payload is within its ttl, else 0 (stale, expired or none).",
    );
    for s in sources {
        let labels: [Label<'_>; 2] = [("tier", &s.id.tier()), ("source", s.id)];
        line(out, name, &labels, u8::from(s.fresh));
    }
}

/// Seconds with millisecond precision.
struct Seconds(Duration);

impl Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.0.as_secs_f64())
    }
}

/// How [`render_with`] reads a source's counters.
type CountersOf<'a> = &'a dyn Fn(&SourceId) -> Counters;

fn reads(out: &mut String, sources: &[SourceGauge<'_>], counters: CountersOf<'_>) {
    let name = "discocache_reads_total";
    family(out, name, "counter", "Reads served, by outcome.");
    let outcomes: [Outcome; 3] = [
        ("fresh_hit", |c| c.fresh_hits),
        ("stale_hit", |c| c.stale_hits),
        ("miss", |c| c.misses),
    ];
    per_source(out, sources, counters, name, &outcomes);
}

fn refreshes(out: &mut String, sources: &[SourceGauge<'_>], counters: CountersOf<'_>) {
    let name = "discocache_refreshes_total";
    family(out, name, "counter", "Refreshes finished, by outcome.");
    let outcomes: [Outcome; 4] = [
        ("ok", |c| c.refresh_ok),
        ("failed", |c| c.refresh_failed),
        ("joined", |c| c.refresh_joined),
        ("not_modified", |c| c.refresh_not_modified),
    ];
    per_source(out, sources, counters, name, &outcomes);
}

/// One line per configured source and outcome; a source not counted yet
/// shows zeros.
fn per_source(
    out: &mut String,
    sources: &[SourceGauge<'_>],
    counters: CountersOf<'_>,
    name: &str,
    outcomes: &[Outcome],
) {
    for SourceGauge { id, .. } in sources {
        let counted = counters(id);
        let tier = id.tier();
        for (outcome, get) in outcomes {
            let labels: [Label<'_>; 3] = [("tier", &tier), ("source", id), ("outcome", outcome)];
            line(out, name, &labels, get(&counted));
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample. Label values are source names, tiers and fixed words, which
/// never hold `"`, `\` or a newline, so they need no escaping.
fn line(out: &mut String, name: &str, labels: &[Label<'_>], value: impl Display) {
    out.push_str(name);
    for (i, (k, v)) in labels.iter().enumerate() {
        let open = if i == 0 { '{' } else { ',' };
        let _ = write!(out, "{open}{k}=\"{v}\"");
    }
    if !labels.is_empty() {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::source::SourceId;

    /// [`render_with`] reading the counters of `snap` itself.
    fn render(snap: &Snapshot, sources: &[SourceGauge<'_>]) -> String {
        render_with(snap, sources, |id| {
            snap.sources.get(id).cloned().unwrap_or_default()
        })
    }

    #[test]
    fn renders_status_keys_and_labelled_counters() {
        let id = SourceId::parse("discovery/x").expect("valid");
        let counters = Counters {
            fresh_hits: 3,
            refresh_failed: 2,
            ..Counters::default()
        };
        let snap = Snapshot {
            status: Status::Ready,
            keys_total: 1,
            keys_by_tier: BTreeMap::from([("discovery".to_owned(), 1)]),
            last_reconciled_at: None,
            last_duration_ms: Some(4),
            last_error: None,
            sources: BTreeMap::from([(id.clone(), counters)]),
        };
        let gauge = SourceGauge {
            id: &id,
            age: Some(Duration::from_millis(1500)),
            fresh: true,
        };
        let text = render(&snap, &[gauge]);
        assert!(
            text.contains("discocache_status{status=\"ready\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("discocache_status{status=\"seeding\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("discocache_keys{tier=\"discovery\"} 1\n"),
            "{text}"
        );
        let hit = "discocache_reads_total{tier=\"discovery\",source=\"discovery/x\",outcome=\"fresh_hit\"} 3\n";
        assert!(text.contains(hit), "{text}");
        let failed = "discocache_refreshes_total{tier=\"discovery\",source=\"discovery/x\",outcome=\"failed\"} 2\n";
        assert!(text.contains(failed), "{text}");
        assert!(
            text.contains("# TYPE discocache_refreshes_total counter\n"),
            "{text}"
        );
        let age =
            "discocache_source_age_seconds{tier=\"discovery\",source=\"discovery/x\"} 1.500\n";
        assert!(text.contains(age), "{text}");
        let fresh = "discocache_source_fresh{tier=\"discovery\",source=\"discovery/x\"} 1\n";
        assert!(text.contains(fresh), "{text}");
    }

    #[test]
    fn counters_read_one_at_a_time_render_as_a_snapshot_does() {
        let id = SourceId::parse("discovery/x").expect("valid");
        let counters = Counters {
            stale_hits: 5,
            refresh_ok: 1,
            ..Counters::default()
        };
        let snap = Snapshot {
            status: Status::Ready,
            keys_total: 1,
            keys_by_tier: BTreeMap::from([("discovery".to_owned(), 1)]),
            last_reconciled_at: None,
            last_duration_ms: None,
            last_error: None,
            sources: BTreeMap::from([(id.clone(), counters.clone())]),
        };
        let head = Snapshot {
            sources: BTreeMap::new(),
            ..snap.clone()
        };
        let gauge = SourceGauge {
            id: &id,
            age: None,
            fresh: false,
        };
        let gauges = [gauge];
        let streamed = render_with(&head, &gauges, |_| counters.clone());
        assert_eq!(streamed, render(&snap, &gauges));
        assert!(
            streamed.contains("outcome=\"stale_hit\"} 5\n"),
            "{streamed}"
        );
    }

    #[test]
    fn the_shared_tier_down_shows_up_0_and_its_counters() {
        let mut text = String::new();
        let tier = SharedGauge {
            up: false,
            commands: 12,
            seeded: 3,
        };
        shared(&mut text, &tier);
        assert!(
            text.contains("# TYPE discocache_shared_up gauge\n"),
            "{text}"
        );
        assert!(text.contains("\ndiscocache_shared_up 0\n"), "{text}");
        assert!(
            text.contains("\ndiscocache_shared_commands_total 12\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndiscocache_shared_seeded_total 3\n"),
            "{text}"
        );
    }

    #[test]
    fn a_source_no_longer_configured_is_not_shown() {
        let gone = SourceId::parse("discovery/gone").expect("valid");
        let kept = SourceId::parse("discovery/kept").expect("valid");
        let counted = Counters {
            misses: 1,
            ..Counters::default()
        };
        let snap = Snapshot {
            status: Status::Ready,
            keys_total: 0,
            keys_by_tier: BTreeMap::new(),
            last_reconciled_at: None,
            last_duration_ms: None,
            last_error: None,
            sources: BTreeMap::from([(gone, counted.clone()), (kept.clone(), counted)]),
        };
        let gauge = SourceGauge {
            id: &kept,
            age: None,
            fresh: false,
        };
        let text = render(&snap, &[gauge]);
        assert!(!text.contains("discovery/gone"), "{text}");
        assert!(
            text.contains("source=\"discovery/kept\",outcome=\"miss\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("discocache_source_age_seconds{"), "{text}");
    }
}
