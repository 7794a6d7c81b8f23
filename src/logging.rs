//! The one logging set-up, used by the daemon and the CLI alike.
//!
//! Events go to stderr, filtered by `DISCOCACHE_LOG` (an `EnvFilter`
//! directive such as `debug` or `discocache=trace`), else by the caller's
//! default level. The HTTP client's own logging (ureq, its protocol crate,
//! rustls) is muted at every level, whatever `DISCOCACHE_LOG` says: at
//! `trace` it dumps whole requests and responses, credentials included.
//! What the refresher itself reports has its secrets redacted.

use tracing::Metadata;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Crates whose log events never reach the output (they may show header
/// values, URLs with passwords, or request and response bodies).
const MUTED: &[&str] = &[
    "ureq",
    "ureq_proto",
    "rustls",
    "webpki",
    "rustls_pki_types",
    "hyper",
    "h2",
    "http",
];

/// Installs the stderr subscriber (and the bridge from the `log` crate);
/// `default` is the filter used when `DISCOCACHE_LOG` is unset or invalid.
/// A second call does nothing.
pub fn init(default: &str) {
    let filter =
        EnvFilter::try_from_env("DISCOCACHE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter)
        .with_filter(filter_fn(|meta: &Metadata<'_>| !is_muted(meta.target())));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// True for the target of an event of a muted crate.
fn is_muted(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or_default();
    MUTED.contains(&krate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_client_crates_are_muted_and_ours_are_not() {
        let muted = is_muted;
        assert!(muted("ureq::unversioned::transport"));
        assert!(muted("ureq_proto::client"));
        assert!(muted("rustls::client::hs"));
        assert!(!muted("discocache::refresher::http"));
        assert!(!muted("ureqx"));
    }
}
