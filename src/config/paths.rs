//! Where the config, the cache root and the socket are by default.

use std::path::{Path, PathBuf};

/// Where the config is looked for: `$XDG_CONFIG_HOME/discocache/config.toml`,
/// else `~/.config/discocache/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("discocache").join("config.toml"))
}

/// The cache root: `$DISCOCACHE_ROOT`, else `$XDG_CACHE_HOME/discocache`,
/// else `~/.cache/discocache`.
pub fn default_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DISCOCACHE_ROOT")
        .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("discocache")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("discocache")))
        .unwrap_or_else(|| PathBuf::from(".discocache-root"))
}

/// The daemon socket: `$DISCOCACHE_SOCKET`, else
/// `$XDG_RUNTIME_DIR/discocache.sock`, else `<root>/discocache.sock`.
pub fn default_socket(root: &Path) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DISCOCACHE_SOCKET")
        .or_else(|| env("XDG_RUNTIME_DIR").map(|d| d.join("discocache.sock")))
        .unwrap_or_else(|| root.join("discocache.sock"))
}
