//! Jittered exponential backoff after failures.

use std::time::Duration;

/// Share of the delay added or removed at random.
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt after `failures` consecutive failures
/// (1 for the first): `min(cap, base * 2^(failures-1))`, then scaled by
/// `jitter`, a factor in `[1 - JITTER, 1 + JITTER]`, and never more than
/// `cap` (at the cap the jitter only shortens the delay).
pub fn delay(base: Duration, cap: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    let raw = base.saturating_mul(1u32 << exp.min(31));
    let bounded = raw.min(cap);
    let factor = jitter.clamp(1.0 - JITTER, 1.0 + JITTER);
    bounded.mul_f64(factor).min(cap)
}

/// A random jitter factor in `[1 - JITTER, 1 + JITTER]`.
pub fn random_jitter() -> f64 {
    1.0 - JITTER + fastrand::f64() * 2.0 * JITTER
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_base_until_cap() {
        let (base, cap) = (10 * S, 300 * S);
        let got: Vec<u64> = (1..=7)
            .map(|n| delay(base, cap, n, 1.0).as_secs())
            .collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(delay(10 * S, 300 * S, 1, 0.8), 8 * S);
        assert_eq!(delay(10 * S, 300 * S, 1, 1.2), 12 * S);
        assert_eq!(delay(10 * S, 300 * S, 1, 5.0), 12 * S);
        for _ in 0..1000 {
            let j = random_jitter();
            assert!((0.8..=1.2).contains(&j), "{j}");
        }
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        assert_eq!(delay(10 * S, 3600 * S, u32::MAX, 1.0), 3600 * S);
        assert_eq!(delay(10 * S, 3600 * S, 0, 1.0), 10 * S);
    }

    #[test]
    fn jitter_never_goes_past_the_cap() {
        assert_eq!(delay(10 * S, 300 * S, 9, 1.2), 300 * S);
        assert_eq!(delay(10 * S, 300 * S, 9, 0.8), 240 * S);
    }
}
