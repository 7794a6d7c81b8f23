//! A temp dir holding a cache root and a config, and the CLI in direct mode
//! on them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_discocache");

/// A temp dir with `root/` (the cache root, made on first use) and
/// `config.toml`.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Writes `config` as `config.toml`, with `@DIR@` replaced by the temp
    /// dir.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.replace("@DIR@", dir.path().to_str().expect("utf-8 temp dir"));
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Self { dir }
    }

    /// A path in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The cache root.
    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// The CLI in direct mode on this root and config (no daemon answers
    /// on its socket path).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root")
            .arg(self.root())
            .arg("--socket")
            .arg(self.path("no-daemon.sock"))
            .arg("--config")
            .arg(self.path("config.toml"))
            .arg("--no-daemon")
            .args(args)
            .env_remove("DISCOCACHE_LOG")
            .stdin(Stdio::null());
        c
    }
}
