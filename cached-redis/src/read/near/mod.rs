//! The near cache: decoded values kept in process memory for at most a policy's `near`, and
//! never past the entry's remaining Redis TTL, dropped when Redis says their key changed.
//!
//! A copy is served only while the tracking connection ([`tracker`]) has confirmed, within the
//! allowed lag, that every invalidation Redis sent has been applied; a copy read before an
//! invalidation that overtook its reply is never kept ([`versions`]); this process's own
//! invalidations drop its copies before they return.

mod counter;
mod nodes;
mod shared;
mod tracker;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::local::clock;
use crate::local::store::Entry;
use crate::local::versions::Ticket;
use shared::Shared;

/// A cache's near copies and the task that keeps them coherent.
pub(crate) struct Near {
    shared: Arc<Shared>,
    tracker: tokio::task::AbortHandle,
    /// How long the functions that do not say keep their copies
    /// ([`CacheBuilder::near_by_default`](crate::CacheBuilder::near_by_default)).
    by_default: Option<Duration>,
}

/// The near cache's counters, for [`Stats`](crate::Stats).
pub(crate) struct NearStats {
    pub(crate) hits: u64,
    pub(crate) entries: u64,
    pub(crate) flushes: u64,
    pub(crate) rejected: u64,
}

pub(crate) use nodes::Nodes;

/// What the builder was told of the near cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// The bound on copies.
    pub(crate) entries: usize,
    /// The longest a copy is served after Redis sent its invalidation.
    pub(crate) lag: Duration,
    /// How long the functions that do not say keep their copies.
    pub(crate) by_default: Option<Duration>,
}

/// What a near cache is made from.
pub(crate) struct Settings {
    pub(crate) options: Options,
    /// Where the entries live.
    pub(crate) nodes: Nodes,
    pub(crate) namespace: String,
    pub(crate) connect_timeout: Duration,
}

impl Near {
    /// Starts the tracking connection (a task of the current runtime).
    pub(crate) fn start(settings: Settings) -> Near {
        let shared = Arc::new(Shared::new(
            settings.options.entries,
            settings.options.lag,
            &settings.namespace,
        ));
        let target = tracker::Target {
            nodes: settings.nodes,
            prefix: format!("{}:", settings.namespace),
            connect_timeout: settings.connect_timeout,
        };
        let task = tokio::spawn(tracker::run(target, Arc::clone(&shared)));
        Near {
            shared,
            tracker: task.abort_handle(),
            by_default: settings.options.by_default,
        }
    }

