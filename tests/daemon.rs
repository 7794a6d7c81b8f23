//! The daemon, end to end: the real binary on a temp root and socket.

mod common;

#[path = "daemon/cli.rs"]
mod cli;
#[path = "daemon/lifecycle.rs"]
mod lifecycle;
#[path = "daemon/limits.rs"]
mod limits;
#[path = "daemon/ops.rs"]
mod ops;
#[path = "daemon/systemd.rs"]
mod systemd;
