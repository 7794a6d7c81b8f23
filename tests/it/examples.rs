//! `examples/`: every shipped config passes `config check`, the pty
//! example prints only under a terminal, and each reader (Python, shell
//! with jq, Go, Rust) reads the data and the age of a root the binary
//! filled, with and without the sidecar.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

#[path = "../../examples/reader.rs"]
mod rust_reader;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn discocache(root: &Path, config: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_discocache"))
        .arg("--no-daemon")
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(examples().join("config").join(config))
        .args(args)
        .output()
        .expect("run discocache")
}

/// Whether `program` runs; when it does not, says the test is skipped, or
/// fails when `CI` is set (`.ci/install-test-tools` installs it there).
fn have(program: &str, version_arg: &str) -> bool {
    let found = Command::new(program)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed and CI is set: run .ci/install-test-tools"
        );
        eprintln!(
            "note: {program} is not installed; skipping its reader (.ci/install-test-tools installs it)"
        );
    }
    found
}

#[test]
fn example_configs_pass_config_check() {
    let dir = examples().join("config");
    for name in ["openrouter", "ollama", "github", "pty-cli", "local-file"] {
        let file = dir.join(format!("{name}.toml"));
        let out = Command::new(env!("CARGO_BIN_EXE_discocache"))
            .args(["config", "check"])
            .arg(&file)
            .env("OPENROUTER_API_KEY", "sk-or-test")
            .output()
            .expect("run config check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.ends_with(": ok, 1 source\n"),
            "{}: {stdout}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The key really comes from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_discocache"))
        .args(["config", "check"])
        .arg(dir.join("openrouter.toml"))
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .expect("run config check");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OPENROUTER_API_KEY is not set"));
}

#[test]
fn pty_example_prints_only_under_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let out = discocache(&root, "pty-cli.toml", &["get", "cli/models"]);
    assert!(out.status.success(), "{out:?}");
    let data: Value = serde_json::from_slice(&out.stdout).expect("JSON payload");
    assert_eq!(data["terminal"], true, "{data}");
    assert_eq!(data["models"], serde_json::json!(["a", "b"]));
}

/// A root the binary filled from the `local-file` example, its payload
/// dated two hours back (so the age can only come from the mtime).
fn filled_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let out = discocache(&root, "local-file.toml", &["refresh", "runtime/pinned"]);
    assert!(out.status.success(), "{out:?}");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(root.join("runtime/pinned.json"))
        .expect("open payload")
        .set_modified(two_hours_ago)
        .expect("date the payload back");
    (dir, root)
}

/// Runs a reader on the root: its one JSON line, or its exit code.
type Reader<'a> = dyn Fn(&Path, &str) -> Result<Value, Option<i32>> + 'a;

fn run_reader(mut cmd: Command) -> Result<Value, Option<i32>> {
    let out = cmd.output().expect("run the reader");
    if !out.status.success() {
        return Err(out.status.code());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}")))
}

/// What every reader must say about the filled root: the payload's data,
/// its age from the mtime, the sidecar's revision and ttl while there is
/// one, and nothing but the payload once the sidecar is gone.
fn check_reader(read: &Reader<'_>) {
    let (_dir, root) = filled_root();
    let pinned = std::fs::read(examples().join("config/pinned.json")).expect("pinned.json");
    let expected: Value = serde_json::from_slice(&pinned).expect("pinned.json is JSON");

    let line = read(&root, "runtime/pinned").expect("the reader reads the source");
    assert_eq!(line["source"], "runtime/pinned");
    assert_eq!(line["data"], expected);
    let age = line["age_seconds"].as_f64().expect("age_seconds");
    assert!((7199.0..7300.0).contains(&age), "age {age}: {line}");
    assert_eq!(line["revision"], 1, "{line}");
    assert_eq!(line["fresh"], false, "ttl 1h, two hours old: {line}");

    // The sidecar is optional extra.
    let v1 = root.join("runtime/pinned.meta.json");
    let v2 = root.join("runtime/.discocache/pinned.meta.json");
    let _ = std::fs::remove_file(v1);
    let _ = std::fs::remove_file(v2);
    let line = read(&root, "runtime/pinned").expect("read without a sidecar");
    assert_eq!(line["data"], expected);
    let age = line["age_seconds"].as_f64().expect("age_seconds");
    assert!((7199.0..7300.0).contains(&age), "age {age}: {line}");
    assert_eq!(line["revision"], Value::Null, "{line}");

    assert_eq!(read(&root, "runtime/none"), Err(Some(3)), "no data: exit 3");
}

fn readers() -> PathBuf {
    examples().join("readers")
}

#[test]
fn python_reader_reads_data_and_age() {
    if !have("python3", "--version") {
        return;
    }
    check_reader(&|root, source| {
        let mut cmd = Command::new("python3");
        cmd.arg(readers().join("read.py")).arg(root).arg(source);
        run_reader(cmd)
    });
}

#[test]
fn shell_reader_reads_data_and_age_with_jq() {
    if !have("jq", "--version") {
        return;
    }
    check_reader(&|root, source| {
        let mut cmd = Command::new("bash");
        cmd.arg(readers().join("read.sh")).arg(root).arg(source);
        run_reader(cmd)
    });
}

#[test]
fn go_reader_reads_data_and_age() {
    if !have("go", "version") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("read");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(readers().join("read.go"))
        .env("GOCACHE", dir.path().join("gocache"))
        .output()
        .expect("go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_reader(&|root, source| {
        let mut cmd = Command::new(&binary);
        cmd.arg(root).arg(source);
        run_reader(cmd)
    });
}

#[test]
fn rust_reader_reads_data_and_age() {
    check_reader(&|root, source| match rust_reader::report(
        root.to_str().expect("utf-8 root"),
        source,
    ) {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err(Some(3)),
        Err(e) => panic!("{e}"),
    });
}
