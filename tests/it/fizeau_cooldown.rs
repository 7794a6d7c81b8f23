//! A failed refresh leaves the marker as fizeau's failure record (its
//! cooldown): fizeau does not call the failing origin again at once, and
//! our own next claim is not held up by it.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use discocache::{Cache, Ensured, FetchError, Fetched, Policy, Refreshed, Source};

use crate::helpers::fizeau::{Fizeau, driver};

const ERROR: &str = "origin said 503";

fn source(backoff_base: Duration) -> Source {
    let mut s = Source::parse("discovery/models").unwrap();
    s.policy = Policy {
        ttl: Duration::from_secs(3600),
        refresh_deadline: Duration::from_secs(10),
        backoff_base,
        ..Policy::default()
    };
    s
}

async fn fail(cache: &Cache, s: &Source) {
    let f = |_| async { Err::<Fetched, _>(FetchError::new(ERROR)) };
    let err = cache.refresh(s, f).await.unwrap_err();
    assert!(err.to_string().contains(ERROR), "{err}");
}

fn time(v: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339_weak(v.as_str().expect("a time")).expect("RFC 3339")
}

/// fizeau's rule, acted out: a marker with `last_error` is a failure
/// cooldown while its pid lives and its deadline has not passed.
#[tokio::test]
async fn failed_refresh_leaves_fizeaus_cooldown_and_our_next_claim_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source(Duration::from_millis(1));
    fail(&cache, &s).await;

    let marker = cache.layout().marker(&s.id);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
    assert_eq!(m["pid"], std::process::id(), "{m}");
    assert_eq!(m["last_error"], ERROR, "{m}");
    assert!(m.get("pgid").is_none(), "{m}");
    let cooldown = time(&m["deadline"]).duration_since(time(&m["started_at"]));
    assert_eq!(cooldown.unwrap(), Duration::from_millis(250), "{m}");
    let state = cache.refresh_state(&s.id).unwrap();
    assert!(!state.in_flight, "a failure record is no refresh running");
    assert_eq!(state.last_error.as_deref(), Some(ERROR));

    // Our backoff (about 1 ms here) is over long before fizeau's 250 ms
    // cooldown: our next claim replaces the record and refreshes.
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let f = move |_| async move {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok::<_, FetchError>(Fetched::data("[1]"))
    };
    let got = cache.maybe_refresh_sync(&s, f).await.unwrap();
    assert_eq!(
        got,
        Ensured::Refreshed(Refreshed::Committed { revision: 1 })
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!marker.exists(), "our marker is removed after a success");
}

#[tokio::test]
async fn fizeau_maybe_refresh_right_after_our_failure_does_not_call_its_refresher() {
    let Some(bin) = driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cache = Cache::open(&root).unwrap();
    let s = source(Duration::from_secs(10));
    let fz = Fizeau::new(bin, &root, "discovery/models");
    let runs = dir.path().join("runs");
    let script = format!("echo run >> '{}'; echo '{{}}'", runs.display());
    // Conclusive only when fizeau looked within the 250 ms cooldown; a
    // loaded machine may need another try.
    let mut conclusive = false;
    for _ in 0..10 {
        let failed_at = Instant::now();
        fail(&cache, &s).await;
        let out = fz
            .command(&["-ttl", "1h"], "maybe-refresh")
            .args(["--", "sh", "-c", &script])
            .output()
            .unwrap();
        if failed_at.elapsed() >= Duration::from_millis(200) {
            continue;
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            json["claimed"], false,
            "fizeau claimed in our cooldown: {json}"
        );
        assert!(!runs.exists(), "fizeau called the failing origin at once");
        conclusive = true;
        break;
    }
    assert!(conclusive, "fizeau never ran within 200 ms of our failure");

    // Our own forced refresh is not held up by the record.
    let f = |_| async { Ok::<_, FetchError>(Fetched::data("[1]")) };
    let got = cache.refresh(&s, f).await.unwrap();
    assert!(matches!(got, Refreshed::Committed { .. }), "{got:?}");
    assert!(!cache.layout().marker(&s.id).exists());
}

/// A live process, killed when dropped.
struct Live(std::process::Child);

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// fizeau's refresh just failed (its failure record, by a live process,
/// within its cooldown): a refresh of ours then, or one that waited for
/// fizeau's and saw it fail, takes that failure instead of calling the
/// failing origin a second time.
#[tokio::test]
async fn fizeau_failure_cooling_down_is_taken_without_calling_the_origin_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let s = source(Duration::from_secs(10));
    fs::create_dir_all(cache.layout().tier_dir(&s.id)).unwrap();
    let fizeau = Live(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap(),
    );
    let now = SystemTime::now();
    let t = |t: SystemTime| humantime::format_rfc3339_nanos(t).to_string();
    let record = format!(
        r#"{{"pid":{},"started_at":"{}","deadline":"{}","last_error":"upstream 500"}}"#,
        fizeau.0.id(),
        t(now),
        t(now + Duration::from_secs(5))
    );
    let marker = cache.layout().marker(&s.id);
    fs::write(&marker, &record).unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let f = move |_| async move {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok::<_, FetchError>(Fetched::data("[1]"))
    };
    let err = cache.refresh(&s, f).await.unwrap_err();
    assert!(err.to_string().contains("upstream 500"), "{err}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the origin was called again"
    );
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        record,
        "fizeau's record touched"
    );
    let meta = cache.meta(&s.id).unwrap().expect("the failure is recorded");
    assert!(meta.last_error.unwrap().contains("upstream 500"));
}
