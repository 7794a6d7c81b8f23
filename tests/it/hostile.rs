//! Hostile files in the root: symlinks, FIFOs, huge sparse payloads and
//! directories owned by another user. Nothing outside the root is read,
//! written, chmodded, timestamped or deleted; nothing hangs.

use crate::helpers::env::Env;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use discocache::{Cache, Error, Source};
use serde_json::json;

use crate::helpers::daemon::{TestDaemon, config};

/// How long a command that must not hang may take.
const PROMPT: Duration = Duration::from_secs(10);

/// A temp dir holding the root (made), an outside directory and a config
/// of `sources`; `@DIR@` is replaced with the temp dir.
fn hostile_env(sources: &str) -> Env {
    let env = Env::new(&config(sources));
    fs::create_dir_all(env.root()).unwrap();
    env
}

/// What the hostile-file tests do with an [`Env`].
trait HostileCli {
    fn run(&self, args: &[&str]) -> Output;
    fn daemon(&self) -> TestDaemon;
}

impl HostileCli for Env {
    /// The CLI in direct mode, killed (and the test failed) past [`PROMPT`].
    fn run(&self, args: &[&str]) -> Output {
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish_promptly(child, args)
    }

    /// A daemon on this root and config.
    fn daemon(&self) -> TestDaemon {
        let text = fs::read_to_string(self.path("config.toml")).unwrap();
        let mut d = TestDaemon::new(&text);
        d.root = self.path("root");
        d.spawn();
        d
    }
}

fn finish_promptly(mut child: std::process::Child, args: &[&str]) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > PROMPT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("discocache {args:?} hung for {PROMPT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything a command printed, stdout then stderr.
fn output(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A `file` source `id` copying `<dir>/data.json`.
fn file_source(id: &str) -> String {
    format!("[[source]]\nid = \"{id}\"\nttl = \"1h\"\nfile = \"@DIR@/data.json\"\n\n")
}

/// An outside directory (mode 0755) holding `x.json` and `old.json`, whose
/// mtime is set far in the past.
fn outside(env: &Env) -> PathBuf {
    let out = env.path("outside");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["x.json", "old.json"] {
        fs::write(out.join(name), b"[\"outside\"]").unwrap();
        set_old_mtime(&out.join(name));
    }
    out
}

const OLD: Duration = Duration::from_secs(1_000_000_000);

fn set_old_mtime(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + OLD).unwrap();
}

/// The outside directory is exactly as [`outside`] left it.
fn assert_untouched(out: &Path) {
    let mut names: Vec<String> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["old.json", "x.json"],
        "files created or deleted outside"
    );
    let mode = fs::metadata(out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the outside directory was chmodded");
    for name in &names {
        let meta = fs::metadata(out.join(name)).unwrap();
        assert_eq!(fs::read(out.join(name)).unwrap(), b"[\"outside\"]");
        let mtime = meta.modified().unwrap();
        assert_eq!(
            mtime,
            SystemTime::UNIX_EPOCH + OLD,
            "{name} was timestamped"
        );
    }
}

#[test]
fn tier_symlinked_outside_is_never_served_written_chmodded_or_pruned() {
    let env = hostile_env(&file_source("t/x"));
    fs::write(env.path("data.json"), b"[\"inside\"]").unwrap();
    let out = outside(&env);
    symlink(&out, env.path("root/t")).unwrap();

    let get = env.run(&["get", "t/x", "--refresh", "never"]);
    assert!(!get.status.success(), "{}", stdout(&get));
    assert!(!stdout(&get).contains("outside"), "{}", stdout(&get));
    assert!(
        output(&get).contains("t: it is a symlink"),
        "{}",
        output(&get)
    );
    let refresh = env.run(&["refresh", "t/x"]);
    assert!(!refresh.status.success());
    assert!(
        output(&refresh).contains("it is a symlink"),
        "{}",
        output(&refresh)
    );
    let prune = env.run(&["prune"]);
    assert!(prune.status.success(), "{}", output(&prune));
    assert_untouched(&out);

    let d = env.daemon();
    let get = d.request(json!({"op": "get", "source": "t/x", "refresh": "never"}));
    assert!(!get.to_string().contains("outside"), "{get}");
    d.request(json!({"op": "refresh", "sources": ["t/x"]}));
    d.request(json!({"op": "invalidate", "source": "t/x"}));
    d.request(json!({"op": "prune"}));
    assert_untouched(&out);
}

#[test]
fn lock_symlink_creates_nothing_outside() {
    let env = hostile_env(&file_source("t/x"));
    fs::write(env.path("data.json"), b"[\"inside\"]").unwrap();
    fs::create_dir_all(env.path("root/t/.discocache")).unwrap();
    let target = env.path("created-outside");
    symlink(&target, env.path("root/t/.discocache/x.flock")).unwrap();

    let refresh = env.run(&["refresh", "t/x"]);
    assert!(!refresh.status.success());
    let err = output(&refresh);
    assert!(err.contains("x.flock: it is a symlink"), "{err}");
    assert!(
        !target.exists(),
        "a file was created through the lock symlink"
    );
}

#[test]
fn payload_symlink_target_is_not_timestamped_by_invalidate() {
    let env = hostile_env(&file_source("t/x"));
    fs::write(env.path("data.json"), b"[\"inside\"]").unwrap();
    // A fresh target, so that an invalidation would have something to do.
    let target = env.path("fresh.json");
    fs::write(&target, b"[\"outside\"]").unwrap();
    let mtime = fs::metadata(&target).unwrap().modified().unwrap();
    fs::create_dir(env.path("root/t")).unwrap();
    symlink(&target, env.path("root/t/x.json")).unwrap();

    let get = env.run(&["get", "t/x", "--refresh", "never"]);
    assert!(!stdout(&get).contains("outside"), "{}", stdout(&get));
    assert!(
        output(&get).contains("x.json: it is a symlink"),
        "{}",
        output(&get)
    );

    let d = env.daemon();
    let answer = d.request(json!({"op": "invalidate", "source": "t/x"}));
    assert_ne!(answer["invalidated"], true, "{answer}");
    assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), mtime);
    assert_eq!(fs::read(&target).unwrap(), b"[\"outside\"]");
}

