//! The shared tier's scripts and client against a real `redis-server`
//! (started per test on its own port; skipped when it is not installed,
//! failing instead when `CI` is set).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use discocache::config::SharedSettings;
use discocache::shared::{
    Commit, CommitKind, Committed, Failure, Lease, SharedCopy, SharedTier, Take,
};
use discocache::{Cache, Source, SourceId};

use crate::helpers::redis::RedisServer;

mod flight;
mod hosts;
mod outage;
mod tls;

/// Longest any test waits for something to happen.
const DEADLINE: Duration = Duration::from_secs(10);

fn tier(server: &RedisServer) -> Arc<SharedTier> {
    Arc::new(SharedTier::new(SharedSettings::new(&server.url())).unwrap())
}

fn id() -> SourceId {
    SourceId::parse("discovery/models").unwrap()
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

fn fetched(payload: &[u8]) -> Commit<'_> {
    Commit {
        kind: CommitKind::Fetched,
        fetched_at_ms: now_ms(),
        payload,
        sha256: "00",
        etag: None,
        last_modified: None,
    }
}

async fn leased(tier: &SharedTier, hold: Duration) -> Lease {
    match tier.take_lease(&id(), hold, None).await.unwrap() {
        Take::Leased(lease) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

/// Tries the lease until it is taken, waiting on the events stream while
/// another holder has it; panics past [`DEADLINE`].
async fn take_over(tier: &SharedTier, hold: Duration) -> Lease {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "lease never freed");
        match tier.take_lease(&id(), hold, None).await.unwrap() {
            Take::Leased(lease) => return lease,
            Take::Busy { remaining, after } => {
                tier.wait_for(&id(), &after, remaining).await.unwrap();
            }
            Take::Backoff { .. } => panic!("no backoff was recorded"),
            Take::Newer => panic!("no bound was given"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_50_concurrent_lease_tries_on_two_hosts_wins() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hosts = [tier(&server), tier(&server)];
    let tries: Vec<_> = (0..50)
        .map(|i| {
            let host = Arc::clone(&hosts[i % 2]);
            tokio::spawn(async move { host.take_lease(&id(), DEADLINE, None).await.unwrap() })
        })
        .collect();
    let mut won = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            Take::Leased(lease) => won.push(lease.fence),
            Take::Busy { remaining, .. } => assert!(remaining > Duration::ZERO),
            Take::Backoff { .. } => panic!("no backoff was recorded"),
            Take::Newer => panic!("no bound was given"),
        }
    }
    assert_eq!(won, vec![1], "exactly one lease, with the first fence");
}

#[tokio::test]
async fn a_late_commit_with_an_older_fence_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (tier(&server), tier(&server));
    let paused = leased(&a, Duration::from_millis(200)).await;
    let newer = take_over(&b, DEADLINE).await;
    assert!(newer.fence > paused.fence);
    assert_eq!(
        b.commit(&newer, &fetched(b"new")).await.unwrap(),
        Committed::Committed(newer.fence)
    );
    let late = a.commit(&paused, &fetched(b"old")).await.unwrap();
    assert_eq!(late, Committed::Stale(newer.fence));
    let copy = a.read_copy(&id()).await.unwrap().unwrap();
    assert_eq!(
        (copy.payload.as_slice(), copy.fence),
        (&b"new"[..], newer.fence)
    );
    // A late failure record is ignored too: no backoff from a stale holder.
    let failure = Failure {
        error: "boom",
        base: DEADLINE,
        cap: DEADLINE,
        retry_after: None,
    };
    assert_eq!(a.record_failure(&paused, &failure).await.unwrap(), None);
    assert!(matches!(
        a.take_lease(&id(), DEADLINE, None).await.unwrap(),
        Take::Leased(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_by_exactly_one_waiter() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dead = tier(&server);
    let crashed = leased(&dead, Duration::from_millis(300)).await;
    let hosts = [tier(&server), tier(&server)];
    let waiters: Vec<_> = (0..10)
        .map(|i| {
            let host = Arc::clone(&hosts[i % 2]);
            tokio::spawn(async move {
                let start = Instant::now();
                while start.elapsed() < DEADLINE {
                    match host.take_lease(&id(), DEADLINE, None).await.unwrap() {
                        Take::Leased(lease) => return Some(lease.fence),
                        // Someone took it over with a long lease.
                        Take::Busy { remaining, .. } if remaining > Duration::from_secs(2) => {
                            return None;
                        }
                        Take::Busy { remaining, after } => {
                            host.wait_for(&id(), &after, remaining).await.unwrap();
                        }
                        Take::Backoff { .. } => panic!("no backoff was recorded"),
                        Take::Newer => panic!("no bound was given"),
                    }
                }
                panic!("no waiter got the lease");
            })
        })
        .collect();
    let mut won = Vec::new();
    for w in waiters {
        won.extend(w.await.unwrap());
    }
    assert_eq!(won, vec![crashed.fence + 1]);
}

#[tokio::test]
async fn a_shared_backoff_refuses_leases_until_next_retry_at() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (tier(&server), tier(&server));
    let lease = leased(&a, DEADLINE).await;
    let failure = Failure {
        error: "429 Too Many Requests",
        base: Duration::from_millis(10),
        cap: Duration::from_secs(60),
        retry_after: Some(Duration::from_millis(700)),
    };
    let recorded = Instant::now();
    let next = a.record_failure(&lease, &failure).await.unwrap().unwrap();
    let refused = b.take_lease(&id(), DEADLINE, None).await.unwrap();
    assert_eq!(
        refused,
        Take::Backoff {
            next_retry_at_ms: next
        }
    );
    let start = Instant::now();
    let taken = loop {
        assert!(start.elapsed() < DEADLINE, "backoff never ended");
        match b.take_lease(&id(), DEADLINE, None).await.unwrap() {
            Take::Leased(lease) => break lease,
            Take::Backoff { next_retry_at_ms } => assert_eq!(next_retry_at_ms, next),
            Take::Busy { .. } => panic!("the failed holder's lease was released"),
            Take::Newer => panic!("no bound was given"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Retry-After (700 ms) won over the 10 ms base.
    assert!(recorded.elapsed() >= Duration::from_millis(650));
    assert_eq!(taken.fence, lease.fence + 1);
    // A commit clears the backoff for the next round.
    b.commit(&taken, &fetched(b"ok")).await.unwrap();
    assert!(matches!(
        a.take_lease(&id(), DEADLINE, None).await.unwrap(),
        Take::Leased(_)
    ));
}

#[tokio::test]
async fn a_4_mib_payload_round_trips_byte_for_byte() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (tier(&server), tier(&server));
    let payload: Vec<u8> = (0..4 << 20).map(|_| fastrand::u8(..)).collect();
    let lease = leased(&a, DEADLINE).await;
    let commit = Commit {
        kind: CommitKind::Fetched,
        fetched_at_ms: 1_700_000_000_123,
        payload: &payload,
        sha256: "c0ffee",
        etag: Some("\"v1\""),
        last_modified: Some("Tue, 14 Nov 2023 22:13:20 GMT"),
    };
    a.commit(&lease, &commit).await.unwrap();
    let copy = b.read_copy(&id()).await.unwrap().unwrap();
    let expected = SharedCopy {
        payload: payload.clone(),
        fence: lease.fence,
        fetched_at_ms: 1_700_000_000_123,
        sha256: "c0ffee".into(),
        etag: Some("\"v1\"".into()),
        last_modified: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()),
    };
    assert!(copy == expected, "the copy differs from what was committed");
    // A 304 moves fetched_at and keeps the payload.
    let next = take_over(&b, DEADLINE).await;
    let not_modified = Commit {
        kind: CommitKind::NotModified,
        fetched_at_ms: 1_700_000_999_000,
        payload: b"what this host had",
        ..commit
    };
    b.commit(&next, &not_modified).await.unwrap();
    let copy = a.read_copy(&id()).await.unwrap().unwrap();
    assert_eq!(copy.fetched_at_ms, 1_700_000_999_000);
    assert!(copy.payload == payload);
}

#[tokio::test]
async fn a_waiter_sees_the_other_hosts_commit_on_the_events_stream() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (tier(&server), tier(&server));
    let lease = leased(&a, DEADLINE).await;
    let Take::Busy { remaining, after } = b.take_lease(&id(), DEADLINE, None).await.unwrap() else {
        panic!("the lease is held");
    };
    let waiter = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.wait_for(&id(), &after, remaining).await.unwrap() })
    };
    a.commit(&lease, &fetched(b"fresh")).await.unwrap();
    let event = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the waiter woke")
        .unwrap()
        .expect("an event, not the bound");
    assert_eq!(
        (event.kind.as_str(), event.fence),
        ("committed", lease.fence)
    );
    let copy = b.read_copy(&id()).await.unwrap().unwrap();
    assert_eq!(copy.payload, b"fresh");
}

