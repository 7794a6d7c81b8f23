//! Helpers shared by the benchmarks: a clock that is the same in every
//! process, paired batch timing, and summaries.
//!
//! Every figure a benchmark reports is a ratio against the raw operation
//! measured in the same run, so that a slow or busy machine moves both sides
//! together. Absolute times are printed for context only.

#![allow(dead_code)]

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Result, bail};

/// Nanoseconds of `CLOCK_MONOTONIC`: one clock for every process on the host
/// (`std::time::Instant` cannot be compared across processes).
///
/// # Errors
///
/// When `clock_gettime` fails (it does not on Linux).
pub fn monotonic_ns() -> Result<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        bail!(
            "clock_gettime(CLOCK_MONOTONIC): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(ts.tv_sec * 1_000_000_000 + ts.tv_nsec)
}

/// Per-operation times (ns) of a subject and its base, one pair per round.
#[derive(Debug, Default)]
pub struct Paired {
    /// The operation under test, ns per op, one entry per round.
    pub subject: Vec<f64>,
    /// The raw operation, ns per op, one entry per round.
    pub base: Vec<f64>,
}

impl Paired {
    /// Median ns per op of the subject.
    pub fn subject_median(&self) -> f64 {
        median(&self.subject)
    }

    /// Median ns per op of the base.
    pub fn base_median(&self) -> f64 {
        median(&self.base)
    }

    /// Median of subject / median of base.
    pub fn ratio_of_medians(&self) -> f64 {
        self.subject_median() / self.base_median()
    }

    /// Median of the per-round ratios (each round timed both back to back).
    pub fn median_of_ratios(&self) -> f64 {
        let ratios: Vec<f64> = self
            .subject
            .iter()
            .zip(&self.base)
            .map(|(s, b)| s / b)
            .collect();
        median(&ratios)
    }
}

/// Times `rounds` rounds of `batch` calls of each closure, alternating which
/// goes first, after one untimed warm-up round. Returns ns per call.
///
/// # Errors
///
/// The first error either closure returns.
pub fn paired(
    rounds: usize,
    batch: usize,
    mut subject: impl FnMut() -> Result<()>,
    mut base: impl FnMut() -> Result<()>,
) -> Result<Paired> {
    let mut out = Paired::default();
    time_batch(batch, &mut subject)?;
    time_batch(batch, &mut base)?;
    for round in 0..rounds {
        let (s, b) = if round % 2 == 0 {
            let s = time_batch(batch, &mut subject)?;
            (s, time_batch(batch, &mut base)?)
        } else {
            let b = time_batch(batch, &mut base)?;
            (time_batch(batch, &mut subject)?, b)
        };
        out.subject.push(s);
        out.base.push(b);
    }
    Ok(out)
}

/// Times `batch` calls of `op`; ns per call.
///
/// # Errors
///
/// The first error `op` returns.
pub fn time_batch(batch: usize, op: &mut impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..batch {
        black_box(op()?);
    }
    Ok(start.elapsed().as_nanos() as f64 / batch as f64)
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The nearest-rank percentile `p` (0-100) of `values` (0 when empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The largest of `values` (0 when empty).
pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// The smallest of `values` (0 when empty).
pub fn min(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The mean of `values` (0 when empty).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// A JSON document of exactly `len` bytes (`len` >= 8).
pub fn json_of_len(len: usize) -> Vec<u8> {
    let mut doc = b"{\"d\":\"".to_vec();
    doc.resize(len - 2, b'a');
    doc.extend_from_slice(b"\"}");
    doc
}

/// "met" or "NOT met".
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
