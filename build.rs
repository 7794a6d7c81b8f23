//! Links the `discocache` binary as a position-dependent executable.
//!
//! A PIE binary of this size carries ~10,000 relative relocations that the
//! loader applies at every start, dirtying ~40 pages of `.data.rel.ro`; a
//! short-lived client (`discocache get`) pays that on every run. Only the
//! binaries are affected; the library and the test binaries link as usual.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
