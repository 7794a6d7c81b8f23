//! Temporary entry point: `discocache [--root R] [--socket S] [--config C] serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use discocache::config;
use discocache::daemon::{self, ServeOptions};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (mut root, mut socket, mut config_file, mut command) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--root") => root = args.next().map(PathBuf::from),
            Some("--socket") => socket = args.next().map(PathBuf::from),
            Some("--config") => config_file = args.next().map(PathBuf::from),
            Some(other) => command = Some(other.to_owned()),
            None => command = Some(String::new()),
        }
    }
    if command.as_deref() != Some("serve") {
        eprintln!("usage: discocache [--root DIR] [--socket PATH] [--config FILE] serve");
        return ExitCode::from(2);
    }
    let root = root.unwrap_or_else(config::default_root);
    let socket = socket.unwrap_or_else(|| config::default_socket(&root));
    match daemon::run(ServeOptions {
        root,
        socket,
        config: config_file,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("discocache: {e:#}");
            ExitCode::from(1)
        }
    }
}
