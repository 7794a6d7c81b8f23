//! fizeau's real Go package on a test root: a small driver
//! (tests/fizeau/driver/main.go) built once per test run in a temp module,
//! next to a copy of the package read from `$FIZEAU_SRC`, else from
//! `shared/peers/fizeau/discoverycache` beside the repository (the nearest
//! ancestor that has it). Nothing of the package is kept in the repository.
//!
//! Go comes from Debian (`.ci/install-test-tools`). When it or the package
//! is missing, [`driver`] prints why and returns `None` (the test skips),
//! and panics instead when the `CI` environment variable is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const DRIVER_SRC: &str = include_str!("../../fizeau/driver/main.go");

const GO_MOD: &str = "module example.local/fzdriver

go 1.19

require golang.org/x/sync v0.1.0

replace golang.org/x/sync => /usr/share/gocode/src/golang.org/x/sync
";

/// The built driver, or `None` (after saying why) when it cannot be built
/// here. Panics when it cannot and `CI` is set.
pub fn driver() -> Option<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
            panic!("fizeau interop test cannot run: {why} (CI is set: failing, not skipping)")
        }
        Err(why) => {
            eprintln!("skipping fizeau interop test: {why}");
            None
        }
    }
}

/// Where fizeau's package source is.
fn package_source() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("FIZEAU_SRC") {
        return Ok(PathBuf::from(dir));
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/peers/fizeau/discoverycache"))
        .find(|d| d.join("cache.go").is_file())
        .ok_or_else(|| {
            "fizeau's package source not found: set FIZEAU_SRC or provide \
             ../shared/peers/fizeau/discoverycache"
                .to_owned()
        })
}

fn build() -> Result<PathBuf, String> {
    let go = which_go().ok_or("`go` is not installed (run .ci/install-test-tools)")?;
    let sync = Path::new("/usr/share/gocode/src/golang.org/x/sync/go.mod");
    if !sync.is_file() {
        return Err("golang.org/x/sync is not installed (run .ci/install-test-tools)".into());
    }
    let src = package_source()?;
    let module = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    write_module(module.path(), &src)?;
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fizeau-driver");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let built = module.path().join("driver");
    let gocache =
        std::env::var_os("GOCACHE").map_or_else(|| out_dir.join("go-build"), PathBuf::from);
    let out = Command::new(go)
        .args(["build", "-o"])
        .arg(&built)
        .arg(".")
        .current_dir(module.path())
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GO111MODULE", "on")
        .env("GOCACHE", gocache)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go build of the fizeau driver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Renamed into place: a test run in progress keeps its own copy.
    let bin = out_dir.join("driver");
    std::fs::rename(&built, &bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok(bin)
}

fn which_go() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("go"))
        .find(|p| p.is_file())
}

/// The temp module: go.mod, the driver, and the package's non-test files.
fn write_module(dir: &Path, src: &Path) -> Result<(), String> {
    let pkg = dir.join("discoverycache");
    std::fs::create_dir(&pkg).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("go.mod"), GO_MOD).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("main.go"), DRIVER_SRC).map_err(|e| e.to_string())?;
    let entries = std::fs::read_dir(src)
        .map_err(|e| format!("fizeau's package source {}: {e}", src.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".go") && !name.ends_with("_test.go") {
            std::fs::copy(&path, pkg.join(name)).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

/// One fizeau source on a root, driven through the driver.
pub struct Fizeau {
    bin: &'static Path,
    root: PathBuf,
    tier: String,
    name: String,
    /// fizeau's refresh deadline for the source (e.g. "10s").
    pub rd: String,
}

/// What one driver run printed and how it ended.
pub struct Run {
    /// The JSON line it printed.
    pub json: Value,
    /// Its exit status was 0 (the operation returned no error).
    pub ok: bool,
    /// The whole output, for messages.
    pub output: Output,
}

impl Fizeau {
    /// Source `tier/name` on `root`.
    pub fn new(bin: &'static Path, root: &Path, id: &str) -> Self {
        let (tier, name) = id.split_once('/').expect("tier/name");
        Self {
            bin,
            root: root.to_owned(),
            tier: tier.to_owned(),
            name: name.to_owned(),
            rd: "10s".to_owned(),
        }
    }

    /// The driver's command for `op` with extra flags (before `op`).
    pub fn command(&self, flags: &[&str], op: &str) -> Command {
        let mut c = Command::new(self.bin);
        c.arg("-root").arg(&self.root);
        c.args(["-tier", &self.tier, "-name", &self.name, "-rd", &self.rd]);
        c.args(flags).arg(op).stdin(Stdio::null());
        c
    }

    /// Runs `op` with `flags` and parses its JSON line.
    pub fn run(&self, flags: &[&str], op: &str) -> Run {
        let output = self
            .command(flags, op)
            .output()
            .expect("run the fizeau driver");
        let line = String::from_utf8_lossy(&output.stdout);
        let json = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            panic!(
                "fizeau driver {op}: {e}: stdout {line:?}, stderr {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        Run {
            ok: output.status.success(),
            json,
            output,
        }
    }
}
