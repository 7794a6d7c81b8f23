//! Newline framing: bounded line reads and one-line JSON writes.

use std::io;

use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use super::MAX_LINE;
use super::response::Response;

/// Bytes reserved for a response line before serialising it.
const LINE_CAPACITY: usize = 4096;

/// The outcome of reading one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` (or `\r\n`). May be empty.
    Text(String),
    /// The peer closed the stream between lines.
    Eof,
    /// The line is longer than the limit; it was not read to its end, so the
    /// stream is mid-line and should be closed after answering `too_large`.
    TooLarge,
    /// The line is not UTF-8; answer `bad_request` and go on reading.
    Invalid(std::str::Utf8Error),
}

/// Reads one request line of at most [`MAX_LINE`] bytes (the `\n` and an
/// optional `\r` before it not counted). See [`read_line_max`].
///
/// # Errors
///
/// The reader's IO error.
pub async fn read_line<R>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    read_line_max(reader, buf, MAX_LINE).await
}

/// Reads one line of at most `max` bytes. A final line without `\n` counts
/// as a line. `buf` is scratch space that never holds more than `max + 1`
/// bytes plus one chunk of the reader's buffer.
///
/// Cancel safe: if the future is dropped, the partial line stays in `buf`
/// and the next call with the same `buf` goes on from there.
///
/// # Errors
///
/// The reader's IO error.
pub async fn read_line_max<R>(reader: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Line>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    loop {
        let chunk = reader.fill_buf().await?;
        let (used, line) = take(chunk, buf, max);
        reader.consume(used);
        if let Some(line) = line {
            return Ok(line);
        }
    }
}

/// [`read_line`] on a blocking reader: one line of at most [`MAX_LINE`]
/// bytes, with the same outcomes.
///
/// # Errors
///
/// The reader's IO error (a read timeout among them).
pub fn read_line_blocking<R>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line>
where
    R: io::BufRead + ?Sized,
{
    loop {
        let chunk = reader.fill_buf()?;
        let (used, line) = take(chunk, buf, MAX_LINE);
        reader.consume(used);
        if let Some(line) = line {
            return Ok(line);
        }
    }
}

/// Moves the part of `chunk` that belongs to the current line into `buf`.
/// Returns how many bytes of `chunk` were used, and the line once it is
/// complete (an empty chunk is the end of the stream).
fn take(chunk: &[u8], buf: &mut Vec<u8>, max: usize) -> (usize, Option<Line>) {
    if chunk.is_empty() {
        let line = if buf.is_empty() {
            Line::Eof
        } else {
            finish(buf, max)
        };
        return (0, Some(line));
    }
    let newline = chunk.iter().position(|&b| b == b'\n');
    let used = newline.map_or(chunk.len(), |i| i + 1);
    buf.extend_from_slice(&chunk[..newline.unwrap_or(chunk.len())]);
    if newline.is_some() {
        return (used, Some(finish(buf, max)));
    }
    // One byte of slack for a `\r` that a following `\n` would drop.
    if buf.len() > max.saturating_add(1) {
        buf.clear();
        return (used, Some(Line::TooLarge));
    }
    (used, None)
}

/// Turns the complete line in `buf` into a [`Line`] and empties `buf`.
fn finish(buf: &mut Vec<u8>, max: usize) -> Line {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line = if buf.len() > max {
        Line::TooLarge
    } else {
        match std::str::from_utf8(buf) {
            Ok(text) => Line::Text(text.to_owned()),
            Err(e) => Line::Invalid(e),
        }
    };
    buf.clear();
    line
}

/// Serialises `message` as one line of compact JSON ending in `\n`.
///
/// Raw newlines can only come from whitespace inside embedded payloads
/// (JSON strings escape theirs), so they are turned into spaces: the meaning
/// is unchanged and the message stays on one line.
///
/// # Errors
///
/// serde's error when `message` cannot be serialised (a map with non-string
/// keys, a failing `Serialize` impl).
pub fn to_line<T: Serialize + ?Sized>(message: &T) -> serde_json::Result<String> {
    // Room for a typical answer (a 1 KiB payload and its fields) up front,
    // rather than growing the buffer several times.
    let mut buf = Vec::with_capacity(LINE_CAPACITY);
    serde_json::to_writer(&mut buf, message)?;
    // serde_json writes only UTF-8.
    let mut line = String::from_utf8(buf).map_err(serde::ser::Error::custom)?;
    // Byte searches (memchr): a char-pattern scan costs more than the rest
    // of a `get` answer.
    let bytes = line.as_bytes();
    if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
        line = line.replace(['\n', '\r'], " ");
    }
    line.push('\n');
    Ok(line)
}

/// Writes `message` as one JSON line and flushes.
///
/// # Errors
///
/// The writer's IO error, or `InvalidData` when `message` cannot be
/// serialised.
pub async fn write_json_line<W, T>(writer: &mut W, message: &T) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let line = to_line(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    writer.write_all(line.as_bytes()).await?;
    writer.flush().await
}

