//! The shared tier's line in `discocache status`.

use crate::protocol::SharedStatus;

/// The shared tier's line in `status`: up with its epoch, or down and why.
pub(super) fn line(s: &SharedStatus) -> String {
    match (s.up, &s.last_error) {
        (true, _) => format!(
            "shared tier {}: up, epoch {}, {} commands, {} seeded",
            s.url,
            s.epoch.as_deref().unwrap_or("-"),
            s.commands,
            s.seeded
        ),
        (false, Some(e)) => format!("shared tier {}: DOWN: {e}", s.url),
        (false, None) => format!("shared tier {}: not reached yet", s.url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_tier_line_says_down_and_why() {
        let mut s = SharedStatus {
            url: "redis://127.0.0.1:6379/0".into(),
            up: false,
            epoch: Some("ab12".into()),
            last_error: Some("check epoch: connection refused".into()),
            commands: 4,
            seeded: 0,
        };
        assert_eq!(
            line(&s),
            "shared tier redis://127.0.0.1:6379/0: DOWN: check epoch: connection refused"
        );
        s.up = true;
        assert_eq!(
            line(&s),
            "shared tier redis://127.0.0.1:6379/0: up, epoch ab12, 4 commands, 0 seeded"
        );
    }
}
