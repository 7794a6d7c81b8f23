//! Error messages of the HTTP refresher: one line, naming the URL, and
//! never holding a header value.

use std::time::Duration;

use ureq::http::StatusCode;

use super::HttpSpec;
use super::redact::{REDACTED, Secrets};
use crate::refresher::FetchError;

/// Most characters of an error body quoted in a message.
const EXCERPT_CHARS: usize = 200;

/// "GET <url>: timed out after 2s".
pub(super) fn timed_out(url: &str, timeout: Duration) -> FetchError {
    FetchError::new(format!(
        "GET {url}: timed out after {}",
        humantime::format_duration(timeout)
    ))
}

/// The redirect limit was reached and the response redirects again.
pub(super) fn too_many_redirects(url: &str, limit: u32, next: &str) -> FetchError {
    FetchError::new(format!(
        "GET {url}: too many redirects (limit {limit}, redirected again to {next})"
    ))
}

/// "GET <url>: <cause>" for a request that got no response.
pub(super) fn transport(url: &str, error: &ureq::Error, timeout: Duration) -> FetchError {
    FetchError::new(format!("GET {url}: {}", describe(error, timeout)))
}

/// A ureq error in words, without ureq's prefixes where they add nothing.
pub(super) fn describe(error: &ureq::Error, timeout: Duration) -> String {
    match error {
        ureq::Error::Timeout(_) => {
            format!("timed out after {}", humantime::format_duration(timeout))
        }
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        other => other.to_string(),
    }
}

/// "HTTP 500 Internal Server Error from <url>: <start of the body>".
pub(super) fn status(status: StatusCode, url: &str, body: &[u8], spec: &HttpSpec) -> String {
    let mut message = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        message.push(' ');
        message.push_str(reason);
    }
    message.push_str(" from ");
    message.push_str(url);
    let excerpt = excerpt(body, spec);
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    message
}

/// The first [`EXCERPT_CHARS`] characters of a body, as one clean line with
/// secrets redacted (before cutting, so no prefix of one survives).
fn excerpt(body: &[u8], spec: &HttpSpec) -> String {
    let text = one_line(&shown(&String::from_utf8_lossy(body), spec));
    if text.chars().count() <= EXCERPT_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(EXCERPT_CHARS).collect();
    cut.push('…');
    cut
}

/// The error with secrets redacted and made one line; the `Retry-After` is
/// kept.
pub(super) fn scrub(error: FetchError, spec: &HttpSpec) -> FetchError {
    let scrubbed = FetchError::new(one_line(&shown(error.message(), spec)));
    match error.retry_after() {
        Some(wait) => scrubbed.with_retry_after(wait),
        None => scrubbed,
    }
}

/// `text` fit to show: URL passwords hidden, every form of every secret of
/// `spec` redacted.
pub(crate) fn shown(text: &str, spec: &HttpSpec) -> String {
    Secrets::of(spec).redact(&hide_url_passwords(text))
}

/// Replaces the password of every URL's `user:password@` in `text` with
/// `<redacted>`; the user name stays, to tell which account it was.
pub(crate) fn hide_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + "://".len());
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        let userinfo = authority
            .rfind('@')
            .map(|at| (&authority[..at], &authority[at..]));
        match userinfo.and_then(|(info, host)| Some((info.split_once(':')?.0, host))) {
            Some((user, host)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(REDACTED);
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Control characters and runs of whitespace become one space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresher::http::Secret;

    fn spec_with(value: &str) -> HttpSpec {
        HttpSpec::new("http://x/").header("Authorization", Secret::new(value))
    }

    #[test]
    fn url_passwords_are_hidden_and_user_names_kept() {
        let text = "GET https://bot:hunter22@api.example/v1?q=1: redirected to \
                    \"http://other:p%40ss@x:8080\", then http://plain/ and ftp://u@h";
        assert_eq!(
            hide_url_passwords(text),
            "GET https://bot:<redacted>@api.example/v1?q=1: redirected to \
             \"http://other:<redacted>@x:8080\", then http://plain/ and ftp://u@h"
        );
        let spec = HttpSpec::new("https://bot:hunter22@api.example/");
        let scrubbed = scrub(
            FetchError::new("GET https://bot:hunter22@api.example/: refused"),
            &spec,
        );
        assert_eq!(
            scrubbed.message(),
            "GET https://bot:<redacted>@api.example/: refused"
        );
    }

    #[test]
    fn scrub_removes_whole_values_and_their_tokens() {
        let spec = spec_with("Bearer sk-123456");
        let error = FetchError::new("from http://x/: Bearer sk-123456 and sk-123456\n!")
            .with_retry_after(Duration::from_secs(3));
        let scrubbed = scrub(error, &spec);
        assert_eq!(
            scrubbed.message(),
            "from http://x/: <redacted> and <redacted> !"
        );
        assert_eq!(scrubbed.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn short_header_values_are_not_redacted() {
        let scrubbed = scrub(FetchError::new("HTTP 401 Unauthorized"), &spec_with("1"));
        assert_eq!(scrubbed.message(), "HTTP 401 Unauthorized");
    }

    #[test]
    fn one_line_drops_control_characters() {
        assert_eq!(one_line("a\r\nb\t\u{7}c  d\u{1b}[0m "), "a b c d [0m");
    }

    #[test]
    fn status_message_quotes_a_short_clean_excerpt() {
        let body = format!("{{\"error\":\n\"{}\"}}", "x".repeat(500));
        let message = status(
            StatusCode::BAD_GATEWAY,
            "http://x/",
            body.as_bytes(),
            &spec_with(""),
        );
        let expected_start = "HTTP 502 Bad Gateway from http://x/: {\"error\": \"xxx";
        assert!(message.starts_with(expected_start), "{message}");
        assert!(message.ends_with("x…"), "{message}");
        let excerpt = message.split_once("http://x/: ").map(|(_, e)| e).unwrap();
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn excerpt_redacts_before_cutting() {
        let secret = "sk-abcdefghijklmnop";
        let body = format!("{}{secret}", "y".repeat(EXCERPT_CHARS - 5));
        let message = status(
            StatusCode::UNAUTHORIZED,
            "http://x/",
            body.as_bytes(),
            &spec_with(secret),
        );
        assert!(!message.contains("sk-a"), "{message}");
        assert!(message.contains("<red"), "{message}");
    }

    #[test]
    fn status_without_body_has_no_colon() {
        let message = status(StatusCode::NOT_FOUND, "http://x/", b" \r\n", &spec_with(""));
        assert_eq!(message, "HTTP 404 Not Found from http://x/");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let message = status(StatusCode::IM_A_TEAPOT, "u", b"ab\xffcd", &spec_with(""));
        assert_eq!(message, "HTTP 418 I'm a teapot from u: ab\u{fffd}cd");
    }
}
