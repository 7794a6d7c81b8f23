//! The refresh permits: at most `max_concurrent_refreshes` refreshes run
//! at once, and a reload resizes the pool.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::mutex::lock;
use crate::error::{Error, Result};

/// A semaphore and the size it is meant to have.
#[derive(Debug)]
pub(crate) struct Permits {
    semaphore: Arc<Semaphore>,
    total: Mutex<usize>,
}

impl Permits {
    /// A pool of `total` permits.
    pub fn new(total: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(total)),
            total: Mutex::new(total),
        }
    }

    /// A permit; waits while all are taken.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit> {
        Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the refresh permits were closed".into()))
    }

    /// Grows or shrinks the pool to `want` permits.
    pub fn resize(&self, want: usize) {
        let mut total = lock(&self.total);
        if want > *total {
            self.semaphore.add_permits(want - *total);
            *total = want;
        } else if want < *total {
            // Permits held now cannot be forgotten: the pool shrinks by what
            // is free, and by the rest at the next reload.
            *total -= self.semaphore.forget_permits(*total - want);
        }
    }
}
