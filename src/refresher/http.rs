//! The `http` refresher: one GET with conditional revalidation.
//!
//! [`fetch`] sends `GET url` with the configured headers and, when the
//! committed payload has validators, `If-None-Match` / `If-Modified-Since`:
//!
//! - `2xx`: the body (at most [`HttpSpec::max_body`] bytes, and it must be
//!   JSON) becomes [`Fetched::Data`], with the response's `ETag` and
//!   `Last-Modified` as the validators for next time;
//! - `304` (to a conditional request): [`Fetched::NotModified`], keeping the
//!   validators the origin re-sent and the old ones otherwise;
//! - `301`, `302`, `303`, `307`, `308` with a `Location`: followed, at most
//!   [`HttpSpec::max_redirects`] times. The configured headers go along only
//!   while the redirect stays on the same origin (scheme, host and port), so
//!   a credential is never handed to another host;
//! - anything else: a [`FetchError`] naming the status, the URL and the start
//!   of the body; `429` and `503` carry the origin's `Retry-After`.
//!
//! The whole exchange, redirects and body included, is bounded by
//! [`FetchContext::timeout`]: ureq enforces it on the socket, and the async
//! side gives up a moment later in any case. The blocking client runs on
//! tokio's blocking pool.
//!
//! Header values are [`Secret`]s: `Debug` prints `<redacted>`, ureq's own logs
//! redact them, and every error message is scrubbed of them (an origin may
//! echo request headers in an error body).

mod message;
pub(crate) use message::shown;
mod redact;
mod redirect;
mod retry_after;

pub use retry_after::parse_retry_after;

use std::fmt;
use std::io::Read;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::{HeaderName, HeaderValue, Response, StatusCode, header};
use ureq::{Agent, Body};

use super::{FetchContext, FetchError, Fetched, Validators};

/// Default for [`HttpSpec::max_redirects`].
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// How long the async side waits past the deadline for the blocking client
/// to report its own timeout before giving up on it.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Longest timeout honoured; a longer one is cut to this, which keeps the
/// deadline arithmetic from overflowing on `Duration::MAX`.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most bytes of an error response read for its excerpt.
const ERROR_BODY_READ: u64 = 64 << 10;

/// A header value that may hold a secret: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for sending on the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An HTTP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// The URL to GET.
    pub url: String,
    /// Request headers; values already expanded from the environment.
    pub headers: Vec<(String, Secret)>,
    /// Most body bytes accepted; more is a failure.
    pub max_body: usize,
    /// Most redirects followed.
    pub max_redirects: u32,
    /// Values of the `${VAR}`s expanded into the URL: redacted wherever the
    /// URL or an error is shown.
    pub url_secrets: Vec<Secret>,
    /// Why the source is disabled (an unset `${VAR}`); a disabled spec is
    /// never fetched.
    pub disabled: Option<String>,
}

impl HttpSpec {
    /// A spec for `url` with no headers, a body cap of
    /// [`super::DEFAULT_MAX_OUTPUT`] and [`DEFAULT_MAX_REDIRECTS`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            max_body: super::DEFAULT_MAX_OUTPUT,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            url_secrets: Vec::new(),
            disabled: None,
        }
    }

    /// Adds a request header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.headers.push((name.into(), value));
        self
    }
}

/// Fetches the URL once, within `ctx.timeout`.
///
/// # Errors
///
/// A one-line [`FetchError`] naming the URL when a header is invalid, the
/// request fails (DNS, connection, TLS, timeout, too many redirects), the
/// status is neither `2xx` nor `304`, the body exceeds
/// [`HttpSpec::max_body`] or is not JSON. For `429` and `503` the error
/// carries the origin's `Retry-After`. No message contains a header value.
pub async fn fetch(spec: &HttpSpec, ctx: &FetchContext) -> Result<Fetched, FetchError> {
    if let Some(why) = &spec.disabled {
        return Err(FetchError::new(format!("source disabled: {why}")));
    }
    let timeout = ctx.timeout.min(LONGEST_TIMEOUT);
    let (owned, validators) = (spec.clone(), ctx.validators.clone());
    let task = tokio::task::spawn_blocking(move || fetch_blocking(&owned, &validators, timeout));
    let result = match tokio::time::timeout(timeout + DEADLINE_GRACE, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(FetchError::new(format!("GET {}: {join}", spec.url))),
        Err(_) => Err(message::timed_out(&spec.url, timeout)),
    };
    result.map_err(|e| message::scrub(e, spec))
}

/// The agent shared by every fetch: statuses are ours to judge and
/// redirects ours to follow; connections are pooled between refreshes.
static AGENT: LazyLock<Agent> = LazyLock::new(|| {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("discocache/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
});

/// The whole fetch, on a blocking thread.
fn fetch_blocking(
    spec: &HttpSpec,
    validators: &Validators,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let exchange = Exchange::new(spec, validators, timeout)?;
    let (url, response) = exchange.follow()?;
    exchange.judge(response, &url, validators)
}

/// One fetch in progress: the checked request headers and the time budget.
struct Exchange<'a> {
    spec: &'a HttpSpec,
    /// The configured headers, sent while on the origin of `spec.url`.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `If-None-Match` / `If-Modified-Since`, sent on every hop.
    conditional: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    deadline: Instant,
}

impl<'a> Exchange<'a> {
    /// Checks the headers and starts the clock.
    fn new(
        spec: &'a HttpSpec,
        validators: &Validators,
        timeout: Duration,
    ) -> Result<Self, FetchError> {
        Ok(Self {
            spec,
            headers: request_headers(spec)?,
            conditional: conditional_headers(validators),
            timeout,
            deadline: Instant::now() + timeout,
        })
    }

