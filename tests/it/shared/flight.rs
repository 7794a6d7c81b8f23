//! [`fly`]: one refresh across hosts over the real server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use discocache::Policy;
use discocache::shared::{Flight, Produced, Refused, SharedValidators, fly};

use super::{DEADLINE, id, now_ms, tier};
use crate::helpers::redis::RedisServer;

fn policy() -> Policy {
    Policy {
        refresh_deadline: Duration::from_secs(5),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(60),
        ..Policy::default()
    }
}

fn fetched(body: &str, etag: &str) -> Produced {
    Produced::Fetched {
        payload: body.as_bytes().to_vec(),
        etag: Some(etag.into()),
        last_modified: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_flights_on_two_hosts_make_one_upstream_call_and_agree() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hosts = [tier(&server), tier(&server)];
    let calls = Arc::new(AtomicUsize::new(0));
    let stale_before = now_ms();
    let flights: Vec<_> = (0..50)
        .map(|i| {
            let (host, calls) = (Arc::clone(&hosts[i % 2]), Arc::clone(&calls));
            tokio::spawn(async move {
                let refresh = |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // A slow origin, so that the others find the lease held.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(fetched("{\"v\":1}", "\"e1\""))
                };
                fly(&host, &id(), &policy(), stale_before, DEADLINE, refresh)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut refreshed, mut copied) = (0, 0);
    for f in flights {
        let copy = match f.await.unwrap() {
            Flight::Refreshed(copy) => {
                refreshed += 1;
                copy
            }
            Flight::CopyDown(copy) => {
                copied += 1;
                copy
            }
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(copy.payload, b"{\"v\":1}");
    }
    assert_eq!((refreshed, copied), (1, 49));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_etag_learnt_on_one_host_gives_a_304_on_the_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (tier(&server), tier(&server));
    let first = fly(&a, &id(), &policy(), 0, DEADLINE, |_| async {
        Ok(fetched("payload", "\"e1\""))
    })
    .await
    .unwrap();
    let Flight::Refreshed(first) = first else {
        panic!("{first:?}")
    };
    // Host B's local copy counts as stale even against A's result.
    let sent = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&sent);
    let again = fly(
        &b,
        &id(),
        &policy(),
        first.fetched_at_ms,
        DEADLINE,
        |v: SharedValidators| async move {
            *seen.lock().unwrap() = Some(v);
            Ok(Produced::NotModified)
        },
    )
    .await
    .unwrap();
    let got = sent.lock().unwrap().clone().unwrap();
    assert_eq!(got.etag.as_deref(), Some("\"e1\""));
    let Flight::Refreshed(copy) = again else {
        panic!("{again:?}")
    };
    assert_eq!(copy.payload, b"payload");
    assert!(copy.fence > first.fence);
    let stored = a.read_copy(&id()).await.unwrap().unwrap();
    assert_eq!(
        (stored.payload, stored.fence),
        (b"payload".to_vec(), copy.fence)
    );
}

#[tokio::test]
async fn a_retry_after_on_one_host_stops_the_other_from_calling() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (tier(&server), tier(&server));
    let failed = fly(&a, &id(), &policy(), 0, DEADLINE, |_| async {
        Err(Refused {
            message: "429 Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(30)),
        })
    })
    .await
    .unwrap();
    let Flight::Failed {
        next_retry_at_ms: Some(next),
        ..
    } = failed
    else {
        panic!("{failed:?}")
    };
    assert!(next >= now_ms() + 25_000, "Retry-After beat the 1 s base");
    let calls = AtomicUsize::new(0);
    let held = fly(&b, &id(), &policy(), 0, DEADLINE, |_| async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(fetched("x", "\"e\""))
    })
    .await
    .unwrap();
    assert_eq!(held, Flight::Backoff(next));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
