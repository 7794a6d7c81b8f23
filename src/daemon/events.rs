//! The watch events between two looks at a source's files.

use std::time::SystemTime;

use super::view::Look;
use crate::protocol::{Event, EventKind};
use crate::source::SourceId;

/// The events between two looks at a source.
pub(super) fn changes(id: &SourceId, before: &Look, now: &Look) -> Vec<Event> {
    let at = SystemTime::now();
    let mut events = Vec::new();
    if before.present() && !now.present() {
        events.push(Event::new(EventKind::Removed, id.clone(), at));
    }
    if now.attempts.revision > before.attempts.revision {
        let mut e = Event::new(EventKind::Committed, id.clone(), at);
        e.revision = Some(now.attempts.revision);
        events.push(e);
    }
    let (tried, error) = (now.attempts.last_attempt_at, &now.attempts.last_error);
    if tried != before.attempts.last_attempt_at && tried.is_some() && error.is_some() {
        let mut e = Event::new(EventKind::Failed, id.clone(), at);
        e.error.clone_from(error);
        events.push(e);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Attempts;
    use crate::meta::Timestamp;

    fn id() -> SourceId {
        SourceId::parse("a/b").expect("valid")
    }

    fn look(revision: u64, attempt: Option<Timestamp>, error: Option<&str>) -> Look {
        Look {
            payload: true,
            sidecar: true,
            attempts: Attempts {
                revision,
                last_attempt_at: attempt,
                last_error: error.map(str::to_owned),
                ..Attempts::default()
            },
            marker: None,
        }
    }

    #[test]
    fn a_new_revision_is_one_committed_event() {
        let events = changes(
            &id(),
            &look(1, None, None),
            &look(2, Some(Timestamp::now()), None),
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, EventKind::Committed);
        assert_eq!(events[0].revision, Some(2));
    }

    #[test]
    fn a_failed_attempt_carries_its_error_and_a_removal_is_seen() {
        let before = look(1, None, None);
        let now = look(1, Some(Timestamp::now()), Some("exit status 3"));
        let events = changes(&id(), &before, &now);
        assert_eq!(events[0].event, EventKind::Failed);
        assert_eq!(events[0].error.as_deref(), Some("exit status 3"));
        let gone = changes(&id(), &before, &Look::default());
        assert_eq!(gone[0].event, EventKind::Removed);
    }
}
