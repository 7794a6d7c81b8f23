//! Tests of the no-follow primitives.

use super::*;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::symlink;

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

#[test]
fn both_ways_of_opening_refuse_a_symlink_in_any_component() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir_all(real.join("sub")).unwrap();
    symlink(&real, tmp.path().join("link")).unwrap();
    let through = tmp.path().join("link/sub");
    assert!(open_per_component(&real.join("sub"), dir_flags()).is_ok());
    let err = open_per_component(&through, dir_flags()).unwrap_err();
    assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{err}");
    let err = open_no_symlinks(&through, dir_flags()).unwrap_err();
    assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{err}");
    let err = Dir::open(&through).unwrap_err();
    let link = tmp.path().join("link");
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to open directory {}: it is a symlink",
            link.display()
        )
    );
}

#[test]
fn files_are_checked_before_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap().unwrap();
    fs::create_dir(tmp.path().join("d")).unwrap();
    let err = dir
        .open_file("d".as_ref(), Access::Read, "read")
        .unwrap_err();
    assert!(err.to_string().ends_with("d: it is a directory"), "{err}");
    let err = dir.remove_file("d".as_ref(), "prune").unwrap_err();
    assert!(err.to_string().ends_with("d: it is a directory"), "{err}");
    assert!(tmp.path().join("d").is_dir());
    assert!(
        dir.open_file("new".as_ref(), Access::Create, "open lock")
            .unwrap()
            .is_some()
    );
    assert!(dir.remove_file("new".as_ref(), "prune").unwrap());
    assert!(!dir.remove_file("new".as_ref(), "prune").unwrap());
}

#[test]
fn ensure_dir_creates_missing_parents_privately() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("a/b");
    ensure_dir(&deep).unwrap();
    for d in [tmp.path().join("a"), deep] {
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, DIR_MODE);
    }
}

#[test]
fn sockets_and_devices_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("x.json");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = open_regular(&sock, "read payload").unwrap_err();
    assert!(err.to_string().ends_with("x.json: it is a socket"), "{err}");
    let dir = Dir::open(tmp.path()).unwrap().unwrap();
    let err = dir
        .open_file("x.json".as_ref(), Access::Create, "open lock")
        .unwrap_err();
    assert!(err.to_string().ends_with("x.json: it is a socket"), "{err}");
    if !nix::unistd::geteuid().is_root() {
        let why =
            "sockets_and_devices_are_refused_by_name: device part skipped: needs root for mknod";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return;
    }
    let dev = tmp.path().join("y.json");
    let null = nix::sys::stat::makedev(1, 3);
    nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::S_IRUSR,
        null,
    )
    .unwrap();
    let err = open_regular(&dev, "read payload").unwrap_err();
    assert!(err.to_string().ends_with("y.json: it is a device"), "{err}");
}