    /// Sends the GET and follows redirects; returns the final URL and response.
    fn follow(&self) -> Result<(String, Response<Body>), FetchError> {
        let mut url = self.spec.url.clone();
        let mut same_origin = true;
        let mut redirects = 0;
        loop {
            let response = self.send(&url, same_origin)?;
            let Some(next) = redirect::location(&url, &response)? else {
                return Ok((url, response));
            };
            if redirects == self.spec.max_redirects {
                return Err(message::too_many_redirects(&url, redirects, &next));
            }
            redirects += 1;
            same_origin &= redirect::same_origin(&url, &next);
            url = next;
        }
    }

    /// Sends one GET with whatever time is left.
    fn send(&self, url: &str, same_origin: bool) -> Result<Response<Body>, FetchError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(message::timed_out(url, self.timeout));
        }
        let mut request = AGENT.get(url).config().timeout_global(Some(left)).build();
        let headers: &[_] = if same_origin { &self.headers } else { &[] };
        for (name, value) in headers.iter().chain(&self.conditional) {
            request = request.header(name, value);
        }
        request
            .call()
            .map_err(|e| message::transport(url, &e, self.timeout))
    }

    /// Turns the final response into data, "not modified" or an error.
    fn judge(
        &self,
        mut response: Response<Body>,
        url: &str,
        old: &Validators,
    ) -> Result<Fetched, FetchError> {
        let status = response.status();
        let new = response_validators(&response);
        if status == StatusCode::NOT_MODIFIED && !self.conditional.is_empty() {
            let validators = Validators {
                etag: new.etag.or_else(|| old.etag.clone()),
                last_modified: new.last_modified.or_else(|| old.last_modified.clone()),
            };
            return Ok(Fetched::NotModified { validators });
        }
        if !status.is_success() {
            return Err(self.status_error(&mut response, url));
        }
        let bytes = self.read_body(&mut response, url)?;
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            return Err(FetchError::new(format!(
                "response from {url} is not JSON: {e}"
            )));
        }
        Ok(Fetched::Data {
            bytes,
            validators: new,
        })
    }

    /// Reads at most `max_body` bytes of a successful response.
    fn read_body(&self, response: &mut Response<Body>, url: &str) -> Result<Vec<u8>, FetchError> {
        let max_body = self.spec.max_body;
        let cap = u64::try_from(max_body)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut bytes = Vec::new();
        let reader = response.body_mut().with_config().reader();
        if let Err(e) = reader.take(cap).read_to_end(&mut bytes) {
            let cause = message::describe(&ureq::Error::from(e), self.timeout);
            return Err(FetchError::new(format!(
                "reading the response body from {url}: {cause}"
            )));
        }
        if bytes.len() > max_body {
            return Err(FetchError::new(format!(
                "response body from {url} exceeds the {max_body}-byte cap"
            )));
        }
        Ok(bytes)
    }

    /// The error for a status other than 2xx and 304, with the start of the
    /// body and, for 429 and 503, the origin's `Retry-After`.
    fn status_error(&self, response: &mut Response<Body>, url: &str) -> FetchError {
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            _ => None,
        };
        let mut body = Vec::new();
        let reader = response.body_mut().with_config().reader();
        // Best effort: a body cut short by an error still says something.
        let _ = reader.take(ERROR_BODY_READ).read_to_end(&mut body);
        let error = FetchError::new(message::status(status, url, &body, self.spec));
        match retry_after {
            Some(wait) => error.with_retry_after(wait),
            None => error,
        }
    }
}

/// The configured headers, checked once so a bad one is named clearly
/// (without its value).
fn request_headers(spec: &HttpSpec) -> Result<Vec<(HeaderName, HeaderValue)>, FetchError> {
    let invalid = |name: &str, what: &str| {
        FetchError::new(format!(
            "GET {}: header {name:?} has an invalid {what}",
            spec.url
        ))
    };
    spec.headers
        .iter()
        .map(|(name, value)| {
            let header_name =
                HeaderName::try_from(name.as_str()).map_err(|_| invalid(name, "name"))?;
            let mut header_value =
                HeaderValue::try_from(value.expose()).map_err(|_| invalid(name, "value"))?;
            header_value.set_sensitive(true);
            Ok((header_name, header_value))
        })
        .collect()
}

/// `If-None-Match` / `If-Modified-Since` from the committed validators; one
/// that is not a valid header value is left out (the GET is then plain).
fn conditional_headers(validators: &Validators) -> Vec<(HeaderName, HeaderValue)> {
    [
        (header::IF_NONE_MATCH, &validators.etag),
        (header::IF_MODIFIED_SINCE, &validators.last_modified),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        let value = HeaderValue::try_from(value.as_deref()?).ok()?;
        Some((name, value))
    })
    .collect()
}

/// The `ETag` and `Last-Modified` a response carries.
fn response_validators(response: &Response<Body>) -> Validators {
    let get = |name| {
        let value = response.headers().get(name)?.to_str().ok()?;
        Some(value.to_owned())
    };
    Validators {
        etag: get(header::ETAG),
        last_modified: get(header::LAST_MODIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_spec_hides_header_values() {
        let spec =
            HttpSpec::new("http://x/").header("Authorization", Secret::new("Bearer abc123xyz"));
        let shown = format!("{spec:?}");
        assert!(!shown.contains("abc123xyz"), "{shown}");
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