#[tokio::test]
async fn a_wiped_server_shows_a_new_epoch_and_the_tier_reports_down_meanwhile() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let host = tier(&server);
    let first = host.check_epoch().await.unwrap();
    assert!(first.created && !first.changed);
    let again = host.check_epoch().await.unwrap();
    assert_eq!(
        (again.epoch.as_str(), again.created, again.changed),
        (first.epoch.as_str(), false, false)
    );
    assert!(host.status().up);

    let server = server.restart_empty();
    // The old connection is gone: the first command fails fast and the
    // status says so.
    let started = Instant::now();
    assert!(host.check_epoch().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    let status = host.status();
    assert!(!status.up);
    assert!(status.last_error.is_some());

    let start = Instant::now();
    let after = loop {
        assert!(start.elapsed() < DEADLINE, "never reconnected");
        if let Ok(check) = host.check_epoch().await {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(after.created && after.changed, "{after:?}");
    assert_ne!(after.epoch, first.epoch);
    assert_eq!(host.status().epoch.as_deref(), Some(after.epoch.as_str()));
    drop(server);
}

#[tokio::test]
async fn a_down_server_fails_fast_and_names_itself_without_the_password() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url().replace("redis://", "redis://app:pw-SECRET@");
    drop(server);
    let host = SharedTier::new(SharedSettings::new(&url)).unwrap();
    let started = Instant::now();
    let err = host.take_lease(&id(), DEADLINE, None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let shown = err.to_string();
    assert!(shown.contains("take lease"), "{shown}");
    assert!(
        shown.contains("redis://app:<redacted>@127.0.0.1"),
        "{shown}"
    );
    assert!(!shown.contains("pw-SECRET"), "{shown}");
    // The reconnect backoff answers at once, without a connection attempt.
    let again = host.take_lease(&id(), DEADLINE, None).await.unwrap_err();
    assert!(again.to_string().contains("is down"), "{again}");
    assert!(!host.status().up);
}

#[tokio::test]
async fn reading_the_cache_sends_no_command_to_the_shared_tier() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let host = tier(&server);
    host.check_epoch().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("root")).unwrap();
    let source = Source::parse("discovery/models").unwrap();
    cache
        .write(&source, b"{\"models\":[]}".to_vec())
        .await
        .unwrap();
    let sent = host.status().commands;
    let before = server.commands_processed();
    for _ in 0..1000 {
        assert!(cache.read(&source).unwrap().is_some());
    }
    let after = server.commands_processed();
    // The only command in between is the first INFO itself.
    assert_eq!(after - before, 1);
    assert_eq!(host.status().commands, sent);
}

