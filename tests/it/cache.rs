//! The library on its own: single flight, failure records, backoff,
//! deadlines, "not modified", external writes, prune and recovery.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use discocache::refresher::Validators;
use discocache::{
    Background, Cache, Ensured, Error, FetchError, Fetched, Policy, Refreshed, Source,
};
use tokio::sync::{Barrier, Notify};

fn source(id: &str) -> Source {
    let mut s = Source::parse(id).unwrap();
    s.policy = Policy {
        ttl: Duration::from_secs(60),
        refresh_deadline: Duration::from_secs(10),
        ..Policy::default()
    };
    s
}

fn open() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    (dir, cache)
}

/// Time from the last attempt to the next retry the source's record allows.
fn retry_wait(cache: &Cache, s: &Source) -> Duration {
    let state = cache.refresh_state(&s.id).unwrap();
    let (last, next) = (state.last_attempt_at.unwrap(), state.next_retry_at.unwrap());
    last.until(next)
}

async fn ok(cache: &Cache, s: &Source, body: &'static str) -> Refreshed {
    cache
        .refresh(s, move |_| async move { Ok(Fetched::data(body)) })
        .await
        .unwrap()
}

#[tokio::test]
async fn refresh_commits_payload_and_sidecar() {
    let (_d, cache) = open();
    let s = source("discovery/models");
    assert!(cache.read(&s).unwrap().is_none());
    assert_eq!(
        ok(&cache, &s, r#"{"v":1}"#).await,
        Refreshed::Committed { revision: 1 }
    );
    assert_eq!(
        ok(&cache, &s, r#"{"v":2}"#).await,
        Refreshed::Committed { revision: 2 }
    );
    let entry = cache.read_with_meta(&s).unwrap().unwrap();
    assert_eq!(entry.data, br#"{"v":2}"#);
    assert!(entry.fresh && !entry.expired);
    let meta = entry.meta.unwrap();
    assert_eq!(
        (meta.revision, meta.bytes, meta.consecutive_failures),
        (2, Some(7), 0)
    );
    assert_eq!(meta.ttl_ms, 60_000);
    let mtime = discocache::Timestamp::from(entry.fetched_at);
    assert_eq!(
        meta.fetched_at,
        Some(mtime),
        "sidecar fetched_at is the payload mtime"
    );
    assert!(
        !cache.layout().marker(&s.id).exists(),
        "marker removed after commit"
    );
    let files: BTreeSet<String> = std::fs::read_dir(cache.layout().tier_dir(&s.id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = ["models.json", ".discocache"].map(String::from).into();
    assert_eq!(files, want);
    let own: BTreeSet<String> = std::fs::read_dir(cache.layout().tier_state_dir(&s.id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = ["models.meta.json", "models.flock"]
        .map(String::from)
        .into();
    assert_eq!(own, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_run_the_refresher_once() {
    let (_d, cache) = open();
    let s = source("discovery/slow");
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let joined = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (cache, s, calls, gate, barrier, joined) = (
            cache.clone(),
            s.clone(),
            calls.clone(),
            gate.clone(),
            barrier.clone(),
            joined.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let refresh = cache.refresh(&s, move |_| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(Fetched::data("[1,2,3]"))
            });
            counted_after_first_poll(refresh, &joined).await
        }));
    }
    // Every caller has joined (its first poll ran) before the refresher is let go.
    wait_until(|| joined.load(Ordering::SeqCst) == 16).await;
    gate.notify_one();
    let mut committed = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Refreshed::Committed { revision: 1 } => committed += 1,
            Refreshed::Joined { revision: 1 } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(committed, 1);
}

#[tokio::test]
async fn dropped_caller_does_not_cancel_the_refresh() {
    let (_d, cache) = open();
    let s = source("t/dropped");
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let first = {
        let (cache, s) = (cache.clone(), s.clone());
        tokio::spawn(async move {
            cache
                .refresh(&s, move |_| async move {
                    g.notified().await;
                    Ok(Fetched::data("{}"))
                })
                .await
        })
    };
    wait_until(|| cache.refresh_state(&s.id).unwrap().in_flight).await;
    first.abort();
    let joined = Arc::new(AtomicUsize::new(0));
    let joiner = {
        let (cache, s, joined) = (cache.clone(), s.clone(), joined.clone());
        tokio::spawn(async move {
            let refresh = cache.refresh(&s, |_| async { panic!("must join, not run") });
            counted_after_first_poll(refresh, &joined).await
        })
    };
    // The joiner has joined the flight before the refresher is let go.
    wait_until(|| joined.load(Ordering::SeqCst) == 1).await;
    gate.notify_one();
    assert_eq!(
        joiner.await.unwrap().unwrap(),
        Refreshed::Joined { revision: 1 }
    );
}

#[tokio::test]
async fn panicking_refresher_is_an_error_for_all_and_not_stuck() {
    let (_d, cache) = open();
    let s = source("t/panics");
    let err = cache
        .refresh(&s, |_| async { panic!("kaboom") })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refresher panicked: kaboom"),
        "{err}"
    );
    assert!(!cache.refresh_state(&s.id).unwrap().in_flight);
    assert_eq!(cache.refresh_state(&s.id).unwrap().consecutive_failures, 1);
    assert_eq!(
        ok(&cache, &s, "1").await,
        Refreshed::Committed { revision: 1 }
    );
}

#[tokio::test]
async fn failure_keeps_old_payload_records_error_and_backs_off() {
    let (_d, cache) = open();
    let mut s = source("t/flaky");
    s.policy.ttl = Duration::from_millis(1);
    ok(&cache, &s, r#"{"good":true}"#).await;
    for n in 1..=3u32 {
        let err = cache
            .refresh(&s, |_| async { Err(FetchError::new("upstream said 500")) })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::RefreshFailed { joined: false, .. }),
            "{err}"
        );
        let state = cache.refresh_state(&s.id).unwrap();
        assert_eq!(state.consecutive_failures, n);
        assert_eq!(state.last_error.as_deref(), Some("upstream said 500"));
        assert!(state.failed && state.revision == 1);
    }
    assert_eq!(cache.read(&s).unwrap().unwrap().data, br#"{"good":true}"#);
    // 10s base: third failure waits 40s ±20%.
    let wait = retry_wait(&cache, &s);
    assert!(
        wait >= Duration::from_secs(31) && wait <= Duration::from_secs(49),
        "{wait:?}"
    );
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let bg = cache
        .maybe_refresh(&s, move |_| async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(Fetched::data("{}"))
        })
        .await
        .unwrap();
    assert!(matches!(bg, Background::BackingOff { .. }), "{bg:?}");
    let sync = cache
        .maybe_refresh_sync(&s, |_| async { Ok(Fetched::data("{}")) })
        .await
        .unwrap();
    assert!(matches!(sync, Ensured::BackingOff { .. }), "{sync:?}");
    assert_eq!(called.load(Ordering::SeqCst), 0);
    // A forced refresh ignores the backoff and clears the failure record.
    assert_eq!(
        ok(&cache, &s, "[]").await,
        Refreshed::Committed { revision: 2 }
    );
    let state = cache.refresh_state(&s.id).unwrap();
    assert_eq!(
        (
            state.consecutive_failures,
            state.last_error,
            state.next_retry_at
        ),
        (0, None, None)
    );
}

#[tokio::test]
async fn retry_after_sets_the_next_retry() {
    let (_d, cache) = open();
    let s = source("t/limited");
    let _ = cache
        .refresh(&s, |_| async {
            Err(FetchError::new("HTTP 429").with_retry_after(Duration::from_secs(600)))
        })
        .await;
    let wait = retry_wait(&cache, &s);
    assert!(
        wait >= Duration::from_secs(599) && wait <= Duration::from_secs(602),
        "{wait:?}"
    );
}

#[tokio::test]
async fn deadline_overrun_is_a_recorded_failure() {
    let (_d, cache) = open();
    let mut s = source("t/hangs");
    s.policy.refresh_deadline = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let err = cache
        .refresh(&s, |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Fetched::data("{}"))
        })
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        err.to_string().contains("deadline of 200ms exceeded"),
        "{err}"
    );
    assert_eq!(cache.refresh_state(&s.id).unwrap().consecutive_failures, 1);
}

