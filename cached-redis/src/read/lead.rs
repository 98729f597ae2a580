//! The local leader's load: the lease (or a value another process stored meanwhile), the
//! load under it, bounded by `max_load`, and the write-back that hands the value to the
//! callers that joined.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lease::EntryKeys;
use crate::read::failures::{Failures, SharedFailure};
use crate::read::flight::{Joined, Leader, Shared};
use crate::read::get::Missed;
use crate::read::lease_guard::LeaseGuard;
use crate::read::wait::Lease;
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::stored::codec;
use crate::{Cache, CacheValue, Policy};

/// A load about to run: under a lease or without one, and how its caller is answered.
pub(super) struct Load {
    pub(super) lease: Option<LeaseGuard>,
    pub(super) outcome: Outcome,
}

impl Cache {
    /// The local leader: get the value or the lease, load, store, and tell the joiners.
    pub(super) async fn lead<R, F>(
        &self,
        leader: Leader,
        keys: &EntryKeys,
        policy: &Policy,
        loader: F,
        missed: Missed,
        failures: Option<Failures<R>>,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        // When a call that starts with the lease script sent it: only such a call reads again.
        let sent = matches!(missed, Missed::Unread).then(Instant::now);
        let unread = sent.is_some();
        let mut lease = self
            .lease_for::<R::Value>(&leader, keys, policy, missed)
            .await;
        if let Some(sent) = sent {
            match self.first_read_answered(keys, policy, lease, sent).await {
                Ok(answered) => lease = answered,
                Err(value) => {
                    // Read by a GET: the callers that joined read again.
                    leader.finish(Shared::Reread);
                    return (R::from_value(value), Outcome::Hit, Duration::ZERO);
                }
            }
        }
        let (lease, outcome) = match lease {
            Lease::Value(bytes, value, joined) if unread => {
                leader.finish(Shared::found(bytes, joined));
                return (R::from_value(value), Outcome::Hit, Duration::ZERO);
            }
            Lease::Value(bytes, value, joined) | Lease::Waited(bytes, value, joined) => {
                leader.finish(Shared::found(bytes, joined));
                return (R::from_value(value), Outcome::Waited, Duration::ZERO);
            }
            Lease::Held(guard) => (Some(guard), Outcome::Miss),
            Lease::WritesRefused => {
                self.inner.stats.note(Event::WritesRefused, policy.name());
                (None, Outcome::WritesRefused)
            }
            Lease::Unavailable => (None, Outcome::Fallback),
        };
        let load = Load { lease, outcome };
        let loaded = self.load_under(leader, load, keys, policy, loader, failures);
        let (result, outcome, load_time, _) = loaded.await;
        (result, outcome, load_time)
    }

