//! A batch's loader, shared by its ids: called once with every id this call leads, and again
//! with one id for an id whose load falls to this call later (its holder elsewhere gave up, or
//! the load it joined did not answer it). The first error any call returns is the batch's.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// What one id's load gave: its value, `None` when the loader's map left it out, or
/// [`Failed`] when the loader returned an error (kept by the [`Loader`]).
pub(super) type Part<V> = Result<Option<V>, Failed>;

/// The loader failed; its error is the batch's answer, so nothing of it is cached.
#[derive(Debug)]
pub(super) struct Failed;

/// The user's loader, called with the ids to load, and the first error it returned.
pub(super) struct Loader<L, E> {
    load: Mutex<L>,
    error: Mutex<Option<E>>,
}

impl<L, E> Loader<L, E> {
    pub(super) fn new(load: L) -> Self {
        Loader {
            load: Mutex::new(load),
            error: Mutex::new(None),
        }
    }

    /// The first error a call of the loader returned.
    pub(super) fn into_error(self) -> Option<E> {
        self.error.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// `error` becomes the batch's unless an earlier call failed first.
    fn failed(&self, error: E) -> Failed {
        let mut kept = self.error.lock().unwrap_or_else(|p| p.into_inner());
        kept.get_or_insert(error);
        Failed
    }

    /// Calls the loader with `ids`, each id's part sent to its slot, in `ids`' order (a slot
    /// whose id is gone is simply dropped). Nothing runs for no ids.
    pub(super) async fn many<K, V, S, F>(&self, ids: Vec<K>, slots: Vec<oneshot::Sender<Part<V>>>)
    where
        K: Eq + Hash + Clone,
        S: BuildHasher,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        if ids.is_empty() {
            return;
        }
        // The loader takes its own copy: each id's slot is found again in its map by the id.
        let call = self.call(ids.clone());
        match call.await {
            Ok(mut found) => {
                for (id, slot) in ids.iter().zip(slots) {
                    let _ = slot.send(Ok(found.remove(id)));
                }
            }
            Err(error) => {
                self.failed(error);
                for slot in slots {
                    let _ = slot.send(Err(Failed));
                }
            }
        }
    }

    /// Calls the loader with `id` alone.
    pub(super) async fn one<K, V, S, F>(&self, id: K) -> Part<V>
    where
        K: Eq + Hash + Clone,
        S: BuildHasher,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let call = self.call(vec![id.clone()]);
        match call.await {
            Ok(mut found) => Ok(found.remove(&id)),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// The loader's future for `ids`; the lock is held only while it is made.
    fn call<K, F>(&self, ids: Vec<K>) -> F
    where
        L: FnMut(Vec<K>) -> F,
    {
        let mut load = self.load.lock().unwrap_or_else(|p| p.into_inner());
        (load)(ids)
    }
}

/// One id's part, from the loader's call of many: [`Failed`] if that call went away.
pub(super) async fn received<V>(slot: oneshot::Receiver<Part<V>>) -> Part<V> {
    slot.await.unwrap_or(Err(Failed))
}
