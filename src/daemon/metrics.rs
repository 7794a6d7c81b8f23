//! The metrics text, for the `metrics` op and for `GET /metrics` over HTTP
//! when `[daemon] metrics_listen` is set.
//!
//! The HTTP side is hyper's HTTP/1 server on the daemon's runtime: one task
//! per connection, every path but `/metrics` answered 404, a request head
//! due within [`HEADER_TIMEOUT`], and all of it stopped by the daemon's
//! shutdown token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::state::{Daemon, blocking};
use super::view::Stamp;
use crate::config::Config;
use crate::freshness;
use crate::stats::metrics::{self, SourceGauge};

/// A connection that has not sent a request head within this is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics text now: the counters, the age and freshness of every
/// configured source (one `stat` each, on a blocking thread), and the
/// shared tier's state when the config has `[shared]`.
pub(crate) async fn text(d: &Arc<Daemon>) -> String {
    let d = Arc::clone(d);
    let rendered = blocking(move || {
        let config = d.config();
        let gauges = gauges(&d, &config);
        let mut text = metrics::render_with(&d.stats.head(), &gauges, |id| d.stats.counters(id));
        if let Some(shared) = super::tier::gauge(&d) {
            metrics::shared(&mut text, &shared);
        }
        Ok(text)
    })
    .await;
    rendered.unwrap_or_else(|e| format!("# cannot render the metrics: {e}\n"))
}

/// The gauges of every configured source.
fn gauges<'a>(d: &Daemon, config: &'a Config) -> Vec<SourceGauge<'a>> {
    let layout = d.cache.layout();
    let now = SystemTime::now();
    config
        .sources
        .iter()
        .map(|sc| {
            let modified = Stamp::probe_modified(&layout.payload(&sc.id)).unwrap_or_else(|e| {
                tracing::debug!("metrics: cannot look at {}: {e}", sc.id);
                None
            });
            let judged = modified.map(|m| freshness::judge(m, None, now, &sc.policy));
            SourceGauge {
                id: &sc.id,
                age: judged.as_ref().map(|j| j.age),
                fresh: judged.is_some_and(|j| j.fresh()),
            }
        })
        .collect()
}

/// Binds `addr` (a loopback address, checked by the config).
///
/// # Errors
///
/// When the address cannot be bound, naming it.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the metrics address {addr}"))
}

/// Serves `GET /metrics` on `listener` until the daemon shuts down.
pub(crate) async fn serve(d: Arc<Daemon>, listener: TcpListener) {
    let shutdown = d.shutdown.clone();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    crate::server::accept_failed(&e, &shutdown).await;
                    continue;
                }
            },
        };
        let d2 = Arc::clone(&d);
        let service = service_fn(move |req| answer(Arc::clone(&d2), req));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        d.tracker.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                served = conn => if let Err(e) = served {
                    tracing::debug!("metrics: a connection failed: {e}");
                },
            }
        });
    }
}

/// `GET /metrics` (or `HEAD`) gets the text; anything else 404 or 405.
async fn answer(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: try /metrics\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"));
    }
    let mut response = Response::new(text(&d).await);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}

fn plain(status: StatusCode, body: &str) -> Response<String> {
    let mut response = Response::new(body.to_owned());
    *response.status_mut() = status;
    response
}