    /// Loads under `load`'s lease (or without one), stores in the background and tells the
    /// joiners; also whether the load failed (its result not stored).
    pub(super) async fn load_under<R, F>(
        &self,
        mut leader: Leader,
        load: Load,
        keys: &EntryKeys,
        policy: &Policy,
        loader: F,
        failures: Option<Failures<R>>,
    ) -> (R, Outcome, Duration, bool)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let Load { mut lease, outcome } = load;
        // The load starts after everyone who joined so far: its value is fresh for them.
        let joined = leader.joined();
        let (result, load_time) = self
            .timed_load(lease.as_ref(), &mut leader, keys, policy, loader)
            .await;
        let (value, ttl) = match result.split(policy).shared() {
            Ok(shared) => shared,
            Err((result, failed)) => {
                self.inner
                    .stats
                    .note_if(failed, Event::LoadError, policy.name());
                let error = failures.and_then(|f| (f.share)(&result));
                let shared = error.map(|e| (e, joined));
                // Boxed: a rare step (see `LeaseGuard::hold_while`).
                Box::pin(give_up(leader, lease.take(), shared, failed)).await;
                return (result, outcome, load_time, failed);
            }
        };
        if lease.is_none() && unshared(&mut leader) {
            return (R::from_value(value), outcome, load_time, false);
        }
        // Drawn before the value is encoded: its soft expiry is stored with it. Redis keeps
        // it past that as long as its policy, or the entry itself, says.
        let drawn = ttl.map(|ttl| policy.draw_ttl_ms(ttl));
        let kept = policy.for_entry(R::windows(&value)).kept_ms();
        let Some(bytes) = self.encoded(&value, (load_time, drawn), policy, &keys.value) else {
            Box::pin(give_up(leader, lease.take(), None, false)).await;
            return (R::from_value(value), outcome, load_time, false);
        };
        let ttl_ms = drawn.map(|drawn| drawn.saturating_add(kept));
        let stored = Stored {
            bytes,
            ttl_ms,
            joined,
        };
        match lease {
            // The write-back (or release) is a round trip the caller need not wait for.
            Some(lease) => self.store_in_background(leader, lease, keys, policy, stored),
            None => share_unleased(leader, stored),
        }
        (R::from_value(value), outcome, load_time, false)
    }

    /// Writes the value back under the lease in a task of its own, which the joiners wait
    /// for and [`Cache::settle`] counts; the caller returns at once. Its outcome is counted
    /// in the stats (a refused write-back as `stale_refused`), not in the caller's.
    fn store_in_background(
        &self,
        mut leader: Leader,
        lease: LeaseGuard,
        keys: &EntryKeys,
        policy: &Policy,
        stored: Stored,
    ) {
        // From here on, new callers start a load of their own: one that joined now could have
        // started after an invalidation that our write-back will not see.
        leader.close();
        let running = self.inner.write_backs.start(&keys.value);
        // The lease holds the entry's names, and the function's name is all of its policy the
        // task needs: the task's future, moved three times as it is spawned and finished,
        // stays small.
        let (cache, function) = (self.clone(), policy.name());
        let write_back = async move {
            let answered = cache.store_and_share(leader, lease, function, stored).await;
            if !answered {
                running.unanswered();
            }
        };
        let write_back = tracing::Instrument::in_current_span(write_back);
        self.inner.write_backs.spawn(write_back);
    }

    /// How long one load may keep others waiting: the policy's `max_load`, else the cache's,
    /// else three lease TTLs.
    pub(crate) fn max_load_for(&self, policy: &Policy) -> Duration {
        let inner = &self.inner;
        let lock_ttl = policy.lock_ttl().unwrap_or(inner.lock_ttl);
        policy
            .max_load()
            .or(inner.max_load)
            .unwrap_or(lock_ttl.saturating_mul(3))
            .min(crate::policy::LONGEST)
    }

    /// A loaded value's stored form, in its policy's format, with how long its load took and
    /// (for a policy that keeps entries past their TTL) its drawn TTL, in milliseconds, for
    /// its soft expiry. `None`, logged, if it does not encode: it is returned but not cached.
    pub(crate) fn encoded<T: CacheValue>(
        &self,
        value: &T,
        (load_time, drawn_ms): (Duration, Option<u64>),
        policy: &Policy,
        value_key: &str,
    ) -> Option<Vec<u8>> {
        let format = policy.format(self.inner.format);
        let soft_ttl_ms = drawn_ms.filter(|_| policy.watches_expiry());
        codec::encode(value, load_time, soft_ttl_ms, format)
            .inspect_err(|error| {
                tracing::warn!(key = %value_key, %error, "value does not encode; not cached");
            })
            .ok()
    }

    /// The lease, unless Redis is unavailable (then the load runs without one).
    async fn lease_for<T: CacheValue>(
        &self,
        leader: &Leader,
        keys: &EntryKeys,
        policy: &Policy,
        missed: Missed,
    ) -> Lease<T> {
        match missed {
            // Counted when the GET failed.
            Missed::Unavailable => Lease::Unavailable,
            missed => {
                let unread = matches!(missed, Missed::Unread);
                // A call that starts with the lease script leaves half its time for a GET.
                let op_timeout = self.inner.guard.op_timeout();
                let within = if unread { op_timeout / 2 } else { op_timeout };
                let after_miss = matches!(missed, Missed::Absent { corrupt: None });
                let asked = (missed.into_corrupt(), within, after_miss);
                let lease = self.lease_or_value(leader, keys, policy, asked).await;
                if matches!(lease, Lease::Unavailable) && !unread {
                    // The GET was answered, the lease script was not: the load falls back.
                    self.inner.stats.note(Event::Fallback, policy.name());
                }
                lease
            }
        }
    }

    /// Writes the loaded value back under the lease (or only lets the lease go, for a value
    /// not to be cached) and hands it to the joiners, who read again if an invalidation
    /// revoked the lease. Returns whether Redis answered.
    async fn store_and_share(
        &self,
        leader: Leader,
        mut lease: LeaseGuard,
        function: &'static str,
        stored: Stored,
    ) -> bool {
        let current = match stored.ttl_ms {
            Some(ttl_ms) => lease.write_back(&stored.bytes, ttl_ms).await,
            None => lease.release().await,
        };
        if current == Some(false) {
            self.inner.stats.note(Event::StaleRefused, function);
            let key = &lease.keys().value;
            tracing::debug!(%key, "an invalidation revoked this load; not stored");
            leader.finish(Shared::Reread);
            return true;
        }
        // A value stored under a lease that was still held is fresh for every joiner; one
        // whose lease's fate is unknown may have been revoked.
        let joined = if current == Some(true) {
            Joined::EVERYONE
        } else {
            stored.joined
        };
        // The flight is closed: nobody joins any more, and with nobody joined the value's
        // bytes need no shared copy.
        if !leader.nobody_joined() {
            leader.finish(Shared::Value {
                bytes: Arc::from(stored.bytes),
                joined,
                unleased: false,
            });
        }
        current.is_some()
    }

    /// Runs the loader, renewing the lease, for as long as it runs but at most `max_load`: past
    /// that the lease is released and the joiners read again, so callers here and in other
    /// processes load for themselves; this caller still waits for its own loader, whose
    /// write-back will be refused. Returns the result and how long the load took.
    async fn timed_load<R: Cacheable>(
        &self,
        lease: Option<&LeaseGuard>,
        leader: &mut Leader,
        keys: &EntryKeys,
        policy: &Policy,
        loader: impl Future<Output = R>,
    ) -> (R, Duration) {
        let inner = &self.inner;
        inner.stats.note(Event::Load, policy.name());
        let started = Instant::now();
        let max_load = self.max_load_for(policy);
        let load = async {
            match lease {
                Some(lease) => lease.hold_while(loader, max_load).await,
                None => loader.await,
            }
        };
        tokio::pin!(load);
        let result = tokio::select! {
            biased;
            result = &mut load => result,
            () = tokio::time::sleep(max_load) => {
                tracing::warn!(
                    key = %keys.value,
                    ?max_load,
                    "a load is taking longer than max_load: its lease is no longer renewed and other callers load for themselves"
                );
                leader.abandon();
                if let Some(lease) = lease {
                    // Boxed: a rare step (see `LeaseGuard::hold_while`).
                    Box::pin(lease.let_go()).await;
                }
                load.await
            }
        };
        let load_time = started.elapsed();
        inner.stats.note_load_time(policy.name(), load_time);
        (result, load_time)
    }
}

