//! The read path's entry: a hit answers at once; on a miss, a caller joins the process's one
//! load of the key and takes its value, or leads that load ([`lead`](super::lead)). A cache
//! that is disabled, or a caller told to load for itself, runs the loader alone.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::lease::{self, EntryKeys, ValueKey};
use crate::policy::Due;
use crate::read::detach::Detach;
use crate::read::failures::Failures;
use crate::read::flight::{self, Began, Joiner, Role, Shared};
use crate::read::get::{Missed, Read, Refresh, WindowsOf};
use crate::read::near::{Copies, NearUse};
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::stored::codec;
use crate::{Cache, CacheValue, Key, Policy};

impl Cache {
    /// Reads `key` through the cache: the stored value if there is one, otherwise `loader`'s
    /// result, stored according to `policy`. This is what `#[redis_cached]` expands to, for
    /// code that cannot use the attribute.
    ///
    /// Concurrent callers of one key share one load per process, and processes sharing the
    /// Redis share one load through a lease. Redis trouble never reaches the caller: the loader
    /// runs instead.
    ///
    /// `loader` must do its work when polled, as an `async` block or `async fn` call does: the
    /// freshness rules count on the load starting after the lease is taken. A future that read
    /// the database before (a spawned task's `JoinHandle`, a `ready(value)` computed earlier)
    /// could store a value an invalidation already replaced.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use cached_redis::{Cache, Key, Policy};
    ///
    /// # async fn load_price(_: u64) -> Result<u64, std::io::Error> { Ok(1) }
    /// # async fn demo(cache: Cache) -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::new("price", Duration::from_secs(30))?;
    /// let key = Key::builder().text("price:").part(&7u64).build();
    /// let price: Result<u64, std::io::Error> = cache.fetch(&key, &policy, load_price(7)).await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch<R, F>(&self, key: &Key, policy: &Policy, loader: F) -> R
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        self.fetch_with(key, policy, move || loader, None, (None, None))
            .await
    }

    /// [`Cache::fetch`], also keeping values in this process's memory for the policy's
    /// [`near`](Policy::with_near) time (or the cache's
    /// [`near_by_default`](crate::CacheBuilder::near_by_default) if the policy has none) on a
    /// cache with a [near cache](crate::CacheBuilder::near_cache): hits on those copies do not
    /// ask Redis.
    /// Values must be `Clone` (an `Arc<T>` clones cheaply).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use cached_redis::{Cache, Key, Policy};
    ///
    /// # async fn load_flags() -> Result<Vec<String>, std::io::Error> { Ok(vec![]) }
    /// # async fn demo(cache: Cache) -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::new("flags", Duration::from_secs(60))?.with_near(Duration::from_secs(5))?;
    /// let key = Key::raw("flags");
    /// let flags = cache.fetch_near(&key, &policy, load_flags()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_near<R, F>(&self, key: &Key, policy: &Policy, loader: F) -> R
    where
        R: Cacheable,
        R::Value: Clone + Send + Sync + 'static,
        F: Future<Output = R>,
    {
        let copies = Some(Copies::of());
        self.fetch_with(key, policy, move || loader, copies, (None, None))
            .await
    }

    /// [`Cache::fetch`], with the near cache's operations for this value type if it may be
    /// kept near, how a failed load's error reaches its joiners if it can be cloned and how a
    /// refresh runs in the background if the loader's future can, and the loader as a closure
    /// that makes its future, called only when the cache does not answer.
    pub(crate) async fn fetch_with<R, L, F>(
        &self,
        key: &Key,
        policy: &Policy,
        loader: L,
        copies: Option<Copies<R::Value>>,
        (failures, detach): (Option<Failures<R>>, Option<Detach<R, F>>),
    ) -> R
    where
        R: Cacheable,
        L: FnOnce() -> F,
        F: Future<Output = R>,
    {
        let inner = &self.inner;
        let span = call_span(policy);
        // A near hit first: it needs neither the Redis key nor the clock.
        let near = NearUse::new(inner.near.as_ref(), copies, policy.near());
        if let Some(value) = near.as_ref().and_then(|near| near.get(key.as_str())) {
            self.note_near_hit(key, policy, &span);
            // No await answered: the runtime's budget sees it, so a task looping over near hits
            // still yields to its neighbours.
            tokio::task::consume_budget().await;
            return R::from_value(value);
        }
        // The clock is read only for a span someone listens to.
        let started = (!span.is_disabled()).then(Instant::now);
        // Before the read: a load that started since may answer this call.
        let began = inner.flights.now();
        let value_key = lease::value_key(&inner.namespace, key);
        span.record("key", value_key.as_str());
        if inner.disabled || inner.memory.is_some() {
            return self
                .without_redis(&value_key, policy, loader(), failures, &span)
                .await;
        }
        let ticket = near.as_ref().and_then(|near| near.ticket(key.as_str()));
        let score = inner.first_reads.of(policy);
        let write_failed = !inner
            .write_backs
            .answered(&value_key, inner.guard.op_timeout())
            .await;
        // A call that may keep a near copy reads the entry's remaining time with it: it starts
        // with a `GET`, never with the lease script (its hits still count in the score).
        let lease_first = score.filter(|_| ticket.is_none());
        let read = match self.no_get(&value_key, lease_first, write_failed) {
            Some(missed) => Read::Missed(missed),
            None => {
                self.read::<R::Value>(&value_key, policy, ticket.is_some(), R::windows)
                    .await
            }
        };
        if let Read::Hit(value, expires) = read {
            if let (Some(near), Some(ticket), Some(expires)) = (&near, ticket, expires) {
                near.keep(key.as_str(), ticket, &value, expires);
            }
            if let Some(score) = score {
                score.hit();
            }
            self.note_hit(policy, &span, started);
            return R::from_value(value);
        }
        // The miss (or refresh) path is boxed so the future of a hit stays small, and boxed
        // before it is instrumented so that it is moved once.
        let loading = (loader(), failures, detach);
        let miss = Box::pin(self.after_read(value_key, began, read, policy, loading));
        let (result, outcome, load_time) =
            tracing::Instrument::instrument(miss, span.clone()).await;
        self.note_answered(outcome, policy, &span, started.map(|s| (s, load_time)));
        result
    }

    /// Counts a Redis hit, and records it on its span.
    fn note_hit(&self, policy: &Policy, span: &tracing::Span, started: Option<Instant>) {
        self.inner.stats.note(Event::Hit, policy.name());
        let timed = started.map(|s| (s, Duration::ZERO));
        self.note_answered(Outcome::Hit, policy, span, timed);
    }

    /// Counts how a call was answered and records it on its span, with the time it spent
    /// outside its loader if the span is listened to (`timed`: when it started, and how long
    /// its load took).
    fn note_answered(
        &self,
        outcome: Outcome,
        policy: &Policy,
        span: &tracing::Span,
        timed: Option<(Instant, Duration)>,
    ) {
        self.inner.stats.note_call(outcome, policy.name());
        span.record("outcome", outcome.as_str());
        if let Some((started, load_time)) = timed {
            let redis_time = started.elapsed().saturating_sub(load_time);
            span.record("redis_us", redis_time.as_micros() as u64);
        }
    }

    /// Counts a near hit, and records it on the call's span if one is listened to.
    fn note_near_hit(&self, key: &Key, policy: &Policy, span: &tracing::Span) {
        let inner = &self.inner;
        inner.stats.note_near_hit(policy.name());
        if !span.is_disabled() {
            span.record("key", lease::value_key(&inner.namespace, key).as_str());
            span.record("outcome", Outcome::NearHit.as_str());
        }
    }

    /// A call on a cache that never asks Redis: disabled, or in memory.
    async fn without_redis<R: Cacheable, F: Future<Output = R>>(
        &self,
        value_key: &str,
        policy: &Policy,
        loader: F,
        failures: Option<Failures<R>>,
        span: &tracing::Span,
    ) -> R {
        let Some(memory) = &self.inner.memory else {
            return self.disabled_call(policy, loader, span).await;
        };
        let call = self.fetch_memory(memory, value_key, policy, loader, failures);
        let (result, outcome, _) = tracing::Instrument::instrument(call, span.clone()).await;
        self.inner.stats.note_call(outcome, policy.name());
        span.record("outcome", outcome.as_str());
        result
    }

    /// A call on a disabled cache: the loader answers.
    async fn disabled_call<R: Cacheable, F: Future<Output = R>>(
        &self,
        policy: &Policy,
        loader: F,
        span: &tracing::Span,
    ) -> R {
        let stats = &self.inner.stats;
        stats.note(Event::Miss, policy.name());
        let load = self.load_alone(policy, loader, true);
        let (result, _, _) = tracing::Instrument::instrument(load, span.clone()).await;
        stats.note_call(Outcome::Disabled, policy.name());
        span.record("outcome", Outcome::Disabled.as_str());
        result
    }

    /// Everything after a first GET that found no usable value.
    pub(super) async fn miss<R, F>(
        &self,
        value_key: ValueKey,
        began: Began,
        mut read: Read<R::Value>,
        policy: &Policy,
        mut loader: F,
        failures: Option<Failures<R>>,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let inner = &self.inner;
        // Whether a load this caller joined failed: its joiners share one more load, once.
        let mut again = false;
        loop {
            let missed = match read {
                // Read again: past its TTL within `fail_safe` only, it is not a hit.
                Read::Due(due) if due.due == Due::Expired => {
                    let expired = self.expired(value_key, began, due, policy, loader, failures);
                    return Box::pin(expired).await;
                }
                Read::Hit(value, _) | Read::Due(Refresh { value, .. }) => {
                    inner.stats.note(Event::Hit, policy.name());
                    inner.first_reads.hit(policy);
                    return (R::from_value(value), Outcome::Hit, Duration::ZERO);
                }
                Read::Missed(missed @ Missed::Absent { .. }) => {
                    self.note_miss(policy);
                    missed
                }
                // Counted when the lease script answers (`lead`).
                Read::Missed(Missed::Unread) => Missed::Unread,
                Read::Missed(Missed::Unavailable) => {
                    inner.stats.note(Event::Fallback, policy.name());
                    Missed::Unavailable
                }
            };
            let redis_ok = !matches!(missed, Missed::Unavailable);
            match inner.flights.join_or_lead(&value_key, began) {
                Role::Lead(leader) => {
                    let missed = self.unless_covered(&value_key, missed);
                    // A load without Redis takes no lease: its names are not built.
                    let keys = match missed {
                        Missed::Unavailable => EntryKeys::unleased(value_key.into_string()),
                        _ => EntryKeys::for_value(value_key.into_string()),
                    };
                    return self
                        .lead(leader, &keys, policy, loader, missed, failures)
                        .await;
                }
                // A call that started with the lease script finds the key's load running here:
                // it reads Redis first, as a call that starts with a GET does, and joins on a
                // miss. It is then a hit, a miss or a fallback as such a call is, and takes
                // the load's value on the same terms.
                Role::Join(_) if matches!(missed, Missed::Unread) => {}
                Role::Join(joiner) => {
                    let waited = self.join(joiner, policy, loader, (redis_ok, !again), failures);
                    match waited.await {
                        Ok(answered) => return answered,
                        Err((back, failed)) => (loader, again) = (back, again || failed),
                    }
                }
            }
            read = self.read_again(&value_key, policy, R::windows).await;
        }
    }

    /// A joiner's read after the load it joined did not answer it: as Redis unavailable where
    /// an invalidation Redis did not take covers the key.
    async fn read_again<T: CacheValue>(
        &self,
        value_key: &str,
        policy: &Policy,
        windows: WindowsOf<T>,
    ) -> Read<T> {
        if self.inner.pending.covers(value_key) {
            Read::Missed(Missed::Unavailable)
        } else {
            self.read::<T>(value_key, policy, false, windows).await
        }
    }

    /// Why a leader of `value_key`'s load found no value: `missed`, or unavailable when an
    /// invalidation Redis did not take covers the key (no lease, nothing read from Redis;
    /// checked once the flight is in the map, where keeping the invalidation revokes it).
    #[inline]
    pub(super) fn unless_covered(&self, value_key: &str, missed: Missed) -> Missed {
        if self.inner.pending.covers(value_key) {
            Missed::Unavailable
        } else {
            missed
        }
    }

    /// A caller that joined the process's load of its key: the value that load shares, or a
    /// clone of its error (with `failures`), or a load of its own (its value does not decode;
    /// or the shared load failed with an error that cannot be cloned, and this caller already
    /// read again once), or `Err` with the loader back and whether the load failed: too late
    /// for the value, an invalidation revoked the load, its leader went away, or (`retry`) it
    /// failed with an error that cannot be shared, so read again: the callers that joined it
    /// share one more load rather than each run their own.
    pub(crate) async fn join<R, F>(
        &self,
        joiner: Joiner,
        policy: &Policy,
        loader: F,
        (redis_ok, retry): (bool, bool),
        failures: Option<Failures<R>>,
    ) -> Result<(R, Outcome, Duration), (F, bool)>
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        self.inner.stats.note(Event::Coalesced, policy.name());
        match flight::wait(joiner, redis_ok).await {
            Some(Shared::Value { bytes, .. }) => match codec::decode(&bytes) {
                Ok(value) => Ok((R::from_value(value), Outcome::Waited, Duration::ZERO)),
                Err(_) => Ok(self.load_alone(policy, loader, redis_ok).await),
            },
            Some(Shared::Failed { error, .. }) => match failures.and_then(|f| (f.take)(&error)) {
                Some(result) => Ok((result, Outcome::Waited, Duration::ZERO)),
                None if retry => Err((loader, true)),
                None => Ok(self.load_alone(policy, loader, redis_ok).await),
            },
            Some(Shared::FailedUnshared) if retry => Err((loader, true)),
            Some(Shared::LoadYourself | Shared::FailedUnshared) => {
                Ok(self.load_alone(policy, loader, redis_ok).await)
            }
            Some(Shared::Reread) | None => Err((loader, false)),
        }
    }

    /// Runs the loader for this caller only, uncached.
    pub(crate) async fn load_alone<R: Cacheable, F: Future<Output = R>>(
        &self,
        policy: &Policy,
        loader: F,
        redis_ok: bool,
    ) -> (R, Outcome, Duration) {
        let stats = &self.inner.stats;
        stats.note(Event::Load, policy.name());
        let started = Instant::now();
        let result = loader.await;
        let took = started.elapsed();
        stats.note_load_time(policy.name(), took);
        let outcome = Outcome::of_load(redis_ok);
        let result = match result.split(policy).shared() {
            Ok((value, _)) => R::from_value(value),
            Err((result, failed)) => {
                if failed {
                    stats.note(Event::LoadError, policy.name());
                }
                result
            }
        };
        (result, outcome, took)
    }
}

/// The span of one cached call, its key, outcome and time in Redis recorded as it goes.
#[inline]
fn call_span(policy: &Policy) -> tracing::Span {
    tracing::debug_span!(
        "cached",
        function = policy.name(),
        key = tracing::field::Empty,
        outcome = tracing::field::Empty,
        redis_us = tracing::field::Empty,
    )
}
