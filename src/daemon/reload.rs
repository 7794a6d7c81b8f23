//! Which config the daemon runs, and reloading it (the `reload` op,
//! SIGHUP, a change of the file). A config that fails to load leaves the
//! old one running; the error is logged and shown in `status`/`stats`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;
use tokio::sync::mpsc;

use super::mutex::lock;
use super::state::Daemon;
use super::{notify, warm};
use crate::config::{self, Config, ConfigError};
use crate::source::SourceId;

/// How long the config file must stay unchanged before it is reloaded.
const SETTLE: Duration = Duration::from_millis(150);

/// What asks for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Signal,
    /// The config file changed on disk.
    FileChanged,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub added: Vec<SourceId>,
    pub removed: Vec<SourceId>,
}

/// The config file the daemon reads: `--config`, else the default path.
/// `None` when neither is known.
pub(crate) fn config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(config::default_path)
}

/// Loads the config: the explicit file, else the default file if it
/// exists, else the embedded default.
///
/// # Errors
///
/// The [`ConfigError`] of a file that does not load.
pub(crate) fn resolve(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    match explicit {
        Some(path) => Config::load(path),
        None => match config::default_path().filter(|p| p.exists()) {
            Some(path) => Config::load(&path),
            None => Ok(Config::embedded()),
        },
    }
}

/// Reloads the config and puts it in force: sources added start being kept
/// warm, sources removed stop (their files stay until `prune`).
///
/// # Errors
///
/// Why the config did not load (one line); the old config keeps running.
pub(crate) async fn reload(d: &Arc<Daemon>, why: &str) -> Result<Reloaded, String> {
    let explicit = d.explicit_config.clone();
    let loaded = tokio::task::spawn_blocking(move || resolve(explicit.as_deref()))
        .await
        .map_err(|e| format!("config reload task failed: {e}"))?;
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            let message = format!("{e}; keeping the previous config");
            tracing::error!("reload ({why}) failed: {message}");
            *lock(&d.config_error) = Some(message.clone());
            d.stats.set_error(Some(message.clone()));
            notify::report(&d.stats);
            return Err(message);
        }
    };
    let origin = config.origin.clone();
    d.set_config(config);
    *lock(&d.config_error) = None;
    d.stats.set_error(None);
    super::seeds::plant(d).await;
    let (added, removed) = warm::sync(d);
    tracing::info!(
        "reloaded {origin} ({why}): {} sources, added [{}], removed [{}]",
        d.config().sources.len(),
        join(&added),
        join(&removed)
    );
    notify::report(&d.stats);
    Ok(Reloaded { added, removed })
}

fn join(ids: &[SourceId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Serves reload triggers one at a time until shutdown. A burst of file
/// events is one reload; a file event that leaves the text as it was
/// loaded last is none.
pub(crate) async fn run(d: Arc<Daemon>, mut triggers: mpsc::Receiver<Trigger>) {
    let mut last_digest = config_digest(&d).await;
    loop {
        let trigger = tokio::select! {
            () = d.shutdown.cancelled() => return,
            t = triggers.recv() => match t { Some(t) => t, None => return },
        };
        let mut signalled = trigger == Trigger::Signal;
        // Let a burst of writes settle (a file written in place is first
        // truncated: an empty file is a valid config with no sources).
        loop {
            tokio::select! {
                more = triggers.recv() => match more {
                    Some(more) => signalled |= more == Trigger::Signal,
                    None => return,
                },
                () = tokio::time::sleep(SETTLE) => break,
            }
        }
        let text = config_digest(&d).await;
        if !signalled && text == last_digest {
            continue;
        }
        last_digest = text;
        let why = if signalled {
            "SIGHUP"
        } else {
            "config file changed"
        };
        let _ = reload(&d, why).await;
    }
}

/// The SHA-256 of the config file's text: kept instead of the text, which
/// for 100,000 sources is several MiB.
async fn config_digest(d: &Daemon) -> Option<[u8; 32]> {
    let path = config_file(d.explicit_config.as_deref())?;
    let text = tokio::fs::read(path).await.ok()?;
    Some(sha2::Sha256::digest(&text).into())
}
