//! The daemon, end to end: the real binary on a temp root and socket.

mod cli;
mod lifecycle;
mod limits;
mod ops;
mod systemd;
mod wedge;