#[test]
fn fifos_at_payload_sidecar_and_stats_do_not_hang_anything() {
    let sources = format!("{}{}", file_source("t/x"), file_source("t/y"));
    let env = hostile_env(&sources);
    fs::write(env.path("data.json"), b"[\"inside\"]").unwrap();
    fs::create_dir_all(env.path("root/t/.discocache")).unwrap();
    fs::create_dir_all(env.path("root/.discocache/state")).unwrap();
    fs::write(env.path("root/t/y.json"), b"[1]").unwrap();
    for fifo in [
        "root/t/x.json",
        "root/t/.discocache/y.meta.json",
        "root/.discocache/state/stats.json",
    ] {
        nix::unistd::mkfifo(&env.path(fifo), nix::sys::stat::Mode::S_IRWXU).unwrap();
    }

    let get = env.run(&["get", "t/x", "--refresh", "never"]);
    assert!(!get.status.success());
    assert!(
        output(&get).contains("x.json: it is a FIFO"),
        "{}",
        output(&get)
    );
    let status = env.run(&["status"]);
    assert!(
        output(&status).contains("it is a FIFO"),
        "{}",
        output(&status)
    );
    let refresh = env.run(&["refresh", "t/x"]);
    assert!(!refresh.status.success());
    assert!(
        output(&refresh).contains("it is a FIFO"),
        "{}",
        output(&refresh)
    );
    env.run(&["refresh", "t/y"]);
    for fifo in ["root/t/x.json", "root/t/.discocache/y.meta.json"] {
        let kind = fs::symlink_metadata(env.path(fifo)).unwrap().file_type();
        assert!(kind.is_fifo(), "{fifo} was replaced or removed");
    }

    // Start-up reads every payload, sidecar and the stats file: it must
    // answer `hello` (spawn waits for it) and keep serving.
    let d = env.daemon();
    let hello = d.request(json!({"op": "hello"}));
    assert_eq!(hello["ok"], true, "{hello}");
}