#[tokio::test]
async fn garbage_output_fails_and_keeps_old_payload() {
    let (_d, cache) = open();
    let s = source("t/garbage");
    ok(&cache, &s, "[1]").await;
    let err = cache
        .refresh(&s, |_| async { Ok(Fetched::data("<html>oops")) })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not JSON"), "{err}");
    assert_eq!(cache.read(&s).unwrap().unwrap().data, b"[1]");
}

#[tokio::test]
async fn not_modified_renews_without_new_revision() {
    let (_d, cache) = open();
    let s = source("t/etag");
    let v = Validators {
        etag: Some("\"v1\"".into()),
        last_modified: None,
    };
    let v1 = v.clone();
    cache
        .refresh(&s, move |_| async move {
            Ok(Fetched::Data {
                bytes: b"{\"a\":1}".to_vec(),
                validators: v1,
            })
        })
        .await
        .unwrap();
    let before = cache.meta(&s.id).unwrap().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let got = cache
        .refresh(&s, move |ctx| async move {
            *seen2.lock().unwrap() = Some(ctx.validators.clone());
            Ok(Fetched::NotModified {
                validators: Validators::default(),
            })
        })
        .await
        .unwrap();
    assert_eq!(got, Refreshed::NotModified { revision: 1 });
    assert_eq!(seen.lock().unwrap().clone(), Some(v.clone()));
    let after = cache.meta(&s.id).unwrap().unwrap();
    assert_eq!(after.revision, 1);
    assert_eq!(after.validators, v);
    assert!(
        after.fetched_at >= before.fetched_at && after.last_attempt_at > before.last_attempt_at
    );
    assert_eq!(cache.read(&s).unwrap().unwrap().data, b"{\"a\":1}");
}

