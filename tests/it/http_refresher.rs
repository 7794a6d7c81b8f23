//! The `http` refresher against a real HTTP/1.1 server on 127.0.0.1 that
//! records every request and answers with hand-written responses.

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use discocache::refresher::http::{HttpSpec, Secret, fetch};
use discocache::{FetchContext, FetchError, Fetched, SourceId, Validators};

const SECRET: &str = "Bearer sk-test-SECRET123";

use crate::helpers::http::{Reply, Server, send};

fn ctx(timeout: Duration, validators: Validators) -> FetchContext {
    FetchContext {
        source: SourceId::new("test", "http").unwrap(),
        timeout,
        validators,
    }
}

async fn get(spec: &HttpSpec, validators: Validators) -> Result<Fetched, FetchError> {
    fetch(spec, &ctx(Duration::from_secs(5), validators)).await
}

async fn get_err(spec: &HttpSpec) -> FetchError {
    match get(spec, Validators::default()).await {
        Ok(fetched) => panic!("expected an error, got {fetched:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn ok_with_etag_returns_body_and_etag() {
    let server = Server::start(|_| send("200 OK", &[("ETag", "\"v1\"")], r#"{"models":[1]}"#));
    let fetched = get(&HttpSpec::new(server.url("/models")), Validators::default()).await;
    let expected = Fetched::Data {
        bytes: br#"{"models":[1]}"#.to_vec(),
        validators: Validators {
            etag: Some("\"v1\"".to_owned()),
            last_modified: None,
        },
    };
    assert_eq!(fetched, Ok(expected));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/models");
    assert_eq!(requests[0].header("If-None-Match"), None);
}

#[tokio::test]
async fn etag_revalidation_sends_if_none_match_and_304_is_not_modified() {
    let server = Server::start(|req| match req.header("If-None-Match") {
        Some("\"v1\"") => send("304 Not Modified", &[], ""),
        _ => send("200 OK", &[("ETag", "\"v1\"")], "[1,2]"),
    });
    let spec = HttpSpec::new(server.url("/m"));
    let Ok(Fetched::Data { validators, .. }) = get(&spec, Validators::default()).await else {
        panic!("first fetch should return data");
    };
    let second = get(&spec, validators.clone()).await;
    assert_eq!(second, Ok(Fetched::NotModified { validators }));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("If-None-Match"), Some("\"v1\""));
}

#[tokio::test]
async fn last_modified_revalidation_sends_if_modified_since() {
    const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    let server = Server::start(|req| match req.header("If-Modified-Since") {
        // A 304 may carry a new ETag: it must replace the old one.
        Some(LAST_MODIFIED) => send("304 Not Modified", &[("ETag", "\"v2\"")], ""),
        _ => send("200 OK", &[("Last-Modified", LAST_MODIFIED)], "{}"),
    });
    let spec = HttpSpec::new(server.url("/m"));
    let Ok(Fetched::Data { validators, .. }) = get(&spec, Validators::default()).await else {
        panic!("first fetch should return data");
    };
    assert_eq!(validators.last_modified.as_deref(), Some(LAST_MODIFIED));
    let second = get(&spec, validators).await;
    let expected = Validators {
        etag: Some("\"v2\"".to_owned()),
        last_modified: Some(LAST_MODIFIED.to_owned()),
    };
    assert_eq!(
        second,
        Ok(Fetched::NotModified {
            validators: expected
        })
    );
    assert_eq!(
        server.requests()[1].header("If-Modified-Since"),
        Some(LAST_MODIFIED)
    );
}

#[tokio::test]
async fn not_modified_to_a_plain_request_is_an_error() {
    let server = Server::start(|_| send("304 Not Modified", &[], ""));
    let url = server.url("/m");
    let error = get_err(&HttpSpec::new(&url)).await;
    assert_eq!(error.message(), format!("HTTP 304 Not Modified from {url}"));
}

#[tokio::test]
async fn server_error_names_status_and_body_excerpt() {
    let body = format!("upstream\r\nexploded\u{1b}[31m {}", "z".repeat(1000));
    let server = Server::start(move |_| send("500 Internal Server Error", &[], &body));
    let url = server.url("/boom");
    let error = get_err(&HttpSpec::new(&url)).await;
    let message = error.message();
    let start = format!("HTTP 500 Internal Server Error from {url}: upstream exploded [31m zzz");
    assert!(message.starts_with(&start), "{message}");
    assert!(
        message.len() < start.len() + 250,
        "excerpt not cut: {message}"
    );
    assert!(!message.contains(['\r', '\n', '\u{1b}']), "{message:?}");
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after_seconds() {
    let server = Server::start(|_| {
        send(
            "429 Too Many Requests",
            &[("Retry-After", "7")],
            "slow down",
        )
    });
    let url = server.url("/m");
    let error = get_err(&HttpSpec::new(&url)).await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(
        error.message(),
        format!("HTTP 429 Too Many Requests from {url}: slow down")
    );
}

#[tokio::test]
async fn unavailable_with_http_date_retry_after() {
    const DATE: &str = "Fri, 31 Dec 2100 23:59:59 GMT";
    const DATE_UNIX: u64 = 4_133_980_799;
    let server = Server::start(|_| send("503 Service Unavailable", &[("Retry-After", DATE)], ""));
    let error = get_err(&HttpSpec::new(server.url("/m"))).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wait = error.retry_after().expect("a Retry-After").as_secs();
    let expected = DATE_UNIX - now;
    assert!(wait.abs_diff(expected) <= 5, "{wait} vs {expected}");
}

#[tokio::test]
async fn retry_after_on_other_statuses_is_ignored() {
    let server = Server::start(|_| send("500 Internal Server Error", &[("Retry-After", "7")], ""));
    let error = get_err(&HttpSpec::new(server.url("/m"))).await;
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn body_over_the_cap_is_an_error() {
    let body = format!("[{}0]", "0,".repeat(50));
    let server = Server::start(move |_| send("200 OK", &[], &body));
    let url = server.url("/big");
    let spec = HttpSpec {
        max_body: 16,
        ..HttpSpec::new(&url)
    };
    let error = get_err(&spec).await;
    assert_eq!(
        error.message(),
        format!("response body from {url} exceeds the 16-byte cap")
    );
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_accepted() {
    let server = Server::start(|_| send("200 OK", &[], "[1,2,3]"));
    let spec = HttpSpec {
        max_body: 7,
        ..HttpSpec::new(server.url("/m"))
    };
    let fetched = get(&spec, Validators::default()).await;
    assert_eq!(fetched, Ok(Fetched::data("[1,2,3]")));
}

#[tokio::test]
async fn non_json_body_is_an_error() {
    let server = Server::start(|_| send("200 OK", &[], "<html>oops</html>"));
    let url = server.url("/html");
    let error = get_err(&HttpSpec::new(&url)).await;
    let start = format!("response from {url} is not JSON: expected value at line 1 column 1");
    assert_eq!(error.message(), start);
}

/// Fetches `url` with a 1 s deadline; the outcome and how long it took.
async fn fetch_with_1s_deadline(url: &str) -> (Result<Fetched, FetchError>, Duration) {
    let started = Instant::now();
    let spec = HttpSpec::new(url);
    let result = fetch(&spec, &ctx(Duration::from_secs(1), Validators::default())).await;
    (result, started.elapsed())
}

#[tokio::test]
async fn silent_server_times_out_within_the_deadline() {
    let server = Server::start(|_| Reply::Stall(Vec::new()));
    let url = server.url("/silent");
    let (result, elapsed) = fetch_with_1s_deadline(&url).await;
    let error = result.expect_err("a silent server must fail");
    assert_eq!(error.message(), format!("GET {url}: timed out after 1s"));
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
    assert_eq!(server.requests().len(), 1, "the request reached the server");
}

#[tokio::test]
async fn body_that_stalls_midway_times_out_within_the_deadline() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,";
    let server = Server::start(move |_| Reply::Stall(head.as_bytes().to_vec()));
    let url = server.url("/slow");
    let (result, elapsed) = fetch_with_1s_deadline(&url).await;
    let error = result.expect_err("a stalled body must fail");
    assert!(
        error.message().contains("timed out after 1s"),
        "{}",
        error.message()
    );
    assert!(error.message().contains(&url), "{}", error.message());
    assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
}

#[tokio::test]
async fn redirect_loop_is_bounded() {
    let server = Server::start(|_| send("302 Found", &[("Location", "/loop")], ""));
    let spec = HttpSpec {
        max_redirects: 3,
        ..HttpSpec::new(server.url("/start"))
    };
    let error = get_err(&spec).await;
    let expected = format!(
        "GET {}: too many redirects (limit 3, redirected again to {})",
        server.url("/loop"),
        server.url("/loop")
    );
    assert_eq!(error.message(), expected);
    assert_eq!(
        server.requests().len(),
        4,
        "the first request and 3 redirects"
    );
}

#[tokio::test]
async fn same_origin_redirect_keeps_headers_and_validators() {
    let server = Server::start(|req| match req.path.as_str() {
        "/old" => send("301 Moved Permanently", &[("Location", "/new")], ""),
        _ => send("200 OK", &[], "true"),
    });
    let spec = HttpSpec::new(server.url("/old")).header("Authorization", Secret::new(SECRET));
    let validators = Validators {
        etag: Some("\"e\"".to_owned()),
        last_modified: None,
    };
    let fetched = get(&spec, validators).await;
    assert_eq!(fetched, Ok(Fetched::data("true")));
    let requests = server.requests();
    assert_eq!(requests[1].path, "/new");
    assert_eq!(requests[1].header("Authorization"), Some(SECRET));
    assert_eq!(requests[1].header("If-None-Match"), Some("\"e\""));
}

#[tokio::test]
async fn cross_origin_redirect_drops_configured_headers() {
    let elsewhere = Server::start(|_| send("200 OK", &[], "{}"));
    let target = elsewhere.url("/landing");
    let origin =
        Server::start(move |_| send("307 Temporary Redirect", &[("Location", &target)], ""));
    let spec = HttpSpec::new(origin.url("/start"))
        .header("Authorization", Secret::new(SECRET))
        .header("X-Api-Key", Secret::new("key-SECRET456"));
    assert_eq!(
        get(&spec, Validators::default()).await,
        Ok(Fetched::data("{}"))
    );
    assert_eq!(
        origin.requests()[0].header("X-Api-Key"),
        Some("key-SECRET456")
    );
    let landed = &elsewhere.requests()[0];
    assert_eq!(landed.header("Authorization"), None);
    assert_eq!(landed.header("X-Api-Key"), None);
}

#[tokio::test]
async fn secret_header_is_sent_but_never_shown() {
    // The origin echoes the credential back in its error body.
    let server = Server::start(|req| {
        let echoed = format!(
            "bad token {}",
            req.header("Authorization").unwrap_or("none")
        );
        send("401 Unauthorized", &[], &echoed)
    });
    let url = server.url("/private");
    let spec = HttpSpec::new(&url).header("Authorization", Secret::new(SECRET));
    let error = get_err(&spec).await;
    assert_eq!(server.requests()[0].header("Authorization"), Some(SECRET));
    assert_eq!(
        error.message(),
        format!("HTTP 401 Unauthorized from {url}: bad token <redacted>")
    );
    let debug = format!("{spec:?} {error:?}");
    assert!(!debug.contains("SECRET123"), "{debug}");
}

#[tokio::test]
async fn connection_refused_names_the_url_and_cause_without_secrets() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let spec = HttpSpec::new(&url).header("Authorization", Secret::new(SECRET));
    let error = get_err(&spec).await;
    let message = error.message();
    assert!(message.starts_with(&format!("GET {url}: ")), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains("SECRET123"), "{message}");
}

#[tokio::test]
async fn invalid_header_value_is_named_without_its_value() {
    let spec = HttpSpec::new("http://127.0.0.1:9/x").header("X-Token", Secret::new("SECRET789\nx"));
    let error = get_err(&spec).await;
    assert_eq!(
        error.message(),
        "GET http://127.0.0.1:9/x: header \"X-Token\" has an invalid value"
    );
}

#[tokio::test]
async fn zero_timeout_fails_at_once_without_a_request() {
    let server = Server::start(|_| send("200 OK", &[], "{}"));
    let url = server.url("/m");
    let result = fetch(
        &HttpSpec::new(&url),
        &ctx(Duration::ZERO, Validators::default()),
    )
    .await;
    let error = result.expect_err("no time, no fetch");
    assert_eq!(error.message(), format!("GET {url}: timed out after 0s"));
    assert_eq!(server.requests().len(), 0);
}

#[tokio::test]
async fn huge_timeout_does_not_overflow() {
    let server = Server::start(|_| send("200 OK", &[], "{}"));
    let spec = HttpSpec::new(server.url("/m"));
    let fetched = fetch(&spec, &ctx(Duration::MAX, Validators::default())).await;
    assert_eq!(fetched, Ok(Fetched::data("{}")));
}

#[tokio::test]
async fn a_password_in_the_url_is_never_shown() {
    let server = Server::start(|_| send("500 Internal Server Error", &[], "no"));
    let url = server
        .url("/p")
        .replacen("http://", "http://bot:hunter22@", 1);
    let error = get_err(&HttpSpec::new(&url)).await;
    let shown = url.replace("hunter22", "<redacted>");
    assert_eq!(
        error.message(),
        format!("HTTP 500 Internal Server Error from {shown}: no")
    );
}
