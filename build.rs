//! Link settings for the `discocache` binary that make a short-lived
//! client (`discocache get`) start faster.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let crt_static = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if var("CARGO_CFG_TARGET_OS") != "linux" || crt_static {
        // A static build (`-C target-feature=+crt-static`) has neither cost.
        return;
    }
    // Position-dependent: a PIE binary of this size carries ~10,000
    // relative relocations that the loader applies at every start.
    println!("cargo:rustc-link-arg-bins=-no-pie");
    // The C compiler asked is the host's: only for a native build.
    if var("CARGO_CFG_TARGET_ENV") == "gnu" && var("TARGET") == var("HOST") {
        static_unwinder();
    }
}

/// Links libgcc's unwinder statically (`libgcc_eh.a`, as `-static-libgcc`
/// does) instead of loading `libgcc_s.so.1` at every start, when the C
/// compiler has it; otherwise changes nothing.
fn static_unwinder() {
    let Some(eh) = compiler_file("libgcc_eh.a") else {
        return;
    };
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // std asks for `-lgcc_s`; this directory comes first in the search path
    // and answers it with a linker script naming the static archive.
    let script = format!("INPUT({})\n", eh.display());
    if std::fs::write(out.join("libgcc_s.so"), script).is_ok() {
        println!("cargo:rustc-link-search=native={}", out.display());
    }
}

/// A file the C compiler links with, by absolute path, if it exists.
fn compiler_file(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (path.is_absolute() && Path::new(&path).is_file()).then_some(path)
}
