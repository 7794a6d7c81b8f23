//! The guard against bad refreshes: a fetched payload that is empty (`[]`,
//! `{}`, `""`, `null`), smaller than `min_bytes`, or that shrank by more than
//! `max_shrink` of the current payload is refused (a failure: recorded,
//! backing off, the old payload kept) unless the refresh is forced. It keeps
//! good data: with no current payload, or an empty one, anything passes.

/// The default `max_shrink`: a payload under a tenth of the current one is
/// refused.
pub const DEFAULT_MAX_SHRINK: f64 = 0.9;

/// What a fetched payload must pass to replace the current one.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// On: refuse empty, too small and shrunken payloads. Off for a forced
    /// refresh.
    pub enabled: bool,
    /// Smallest payload accepted, in bytes (0: any size).
    pub min_bytes: u64,
    /// Largest accepted shrink, as a fraction of the current payload's
    /// size: 0.9 refuses a payload under a tenth of the current one; 1.0
    /// accepts any shrink.
    pub max_shrink: f64,
}

// Compared bit for bit, so that equality stays total (a NaN equals itself).
impl PartialEq for Guard {
    fn eq(&self, other: &Self) -> bool {
        (self.enabled, self.min_bytes, self.max_shrink.to_bits())
            == (other.enabled, other.min_bytes, other.max_shrink.to_bits())
    }
}

impl Eq for Guard {}

impl Default for Guard {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: 0,
            max_shrink: DEFAULT_MAX_SHRINK,
        }
    }
}

impl Guard {
    /// This guard switched off (a forced refresh takes whatever JSON comes).
    #[must_use]
    pub fn off(self) -> Self {
        Self {
            enabled: false,
            ..self
        }
    }

    /// Why `bytes` may not replace the current payload of `current` bytes,
    /// or `None` when it may. `current` is `None` when there is no good
    /// data to keep (no payload, or an empty one: see [`is_empty_json`]):
    /// anything passes then.
    pub fn refuses(&self, bytes: &[u8], current: Option<u64>) -> Option<String> {
        let current = current?;
        if !self.enabled {
            return None;
        }
        let size = bytes.len() as u64;
        if is_empty_json(bytes) {
            let shown = String::from_utf8_lossy(bytes.trim_ascii());
            return Some(format!("refused: payload is empty ({shown})"));
        }
        if size < self.min_bytes {
            return Some(format!(
                "refused: payload of {size} bytes is under the guard's min_bytes {}",
                self.min_bytes
            ));
        }
        #[allow(clippy::cast_precision_loss)]
        let floor = current as f64 * (1.0 - self.max_shrink);
        #[allow(clippy::cast_precision_loss)]
        let shrank = (size as f64) < floor;
        shrank.then(|| {
            format!(
                "refused: payload shrank from {current} to {size} bytes (guard max_shrink {})",
                self.max_shrink
            )
        })
    }
}

/// `[]`, `{}`, `""` or `null`, whitespace aside.
pub fn is_empty_json(bytes: &[u8]) -> bool {
    if bytes.len() > 64 {
        return false;
    }
    let packed: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    matches!(packed.as_slice(), b"[]" | b"{}" | b"\"\"" | b"null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payloads_are_refused() {
        let g = Guard::default();
        for empty in ["[]", "{}", "\"\"", "null", " [ ]\n", "{ }"] {
            let why = g.refuses(empty.as_bytes(), Some(7)).expect(empty);
            assert!(why.contains("empty"), "{why}");
            // Nothing to keep: no payload, or an empty one.
            assert!(g.refuses(empty.as_bytes(), None).is_none(), "{empty}");
            assert!(is_empty_json(empty.as_bytes()));
        }
        assert!(g.refuses(b"[1]", Some(7)).is_none());
        assert!(g.refuses(b"0", Some(7)).is_none());
    }

    #[test]
    fn shrink_past_max_shrink_is_refused() {
        let g = Guard {
            max_shrink: 0.5,
            ..Guard::default()
        };
        let current = Some(100);
        let why = g.refuses(&[b'1'; 49], current).unwrap();
        assert_eq!(
            why,
            "refused: payload shrank from 100 to 49 bytes (guard max_shrink 0.5)"
        );
        assert!(g.refuses(&[b'1'; 50], current).is_none());
        assert!(g.refuses(&[b'1'; 5], None).is_none());
        let default = Guard::default();
        assert!(default.refuses(&[b'1'; 9], current).is_some());
        assert!(default.refuses(&[b'1'; 10], current).is_none());
    }

    #[test]
    fn min_bytes_and_off() {
        let g = Guard {
            min_bytes: 10,
            ..Guard::default()
        };
        let current = Some(13);
        let why = g.refuses(b"[1,2]", current).unwrap();
        assert!(why.contains("min_bytes 10"), "{why}");
        assert!(g.refuses(b"[1,2]", None).is_none());
        assert!(g.off().refuses(b"[]", current).is_none());
        assert!(g.off().refuses(b"[1]", current).is_none());
    }
}
