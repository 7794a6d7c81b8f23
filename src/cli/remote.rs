//! Whether to use the daemon on the socket: only one that runs as this user
//! (or root), answers `hello`, and serves the root (and config) this command
//! was given. Anything else means going direct, with one note on stderr.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Ctx;
use crate::client::{CallError, Client, DEFAULT_TIMEOUT};
use crate::protocol::{ErrorCode, FORMAT, PROTOCOL_VERSION};

/// How long `hello` may take before the daemon counts as unreachable.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the daemon unless told not to; when it should not be used,
/// says why once on stderr and returns `None` (the caller goes direct).
pub fn connect(ctx: &Ctx, no_daemon: bool) -> Option<Client> {
    if no_daemon {
        return None;
    }
    match usable(ctx) {
        Ok(client) => Some(client),
        Err(why) => {
            note(ctx, &why);
            None
        }
    }
}

/// The one note a command prints when it goes direct by itself.
pub fn note(ctx: &Ctx, why: &str) {
    let root = ctx.root.display();
    eprintln!("discocache: note: {why}; using {root} directly");
}

/// Whether a failed call means the daemon cannot serve this command now
/// (the connection failed or timed out, or the daemon is busy), so the
/// command should go direct; the reason to note.
pub fn unreachable(ctx: &Ctx, e: &CallError) -> Option<String> {
    let socket = ctx.socket.display();
    match e {
        CallError::Io(e) => Some(format!("the daemon on {socket} did not answer ({e})")),
        CallError::Daemon(e) if e.code == ErrorCode::Busy => {
            Some(format!("the daemon on {socket} is busy ({})", e.message))
        }
        CallError::Daemon(_) => None,
    }
}

/// A connection to a daemon fit to serve this command, or why there is none.
fn usable(ctx: &Ctx) -> Result<Client, String> {
    let socket = ctx.socket.display();
    let mut client =
        Client::connect(&ctx.socket).map_err(|e| format!("no daemon answers on {socket} ({e})"))?;
    let uid = client
        .peer_uid()
        .map_err(|e| format!("cannot tell who listens on {socket} ({e})"))?;
    let me = nix::unistd::geteuid().as_raw();
    if uid != me && uid != 0 {
        return Err(format!(
            "the daemon on {socket} runs as uid {uid}, not as you (uid {me}) or root"
        ));
    }
    client
        .set_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let hello = client
        .hello()
        .map_err(|e| unreachable(ctx, &e).unwrap_or_else(|| e.to_string()))?;
    if hello.protocol != PROTOCOL_VERSION || hello.format != FORMAT {
        return Err(format!(
            "the daemon on {socket} speaks protocol {} with format {} (this is protocol {PROTOCOL_VERSION}, format {FORMAT})",
            hello.protocol, hello.format
        ));
    }
    if !same_path(&hello.root, &ctx.root) {
        return Err(format!(
            "the daemon on {socket} serves {}, not {}",
            hello.root.display(),
            ctx.root.display()
        ));
    }
    if let Some(config) = &ctx.config
        && !hello
            .config
            .as_deref()
            .is_some_and(|c| same_path(c, config))
    {
        let theirs = hello.config.map_or("its embedded config".to_owned(), |c| {
            c.display().to_string()
        });
        return Err(format!(
            "the daemon on {socket} runs {theirs}, not {}",
            config.display()
        ));
    }
    client
        .set_timeout(Some(DEFAULT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// Whether two paths name the same file (compared resolved when they exist).
fn same_path(a: &Path, b: &Path) -> bool {
    resolved(a) == resolved(b)
}

fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}
