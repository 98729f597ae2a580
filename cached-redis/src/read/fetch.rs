//! The read path: GET, join or lead a local load, take the lease or wait for its holder, load,
//! write back under the lease.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lease::{self, Acquire, EntryKeys};
use crate::read::flight::{self, Joined, Leader, Role, Shared};
use crate::read::lease_guard::LeaseGuard;
use crate::read::wake::Subscription;
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::stored::codec;
use crate::{Cache, CacheValue, Key, Policy};

/// How often a waiter checks the lease when it could not subscribe for wake-ups.
const POLL_WITHOUT_WAKEUPS: Duration = Duration::from_millis(20);

/// The longest a waiter subscribed for wake-ups goes without checking the lease itself.
const MAX_RECHECK: Duration = Duration::from_millis(500);

/// What the first GET found.
enum Read<T> {
    Hit(T),
    Missed(Missed),
}

/// Why a GET found no usable value.
enum Missed {
    /// Redis answered with nothing usable: no value, or `corrupt` bytes that do not decode
    /// (the lease script replaces them only if they are still there).
    Absent { corrupt: Option<Vec<u8>> },
    /// Redis could not be asked.
    Unavailable,
}

/// What the local leader found when it went for the lease.
enum Lease<T> {
    /// A value appeared (another process loaded it), read by a lease script sent when
    /// `Joined` callers had joined the local load.
    Value(Vec<u8>, T, Joined),
    /// We hold the lease with this token.
    Held(LeaseGuard),
    /// Redis answered, refusing writes (`OOM`, `READONLY`, ...): load without the lease.
    WritesRefused,
    /// Redis could not be asked: load without the lease.
    Unavailable,
}

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
        let inner = &self.inner;
        let started = Instant::now();
        let span = tracing::debug_span!(
            "cached",
            function = policy.name(),
            key = tracing::field::Empty,
            outcome = tracing::field::Empty,
            redis_us = tracing::field::Empty,
        );
        let value_key = lease::value_key(&inner.namespace, key);
        span.record("key", value_key.as_str());
        if inner.disabled {
            inner.stats.note(Event::Miss, policy.name());
            let load = self.load_alone(policy, loader, true);
            let (result, _, _) = tracing::Instrument::instrument(load, span.clone()).await;
            inner.stats.note_call(Outcome::Disabled, policy.name());
            span.record("outcome", Outcome::Disabled.as_str());
            return result;
        }
        let read = self.read::<R::Value>(&value_key, policy.name()).await;
        if let Read::Hit(value) = read {
            inner.stats.note(Event::Hit, policy.name());
            inner.stats.note_call(Outcome::Hit, policy.name());
            span.record("outcome", Outcome::Hit.as_str());
            span.record("redis_us", started.elapsed().as_micros() as u64);
            return R::from_value(value);
        }
        // The miss path is boxed so the future of a hit stays small.
        let miss = self.miss(EntryKeys::for_value(value_key), read, policy, loader);
        let (result, outcome, load_time) =
            Box::pin(tracing::Instrument::instrument(miss, span.clone())).await;
        inner.stats.note_call(outcome, policy.name());
        span.record("outcome", outcome.as_str());
        let redis_time = started.elapsed().saturating_sub(load_time);
        span.record("redis_us", redis_time.as_micros() as u64);
        result
    }

    /// Everything after a first GET that found no usable value.
    async fn miss<R, F>(
        &self,
        keys: EntryKeys,
        mut read: Read<R::Value>,
        policy: &Policy,
        loader: F,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let inner = &self.inner;
        loop {
            let missed = match read {
                Read::Hit(value) => {
                    inner.stats.note(Event::Hit, policy.name());
                    return (R::from_value(value), Outcome::Hit, Duration::ZERO);
                }
                Read::Missed(missed @ Missed::Absent { .. }) => {
                    inner.stats.note(Event::Miss, policy.name());
                    tracing::debug!("cache miss");
                    missed
                }
                Read::Missed(Missed::Unavailable) => {
                    inner.stats.note(Event::Fallback, policy.name());
                    Missed::Unavailable
                }
            };
            let redis_ok = !matches!(missed, Missed::Unavailable);
            match inner.flights.join_or_lead(&keys.value) {
                Role::Lead(leader) => {
                    return self.lead(leader, &keys, policy, loader, missed).await;
                }
                Role::Join(joiner) => {
                    inner.stats.note(Event::Coalesced, policy.name());
                    match flight::wait(joiner, redis_ok).await {
                        Some(Shared::Value { bytes, .. }) => match codec::decode(&bytes) {
                            Ok(value) => {
                                return (R::from_value(value), Outcome::Waited, Duration::ZERO);
                            }
                            Err(_) => return self.load_alone(policy, loader, redis_ok).await,
                        },
                        Some(Shared::LoadYourself) => {
                            return self.load_alone(policy, loader, redis_ok).await;
                        }
                        // Too late for the value, an invalidation revoked the load, or its
                        // leader went away: start over.
                        Some(Shared::Reread) | None => {}
                    }
                }
            }
            read = self.read::<R::Value>(&keys.value, policy.name()).await;
        }
    }

    /// The first, uncoalesced GET.
    async fn read<T: CacheValue>(&self, value_key: &str, function: &'static str) -> Read<T> {
        let inner = &self.inner;
        let mut conn = inner.reads.clone();
        let mut get = redis::cmd("GET");
        get.arg(value_key);
        let get = get.query_async::<Option<Vec<u8>>>(&mut conn);
        match inner.guard.read(&inner.stats, "GET", get).await {
            Ok(None) => Read::Missed(Missed::Absent { corrupt: None }),
            Ok(Some(bytes)) => match codec::decode(&bytes) {
                Ok(value) => Read::Hit(value),
                Err(e) => {
                    self.undecodable(value_key, function, &e);
                    Read::Missed(Missed::Absent {
                        corrupt: Some(bytes),
                    })
                }
            },
            Err(crate::Error::Redis(e)) if e.code() == Some("WRONGTYPE") => {
                inner.stats.note(Event::DecodeError, function);
                tracing::warn!(key = %value_key, "cache key holds a non-string value; replacing it");
                Read::Missed(Missed::Absent { corrupt: None })
            }
            Err(_) => Read::Missed(Missed::Unavailable),
        }
    }

    fn undecodable(&self, value_key: &str, function: &'static str, error: &codec::CodecError) {
        self.inner.stats.note(Event::DecodeError, function);
        tracing::warn!(key = %value_key, %error, "cached value does not decode; reloading it");
    }

    /// Runs the loader for this caller only, uncached.
    async fn load_alone<R: Cacheable, F: Future<Output = R>>(
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

    /// The local leader: get the value or the lease, load, store, and tell the joiners.
    async fn lead<R, F>(
        &self,
        mut leader: Leader<'_>,
        keys: &EntryKeys,
        policy: &Policy,
        loader: F,
        missed: Missed,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let lease = match self
            .lease_for::<R::Value>(&leader, keys, policy, missed)
            .await
        {
            Lease::Value(bytes, value, joined) => {
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
        let (mut lease, outcome) = lease;
        let leased = lease.is_some();
        // The load starts after everyone who joined so far: its value is fresh for them.
        let joined = leader.joined();
        let (result, load_time) = self
            .timed_load(lease.as_ref(), &mut leader, keys, policy, loader)
            .await;
        let (value, ttl) = match result.split(policy).shared() {
            Ok(shared) => shared,
            Err((result, failed)) => {
                if failed {
                    self.inner.stats.note(Event::LoadError, policy.name());
                }
                leader.close();
                give_up(leader, lease.take()).await;
                return (result, outcome, load_time);
            }
        };
        let Some(bytes) = self.encoded(&value, load_time, policy, &keys.value) else {
            give_up(leader, lease.take()).await;
            return (R::from_value(value), outcome, load_time);
        };
        let stored = Stored {
            bytes,
            ttl,
            joined,
            leased,
        };
        let outcome = self
            .store_and_share(leader, lease, keys, policy, stored)
            .await
            .unwrap_or(outcome);
        (R::from_value(value), outcome, load_time)
    }

    /// A loaded value's stored form, in its policy's format (`None`, logged, if it does not
    /// encode: it is returned but not cached).
    fn encoded<T: CacheValue>(
        &self,
        value: &T,
        load_time: Duration,
        policy: &Policy,
        value_key: &str,
    ) -> Option<Vec<u8>> {
        let format = policy.format(self.inner.format);
        codec::encode(value, load_time, format)
            .inspect_err(|error| {
                tracing::warn!(key = %value_key, %error, "value does not encode; not cached");
            })
            .ok()
    }

    /// The lease, unless Redis is unavailable (then the load runs without one).
    async fn lease_for<T: CacheValue>(
        &self,
        leader: &Leader<'_>,
        keys: &EntryKeys,
        policy: &Policy,
        missed: Missed,
    ) -> Lease<T> {
        match missed {
            Missed::Absent { corrupt } => {
                let lease = self.lease_or_value(leader, keys, policy, corrupt).await;
                if matches!(lease, Lease::Unavailable) {
                    // The GET was answered, the lease script was not: the load falls back.
                    self.inner.stats.note(Event::Fallback, policy.name());
                }
                lease
            }
            // Counted when the GET failed.
            Missed::Unavailable => Lease::Unavailable,
        }
    }

    /// Writes the loaded value back under the lease (or only lets the lease go, for a value
    /// not to be cached) and hands it to the joiners. `Some(StaleRefused)` when an
    /// invalidation revoked the lease; otherwise `None`, the load's own outcome stands.
    async fn store_and_share(
        &self,
        mut leader: Leader<'_>,
        lease: Option<LeaseGuard>,
        keys: &EntryKeys,
        policy: &Policy,
        stored: Stored,
    ) -> Option<Outcome> {
        // From here on, new callers start a load of their own: one that joined now could have
        // started after an invalidation that our write-back will not see.
        leader.close();
        let current = match (lease, stored.ttl) {
            (Some(lease), Some(ttl)) => {
                let ttl_ms = policy.draw_ttl_ms(ttl);
                lease.write_back(&stored.bytes, ttl_ms).await
            }
            (Some(lease), None) => lease.release().await,
            (None, _) => None,
        };
        if current == Some(false) {
            self.inner.stats.note(Event::StaleRefused, policy.name());
            tracing::debug!(key = %keys.value, "an invalidation revoked this load; not stored");
            leader.finish(Shared::Reread);
            return Some(Outcome::StaleRefused);
        }
        // Only a load that started without a lease is an outage's value; one whose lease's
        // fate is unknown may have been revoked.
        let held = current == Some(true);
        leader.finish(Shared::Value {
            bytes: Arc::from(stored.bytes),
            joined: if held {
                Joined::EVERYONE
            } else {
                stored.joined
            },
            unleased: !stored.leased,
        });
        None
    }

    /// Runs the loader, renewing the lease, for as long as it runs but at most `max_load`: past
    /// that the lease is released and the joiners read again, so callers here and in other
    /// processes load for themselves; this caller still waits for its own loader, whose
    /// write-back will be refused. Returns the result and how long the load took.
    async fn timed_load<R: Cacheable>(
        &self,
        lease: Option<&LeaseGuard>,
        leader: &mut Leader<'_>,
        keys: &EntryKeys,
        policy: &Policy,
        loader: impl Future<Output = R>,
    ) -> (R, Duration) {
        let inner = &self.inner;
        inner.stats.note(Event::Load, policy.name());
        let started = Instant::now();
        let lock_ttl = policy.lock_ttl().unwrap_or(inner.lock_ttl);
        let max_load = policy
            .max_load()
            .or(inner.max_load)
            .unwrap_or(lock_ttl.saturating_mul(3))
            .min(crate::policy::LONGEST);
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
                    lease.let_go().await;
                }
                load.await
            }
        };
        let load_time = started.elapsed();
        inner.stats.note_load_time(policy.name(), load_time);
        (result, load_time)
    }

    /// Takes the lease, or waits (woken by Redis) until its holder stores a value or lets go.
    async fn lease_or_value<T: CacheValue>(
        &self,
        leader: &Leader<'_>,
        keys: &EntryKeys,
        policy: &Policy,
        mut corrupt: Option<Vec<u8>>,
    ) -> Lease<T> {
        let inner = &self.inner;
        let lock_ttl = policy
            .lock_ttl()
            .unwrap_or(inner.lock_ttl)
            .min(crate::policy::LONGEST);
        let lock_ms = u64::try_from(lock_ttl.as_millis()).unwrap_or(1).max(1);
        let mut claim = LeaseGuard::claim(self, keys, lock_ms);
        let mut subscription = None;
        let mut waited = false;
        loop {
            // A value in the reply is fresh for the callers that joined before it was asked for.
            let (reply, joined) = claim.acquire(corrupt.as_deref(), || leader.joined()).await;
            match reply {
                Err(e) if crate::conn::guard::refuses_writes(&e) => return Lease::WritesRefused,
                Err(_) => return Lease::Unavailable,
                Ok(Acquire::Value(bytes)) => match codec::decode(&bytes) {
                    Ok(value) => return Lease::Value(bytes, value, joined),
                    Err(e) => {
                        self.undecodable(&keys.value, policy.name(), &e);
                        corrupt = Some(bytes);
                    }
                },
                Ok(Acquire::Leased) => return Lease::Held(claim),
                Ok(Acquire::HeldFor { millis }) => {
                    if !waited {
                        waited = true;
                        inner.stats.note(Event::LockWait, policy.name());
                        tracing::debug!(key = %keys.value, "another caller is loading; waiting");
                    }
                    let until_expiry = Duration::from_millis(millis + 1);
                    self.wait_for_holder(&mut subscription, keys, until_expiry, lock_ttl)
                        .await;
                }
            }
        }
    }

    /// One wait for the lease's holder: the first subscribes to the entry's wake-ups (then
    /// the caller checks again, so nothing published after the check can be missed;
    /// subscribing takes at most the lease's remaining time), later ones wait for a message,
    /// the lease's expiry or the next re-check, whichever comes first.
    async fn wait_for_holder(
        &self,
        subscription: &mut Option<Subscription>,
        keys: &EntryKeys,
        until_expiry: Duration,
        lock_ttl: Duration,
    ) {
        let inner = &self.inner;
        match subscription {
            None => {
                let wakeups = &inner.wakeups;
                let sub =
                    wakeups.subscribe(&keys.channel, until_expiry, &inner.guard, &inner.stats);
                *subscription = Some(sub.await);
            }
            Some(sub) => {
                let every = if sub.is_live() {
                    recheck_every(lock_ttl)
                } else {
                    POLL_WITHOUT_WAKEUPS
                };
                sub.wait(until_expiry.min(every)).await;
            }
        }
    }
}

/// What a leader's load gives its joiners and writes back.
struct Stored {
    bytes: Vec<u8>,
    /// `None`: a value not to be cached (`None` without `none_ttl`).
    ttl: Option<Duration>,
    /// The callers that joined before the load started.
    joined: Joined,
    /// Whether the load ran under the lease.
    leased: bool,
}

/// A load that stores nothing: the lease goes back, and the joiners load for themselves.
async fn give_up(leader: Leader<'_>, lease: Option<LeaseGuard>) {
    if let Some(lease) = lease {
        lease.release().await;
    }
    leader.finish(Shared::LoadYourself);
}

/// How often a woken-by-message waiter checks the lease anyway: a lease can vanish without a
/// message (`FLUSHALL`, an eviction, a restart with an empty dataset), and its waiters must
/// notice well before the expiry they last saw.
fn recheck_every(lock_ttl: Duration) -> Duration {
    (lock_ttl / 4).clamp(POLL_WITHOUT_WAKEUPS, MAX_RECHECK)
}