#[tokio::test]
async fn not_modified_without_payload_is_a_failure() {
    let (_d, cache) = open();
    let s = source("t/nothing");
    let err = cache
        .refresh(&s, |_| async {
            Ok(Fetched::NotModified {
                validators: Validators::default(),
            })
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no payload"), "{err}");
}

#[tokio::test]
async fn maybe_refresh_starts_once_then_reports_fresh() {
    let (_d, cache) = open();
    let s = source("t/bg");
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let first = cache
        .maybe_refresh(&s, move |_| async move {
            g.notified().await;
            Ok(Fetched::data("{}"))
        })
        .await
        .unwrap();
    assert_eq!(first, Background::Started);
    let second = cache
        .maybe_refresh(&s, |_| async { Ok(Fetched::data("{}")) })
        .await
        .unwrap();
    assert_eq!(second, Background::InFlight);
    gate.notify_one();
    wait_until(|| {
        cache.read(&s).unwrap().is_some() && !cache.refresh_state(&s.id).unwrap().in_flight
    })
    .await;
    let third = cache
        .maybe_refresh(&s, |_| async { Ok(Fetched::data("{}")) })
        .await
        .unwrap();
    assert_eq!(third, Background::Fresh);
    let sync = cache
        .maybe_refresh_sync(&s, |_| async { Ok(Fetched::data("{}")) })
        .await
        .unwrap();
    assert_eq!(sync, Ensured::Fresh);
}

#[tokio::test]
async fn write_commits_external_bytes_and_rejects_non_json() {
    let (_d, cache) = open();
    let s = source("runtime/pinned");
    assert_eq!(cache.write(&s, b"{\"x\":1}".to_vec()).await.unwrap(), 1);
    assert_eq!(cache.write(&s, b"{\"x\":2}".to_vec()).await.unwrap(), 2);
    let err = cache.write(&s, b"nope".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert_eq!(cache.read(&s).unwrap().unwrap().data, b"{\"x\":2}");
}

#[tokio::test]
async fn max_stale_marks_old_data_expired() {
    let (_d, cache) = open();
    let mut s = source("t/old");
    ok(&cache, &s, "{}").await;
    s.policy.ttl = Duration::from_millis(1);
    s.policy.max_stale = Some(Duration::from_millis(2));
    let old = std::time::SystemTime::now() - Duration::from_secs(1);
    std::fs::File::options()
        .write(true)
        .open(cache.layout().payload(&s.id))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let e = cache.read(&s).unwrap().unwrap();
    assert!(e.stale() && e.expired, "{e:?}");
}

#[tokio::test]
async fn recover_removes_leftovers_but_keeps_failure_records() {
    let (_d, cache) = open();
    let a = source("t/crashed");
    let b = source("t/never-succeeded");
    ok(&cache, &a, "{}").await;
    let _ = cache
        .refresh(&b, |_| async { Err(FetchError::new("nope")) })
        .await;
    let dir = cache.layout().tier_dir(&a.id);
    std::fs::write(dir.join(".crashed.abc123.tmp"), b"{\"torn").unwrap();
    std::fs::write(cache.layout().marker(&a.id), b"{\"pid\":1}").unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let report = cache.recover().unwrap();
    assert_eq!(report.removed.len(), 2, "{report:?}");
    assert!(dir.join("notes.txt").exists());
    assert!(cache.layout().sidecar(&b.id).exists());
    assert!(!cache.layout().payload(&b.id).exists());
    assert_eq!(cache.read(&a).unwrap().unwrap().data, b"{}");
}

#[tokio::test]
async fn prune_removes_unknown_sources_only() {
    let (_d, cache) = open();
    let keep = source("t/keep");
    let drop_me = source("t/gone");
    let other_tier = source("old/gone");
    for s in [&keep, &drop_me, &other_tier] {
        ok(&cache, s, "{}").await;
    }
    let root = cache.layout().root().to_owned();
    std::fs::write(root.join("t/README"), b"not ours").unwrap();
    let active: BTreeSet<_> = [keep.id.clone()].into();
    let dry = cache.prune(&active, true).unwrap();
    assert_eq!(dry.sources.len(), 2);
    assert!(
        cache.layout().payload(&drop_me.id).exists(),
        "dry run removes nothing"
    );
    let done = cache.prune(&active, false).unwrap();
    assert_eq!(
        done.sources,
        vec![other_tier.id.clone(), drop_me.id.clone()]
    );
    assert!(!cache.layout().payload(&drop_me.id).exists());
    assert!(!cache.layout().lock(&drop_me.id).exists());
    assert!(!root.join("old").exists(), "empty tier removed");
    assert!(root.join("t/README").exists());
    assert_eq!(cache.read(&keep).unwrap().unwrap().data, b"{}");
}

#[tokio::test]
async fn prune_skips_a_source_being_refreshed() {
    let (_d, cache) = open();
    let s = source("t/busy");
    ok(&cache, &s, "{}").await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let c = cache.clone();
    let s2 = s.clone();
    let running = tokio::spawn(async move {
        c.refresh(&s2, move |_| async move {
            g.notified().await;
            Ok(Fetched::data("[]"))
        })
        .await
    });
    // The marker is written once the lock is held.
    wait_until(|| cache.layout().marker(&s.id).exists()).await;
    let report = cache.prune(&BTreeSet::new(), false).unwrap();
    assert_eq!(report.in_flight, vec![s.id.clone()]);
    gate.notify_one();
    running.await.unwrap().unwrap();
    assert_eq!(cache.read(&s).unwrap().unwrap().data, b"[]");
}

#[tokio::test]
async fn root_and_tiers_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, cache) = open();
    let s = source("t/private");
    ok(&cache, &s, "{}").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(cache.layout().root()), 0o700);
    assert_eq!(mode(&cache.layout().tier_dir(&s.id)), 0o700);
    assert_eq!(mode(&cache.layout().payload(&s.id)), 0o600);
    assert_eq!(mode(&cache.layout().sidecar(&s.id)), 0o600);
    assert_eq!(mode(&cache.layout().lock(&s.id)), 0o600);
}

/// Awaits `fut`, counting in `polled` once its first poll has run (for a
/// refresh: once the caller has joined or started the flight).
async fn counted_after_first_poll<F: std::future::Future>(
    fut: F,
    polled: &AtomicUsize,
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut first = true;
    std::future::poll_fn(|cx| {
        let r = fut.as_mut().poll(cx);
        if std::mem::take(&mut first) {
            polled.fetch_add(1, Ordering::SeqCst);
        }
        r
    })
    .await
}

/// Waits for a condition with a deadline, yielding between checks.
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 10s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