    /// The copy of `key`, if one may be served now to a function that keeps copies for
    /// `keep_for`.
    pub(crate) fn get<T: Clone + 'static>(&self, key: &str, keep_for: Duration) -> Option<T> {
        let shared = &*self.shared;
        let entry = shared.store.get(key)?;
        let versions = &shared.versions;
        let now = versions.now();
        let keep_ns = clock::nanos(keep_for);
        if now >= entry.deadline
            || now.saturating_sub(entry.kept) >= keep_ns
            || entry.ticket.epoch != versions.epoch()
            || !versions.stripe_still(entry.ticket)
            || !versions.confirmed_within(now, shared.lag_ns)
        {
            return None;
        }
        let value = entry.value.downcast_ref::<T>()?.clone();
        shared.hits.bump();
        Some(value)
    }

    /// What a read of `key` must capture before it asks Redis, if its reply may be kept:
    /// `None` while the tracking connection is not confirmed live.
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        let shared = &*self.shared;
        if !shared
            .versions
            .confirmed_within(shared.versions.now(), shared.lag_ns)
        {
            return None;
        }
        Some(shared.versions.ticket(shared.store.hash(key)))
    }

    /// Keeps `value`, read from Redis under `ticket`, until `until`, unless an invalidation
    /// or a flush was applied since the ticket was taken.
    pub(crate) fn keep<T: Send + Sync + 'static>(
        &self,
        key: &str,
        ticket: Ticket,
        value: T,
        until: Instant,
    ) {
        let shared = &*self.shared;
        if !shared.versions.still(ticket) {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let entry = Entry {
            value: Arc::new(value) as Arc<dyn Any + Send + Sync>,
            kept: shared.versions.now(),
            deadline: shared.versions.nanos(until),
            ticket,
        };
        shared.store.insert(key, entry.clone());
        // An invalidation applied between the check and the insert may have found nothing
        // to remove.
        if !shared.versions.still(ticket) {
            shared.store.remove_own(key, &entry);
            shared.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the copy of the entry rendered `key`: reads of it in flight keep nothing.
    pub(crate) fn forget(&self, key: &str) {
        self.shared.forget(key);
    }

    /// Drops every copy.
    pub(crate) fn flush(&self) {
        self.shared.flush();
    }

    pub(crate) fn stats(&self) -> NearStats {
        let shared = &*self.shared;
        NearStats {
            hits: shared.hits.sum(),
            entries: shared.store.len() as u64,
            flushes: shared.flushes.load(Ordering::Relaxed),
            rejected: shared.rejected.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset_stats(&self) {
        let shared = &*self.shared;
        shared.hits.reset();
        shared.flushes.store(0, Ordering::Relaxed);
        shared.rejected.store(0, Ordering::Relaxed);
    }

    /// Whether every invalidation Redis sent before `at` has been applied.
    pub(crate) fn applied_since(&self, at: Instant) -> bool {
        self.shared.versions.confirmed_since(at)
    }

    /// Whether copies may be served now (the tracking connection is confirmed live).
    pub(crate) fn is_live(&self) -> bool {
        let shared = &*self.shared;
        shared
            .versions
            .confirmed_within(shared.versions.now(), shared.lag_ns)
    }
}

/// How a read path whose value type is known to be `Clone` (and `'static`) reaches the near
/// cache: the engine's read path is generic over values that need not be either. Public for
/// `__private` only.
#[derive(Debug)]
pub struct Copies<T> {
    pub(crate) get: fn(&Near, &str, Duration) -> Option<T>,
    pub(crate) keep: fn(&Near, &str, Ticket, &T, Instant),
}

impl<T: Clone + Send + Sync + 'static> Copies<T> {
    /// The near cache's operations for values of type `T`.
    pub fn of() -> Copies<T> {
        Copies {
            get: Near::get::<T>,
            keep: |near, key, ticket, value, until| near.keep(key, ticket, value.clone(), until),
        }
    }
}

/// The near cache as one call uses it: the cache's, how to copy the call's value type, and
/// for how long its policy keeps copies.
pub(crate) struct NearUse<'a, T> {
    near: &'a Near,
    copies: Copies<T>,
    keep_for: Duration,
}

impl<'a, T> NearUse<'a, T> {
    /// The near cache a call may use: there is one, the value type can be copied, and the
    /// policy asks for it (`keep_for`) or leaves it to the cache's `near_by_default`.
    /// A function that asks for `near` on a cache without a near cache reads Redis, and
    /// this says so once per process.
    pub(crate) fn new(
        near: Option<&'a Near>,
        copies: Option<Copies<T>>,
        keep_for: Option<Duration>,
    ) -> Option<Self> {
        let copies = copies?;
        let Some(near) = near else {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if keep_for.is_some() && !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "a function has `near` but its cache has no near cache (CacheBuilder::near_cache): its hits go to Redis"
                );
            }
            return None;
        };
        Some(NearUse {
            near,
            copies,
            keep_for: keep_for.or(near.by_default)?,
        })
    }

    /// The copy of `key`, if one may be served now.
    pub(crate) fn get(&self, key: &str) -> Option<T> {
        (self.copies.get)(self.near, key, self.keep_for)
    }

    /// See [`Near::ticket`].
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        self.near.ticket(key)
    }

    /// Keeps `value`, read under `ticket` from an entry that expires at `expires` (counted
    /// from before the read was sent), for the policy's time at most.
    pub(crate) fn keep(&self, key: &str, ticket: Ticket, value: &T, expires: Instant) {
        let until = expires.min(Instant::now() + self.keep_for);
        (self.copies.keep)(self.near, key, ticket, value, until);
    }
}

impl<T> Clone for Copies<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Copies<T> {}

impl Drop for Near {
    fn drop(&mut self) {
        self.tracker.abort();
    }
}
