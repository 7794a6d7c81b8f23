//! The refresh itself, with the source's lock held: mark, run the
//! refresher under its deadline (or one flight across hosts through the
//! shared tier), commit or record the failure, unmark, unlock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Source, Task, Unsaved, blocking};
use crate::error::Result;
use crate::freshness;
use crate::lock::SourceLock;
use crate::meta::Timestamp;
use crate::refresh::{Holder, Refreshed};
use crate::refresher::command::group::{self, GroupHook};
use crate::refresher::{FetchContext, FetchError, Fetched};
use crate::singleflight::Outcome;

/// With the lock held: mark, run the refresher under the deadline, commit or
/// record the failure, unmark, unlock.
pub(super) async fn run_holding<F, Fut>(
    task: Task,
    source: Source,
    lock: SourceLock,
    f: F,
) -> Outcome
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    let deadline = source.policy.refresh_deadline;
    // Through the shared tier, the marker covers a wait for another host.
    #[cfg(feature = "shared")]
    let link = task.shared.clone().filter(|_| source.policy.shared);
    #[cfg(feature = "shared")]
    let hold = link
        .as_ref()
        .map_or(deadline, |_| super::shared::hold_for(&source.policy));
    #[cfg(not(feature = "shared"))]
    let hold = deadline;
    let (l, id, unsaved) = (task.layout, source.id.clone(), task.unsaved);
    let kept = Arc::clone(&unsaved);
    let holder = blocking(move || {
        let mut holder = Holder::start(&l, &id, lock, hold)?;
        if let Some(record) = kept.newer_than(&id, holder.meta.last_attempt_at) {
            holder.adopt(record);
        }
        Ok(holder)
    })
    .await
    .map_err(Arc::new)?;
    // We waited for fizeau's refresh and it committed: that is the outcome.
    if let Some(joined) = holder.joined() {
        return blocking(move || {
            unsaved.remember(&source.id, &holder);
            drop(holder);
            Ok(joined)
        })
        .await
        .map_err(Arc::new);
    }
    let started = Timestamp::now();
    // Validators of data fetched under another definition (another URL)
    // do not apply.
    let changed = freshness::definition_changed(holder.meta.definition.as_deref(), &source.policy);
    let ctx = FetchContext {
        source: source.id.clone(),
        timeout: deadline,
        validators: match changed {
            true => crate::Validators::default(),
            false => holder.meta.validators.clone(),
        },
    };
    #[cfg(feature = "shared")]
    if let Some(link) = link.filter(|_| holder.unmarked().is_none()) {
        let landing = super::shared::fly(&link, &holder, &source, ctx, f).await;
        let apply = move |h: &mut Holder, s: &Source| landing.apply(h, s, started);
        return settle(unsaved, holder, source, apply).await;
    }
    // No marker (no space, no inodes): a failure, without an upstream call.
    let fetched = match holder.unmarked() {
        Some(why) => Err(FetchError::new(why)),
        None => run_refresher(f, ctx, deadline, holder.group_hook()).await,
    };
    let finish = move |h: &mut Holder, s: &Source| h.finish(fetched, &s.policy, started);
    settle(unsaved, holder, source, finish).await
}

/// Records the refresh's outcome with `record` (on a blocking thread), then
/// lets the source go.
async fn settle<R>(unsaved: Arc<Unsaved>, mut holder: Holder, source: Source, record: R) -> Outcome
where
    R: FnOnce(&mut Holder, &Source) -> Result<Refreshed> + Send + 'static,
{
    blocking(move || {
        let result = record(&mut holder, &source);
        unsaved.remember(&source.id, &holder);
        result
    })
    .await
    .map_err(Arc::new)
}

/// Runs the refresher as its own task under `deadline`; a panic or an
/// overrun becomes a [`FetchError`]. The task is aborted (dropping the
/// refresher, which kills a command's process group) on overrun or when
/// this future is dropped.
pub(super) async fn run_refresher<F, Fut>(
    f: F,
    ctx: FetchContext,
    deadline: Duration,
    hook: GroupHook,
) -> Result<Fetched, FetchError>
where
    F: FnOnce(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(group::with_hook(hook, f(ctx)));
    let _guard = AbortOnDrop(task.abort_handle());
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if e.is_panic() => Err(FetchError::new(format!(
            "refresher panicked: {}",
            panic_message(e.into_panic())
        ))),
        Ok(Err(_)) => Err(FetchError::new("refresher was cancelled")),
        Err(_) => Err(FetchError::new(format!(
            "deadline of {} exceeded",
            humantime::format_duration(deadline)
        ))),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}
