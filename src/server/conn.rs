//! One connection, as one task: read a request line (the idle timeout runs
//! from the start of the wait for it), have the service answer it, write
//! the answer (under the write timeout), until the client closes, idles
//! out, sends an oversize line, or the daemon shuts down. A `watch` takes
//! a watch slot, gives its request slot back and forwards events.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Answer, EventStream, Limits, Service, watch};
use crate::protocol::{ErrorCode, Line, WireError, parse_request, read_line};

/// What every connection task shares.
pub(super) struct Ctx<S> {
    pub service: Arc<S>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    /// The watch cap.
    pub watches: Arc<Semaphore>,
}

/// Serves one connection; `slot` is its place under the connection cap.
pub(super) async fn serve<S: Service>(
    stream: UnixStream,
    ctx: Arc<Ctx<S>>,
    slot: OwnedSemaphorePermit,
) {
    if let Err(e) = requests(stream, &ctx, slot).await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Answers a client past the cap with `busy` and closes.
pub(super) async fn busy(mut stream: UnixStream, write_timeout: Duration) {
    let message = "the daemon serves as many connections as it may; try again shortly";
    let line = error_line(WireError::new(ErrorCode::Busy, message));
    if let Err(e) = send(&mut stream, line.as_bytes(), write_timeout).await {
        tracing::debug!("could not tell a client it was busy: {e}");
    }
}

async fn requests<S: Service>(
    stream: UnixStream,
    ctx: &Ctx<S>,
    slot: OwnedSemaphorePermit,
) -> io::Result<()> {
    let limits = ctx.limits;
    let (read, mut writer) = stream.into_split();
    let (mut reader, mut buf) = (BufReader::new(read), Vec::new());
    loop {
        let line = tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout(limits.idle_timeout, read_line(&mut reader, &mut buf)) => {
                match read {
                    Ok(line) => line?,
                    Err(_) => {
                        tracing::debug!("closed a connection at its idle timeout");
                        return Ok(());
                    }
                }
            }
        };
        let answer = match line {
            Line::Eof => return Ok(()),
            Line::TooLarge => {
                let line = error_line(WireError::too_large());
                return send(&mut writer, line.as_bytes(), limits.write_timeout).await;
            }
            Line::Invalid(e) => {
                let msg = format!("request line is not UTF-8: {e}");
                Answer::error(None, WireError::bad_request(msg))
            }
            Line::Text(text) if text.trim().is_empty() => continue,
            Line::Text(text) => match parse_request(&text) {
                Ok(request) => ctx.service.call(request).await,
                Err(rejected) => Answer::of(&rejected.into_response(), None),
            },
        };
        match answer {
            Answer::Line(text) => send(&mut writer, text.as_bytes(), limits.write_timeout).await?,
            Answer::Chunks(chunks) => {
                send_chunks(&mut writer, chunks, limits.write_timeout).await?
            }
            Answer::Watch {
                first,
                stream: events,
            } => {
                let stream = reader
                    .into_inner()
                    .reunite(writer)
                    .map_err(io::Error::other)?;
                drop(slot);
                return start_watch(stream, first, events, ctx).await;
            }
        }
    }
}

/// Turns the connection into a watch under the watch cap (its request
/// slot is given back already): `busy` when the cap is reached.
async fn start_watch<S>(
    mut stream: UnixStream,
    first: String,
    events: EventStream,
    ctx: &Ctx<S>,
) -> io::Result<()> {
    let write_timeout = ctx.limits.write_timeout;
    let Ok(permit) = Arc::clone(&ctx.watches).try_acquire_owned() else {
        let message = "the daemon serves as many watches as it may; try again shortly";
        let line = error_line(WireError::new(ErrorCode::Busy, message));
        return send(&mut stream, line.as_bytes(), write_timeout).await;
    };
    send(&mut stream, first.as_bytes(), write_timeout).await?;
    let shutdown = ctx.shutdown.clone();
    watch::forward(stream, events, ctx.limits, shutdown, permit).await;
    Ok(())
}

/// Writes a line made in chunks. A line that ends without its newline
/// (its maker failed) cannot be finished: the connection is closed.
async fn send_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    limit: Duration,
) -> io::Result<()> {
    let mut ended = false;
    while let Some(chunk) = chunks.recv().await {
        send(writer, &chunk, limit).await?;
        ended = chunk.ends_with(b"\n");
    }
    match ended {
        true => Ok(()),
        false => Err(io::Error::other("the answer could not be made to its end")),
    }
}

/// A failure answer as a line.
fn error_line(error: WireError) -> String {
    match Answer::error(None, error) {
        Answer::Line(line) => line,
        Answer::Chunks(_) | Answer::Watch { .. } => "{\"ok\":false}\n".into(),
    }
}

/// Writes one line; a client that does not take it within `limit` is an
/// error (and the connection closes).
pub(super) async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    line: &[u8],
    limit: Duration,
) -> io::Result<()> {
    match tokio::time::timeout(limit, writer.write_all(line)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take its answer in time",
        )),
    }
}
