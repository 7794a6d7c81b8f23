//! Secrets of an HTTP source, found and replaced in any text shown.
//!
//! The secrets of an [`HttpSpec`] are its header values (whole, and each
//! long word, since the token of `Bearer <token>` may be echoed alone, and
//! what a `Basic` token decodes to), the values of the `${VAR}`s expanded
//! into its URL, and its URL's password with `user:password` (what Basic
//! auth is built from). An origin may echo any of them back in another form,
//! so each is found in every form it can take: as is in any case,
//! JSON-escaped (`\/`, `\u002f`, `\"`), URL-encoded (`%2F`, `+`), and base64
//! (standard or URL-safe, at any alignment inside a longer base64 text).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::HttpSpec;

/// Secrets shorter than this are not redacted: they cannot be credentials,
/// and replacing "1" everywhere would garble messages.
const MIN_SECRET_LEN: usize = 6;

/// What replaces a secret.
pub(super) const REDACTED: &str = "<redacted>";

/// The forms of a spec's secrets to look for, longest first.
pub(super) struct Secrets {
    patterns: Vec<Vec<char>>,
}

impl Secrets {
    /// The secrets of `spec`.
    pub(super) fn of(spec: &HttpSpec) -> Self {
        let mut raw: Vec<String> = Vec::new();
        for (_, value) in &spec.headers {
            let value = value.expose().trim();
            raw.push(value.to_owned());
            for word in value.split_whitespace() {
                raw.push(word.to_owned());
                raw.extend(basic_credentials(word));
            }
        }
        raw.extend(spec.url_secrets.iter().map(|s| s.expose().to_owned()));
        raw.extend(userinfo_secrets(&spec.url));
        raw.retain(|s| s.chars().count() >= MIN_SECRET_LEN);
        raw.sort();
        raw.dedup();
        let mut patterns: Vec<Vec<char>> = raw
            .iter()
            .flat_map(|s| std::iter::once(s.clone()).chain(base64_forms(s.as_bytes())))
            .filter(|p| p.chars().count() >= MIN_SECRET_LEN)
            .map(|p| p.chars().collect())
            .collect();
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        Self { patterns }
    }

    /// `text` with every form of every secret replaced by `<redacted>`.
    pub(super) fn redact(&self, text: &str) -> String {
        if self.patterns.is_empty() {
            return text.to_owned();
        }
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        'scan: while at < chars.len() {
            for pattern in &self.patterns {
                if let Some(end) = match_at(&chars, at, pattern) {
                    out.push_str(REDACTED);
                    at = end;
                    continue 'scan;
                }
            }
            out.push(chars[at]);
            at += 1;
        }
        out
    }
}

/// What a `Basic` token decodes to (`user:password`), and the password.
fn basic_credentials(word: &str) -> Vec<String> {
    let decoded = STANDARD
        .decode(word)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match decoded {
        Some(text) => match text.split_once(':') {
            Some((_, password)) => vec![password.to_owned(), text.clone()],
            None => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// The password of the URL's `user:password@`, and `user:password`, each as
/// written and percent-decoded.
fn userinfo_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let mut out = vec![password.to_owned(), userinfo.to_owned()];
    let (user, password) = (percent_decode(user), percent_decode(password));
    out.push(format!("{user}:{password}"));
    out.push(password);
    out
}

/// `%XX` sequences decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex
            .filter(|_| bytes[i] == b'%')
            .map(|h| u8::from_str_radix(h, 16))
        {
            Some(Ok(b)) => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The base64 text (standard and URL-safe) that `secret` becomes at each of
/// the three alignments inside a longer base64 text, cut to the characters
/// that depend on the secret alone.
fn base64_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret);
        let encoded = URL_SAFE_NO_PAD.encode(&bytes);
        // Characters mixing the filler before, or the zero bits after.
        let skip = [0, 2, 3][offset];
        let full = bytes.len() * 8 / 6;
        let core: String = encoded.chars().take(full).skip(skip).collect();
        forms.push(core.replace('-', "+").replace('_', "/"));
        forms.push(core);
    }
    forms
}

/// Where a form of `pattern` starting at `at` ends, if one does.
fn match_at(text: &[char], at: usize, pattern: &[char]) -> Option<usize> {
    let Some((&c, rest)) = pattern.split_first() else {
        return Some(at);
    };
    encodings_at(text, at, c)
        .into_iter()
        .flatten()
        .find_map(|end| match_at(text, end, rest))
}

/// The ends of each way `text` at `at` can spell the character `c`.
fn encodings_at(text: &[char], at: usize, c: char) -> [Option<usize>; 3] {
    let Some(&first) = text.get(at) else {
        return [None; 3];
    };
    let literal = (first == c || first.to_lowercase().eq(c.to_lowercase())).then_some(at + 1);
    let escaped = match first {
        '\\' => json_escape(text, at, c),
        '%' => percent_escape(text, at, c),
        '+' if c == ' ' => Some(at + 1),
        _ => None,
    };
    let html = (first == '&').then(|| html_escape(text, at, c)).flatten();
    [literal, escaped, html]
}

