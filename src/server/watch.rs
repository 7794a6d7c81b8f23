//! A watching connection: a task that forwards events until the client
//! closes or the daemon shuts down. Lines the client sends meanwhile are
//! read and ignored. A client that falls so far behind that events were
//! dropped for it is told so (`busy`, with how many) and closed, rather
//! than left to miss them unawares.

use std::io;

use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{EventStream, Limits};
use crate::protocol::{ErrorCode, Line, Response, WireError, read_line, to_line};

/// Forwards `events` on `stream`; `_slot` keeps its place under the
/// watch cap until it ends.
pub(super) async fn forward(
    stream: UnixStream,
    events: EventStream,
    limits: Limits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(e) = run(stream, events, limits, shutdown).await {
        tracing::debug!("watch connection ended: {e}");
    }
}

async fn run(
    stream: UnixStream,
    mut events: EventStream,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (read, mut writer) = stream.into_split();
    let (mut reader, mut buf) = (BufReader::new(read), Vec::new());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            read = read_line(&mut reader, &mut buf) => match read? {
                Line::Eof | Line::TooLarge => return Ok(()),
                Line::Text(_) | Line::Invalid(_) => {}
            },
            event = events.next() => {
                let text = match &event {
                    Ok(Some(event)) => to_line(event),
                    Ok(None) => return Ok(()),
                    Err(missed) => to_line(&fell_behind(*missed)),
                };
                let text = text.map_err(io::Error::other)?;
                super::conn::send(&mut writer, text.as_bytes(), limits.write_timeout).await?;
                if let Err(missed) = event {
                    tracing::warn!("a watch client fell behind by {missed} events; closed it");
                    return Ok(());
                }
            }
        }
    }
}

/// The last line to a watch client that missed `missed` events.
fn fell_behind(missed: u64) -> Response {
    let message = format!(
        "this watch fell behind and {missed} events were dropped for it; \
         it is closed: watch again, and read `status` for what changed meanwhile"
    );
    Response::failure(None, WireError::new(ErrorCode::Busy, message))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;
    use tokio::sync::{Semaphore, broadcast};

    use super::*;
    use crate::protocol::{Event, EventKind};
    use crate::source::SourceId;

    #[tokio::test]
    async fn a_client_that_fell_behind_is_told_how_far_and_closed() {
        let (tx, rx) = broadcast::channel(2);
        let events = EventStream::new(rx, None);
        let id = SourceId::parse("t/x").expect("id");
        for _ in 0..5 {
            let event = Event::new(
                EventKind::Committed,
                id.clone(),
                std::time::SystemTime::now(),
            );
            tx.send(event).expect("send");
        }
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let slot = std::sync::Arc::new(Semaphore::new(1))
            .acquire_owned()
            .await
            .expect("slot");
        let task = tokio::spawn(forward(
            ours,
            events,
            Limits::default(),
            CancellationToken::new(),
            slot,
        ));
        let mut lines = BufReader::new(theirs).lines();
        let last = lines.next_line().await.expect("read").expect("a line");
        let last: serde_json::Value = serde_json::from_str(&last).expect("JSON");
        assert_eq!(last["ok"], false, "{last}");
        assert_eq!(last["error"]["code"], "busy", "{last}");
        let message = last["error"]["message"].as_str().expect("message");
        assert!(message.contains("3 events were dropped"), "{message}");
        assert_eq!(lines.next_line().await.expect("read"), None, "closed");
        task.await.expect("forwarder");
    }
}
