//! Pure text handling for command output: terminal cleanup, the last JSON
//! value in a terminal transcript, and the short stderr tail kept for errors.

use serde::de::IgnoredAny;

/// Most characters of terminal output quoted in a "no JSON value" error.
const EXCERPT_CHARS: usize = 120;

/// Cleans a terminal transcript: CRLF (and lone CR) become LF, then terminal
/// escape sequences (colours, cursor moves, titles) are removed.
pub(crate) fn clean_terminal(raw: &[u8]) -> String {
    let mut unix = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b == b'\r' {
            if bytes.peek() != Some(&b'\n') {
                unix.push(b'\n');
            }
        } else {
            unix.push(b);
        }
    }
    String::from_utf8_lossy(&strip_ansi_escapes::strip(unix)).into_owned()
}

/// The last complete JSON object or array in `text`, as a slice of it.
///
/// The text is scanned from the start; at each `{` or `[` a JSON value is
/// parsed. A complete value is remembered and scanning resumes after it (so
/// values nested in it never count); text that is not a value is skipped one
/// character at a time. A value cut off by the end of the text ends the scan:
/// everything after its start is part of it, so nothing later is top level.
pub(crate) fn last_json_value(text: &str) -> Option<&str> {
    let mut last = None;
    let mut pos = 0;
    while let Some(offset) = text[pos..].find(['{', '[']) {
        let start = pos + offset;
        let mut values =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<IgnoredAny>();
        match values.next() {
            Some(Ok(_)) => {
                let end = start + values.byte_offset();
                last = Some(&text[start..end]);
                pos = end;
            }
            Some(Err(e)) if e.is_eof() => break,
            _ => pos = start + 1,
        }
    }
    last
}

/// The JSON value a pty command printed, taken from its raw terminal output.
///
/// # Errors
///
/// A one-line message quoting the end of the cleaned output when it holds no
/// complete JSON object or array.
pub(crate) fn json_from_terminal(raw: &[u8]) -> Result<Vec<u8>, String> {
    let text = clean_terminal(raw);
    match last_json_value(&text) {
        Some(value) => Ok(value.as_bytes().to_vec()),
        None => Err(format!(
            "no JSON value in terminal output: {}",
            excerpt(&text)
        )),
    }
}

/// The end of `text` on one line, at most [`EXCERPT_CHARS`] characters, or
/// `(empty)`.
fn excerpt(text: &str) -> String {
    let line = one_line(text);
    let count = line.chars().count();
    if count == 0 {
        return "(empty)".to_owned();
    }
    if count <= EXCERPT_CHARS {
        return line;
    }
    let tail: String = line.chars().skip(count - EXCERPT_CHARS).collect();
    format!("...{tail}")
}

/// Bytes as one trimmed line: lossy UTF-8, whitespace runs (newlines
/// included) collapsed to one space, other control characters removed.
pub(crate) fn one_line(bytes: impl AsRef<[u8]>) -> String {
    let text = String::from_utf8_lossy(bytes.as_ref());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_value_prompt_gives_the_value() {
        let text = "Welcome to tool v1.2 [beta]\n{\"a\":1}\nuser@host:~$ ";
        assert_eq!(last_json_value(text), Some("{\"a\":1}"));
    }

    #[test]
    fn nested_braces_give_the_outer_value() {
        let text = "x {\"a\":{\"b\":[1,{\"c\":[]}]}} y";
        assert_eq!(
            last_json_value(text),
            Some("{\"a\":{\"b\":[1,{\"c\":[]}]}}")
        );
    }

    #[test]
    fn braces_inside_strings_do_not_end_the_value() {
        let text = "{\"a\":\"}{][\",\"b\":\"\\\"}\"}";
        assert_eq!(last_json_value(text), Some(text));
    }

    #[test]
    fn trailing_garbage_is_ignored() {
        assert_eq!(last_json_value("[1,2]garbage}]"), Some("[1,2]"));
    }

    #[test]
    fn multiple_values_give_the_last() {
        let text = "{\"a\":1}\n[2]\n{\"c\":3}\ndone";
        assert_eq!(last_json_value(text), Some("{\"c\":3}"));
    }

    #[test]
    fn stray_open_brace_before_the_value_is_skipped() {
        let text = "progress { 50% [##  ]\n{\"ok\":true}\n";
        assert_eq!(last_json_value(text), Some("{\"ok\":true}"));
    }

    #[test]
    fn truncated_value_does_not_yield_an_inner_fragment() {
        let text = "{\"a\":1}\n{\"list\":[{\"x\":1},{\"y\":2}";
        assert_eq!(last_json_value(text), Some("{\"a\":1}"));
    }

    #[test]
    fn no_value_gives_none() {
        assert_eq!(last_json_value("plain text, \"quoted\", 42, true"), None);
        assert_eq!(last_json_value("{ not json ] [ nor this"), None);
        assert_eq!(last_json_value(""), None);
    }

    #[test]
    fn clean_terminal_strips_escapes_and_crlf() {
        let raw = b"\x1b[1mhello\x1b[0m\r\n{\"tty\":\r\n true}\r\n\x1b]0;title\x07$ ";
        assert_eq!(clean_terminal(raw), "hello\n{\"tty\":\n true}\n$ ");
    }

    #[test]
    fn json_from_terminal_takes_the_value() {
        let raw = b"\x1b[32mready\x1b[0m\r\n{\"models\":[\"a\",\"b\"]}\r\n> ";
        assert_eq!(
            json_from_terminal(raw).as_deref(),
            Ok(&b"{\"models\":[\"a\",\"b\"]}"[..])
        );
    }

    #[test]
    fn json_from_terminal_without_value_quotes_the_output() {
        let err = json_from_terminal(b"\x1b[31merror:\x1b[0m login required\r\n").unwrap_err();
        assert_eq!(
            err,
            "no JSON value in terminal output: error: login required"
        );
        let err = json_from_terminal(b"").unwrap_err();
        assert_eq!(err, "no JSON value in terminal output: (empty)");
    }

    #[test]
    fn long_excerpt_keeps_the_end() {
        let text = format!("{}END", "x".repeat(500));
        let quoted = excerpt(&text);
        assert!(
            quoted.starts_with("...") && quoted.ends_with("xEND"),
            "{quoted}"
        );
        assert_eq!(quoted.chars().count(), EXCERPT_CHARS + 3);
    }

    #[test]
    fn one_line_collapses_whitespace_and_drops_controls() {
        assert_eq!(one_line(b"  a\n\n b\x07c\t\r\n"), "a bc");
        assert_eq!(one_line(b"\xffx"), "\u{fffd}x");
    }
}