/// `\/`, `\"`, `\\`, `\n`... or `\uXXXX` (any case) spelling `c`.
fn json_escape(text: &[char], at: usize, c: char) -> Option<usize> {
    let next = *text.get(at + 1)?;
    let short = match next {
        '/' | '"' | '\\' => next,
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'u' => {
            let hex: String = text.get(at + 2..at + 6)?.iter().collect();
            let code = u32::from_str_radix(&hex, 16).ok()?;
            return (code == c as u32).then_some(at + 6);
        }
        _ => return None,
    };
    (short == c).then_some(at + 2)
}

/// `%XX` per UTF-8 byte of `c` (any case).
fn percent_escape(text: &[char], at: usize, c: char) -> Option<usize> {
    let mut buf = [0u8; 4];
    let mut end = at;
    for &byte in c.encode_utf8(&mut buf).as_bytes() {
        if text.get(end) != Some(&'%') {
            return None;
        }
        let hex: String = text.get(end + 1..end + 3)?.iter().collect();
        if u8::from_str_radix(&hex, 16).ok()? != byte {
            return None;
        }
        end += 3;
    }
    Some(end)
}

/// `&#47;` or `&#x2f;` spelling `c`.
fn html_escape(text: &[char], at: usize, c: char) -> Option<usize> {
    let close = (at..text.len().min(at + 12)).find(|&i| text[i] == ';')?;
    let entity: String = text.get(at + 1..close)?.iter().collect();
    let code = match entity.strip_prefix('#')? {
        hex if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16).ok()?,
        dec => dec.parse().ok()?,
    };
    (code == c as u32).then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresher::http::Secret;

    const TOKEN: &str = "sk-Ab/cd+EF:9";

    fn spec() -> HttpSpec {
        let mut spec = HttpSpec::new("https://bot:pa%40ss-word@h.example/v1?key=qk-123456789")
            .header("Authorization", Secret::new(format!("Bearer {TOKEN}")))
            .header("X-Basic", Secret::new("Basic dXNlcjpzM2NyZXQtcHc="));
        spec.url_secrets = vec![Secret::new("qk-123456789")];
        spec
    }

    /// `text` loses `leak` (and gains a `<redacted>`).
    fn assert_gone(text: &str, leak: &str) {
        assert!(text.contains(leak), "bad case {text}");
        let shown = Secrets::of(&spec()).redact(text);
        assert!(shown.contains(REDACTED), "{text} -> {shown}");
        assert!(!shown.contains(leak), "{text} -> {shown}");
    }

    #[test]
    fn every_encoding_of_every_secret_is_redacted() {
        let json = serde_json::to_string(TOKEN).unwrap().replace('/', "\\/");
        let b64 = |s: String| STANDARD.encode(s);
        let cases = [
            (format!("echo: {TOKEN}!"), "sk-Ab".to_owned()),
            (format!("echo: {}", TOKEN.to_uppercase()), "SK-AB".into()),
            (format!("echo: {json}"), "cd+EF".into()),
            (r"echo: sk-Ab\u002Fcd\u002bEF\u003a9".into(), "cd".into()),
            ("echo: sk-Ab%2Fcd%2BEF%3a9".into(), "sk-Ab".into()),
            ("echo: sk-Ab&#x2f;cd&#43;EF:9".into(), "sk-Ab".into()),
            (
                format!("echo: {}", b64(TOKEN.into())),
                b64(TOKEN.into())[2..14].to_owned(),
            ),
            (
                format!(
                    "echo: {}",
                    URL_SAFE_NO_PAD.encode(format!("Bearer {TOKEN}"))
                ),
                URL_SAFE_NO_PAD.encode(format!("Bearer {TOKEN}"))[12..24].to_owned(),
            ),
            (
                format!("echo: {}", b64(format!("x{TOKEN}y"))),
                b64(format!("x{TOKEN}y"))[4..14].to_owned(),
            ),
            (
                format!("echo: {}", b64(format!("xy{TOKEN}"))),
                b64(format!("xy{TOKEN}"))[4..14].to_owned(),
            ),
            ("echo: pa%40ss-word".into(), "ss-word".into()),
            ("echo: PA@SS-WORD".into(), "SS-WORD".into()),
            (
                format!("echo: Basic {}", b64("bot:pa@ss-word".into())),
                b64("bot:pa@ss-word".into()),
            ),
            ("echo: user:s3cret-pw".into(), "s3cret".into()),
            ("echo: key=QK-123456789".into(), "123456789".into()),
            ("echo: key=qk%2D123456789".into(), "123456789".into()),
        ];
        for (text, leak) in &cases {
            assert_gone(text, leak);
        }
    }

    #[test]
    fn text_without_secrets_is_kept() {
        let text = "HTTP 500 from https://h.example/v1: {\"error\": \"sk-other\"}";
        assert_eq!(Secrets::of(&spec()).redact(text), text);
    }

    #[test]
    fn short_values_are_not_secrets() {
        let spec = HttpSpec::new("http://x/").header("A", Secret::new("1"));
        assert_eq!(Secrets::of(&spec).redact("HTTP 401 1"), "HTTP 401 1");
    }
}
