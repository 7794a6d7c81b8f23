//! Test helpers: real other processes (dead or alive) and real files.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command};
use std::time::SystemTime;

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> i64 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    child.wait().expect("wait for true");
    i64::from(child.id())
}

/// Has a real other process write `format` to `path`, with `%d` replaced by
/// its own pid; waits for it to exit and returns that (now dead) pid.
pub fn written_by_dead_process(path: &Path, format: &str) -> i64 {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"printf "$1" $$ > "$2""#)
        .arg("sh")
        .arg(format)
        .arg(path)
        .spawn()
        .expect("spawn sh");
    assert!(child.wait().expect("wait for sh").success());
    i64::from(child.id())
}

/// A live other process, killed and reaped when dropped.
pub struct LiveProcess(Child);

impl LiveProcess {
    /// Starts `sleep 60`.
    pub fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    /// Its pid.
    pub fn pid(&self) -> i64 {
        i64::from(self.0.id())
    }
}

impl Drop for LiveProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sets the mtime of the regular file at `path`.
pub fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

/// RFC 3339 with nanoseconds, as Go writes `time.Time` (UTC).
pub fn go_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}
