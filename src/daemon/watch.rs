//! Watching the root and the config file with `notify`.
//!
//! The watcher's callback runs on notify's thread and never blocks: it
//! `try_send`s into a bounded channel, and when that is full it sets a flag
//! that makes the consumer look at every source again. The consumer turns
//! changes of payloads and sidecars into [`Daemon::observe`] calls (which
//! publish watch events and reschedule warm-keeping), and changes of the
//! config file into reload triggers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::reload::{self, Trigger};
use super::state::Daemon;
use crate::layout::{self, FileKind};
use crate::source::SourceId;

/// How many file events may wait for the consumer.
const BACKLOG: usize = 1024;

/// True for events that only report a read (open, read, close without
/// writing): they never change what is on disk.
fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, notify::EventKind::Access(access)
        if *access != AccessKind::Close(AccessMode::Write))
}

/// Starts watching; the watcher stops when the returned value is dropped.
/// A failure to watch is logged: the daemon still works, it only learns
/// of other processes' commits at the next reconcile.
pub(crate) fn start(d: &Arc<Daemon>, reloads: mpsc::Sender<Trigger>) -> Option<RecommendedWatcher> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let overflow = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&overflow);
    let root = d.cache.layout().root().to_path_buf();
    let config = reload::config_file(d.explicit_config.as_deref());
    let sorter = Sorter {
        root: root.clone(),
        config: config.clone(),
    };
    let callback = move |event: notify::Result<notify::Event>| match event {
        // Reads change nothing, and the daemon's own reads of a sidecar
        // would otherwise wake it again, in a loop.
        Ok(event) if is_read_only(&event.kind) => {}
        Ok(event) => {
            // Only what names a source or the config is queued: a commit's
            // temp files would fill the queue for nothing.
            for touched in event.paths.iter().filter_map(|p| sorter.sort(p)) {
                if tx.try_send(touched).is_err() {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
        Err(e) => tracing::warn!("file watcher: {e}"),
    };
    let mut watcher = match notify::recommended_watcher(callback) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                "cannot watch files: {e}; changes by other processes are seen at the next reconcile"
            );
            return None;
        }
    };
    if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
        tracing::warn!("cannot watch {}: {e}", root.display());
    }
    if let Some(file) = config {
        watch_config(&mut watcher, &file);
    }
    let consumer = Consumer {
        d: Arc::clone(d),
        reloads,
        overflow,
    };
    d.tracker.spawn(consumer.run(rx));
    Some(watcher)
}

/// Watches the directory of the config file (editors replace files by
/// rename).
fn watch_config(watcher: &mut RecommendedWatcher, file: &Path) {
    let Some(dir) = file.parent().filter(|d| d.is_dir()) else {
        return;
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!("cannot watch {}: {e}; use SIGHUP to reload", dir.display());
    }
}

/// What a file event touched.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Touched {
    Source(SourceId),
    Config,
}

/// Sorts paths into what they touch, on notify's thread.
struct Sorter {
    root: PathBuf,
    config: Option<PathBuf>,
}

impl Sorter {
    fn sort(&self, path: &Path) -> Option<Touched> {
        if self.config.as_deref() == Some(path) {
            return Some(Touched::Config);
        }
        source_of(&self.root, path).map(Touched::Source)
    }
}

struct Consumer {
    d: Arc<Daemon>,
    reloads: mpsc::Sender<Trigger>,
    overflow: Arc<AtomicBool>,
}

impl Consumer {
    async fn run(self, mut rx: mpsc::Receiver<Touched>) {
        loop {
            let first = tokio::select! {
                () = self.d.shutdown.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            let mut touched = BTreeSet::from([first]);
            while let Ok(more) = rx.try_recv() {
                touched.insert(more);
            }
            let mut sources = Vec::new();
            for t in touched {
                match t {
                    Touched::Config => {
                        let _ = self.reloads.try_send(Trigger::FileChanged);
                    }
                    Touched::Source(id) => sources.push(id),
                }
            }
            // One blocking call for the whole batch.
            self.d.observe_many(sources).await;
            if self.overflow.swap(false, Ordering::SeqCst) {
                tracing::debug!("file events overflowed; looking at every source");
                self.d.observe_all().await;
            }
        }
    }
}

/// The source whose payload, sidecar or marker this path is.
fn source_of(root: &Path, path: &Path) -> Option<SourceId> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel.iter();
    let (tier, mut file) = (parts.next()?.to_str()?, parts.next()?.to_str()?);
    if !layout::is_tier_dir(tier) {
        return None;
    }
    if file == layout::STATE_DIR {
        // `<tier>/.discocache/<name>.meta.json`: the sidecar.
        file = parts.next()?.to_str()?;
        return match layout::classify_state(file)? {
            (name, FileKind::Sidecar) if parts.next().is_none() => SourceId::new(tier, &name).ok(),
            _ => None,
        };
    }
    if parts.next().is_some() {
        return None;
    }
    match layout::classify(file)? {
        (name, FileKind::Payload | FileKind::Sidecar | FileKind::Marker) => {
            SourceId::new(tier, &name).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_dropped_and_writes_kept() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        assert!(is_read_only(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_read_only(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_read_only(&EventKind::Access(AccessKind::Read)));
        assert!(!is_read_only(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_read_only(&EventKind::Create(CreateKind::File)));
        assert!(!is_read_only(&EventKind::Modify(ModifyKind::Any)));
    }

    #[test]
    fn payloads_and_sidecars_name_their_source_and_nothing_else_does() {
        let root = Path::new("/r");
        let id = |p: &str| source_of(root, Path::new(p)).map(|s| s.to_string());
        assert_eq!(id("/r/discovery/x.json").as_deref(), Some("discovery/x"));
        assert_eq!(
            id("/r/discovery/.discocache/x.meta.json").as_deref(),
            Some("discovery/x")
        );
        assert_eq!(id("/r/discovery/.discocache/x.flock"), None);
        assert_eq!(
            id("/r/discovery/x.refreshing").as_deref(),
            Some("discovery/x")
        );
        assert_eq!(id("/r/discovery/x.lock"), None);
        assert_eq!(id("/r/discovery/.x.abc.tmp"), None);
        assert_eq!(id("/r/.discocache/state/stats.json"), None);
        assert_eq!(id("/r/discocache.sock"), None);
        assert_eq!(id("/elsewhere/discovery/x.json"), None);
    }
}
