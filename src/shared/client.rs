//! The connection to the shared tier: short connect and command timeouts,
//! reconnects with backoff, and a [`TierStatus`] for status and metrics.
//!
//! Nothing connects until the first operation: a host with `[shared]` whose
//! refreshes never run never talks to Redis.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, TlsCertificates};

use super::error::SharedError;
use super::keys::Keys;
use crate::config::SharedSettings;

/// First reconnect delay after the tier goes down.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// The shared tier as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierStatus {
    /// The server, password redacted.
    pub url: String,
    /// Whether the last operation reached the server.
    pub up: bool,
    /// The epoch seen last, if any was checked.
    pub epoch: Option<String>,
    /// The last connection or command error, if any.
    pub last_error: Option<String>,
    /// Operations sent to the server by this handle.
    pub commands: u64,
    /// Local copies this handle wrote with [`SharedTier::seed`].
    pub seeded: u64,
}

/// What the handle remembers between operations.
#[derive(Debug, Default)]
struct State {
    up: bool,
    epoch: Option<String>,
    last_error: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// A handle on the shared tier; cheap to share behind an `Arc`.
pub struct SharedTier {
    pub(super) settings: SharedSettings,
    pub(super) keys: Keys,
    client: Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    state: Mutex<State>,
    commands: AtomicU64,
    seeded: AtomicU64,
}

impl std::fmt::Debug for SharedTier {
    /// Shows the redacted URL only: the URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("url", &self.settings.redacted_url())
            .field("namespace", &self.settings.namespace)
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// A handle for `settings`; does not connect. A `ca_file` is read
    /// here: its certificates are the only roots a `rediss://` server's
    /// certificate may chain to.
    ///
    /// # Errors
    ///
    /// [`SharedError::Redis`] when the URL does not parse, or the
    /// `ca_file` cannot be read or holds no certificate.
    pub fn new(settings: SharedSettings) -> Result<Self, SharedError> {
        let client = client(&settings).map_err(|(op, source)| SharedError::Redis {
            op,
            url: settings.redacted_url(),
            source,
        })?;
        Ok(Self {
            keys: Keys::new(&settings.namespace),
            settings,
            client,
            conn: tokio::sync::Mutex::new(None),
            state: Mutex::new(State::default()),
            commands: AtomicU64::new(0),
            seeded: AtomicU64::new(0),
        })
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Up or down, the epoch and the last error.
    pub fn status(&self) -> TierStatus {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        TierStatus {
            url: self.settings.redacted_url(),
            up: state.up,
            epoch: state.epoch.clone(),
            last_error: state.last_error.clone(),
            commands: self.commands.load(Ordering::Relaxed),
            seeded: self.seeded.load(Ordering::Relaxed),
        }
    }

    /// The shared connection, connecting if needed (unless a reconnect is
    /// not due yet). Counts one operation.
    pub(super) async fn connection(
        &self,
        op: &'static str,
    ) -> Result<MultiplexedConnection, SharedError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            self.commands.fetch_add(1, Ordering::Relaxed);
            return Ok(conn.clone());
        }
        self.not_before()?;
        match self.connect(self.settings.command_timeout).await {
            Ok(conn) => {
                *slot = Some(conn.clone());
                self.commands.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => {
                drop(slot);
                Err(self.failed(op, e).await)
            }
        }
    }

    /// A connection of its own, for a blocking read that must not hold up
    /// the shared one; its command timeout covers `block` too.
    pub(super) async fn dedicated(
        &self,
        op: &'static str,
        block: Duration,
    ) -> Result<MultiplexedConnection, SharedError> {
        self.not_before()?;
        match self.connect(block + self.settings.command_timeout).await {
            Ok(conn) => {
                self.commands.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => Err(self.failed(op, e).await),
        }
    }

    async fn connect(&self, response: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Refuses while the reconnect backoff runs.
    fn not_before(&self) -> Result<(), SharedError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.retry_at {
            Some(at) if at > Instant::now() => Err(SharedError::Down {
                url: self.settings.redacted_url(),
                retry_in_ms: millis(at - Instant::now()),
                last_error: state.last_error.clone().unwrap_or_default(),
            }),
            _ => Ok(()),
        }
    }

    /// Notes a reply: the tier is up.
    pub(super) fn reached(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.up = true;
        state.failures = 0;
        state.retry_at = None;
    }

    /// Counts a local copy written by a seed.
    pub(super) fn count_seed(&self) {
        self.seeded.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes the epoch just seen.
    pub(super) fn saw_epoch(&self, epoch: &str) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.epoch.replace(epoch.to_owned())
    }

    /// Turns a client error into [`SharedError`]; an error of the link (not
    /// of the command) drops the connection and starts the reconnect
    /// backoff. Never call it while holding the connection slot.
    pub(super) async fn failed(&self, op: &'static str, e: RedisError) -> SharedError {
        let link = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error();
        let url = self.settings.redacted_url();
        if link {
            self.conn.lock().await.take();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.up = false;
            state.failures = state.failures.saturating_add(1);
            state.last_error = Some(format!("{op}: {e}"));
            state.retry_at = Some(Instant::now() + reconnect_delay(state.failures));
        } else {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.last_error = Some(format!("{op}: {e}"));
        }
        SharedError::Redis { op, url, source: e }
    }
}

/// The client for `settings`: TLS with the `ca_file`'s roots when one is
/// set, else whatever the URL's scheme says.
fn client(settings: &SharedSettings) -> Result<Client, (&'static str, RedisError)> {
    let pem = settings.ca_pem().map_err(|why| {
        let e = RedisError::from((ErrorKind::InvalidClientConfig, "unusable ca_file", why));
        ("read ca_file", e)
    })?;
    let Some(pem) = pem else {
        return Client::open(settings.url()).map_err(|e| ("parse url", e));
    };
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(settings.url(), certs).map_err(|e| ("parse url", e))
}

/// The delay before reconnect attempt `failures` (1-based): exponential
/// from [`RECONNECT_BASE`], capped, with up to 25 % jitter off.
fn reconnect_delay(failures: u32) -> Duration {
    let exp = RECONNECT_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let capped = exp.min(RECONNECT_CAP);
    capped.mul_f64(1.0 - fastrand::f64() * 0.25)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_up_to_the_cap() {
        assert!(reconnect_delay(1) <= RECONNECT_BASE);
        assert!(reconnect_delay(1) >= RECONNECT_BASE.mul_f64(0.75));
        assert!(reconnect_delay(4) >= Duration::from_millis(600));
        assert!(reconnect_delay(40) <= RECONNECT_CAP);
        assert!(reconnect_delay(40) >= RECONNECT_CAP.mul_f64(0.75));
    }

    #[test]
    fn a_missing_ca_file_fails_the_handle_naming_the_file() {
        let mut settings = SharedSettings::new("rediss://u:pw-secret@127.0.0.1:1/0");
        settings.ca_file = Some("/nonexistent/redis-ca.pem".into());
        let err = SharedTier::new(settings).unwrap_err().to_string();
        assert!(err.contains("read ca_file"), "{err}");
        assert!(err.contains("/nonexistent/redis-ca.pem"), "{err}");
        assert!(!err.contains("pw-secret"), "{err}");
    }

    #[test]
    fn nothing_connects_until_asked() {
        // A port nothing listens on: creating the handle must not fail.
        let tier = SharedTier::new(SharedSettings::new("redis://127.0.0.1:1/0")).unwrap();
        let status = tier.status();
        assert!(!status.up);
        assert_eq!(status.commands, 0);
    }
}
