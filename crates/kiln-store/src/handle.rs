//! The store from async code: each call runs on tokio's blocking pool, so a slow commit
//! (an fsync, a lock held by another process) never stalls the tasks serving the network.

use std::sync::Arc;

use crate::{Store, StoreError};

/// A cheap, clonable handle on a store.
#[derive(Clone)]
pub struct StoreHandle(Arc<dyn Store>);

impl StoreHandle {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreHandle(store)
    }

    /// Runs `f` against the store on the blocking pool. `f` may fail with any error a
    /// [`StoreError`] converts into (an API failure, say).
    pub async fn run<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&dyn Store) -> Result<R, E> + Send + 'static,
    {
        let store = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| E::from(StoreError::Interrupted(e.to_string())))?
    }

    /// The store itself, for code already on a blocking thread (inside [`StoreHandle::run`],
    /// `spawn_blocking`, or a synchronous tool).
    pub fn blocking(&self) -> &dyn Store {
        &*self.0
    }

    /// The shared store, to hand to another owner.
    pub fn shared(&self) -> Arc<dyn Store> {
        Arc::clone(&self.0)
    }
}

impl From<Arc<dyn Store>> for StoreHandle {
    fn from(store: Arc<dyn Store>) -> Self {
        StoreHandle(store)
    }
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreHandle")
            .field(&self.0.describe())
            .finish()
    }
}
