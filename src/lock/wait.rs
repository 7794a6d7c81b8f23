//! Waiting for a source's lock while another process holds it, without
//! pinning a thread that anything else needs.
//!
//! A `flock` cannot be awaited, so one plain thread per lock file (in this
//! process) blocks on it. The first waiter starts it; later waiters of the
//! same lock queue behind it. When the thread gets the lock, it hands it to
//! the oldest waiter still waiting, then blocks again for the next one;
//! when nobody waits any more it lets go and ends. A waiter gives up at its
//! own deadline, or when its future is dropped, without waiting for the
//! thread: a stopped holder keeps one thread blocked, never more, and never
//! one of the runtime's.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::SourceLock;
use crate::error::{Error, Result};

/// What a waiter is handed: the lock, or why the thread could not take it.
type Handed = Result<SourceLock>;

/// The waiters of every lock file some thread is blocked on, oldest first.
static WAITERS: Mutex<Option<HashMap<PathBuf, Vec<oneshot::Sender<Handed>>>>> = Mutex::new(None);

/// The stack of a waiting thread: it only opens, locks and stats a file.
const STACK: usize = 64 * 1024;

fn waiters() -> MutexGuard<'static, Option<HashMap<PathBuf, Vec<oneshot::Sender<Handed>>>>> {
    WAITERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the lock at `path`, waiting at most `budget` for its holder to
/// let go. `Ok(None)` when the budget ran out first.
///
/// # Errors
///
/// [`Error::Io`] when the lock file cannot be opened or locked, or no
/// thread can be started to wait on it.
pub(crate) async fn acquire(path: &Path, budget: Duration) -> Result<Option<SourceLock>> {
    let (tx, rx) = oneshot::channel();
    {
        let mut guard = waiters();
        match guard
            .get_or_insert_with(HashMap::new)
            .entry(path.to_owned())
        {
            Entry::Occupied(mut queue) => queue.get_mut().push(tx),
            Entry::Vacant(slot) => {
                slot.insert(vec![tx]);
                if let Err(e) = start(path) {
                    guard.as_mut().map(|map| map.remove(path));
                    return Err(Error::io("start a thread to wait for lock", path, e));
                }
            }
        }
    }
    match tokio::time::timeout(budget, rx).await {
        Ok(Ok(handed)) => handed.map(Some),
        Ok(Err(_)) => Err(Error::io(
            "wait for lock",
            path,
            io::Error::other("the waiting thread ended without an answer"),
        )),
        Err(_) => Ok(None),
    }
}

fn start(path: &Path) -> io::Result<()> {
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("discocache-lock".into())
        .stack_size(STACK)
        .spawn(move || wait(&path))
        .map(drop)
}

/// The thread: takes the lock for each waiter in turn, until none is left.
fn wait(path: &Path) {
    loop {
        let got = SourceLock::acquire_blocking(path);
        let mut guard = waiters();
        let Some(queue) = guard.as_mut().and_then(|map| map.get_mut(path)) else {
            return;
        };
        match got {
            Ok(lock) => {
                hand_over(queue, lock);
                if !queue.is_empty() {
                    continue;
                }
            }
            Err(e) => {
                for tx in queue.drain(..) {
                    let _ = tx.send(Err(copy(path, &e)));
                }
            }
        }
        guard.as_mut().map(|map| map.remove(path));
        return;
    }
}

/// Gives `lock` to the oldest waiter still waiting; drops it (letting go)
/// when every waiter has given up.
fn hand_over(queue: &mut Vec<oneshot::Sender<Handed>>, lock: SourceLock) {
    let mut lock = Ok(lock);
    while !queue.is_empty() {
        match queue.remove(0).send(lock) {
            Ok(()) => return,
            Err(back) => lock = back,
        }
    }
}

/// A copy of the thread's error for one of the waiters.
fn copy(path: &Path, e: &Error) -> Error {
    let kind = match e {
        Error::Io { source, .. } => source.kind(),
        _ => io::ErrorKind::Other,
    };
    Error::io("wait for lock", path, io::Error::new(kind, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_budget_and_the_next_gets_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        let held = SourceLock::try_acquire(&path).expect("lock").expect("free");
        let waited = acquire(&path, Duration::from_millis(50)).await;
        assert!(waited.expect("no error").is_none(), "gave up");
        let path = Arc::new(path);
        let p = Arc::clone(&path);
        let next = tokio::spawn(async move { acquire(&p, Duration::from_secs(30)).await });
        drop(held);
        let got = next.await.expect("task").expect("no error");
        assert!(got.is_some(), "handed the lock on release");
    }

    #[tokio::test]
    async fn many_waiters_share_one_thread_and_each_gets_the_lock_in_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Arc::new(dir.path().join("x.lock"));
        let held = SourceLock::try_acquire(&path).expect("lock").expect("free");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let p = Arc::clone(&path);
            tasks.push(tokio::spawn(async move {
                acquire(&p, Duration::from_secs(30)).await.map(drop)
            }));
        }
        tokio::task::yield_now().await;
        drop(held);
        for task in tasks {
            task.await.expect("task").expect("got the lock");
        }
        let left = waiters().as_ref().is_some_and(|m| m.contains_key(&*path));
        assert!(!left, "the thread ended with its last waiter");
    }
}