#[test]
fn sparse_payload_over_max_output_is_refused_without_reading_it() {
    let source = "[[source]]\nid = \"t/big\"\nttl = \"1h\"\nmax_output = \"1MiB\"\nfile = \"@DIR@/data.json\"\n\n";
    let env = hostile_env(source);
    fs::create_dir(env.path("root/t")).unwrap();
    let big = fs::File::create(env.path("root/t/big.json")).unwrap();
    big.set_len(2 << 30).unwrap();

    let started = Instant::now();
    let get = env.run(&["get", "t/big", "--refresh", "never"]);
    let took = started.elapsed();
    assert!(!get.status.success());
    let err = output(&get);
    assert!(
        err.contains("is 2147483648 bytes, over its limit of 1048576 bytes"),
        "{err}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn sparse_payload_over_max_output_is_refused_by_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let mut source = Source::parse("t/big").unwrap();
    source.policy.max_output = 1 << 20;
    fs::create_dir(dir.path().join("root/t")).unwrap();
    let big = fs::File::create(cache.layout().payload(&source.id)).unwrap();
    big.set_len(2 << 30).unwrap();
    let err = cache.read(&source).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { size, .. } if size == 2 << 30),
        "{err}"
    );
}

#[test]
fn fifo_file_source_is_refused_at_once() {
    let source = "[[source]]\nid = \"t/x\"\nttl = \"1h\"\nfile = \"@DIR@/pipe.json\"\n\n";
    let env = hostile_env(source);
    nix::unistd::mkfifo(&env.path("pipe.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let started = Instant::now();
    let refresh = env.run(&["refresh", "t/x"]);
    assert!(!refresh.status.success());
    let err = output(&refresh);
    assert!(err.contains("it is a FIFO, not a regular file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// True when running as root; otherwise prints why the test is skipped
/// (and fails when `CI` is set, where every test must run).
fn as_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let why = format!("{test}: skipped: needs root to chown to uid 65534");
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
    false
}

fn chown_nobody(path: &Path) {
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(path, nobody, None).unwrap();
}

#[test]
fn root_owned_by_another_user_is_refused_even_as_root() {
    if !as_root("root_owned_by_another_user_is_refused_even_as_root") {
        return;
    }
    let env = hostile_env(&file_source("t/x"));
    let root = env.path("root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    chown_nobody(&root);

    let err = Cache::open(&root).unwrap_err();
    assert!(matches!(err, Error::NotOwned { uid: 65534, .. }), "{err}");
    assert!(err.to_string().contains("(uid 65534)"), "{err}");
    let status = env.run(&["status"]);
    assert!(!status.status.success());
    assert!(
        output(&status).contains("(uid 65534), not by uid 0"),
        "{}",
        output(&status)
    );

    let text = fs::read_to_string(env.path("config.toml")).unwrap();
    let mut d = TestDaemon::new(&text);
    d.root = root.clone();
    let serve = d.command().output().unwrap();
    assert!(
        !serve.status.success(),
        "the daemon started on a foreign root"
    );
    let meta = fs::metadata(&root).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755, "chmodded");
    assert_eq!(meta.uid(), 65534);
}

#[tokio::test]
async fn tier_owned_by_another_user_is_refused() {
    if !as_root("tier_owned_by_another_user_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let source = Source::parse("t/x").unwrap();
    let tier = cache.layout().tier_dir(&source.id);
    fs::create_dir(&tier).unwrap();
    fs::write(tier.join("x.json"), b"[\"forged\"]").unwrap();
    chown_nobody(&tier.join("x.json"));
    chown_nobody(&tier);

    let err = cache.read(&source).unwrap_err();
    assert!(matches!(err, Error::NotOwned { uid: 65534, .. }), "{err}");
    let err = cache.write(&source, b"[1]".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("(uid 65534)"), "{err}");
    assert_eq!(fs::metadata(&tier).unwrap().uid(), 65534);
}

#[tokio::test]
async fn symlinked_root_is_resolved_once_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-root");
    fs::create_dir(&real).unwrap();
    symlink(&real, dir.path().join("root")).unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    assert_eq!(cache.layout().root(), real.canonicalize().unwrap());
    let source = Source::parse("t/x").unwrap();
    cache.write(&source, b"[1]".to_vec()).await.unwrap();
    assert_eq!(fs::read(real.join("t/x.json")).unwrap(), b"[1]");
    assert_eq!(cache.read(&source).unwrap().unwrap().data, b"[1]");
}
