//! One refresh per source per process, shared by every caller.
//!
//! The first caller spawns the work as its own task, so a caller that is
//! cancelled or dropped does not cancel it for the others; a panic in the
//! work becomes an error for every waiter, never a stuck entry.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::Error;
use crate::refresh::Refreshed;
use crate::source::SourceId;

/// A flight's outcome, shared by all who waited for it.
pub type Outcome = Result<Refreshed, Arc<Error>>;

type Slot = watch::Receiver<Option<Outcome>>;

/// The in-flight refreshes of one [`crate::Cache`].
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<SourceId, Slot>>,
}

/// A caller's place in a flight.
#[derive(Debug)]
pub struct Ticket {
    slot: Slot,
    /// False for the caller that started the flight.
    pub joined: bool,
}

impl Flights {
    /// Joins the flight for `id`, or starts one running `work()`.
    pub fn join_or_start<F, Fut>(self: &Arc<Self>, id: &SourceId, work: F) -> Ticket
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let mut map = self.map.lock().expect("flights lock");
        if let Some(slot) = map.get(id).filter(|s| s.has_changed().is_ok()) {
            return Ticket {
                slot: slot.clone(),
                joined: true,
            };
        }
        let (tx, slot) = watch::channel(None);
        map.insert(id.clone(), slot.clone());
        drop(map);
        let task = tokio::spawn(work());
        let flights = Arc::clone(self);
        let id = id.clone();
        tokio::spawn(async move {
            let outcome = task.await.unwrap_or_else(|e| {
                let what = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                Err(Arc::new(Error::Internal(format!("refresh of {id} {what}"))))
            });
            flights.map.lock().expect("flights lock").remove(&id);
            let _ = tx.send(Some(outcome));
        });
        Ticket {
            slot,
            joined: false,
        }
    }

    /// Joins the flight for `id` if one runs; `None` when none does.
    #[cfg(feature = "cli")]
    pub fn join(&self, id: &SourceId) -> Option<Ticket> {
        let map = self.map.lock().expect("flights lock");
        let slot = map.get(id).filter(|s| s.has_changed().is_ok())?;
        Some(Ticket {
            slot: slot.clone(),
            joined: true,
        })
    }

    /// True while a flight for `id` runs in this process.
    pub fn in_flight(&self, id: &SourceId) -> bool {
        let map = self.map.lock().expect("flights lock");
        map.get(id).is_some_and(|s| s.has_changed().is_ok())
    }
}

impl Ticket {
    /// Waits for the flight's outcome. Dropping this future leaves the
    /// flight running for the others.
    pub async fn wait(mut self) -> Outcome {
        match self.slot.wait_for(Option::is_some).await {
            Ok(v) => v.clone().expect("checked is_some"),
            Err(_) => Err(Arc::new(Error::Internal(
                "refresh task ended without an outcome (runtime shutting down)".into(),
            ))),
        }
    }
}
