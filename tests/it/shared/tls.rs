//! The shared tier over TLS: a real `redis-server` listening with TLS only,
//! its certificate signed by a CA made at test time with the `openssl` CLI;
//! each "host" is the CLI in direct mode (the library with the config's
//! `[shared]` attached) on a root of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use discocache::config::SharedSettings;
use discocache::shared::SharedTier;
use tempfile::TempDir;

use super::id;
use crate::helpers::env::Env;
use crate::helpers::http::{Server, send};
use crate::helpers::redis::{RedisServer, TlsFiles, skip_or_fail};

const ID: &str = "discovery/models";
const BODY: &str = r#"{"models":["a"]}"#;

/// A CA, a server certificate for 127.0.0.1 signed by it, and a second CA
/// that signed nothing.
struct Pki {
    dir: TempDir,
}

impl Pki {
    /// Makes the files, or `None` (skip; a failure with `CI` set) when the
    /// `openssl` CLI is missing.
    fn make() -> Option<Self> {
        if let Err(why) = Command::new("openssl").arg("version").output() {
            skip_or_fail(&format!("openssl not runnable ({why})"));
            return None;
        }
        let pki = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for ca in ["ca", "other-ca"] {
            pki.openssl(
                ca,
                &format!("/CN=discocache-test-{ca}"),
                &[
                    "basicConstraints=critical,CA:TRUE",
                    "keyUsage=critical,keyCertSign",
                ],
            );
        }
        pki.openssl(
            "server",
            "/CN=127.0.0.1",
            &[
                "subjectAltName=IP:127.0.0.1",
                "basicConstraints=critical,CA:FALSE",
                "extendedKeyUsage=serverAuth",
            ],
        );
        Some(pki)
    }

    /// `<name>.pem` and `<name>.key`: self-signed, or signed by `ca` for
    /// the server.
    fn openssl(&self, name: &str, subject: &str, extensions: &[&str]) {
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-config", "/dev/null", "-subj", subject])
            .arg("-keyout")
            .arg(self.key(name))
            .arg("-out")
            .arg(self.pem(name));
        if name == "server" {
            cmd.arg("-CA").arg(self.pem("ca"));
            cmd.arg("-CAkey").arg(self.key("ca"));
        }
        for ext in extensions {
            cmd.args(["-addext", ext]);
        }
        let out = cmd.output().expect("run openssl");
        assert!(out.status.success(), "openssl for {name}: {out:?}");
    }

    fn pem(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    /// A TLS-only server with the server certificate.
    fn server(&self) -> Option<RedisServer> {
        let (ca, cert, key) = (self.pem("ca"), self.pem("server"), self.key("server"));
        let files = TlsFiles {
            ca: &ca,
            cert: &cert,
            key: &key,
        };
        RedisServer::start_tls(&files)
    }
}

/// A host whose config points at `redis` with `keys` added to `[shared]`
/// and `on_down` set on its one http source; `ca` (if any) is copied into
/// the config's directory as `ca.pem`, which `ca_file = "ca.pem"` names.
fn host(redis: &str, origin: &Server, keys: &str, on_down: &str, ca: Option<&Path>) -> Env {
    let config = format!(
        "[shared]\nurl = \"{redis}\"\nnamespace = \"tls\"\n{keys}\n\n\
         [[source]]\nid = \"{ID}\"\non_down = \"{on_down}\"\nhttp = {{ url = \"{}\" }}\n",
        origin.url("/models"),
    );
    let env = Env::new(&config);
    if let Some(ca) = ca {
        std::fs::copy(ca, env.path("ca.pem")).expect("copy the CA into the config dir");
    }
    env
}

fn refresh(env: &Env) -> Output {
    env.cmd(&["refresh", ID]).output().expect("run refresh")
}

#[tokio::test]
async fn a_refresh_goes_through_rediss_with_the_ca_file() {
    let Some(pki) = Pki::make() else { return };
    let Some(redis) = pki.server() else { return };
    let origin = Server::start(|_| send("200 OK", &[("ETag", "\"v1\"")], BODY));
    let keys = "ca_file = \"ca.pem\"";
    let a = host(
        &redis.tls_url(),
        &origin,
        keys,
        "hold",
        Some(&pki.pem("ca")),
    );
    let out = refresh(&a);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(origin.requests().len(), 1);

    // The commit reached the server: the shared copy is there over TLS.
    let mut settings = SharedSettings::new(&redis.tls_url());
    settings.namespace = "tls".into();
    settings.ca_file = Some(pki.pem("ca"));
    let tier = SharedTier::new(settings).unwrap();
    let copy = tier.read_copy(&id()).await.unwrap().expect("a shared copy");
    assert_eq!(copy.payload, BODY.as_bytes());

    // A second host copies it down instead of calling the origin.
    let b = host(
        &redis.tls_url(),
        &origin,
        keys,
        "hold",
        Some(&pki.pem("ca")),
    );
    let out = refresh(&b);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(origin.requests().len(), 1, "host b copied the shared copy");
    let payload = std::fs::read(b.root().join("discovery/models.json")).unwrap();
    assert_eq!(payload, BODY.as_bytes());
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_and_on_down_is_followed() {
    let Some(pki) = Pki::make() else { return };
    let Some(redis) = pki.server() else { return };
    let origin = Server::start(|_| send("200 OK", &[], BODY));
    let other = Some(pki.pem("other-ca"));
    let keys = "ca_file = \"ca.pem\"";
    let hold = host(&redis.tls_url(), &origin, keys, "hold", other.as_deref());
    let out = refresh(&hold);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("shared tier rediss://127.0.0.1:"), "{err}");
    assert!(err.contains("certificate"), "the cause is named: {err}");
    assert!(origin.requests().is_empty(), "hold calls nothing: {err}");

    // Without ca_file the bundled web roots apply: a private CA is refused.
    let plain = host(&redis.tls_url(), &origin, "", "hold", None);
    let out = refresh(&plain);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(origin.requests().is_empty(), "hold calls nothing: {err}");

    let local = host(&redis.tls_url(), &origin, keys, "local", other.as_deref());
    let out = refresh(&local);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(origin.requests().len(), 1, "local refreshes on its own");
}
