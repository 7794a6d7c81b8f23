//! A watching connection: a task that forwards events until the client
//! closes or the daemon shuts down. Lines the client sends meanwhile are
//! read and ignored.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{EventStream, Limits};
use crate::protocol::{Line, read_line, to_line};

/// Forwards `events` on `stream`; `_slot` keeps its place under the
/// connection cap until it ends.
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
                let Some(event) = event else { return Ok(()) };
                let text = to_line(&event).map_err(io::Error::other)?;
                write_with_timeout(&mut writer, text.as_bytes(), limits.write_timeout).await?;
            }
        }
    }
}

async fn write_with_timeout<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    match tokio::time::timeout(limit, writer.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take its events in time",
        )),
    }
}
