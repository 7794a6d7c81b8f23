//! Redirects, followed by hand so the configured headers stay on their
//! origin: where a response points to, and whether that is the same origin.

use ureq::Body;
use ureq::http::{Response, Uri, header};

use crate::refresher::FetchError;

/// Where a redirect response points to, resolved against `url`; `None` when
/// the response is not a redirect to follow (not 301, 302, 303, 307 or 308,
/// or no `Location`).
///
/// # Errors
///
/// A `Location` that is not UTF-8 or does not resolve to an `http(s)` URL.
pub(super) fn location(url: &str, response: &Response<Body>) -> Result<Option<String>, FetchError> {
    let status = response.status();
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(value) = response.headers().get(header::LOCATION) else {
        return Ok(None);
    };
    let resolved = value
        .to_str()
        .ok()
        .and_then(|location| resolve(url, location));
    match resolved {
        Some(next) => Ok(Some(next)),
        None => Err(FetchError::new(format!(
            "GET {url}: HTTP {} redirect with an unusable Location {:?}",
            status.as_u16(),
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// `location` resolved against `base` (absolute, scheme-relative,
/// absolute-path, query-only or relative-path reference); `None` unless the
/// result is an `http` or `https` URL with a host.
pub(super) fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.split('#').next().unwrap_or_default().trim();
    let base: Uri = base.parse().ok()?;
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let joined = if has_scheme(location) {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.is_empty() || location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = joined.parse().ok()?;
    let web = matches!(uri.scheme_str(), Some("http" | "https"));
    (web && uri.host().is_some()).then_some(joined)
}

/// Whether `reference` starts with a URI scheme (`http:`, `https:`, ...).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether two URLs share scheme, host and port (the default port of the
/// scheme when none is written).
pub(super) fn same_origin(a: &str, b: &str) -> bool {
    match (origin(a), origin(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(port), _) => port,
        (None, "https") => 443,
        (None, _) => 80,
    };
    Some((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_kind_of_reference() {
        let base = "http://h:8080/api/v1/models?x=1";
        let cases = [
            ("https://other/x", "https://other/x"),
            ("//cdn.example/y", "http://cdn.example/y"),
            ("/root", "http://h:8080/root"),
            ("list", "http://h:8080/api/v1/list"),
            ("?page=2", "http://h:8080/api/v1/models?page=2"),
            ("/frag#part", "http://h:8080/frag"),
        ];
        for (location, expected) in cases {
            assert_eq!(
                resolve(base, location).as_deref(),
                Some(expected),
                "{location}"
            );
        }
    }

    #[test]
    fn refuses_non_web_locations() {
        assert_eq!(resolve("http://h/", "file:///etc/passwd"), None);
        assert_eq!(resolve("http://h/", "javascript:alert(1)"), None);
        assert_eq!(resolve("http://h/", "http://"), None);
    }

    #[test]
    fn origin_is_scheme_host_and_port() {
        assert!(same_origin("http://H/a", "http://h:80/b"));
        assert!(same_origin("https://h/a", "https://h:443/b?c"));
        assert!(!same_origin("https://h/a", "http://h/a"));
        assert!(!same_origin("http://h:1/a", "http://h:2/a"));
        assert!(!same_origin("http://h/a", "http://evil.example/a"));
        assert!(!same_origin("http://h/a", "not a url"));
    }
}
