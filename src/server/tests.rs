//! The transport rules with a trivial service and small limits.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::protocol::Response;

/// Answers every request with `{"ok": true, "echo": <op>}`; a `watch`
/// gets a watch on `events`.
struct Echo {
    events: broadcast::Sender<crate::protocol::Event>,
}

impl Service for Echo {
    fn call(self: &Arc<Self>, request: Envelope) -> impl Future<Output = Answer> + Send {
        let op = serde_json::to_value(&request.request).map(|v| v["op"].clone());
        let rx = self.events.subscribe();
        async move {
            let op = op.unwrap_or_default();
            let answer = Answer::of(
                &Response::ok(request.id.clone()).with("echo", op.clone()),
                None,
            );
            match answer {
                _ if op == "status" => chunked(&["{\"ok\":true,", "\"echo\":\"status\"}\n"]),
                _ if op == "metrics" => chunked(&["{\"ok\":true,"]),
                Answer::Line(first) if op == "watch" => Answer::Watch {
                    first,
                    stream: EventStream::new(rx, None),
                },
                answer => answer,
            }
        }
    }
}

/// An answer made of these chunks.
fn chunked(parts: &[&str]) -> Answer {
    let (tx, rx) = tokio::sync::mpsc::channel(parts.len());
    for part in parts {
        tx.try_send(part.as_bytes().to_vec()).expect("room");
    }
    Answer::Chunks(rx)
}

struct Serving {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

fn start(limits: Limits) -> Serving {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
    let echo = Echo {
        events: broadcast::channel(8).0,
    };
    tracker.spawn(serve(
        listener,
        Arc::new(echo),
        limits,
        shutdown.clone(),
        tracker.clone(),
    ));
    Serving {
        _dir: dir,
        path,
        shutdown,
        tracker,
    }
}

async fn line(reader: &mut BufReader<UnixStream>) -> Option<serde_json::Value> {
    let mut text = String::new();
    let n = reader.read_line(&mut text).await.expect("read");
    (n > 0).then(|| serde_json::from_str(&text).expect("JSON"))
}

async fn ask(reader: &mut BufReader<UnixStream>, text: &[u8]) -> serde_json::Value {
    reader.get_mut().write_all(text).await.expect("write");
    line(reader).await.expect("an answer")
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let s = start(limits);
    let mut idle = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    let mut active = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            ask(&mut active, b"{\"op\":\"hello\"}\n").await["echo"],
            "hello"
        );
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), line(&mut idle)).await;
    assert_eq!(
        closed.expect("closed within the deadline"),
        None,
        "idle connection closed"
    );
    s.shutdown.cancel();
}

#[tokio::test]
async fn blank_and_bad_lines_keep_the_connection_and_shutdown_closes_it() {
    let s = start(Limits::default());
    let mut c = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    let bad = ask(&mut c, b"\n  \n[1]\n").await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
    let bytes = ask(&mut c, b"\"\xff\"\n").await;
    assert_eq!(bytes["ok"], false, "{bytes}");
    assert_eq!(ask(&mut c, b"{\"op\":\"stats\",\"id\":5}\n").await["id"], 5);
    s.shutdown.cancel();
    s.tracker.close();
    tokio::time::timeout(Duration::from_secs(5), s.tracker.wait())
        .await
        .expect("every task ended");
    assert_eq!(line(&mut c).await, None, "closed on shutdown");
}

#[tokio::test]
async fn past_the_cap_a_client_is_told_busy() {
    let s = start(Limits {
        max_connections: 1,
        ..Limits::default()
    });
    let mut first = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    assert_eq!(ask(&mut first, b"{\"op\":\"hello\"}\n").await["ok"], true);
    let mut second = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    let busy = line(&mut second).await.expect("an answer");
    assert_eq!(busy["error"]["code"], "busy", "{busy}");
    assert_eq!(line(&mut second).await, None);
    s.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_are_each_served_and_shutdown_ends_every_task() {
    let s = start(Limits::default());
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(BufReader::new(
            UnixStream::connect(&s.path).await.expect("connect"),
        ));
    }
    let answered = async {
        for (n, c) in clients.iter_mut().enumerate() {
            let text = format!("{{\"op\":\"stats\",\"id\":{n}}}\n");
            assert_eq!(ask(c, text.as_bytes()).await["id"], n);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("every client answered within the deadline");
    drop(clients);
    let mut late = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    assert_eq!(ask(&mut late, b"{\"op\":\"hello\"}\n").await["ok"], true);
    s.shutdown.cancel();
    s.tracker.close();
    tokio::time::timeout(Duration::from_secs(5), s.tracker.wait())
        .await
        .expect("every connection task ended");
}

#[tokio::test(start_paused = true)]
async fn dribbling_clients_are_closed_at_the_idle_timeout() {
    let limits = Limits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let s = start(limits);
    let started = tokio::time::Instant::now();
    let mut dribblers = Vec::new();
    for _ in 0..4 {
        let stream = UnixStream::connect(&s.path).await.expect("connect");
        dribblers.push(tokio::spawn(dribble(stream)));
    }
    for dribbler in dribblers {
        let closed_after = dribbler.await.expect("dribbler");
        assert!(
            closed_after <= Duration::from_secs(61),
            "closed after {closed_after:?}, not at the idle timeout"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(59),
        "not before it"
    );
    // Their slots are free again: a new client is served, not told busy.
    let mut c = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    assert_eq!(ask(&mut c, b"{\"op\":\"hello\"}\n").await["echo"], "hello");
    s.shutdown.cancel();
}

/// Sends one byte of a request a second, never a whole line, until the
/// server closes; returns how long that took.
async fn dribble(mut stream: UnixStream) -> Duration {
    let started = tokio::time::Instant::now();
    let line = b"{\"op\":\"hello\", \"padding\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}";
    for byte in line.iter().cycle() {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Ok(0) => break,
            Ok(_) => panic!("answered a line that was never finished"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never closed");
    }
    started.elapsed()
}

#[tokio::test]
async fn idle_watches_do_not_starve_requests() {
    let s = start(Limits {
        max_connections: 2,
        max_watches: 2,
        ..Limits::default()
    });
    let mut watchers = Vec::new();
    for _ in 0..2 {
        let mut w = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
        assert_eq!(ask(&mut w, b"{\"op\":\"watch\"}\n").await["ok"], true);
        watchers.push(w);
    }
    let mut third = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    let busy = ask(&mut third, b"{\"op\":\"watch\"}\n").await;
    assert_eq!(busy["error"]["code"], "busy", "past the watch cap: {busy}");
    assert_eq!(line(&mut third).await, None, "and closed");
    // Both request slots are free while two watches run.
    let mut a = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    let mut b = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    assert_eq!(ask(&mut a, b"{\"op\":\"hello\"}\n").await["echo"], "hello");
    assert_eq!(ask(&mut b, b"{\"op\":\"stats\"}\n").await["echo"], "stats");
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_line_made_in_chunks_arrives_whole_and_an_unfinished_one_closes() {
    let s = start(Limits::default());
    let mut c = BufReader::new(UnixStream::connect(&s.path).await.expect("connect"));
    assert_eq!(
        ask(&mut c, b"{\"op\":\"status\"}\n").await["echo"],
        "status"
    );
    c.get_mut()
        .write_all(b"{\"op\":\"metrics\"}\n")
        .await
        .expect("write");
    let mut rest = String::new();
    let n = c.read_line(&mut rest).await.expect("read");
    assert_eq!(
        (n, rest.as_str()),
        (11, "{\"ok\":true,"),
        "cut off, then closed"
    );
    s.shutdown.cancel();
}