/// What a leader's load gives its joiners and writes back.
struct Stored {
    bytes: Vec<u8>,
    /// How long Redis keeps it, in milliseconds (its drawn TTL and what its policy keeps past
    /// it); `None`: a value not to be cached (`None` without `none_ttl`).
    ttl_ms: Option<u64>,
    /// The callers that joined before the load started.
    joined: Joined,
}

/// Whether a load without a lease has nobody to share its value with: nothing is written
/// without a lease, so the value is encoded only for callers that joined (none can from now).
fn unshared(leader: &mut Leader) -> bool {
    leader.close();
    leader.nobody_joined()
}

/// A load that stores nothing: new callers start their own, the lease goes back, and the
/// joiners take its error if there is one to share (`shared`: the error, and when the load
/// started), or load for themselves, told whether it `failed`.
async fn give_up(
    mut leader: Leader,
    lease: Option<LeaseGuard>,
    shared: Option<(SharedFailure, Joined)>,
    failed: bool,
) {
    leader.close();
    let unleased = lease.is_none();
    let released = match lease {
        Some(mut lease) => lease.release().await,
        None => None,
    };
    let (error, started) = shared.unzip();
    // The lease was ours to the end: no invalidation came during the load, and its error is
    // every joiner's, as a value written back under it would be.
    let unchallenged = released == Some(true);
    let started = started.unwrap_or(Joined::EVERYONE);
    leader.finish(Shared::after_failure(
        (error, failed),
        unchallenged,
        started,
        unleased,
    ));
}

/// Hands a value loaded without a lease (Redis unavailable or refusing writes) to the
/// joiners: nothing is written.
fn share_unleased(leader: Leader, stored: Stored) {
    leader.finish(Shared::Value {
        bytes: Arc::from(stored.bytes),
        joined: stored.joined,
        unleased: true,
    });
}
