//! The statistics in the Prometheus text exposition format (0.0.4).
//!
//! Labels are bounded: `status`, `tier`, `source` (configured sources only
//! ever grow the set by config edits, never by requests) and `outcome`.

use std::fmt::Write;

use super::{Counters, Snapshot, Status};

/// An outcome label and how to read its counter.
type Outcome = (&'static str, fn(&Counters) -> u64);

/// Renders a snapshot as Prometheus text.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
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
            &[("status", status.as_str())],
            value,
        );
    }
    family(
        &mut out,
        "discocache_keys_total",
        "gauge",
        "Sources with a payload on disk.",
    );
    line(&mut out, "discocache_keys_total", &[], snap.keys_total);
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
    reads(&mut out, snap);
    refreshes(&mut out, snap);
    out
}

fn reconcile(out: &mut String, snap: &Snapshot) {
    let name = "discocache_last_reconcile_duration_milliseconds";
    family(
        out,
        name,
        "gauge",
        "How long the last reconcile against the disk took.",
    );
    line(out, name, &[], snap.last_duration_ms.unwrap_or(0));
}

fn reads(out: &mut String, snap: &Snapshot) {
    let name = "discocache_reads_total";
    family(out, name, "counter", "Reads served, by outcome.");
    let outcomes: [Outcome; 3] = [
        ("fresh_hit", |c| c.fresh_hits),
        ("stale_hit", |c| c.stale_hits),
        ("miss", |c| c.misses),
    ];
    per_source(out, snap, name, &outcomes);
}

fn refreshes(out: &mut String, snap: &Snapshot) {
    let name = "discocache_refreshes_total";
    family(out, name, "counter", "Refreshes finished, by outcome.");
    let outcomes: [Outcome; 4] = [
        ("ok", |c| c.refresh_ok),
        ("failed", |c| c.refresh_failed),
        ("joined", |c| c.refresh_joined),
        ("not_modified", |c| c.refresh_not_modified),
    ];
    per_source(out, snap, name, &outcomes);
}

fn per_source(out: &mut String, snap: &Snapshot, name: &str, outcomes: &[Outcome]) {
    for (id, counters) in &snap.sources {
        let source = id.to_string();
        for (outcome, get) in outcomes {
            let labels = [
                ("tier", id.tier()),
                ("source", source.as_str()),
                ("outcome", outcome),
            ];
            line(out, name, &labels, get(counters));
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample. Label values are source names, tiers and fixed words, which
/// never hold `"`, `\` or a newline, so they need no escaping.
fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
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
            sources: BTreeMap::from([(id, counters)]),
        };
        let text = render(&snap);
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
    }
}
