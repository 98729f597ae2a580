//! Replaying the invalidations Redis did not take ([`pending`](super::pending)): a task on the
//! cache's runtime retries them until Redis takes every one, 50 ms after the failure at first,
//! then backing off to once a second. The task holds the cache weakly: a dropped cache stops it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cache::Inner;
use crate::lease::{self, EntryKeys};
use crate::write::pending::Pending;
use crate::{Cache, Error};

/// The first wait before a replay, and the longest between two.
const FIRST: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_secs(1);

impl Cache {
    /// Keeps an invalidation that failed with `error`, if the failure means Redis did not take
    /// it, and starts replaying.
    pub(crate) fn keep_failed(&self, error: &Error, keep: impl FnOnce(&Pending)) {
        if !matches!(
            error,
            Error::Redis(_) | Error::Timeout(_) | Error::Unavailable
        ) {
            return;
        }
        let inner = &self.inner;
        keep(&inner.pending);
        // This process's loads of what it covers may have read the old data: their joiners
        // read again (and skip Redis), whatever the loads answer.
        inner.flights.revoke_where(|key| inner.pending.covers(key));
        if !self.inner.replaying.swap(true, Ordering::SeqCst) {
            let inner = Arc::downgrade(&self.inner);
            self.inner.write_backs.spawn(replay_until_done(inner));
        }
    }

    /// One pass over what is pending: `true` once nothing is.
    async fn replay_once(&self) -> bool {
        let inner = &self.inner;
        let snapshot = inner.pending.snapshot();
        for (value_key, key, seq) in snapshot.keys {
            let keys = EntryKeys::new(&inner.namespace, &key);
            // As the call it replays: confirmed by the replicas where the cache asks for it.
            let removed = match &inner.replicated {
                None => {
                    let publish = inner.writes.publish_command();
                    let mut conn = inner.writes.clone();
                    let op = lease::invalidate(&mut conn, &keys, publish);
                    inner.guard.write(&inner.stats, "replay", op).await
                }
                Some(replicated) => replicated.invalidate(inner.report(), &keys).await,
            };
            if removed.is_err() {
                return false;
            }
            self.forget_near(&key);
            inner.pending.key_done(&value_key, seq);
            inner.pending.note_replayed();
        }
        for (removal, seq) in snapshot.removals {
            if self.remove(&removal).await.is_err() {
                return false;
            }
            inner.pending.removal_done(seq);
            inner.pending.note_replayed();
        }
        inner.pending.len() == 0
    }
}

/// Replays until nothing is pending, or the cache is gone.
async fn replay_until_done(inner: Weak<Inner>) {
    let mut running = Running(inner, true);
    let mut wait = FIRST;
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = running.0.upgrade() else {
            return;
        };
        let cache = Cache { inner };
        if !cache.replay_once().await {
            wait = (wait * 2).min(LONGEST);
            continue;
        }
        cache.inner.replaying.store(false, Ordering::SeqCst);
        running.1 = false;
        // A failure kept between the last pass and now found the task still running: carry on
        // for it, unless a new task was started since.
        if cache.inner.pending.len() == 0 || cache.inner.replaying.swap(true, Ordering::SeqCst) {
            return;
        }
        running.1 = true;
        wait = FIRST;
    }
}

/// The replay task's hold on the `replaying` flag (`.1`: held): a task dropped without
/// finishing (its runtime shut down) lets the next failure start another.
struct Running(Weak<Inner>, bool);

impl Drop for Running {
    fn drop(&mut self) {
        if let (true, Some(inner)) = (self.1, self.0.upgrade()) {
            inner.replaying.store(false, Ordering::SeqCst);
        }
    }
}