/// Writes one response line and flushes.
///
/// # Errors
///
/// As [`write_json_line`].
pub async fn write_response<W, B>(writer: &mut W, response: &Response<B>) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: Serialize,
{
    write_json_line(writer, response).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, BufReader};

    use super::*;
    use crate::protocol::WireError;

    async fn read_all(input: &[u8]) -> Vec<Line> {
        let mut reader = BufReader::new(input);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            let line = read_line(&mut reader, &mut buf).await.expect("read");
            if line == Line::Eof {
                return lines;
            }
            lines.push(line);
        }
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[tokio::test]
    async fn several_lines_in_one_read_come_out_one_by_one() {
        let lines = read_all(b"{\"op\":\"hello\"}\n\n{\"op\":\"status\"}\n").await;
        assert_eq!(
            lines,
            [
                text("{\"op\":\"hello\"}"),
                text(""),
                text("{\"op\":\"status\"}")
            ]
        );
    }

    /// Every line of `input` through the blocking reader, fed in chunks of
    /// `chunk` bytes.
    fn read_all_blocking(input: &[u8], chunk: usize) -> Vec<Line> {
        let mut reader = std::io::BufReader::with_capacity(chunk, input);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            match read_line_blocking(&mut reader, &mut buf).expect("read") {
                Line::Eof => return lines,
                Line::TooLarge => return [lines, vec![Line::TooLarge]].concat(),
                line => lines.push(line),
            }
        }
    }

    #[tokio::test]
    async fn the_blocking_reader_frames_lines_as_the_async_one_does() {
        let long = "y".repeat(MAX_LINE);
        let inputs = [
            "{\"op\":\"hello\"}\n\n{\"op\":\"status\"}\n".to_owned(),
            "a\r\nb\r\nlast".to_owned(),
            format!("{long}\r\nnext\n"),
            format!("{long}zz\nnever read\n"),
            String::new(),
        ];
        for input in &inputs {
            let mut want = read_all(input.as_bytes()).await;
            // A server closes after `too_large`: compare up to there.
            if let Some(at) = want.iter().position(|l| *l == Line::TooLarge) {
                want.truncate(at + 1);
            }
            for chunk in [1, 7, 8192] {
                let got = read_all_blocking(input.as_bytes(), chunk);
                assert_eq!(got, want, "chunk {chunk}, input {input:.40}");
            }
        }
    }

    #[tokio::test]
    async fn final_line_without_newline_is_a_line() {
        assert_eq!(read_all(b"a\nlast").await, [text("a"), text("last")]);
    }

    #[tokio::test]
    async fn crlf_is_tolerated() {
        assert_eq!(read_all(b"a\r\nb\r\n").await, [text("a"), text("b")]);
    }

    #[tokio::test]
    async fn empty_input_is_eof() {
        assert_eq!(read_all(b"").await, []);
    }

    #[tokio::test]
    async fn line_of_exactly_max_line_is_accepted() {
        let body = "x".repeat(MAX_LINE);
        for ending in ["\n", "\r\n"] {
            let input = format!("{body}{ending}next\n");
            assert_eq!(
                read_all(input.as_bytes()).await,
                [text(&body), text("next")]
            );
        }
        // The same as a final line without a newline.
        assert_eq!(read_all(body.as_bytes()).await, [text(&body)]);
    }

    #[tokio::test]
    async fn one_byte_over_max_line_is_too_large() {
        for ending in ["\n", "\r\n", ""] {
            let input = format!("{}{ending}", "x".repeat(MAX_LINE + 1));
            let mut reader = BufReader::new(input.as_bytes());
            let mut buf = Vec::new();
            let line = read_line(&mut reader, &mut buf).await.expect("read");
            assert_eq!(line, Line::TooLarge, "ending {ending:?}");
            assert!(buf.is_empty());
        }
    }

    #[tokio::test]
    async fn oversize_line_stops_reading_early() {
        let (mut client, server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 4096];
            // Far more than MAX_LINE; the reader stops and drops its end.
            for _ in 0..(MAX_LINE / 4096) * 4 {
                if tokio::io::AsyncWriteExt::write_all(&mut client, &chunk)
                    .await
                    .is_err()
                {
                    return true;
                }
            }
            false
        });
        let mut reader = BufReader::with_capacity(1024, server);
        let mut buf = Vec::new();
        let line = read_line(&mut reader, &mut buf).await.expect("read");
        assert_eq!(line, Line::TooLarge);
        assert!(buf.capacity() <= 2 * MAX_LINE + 1024);
        drop(reader);
        assert!(writer.await.expect("writer task"), "writer saw the close");
    }

    #[tokio::test]
    async fn invalid_utf8_is_reported_and_the_next_line_still_reads() {
        let lines = read_all(b"{\"op\":\"\xff\"}\nok\n").await;
        assert!(matches!(lines[0], Line::Invalid(_)), "{lines:?}");
        assert_eq!(lines[1], text("ok"));
    }

    #[tokio::test]
    async fn partial_line_survives_a_cancelled_read() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = BufReader::new(server);
        let mut buf = Vec::new();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"{\"op\":")
            .await
            .expect("write");
        // Poll the read once (it takes the partial line, then waits), then drop it.
        tokio::select! {
            biased;
            line = read_line(&mut reader, &mut buf) => panic!("no full line yet: {line:?}"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(buf, b"{\"op\":");
        tokio::io::AsyncWriteExt::write_all(&mut client, b"\"hello\"}\n")
            .await
            .expect("write");
        let line = read_line(&mut reader, &mut buf).await.expect("read");
        assert_eq!(line, text("{\"op\":\"hello\"}"));
    }

    #[tokio::test]
    async fn write_response_writes_one_line() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let response = Response::failure(None, WireError::too_large());
        write_response(&mut client, &response).await.expect("write");
        drop(client);
        let mut out = String::new();
        server.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("{\"ok\":false,\"error\":{\"code\":\"too_large\""));
        assert!(
            out.ends_with("}\n") && out.matches('\n').count() == 1,
            "{out}"
        );
    }
}
