//! The shipped credentials drop-in (API keys through `EnvironmentFile=`)
//! verifies with the shipped units, and is really read by the check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shipped units in a private temp dir, ExecStart pointed at the
/// binary under test (verify checks that it exists), with `dropin` as
/// `discocache.service.d/credentials.conf`.
fn units_with(dir: &Path, dropin: &str) -> (PathBuf, PathBuf) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(shipped.join("discocache.service")).expect("service");
    let service = service.replace("%h/.cargo/bin/discocache", env!("CARGO_BIN_EXE_discocache"));
    std::fs::write(dir.join("discocache.service"), service).expect("write service");
    std::fs::copy(
        shipped.join("discocache.socket"),
        dir.join("discocache.socket"),
    )
    .expect("copy socket");
    let dropins = dir.join("discocache.service.d");
    std::fs::create_dir_all(&dropins).expect("drop-in dir");
    std::fs::write(dropins.join("credentials.conf"), dropin).expect("write drop-in");
    (
        dir.join("discocache.service"),
        dir.join("discocache.socket"),
    )
}

fn verify(dir: &Path, dropin: &str) -> Output {
    let (service, socket) = units_with(dir, dropin);
    Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(service)
        .arg(socket)
        .env("XDG_RUNTIME_DIR", dir)
        .output()
        .expect("run systemd-analyze")
}

fn have_systemd_analyze() -> bool {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing and CI is set"
        );
        eprintln!("note: systemd-analyze is not installed; skipping the drop-in check");
    }
    have
}

#[test]
fn credentials_dropin_verifies_with_the_shipped_units() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd/discocache.service.d/credentials.conf.example");
    let dropin = std::fs::read_to_string(example).expect("the shipped drop-in");
    assert!(
        dropin.contains("EnvironmentFile=-%h/.config/discocache/secrets.env"),
        "{dropin}"
    );
    let out = verify(dir.path(), &dropin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze: {stderr}"
    );

    // The check does read the drop-in: a broken one is reported by name.
    let broken = "[Service]\nEnvironmentFile=relative/secrets.env\n";
    let out = verify(dir.path(), broken);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("credentials.conf") && stderr.contains("EnvironmentFile"),
        "a broken drop-in went unnoticed: {stderr}"
    );
}
