//! The daemon, end to end: the real binary on a temp root and socket.

mod cli;
mod lifecycle;
mod limits;
mod modes;
mod ops;
mod protocol;
mod routing;
mod systemd;
mod wedge;
