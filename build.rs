//! Link settings for the `discocache` binary that make a short-lived
//! client (`discocache get`) start faster.
//!
//! On a native glibc build whose C compiler has the static C libraries, the
//! binary is linked statically: it then starts without the dynamic loader,
//! which halves the time of a `discocache get`. Set
//! `DISCOCACHE_DYNAMIC_LINK=1` to link it dynamically instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DISCOCACHE_DYNAMIC_LINK");
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
        if var("DISCOCACHE_DYNAMIC_LINK").is_empty() {
            static_libc();
        }
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

/// The C libraries std asks for (`-lc`, `-lm`, ...), as static archives.
const LIBC: [&str; 6] = ["c", "m", "pthread", "dl", "rt", "util"];

/// Links the binary statically when the C compiler has every archive of
/// [`LIBC`]; otherwise changes nothing.
///
/// rustc links std's C libraries with `-Bdynamic -lc ...` even under
/// `-static`, so a directory searched only when linking the binary answers
/// each `-lNAME` with a linker script naming `libNAME.a`. Tests and benches
/// are linked as before.
fn static_libc() {
    let Some(dir) = std::env::var_os("OUT_DIR").map(|d| PathBuf::from(d).join("static-libc"))
    else {
        return;
    };
    let archives: Option<Vec<PathBuf>> = LIBC
        .iter()
        .map(|lib| compiler_file(&format!("lib{lib}.a")))
        .collect();
    let Some(archives) = archives else {
        return;
    };
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (lib, archive) in LIBC.iter().zip(&archives) {
        let script = format!("INPUT({})\n", archive.display());
        if std::fs::write(dir.join(format!("lib{lib}.so")), script).is_err() {
            return;
        }
    }
    println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
    println!("cargo:rustc-link-arg-bins=-static");
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