#[tokio::test]
async fn a_wiped_server_is_reseeded_from_a_local_copy_and_nothing_goes_backwards() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let host = tier(&server);
    let newer = Commit {
        fetched_at_ms: 2_000,
        ..fetched(b"newer")
    };
    let older = Commit {
        fetched_at_ms: 1_000,
        ..fetched(b"older")
    };
    let fence = host.seed(&id(), &newer).await.unwrap().expect("seeded");
    // Another host seeds its older local copy: kept out.
    assert_eq!(host.seed(&id(), &older).await.unwrap(), None);
    let copy = host.read_copy(&id()).await.unwrap().unwrap();
    assert_eq!(
        (copy.payload.as_slice(), copy.fence),
        (&b"newer"[..], fence)
    );
    // On a wiped server a seed takes no fence: a holder that leased before
    // it still commits a newer fetch, and one whose fetch is older than the
    // seeded copy is refused.
    let server = server.restart_empty();
    let host = tier(&server);
    let lease = leased(&host, DEADLINE).await;
    let seeded = host.seed(&id(), &newer).await.unwrap().expect("seeded");
    assert!(seeded < lease.fence, "the seed took no fence");
    let late = host.commit(&lease, &older).await.unwrap();
    assert_eq!(late, Committed::Stale(seeded), "an older fetch is refused");
    let lease = leased(&host, DEADLINE).await;
    let newest = Commit {
        fetched_at_ms: 3_000,
        ..fetched(b"newest")
    };
    let fresh = host.commit(&lease, &newest).await.unwrap();
    assert_eq!(
        fresh,
        Committed::Committed(lease.fence),
        "a newer fetch wins"
    );
    let copy = host.read_copy(&id()).await.unwrap().unwrap();
    assert_eq!(copy.payload, b"newest");
}

#[tokio::test]
async fn a_lease_is_not_taken_when_the_shared_copy_is_newer_and_carries_its_validators() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let host = tier(&server);
    let lease = leased(&host, DEADLINE).await;
    assert_eq!(
        (lease.etag.as_deref(), lease.last_modified.as_deref()),
        (None, None)
    );
    let copy = Commit {
        etag: Some("\"v1\""),
        last_modified: Some("Tue, 01 Dec 2026 00:00:00 GMT"),
        ..fetched(b"[1]")
    };
    host.commit(&lease, &copy).await.unwrap();
    // Fetched after the bound: copy it down, no lease.
    let bound = Some(copy.fetched_at_ms - 1);
    let take = host.take_lease(&id(), DEADLINE, bound).await.unwrap();
    assert!(matches!(take, Take::Newer), "{take:?}");
    // Not after the bound: the lease, with the copy's validators to send.
    let bound = Some(copy.fetched_at_ms);
    let Take::Leased(lease) = host.take_lease(&id(), DEADLINE, bound).await.unwrap() else {
        panic!("the lease was free");
    };
    assert_eq!(lease.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        lease.last_modified.as_deref(),
        Some("Tue, 01 Dec 2026 00:00:00 GMT")
    );
}
