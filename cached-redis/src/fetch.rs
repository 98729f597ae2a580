//! The read path: GET, join or lead a local load, take the lease or wait for its holder, load,
//! write back under the lease.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cacheable::{Cacheable, Split};
use crate::flight::{self, Joined, Leader, Role, Shared};
use crate::lease::{self, Acquire, EntryKeys};
use crate::stats::{Event, bump};
use crate::{Cache, CacheValue, Key, Policy, codec, random};

/// How often a waiter checks the lease when it could not subscribe for wake-ups.
const POLL_WITHOUT_WAKEUPS: Duration = Duration::from_millis(20);

/// The longest a waiter subscribed for wake-ups goes without checking the lease itself.
const MAX_RECHECK: Duration = Duration::from_millis(500);

/// How a call was answered, recorded on its span.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Hit,
    /// This caller ran the loader (and stored the value, or tried to).
    Miss,
    /// Another caller's load answered: a local join or a wait on another process's lease.
    Waited,
    /// Redis was unavailable; the loader answered.
    Fallback,
    /// This caller's load was revoked by an invalidation and not stored.
    StaleRefused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Waited => "waited",
            Outcome::Fallback => "fallback",
            Outcome::StaleRefused => "stale-refused",
        }
    }
}

/// What the first GET found.
enum Read<T> {
    Hit(T),
    Miss { corrupt: Option<Vec<u8>> },
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
        let read = self.read::<R::Value>(&value_key).await;
        if let Read::Hit(value) = read {
            inner.stats.note(Event::Hit, policy.name());
            span.record("outcome", Outcome::Hit.as_str());
            span.record("redis_us", started.elapsed().as_micros() as u64);
            return R::from_value(value);
        }
        // The miss path is boxed so the future of a hit stays small.
        let miss = self.miss(EntryKeys::for_value(value_key), read, policy, loader);
        let (result, outcome, load_time) =
            Box::pin(tracing::Instrument::instrument(miss, span.clone())).await;
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
            let redis_ok = !matches!(read, Read::Unavailable);
            let corrupt = match read {
                Read::Hit(value) => {
                    inner.stats.note(Event::Hit, policy.name());
                    return (R::from_value(value), Outcome::Hit, Duration::ZERO);
                }
                Read::Miss { corrupt } => {
                    inner.stats.note(Event::Miss, policy.name());
                    tracing::debug!("cache miss");
                    Some(corrupt)
                }
                Read::Unavailable => {
                    inner.stats.note(Event::Fallback, policy.name());
                    None
                }
            };
            match inner.flights.join_or_lead(&keys.value) {
                Role::Lead(leader) => {
                    return self.lead(leader, &keys, policy, loader, corrupt).await;
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
            read = self.read::<R::Value>(&keys.value).await;
        }
    }

    /// The first, uncoalesced GET.
    async fn read<T: CacheValue>(&self, value_key: &str) -> Read<T> {
        let inner = &self.inner;
        let mut conn = inner.reads.clone();
        let mut get = redis::cmd("GET");
        get.arg(value_key);
        let get = get.query_async::<Option<Vec<u8>>>(&mut conn);
        match inner.guard.read(&inner.stats, "GET", get).await {
            Ok(None) => Read::Miss { corrupt: None },
            Ok(Some(bytes)) => match codec::decode(&bytes) {
                Ok(value) => Read::Hit(value),
                Err(e) => {
                    self.undecodable(value_key, &e);
                    Read::Miss {
                        corrupt: Some(bytes),
                    }
                }
            },
            Err(crate::Error::Redis(e)) if e.code() == Some("WRONGTYPE") => {
                bump(&inner.stats.decode_errors);
                tracing::warn!(key = %value_key, "cache key holds a non-string value; replacing it");
                Read::Miss { corrupt: None }
            }
            Err(_) => Read::Unavailable,
        }
    }

    fn undecodable(&self, value_key: &str, error: &serde_json::Error) {
        bump(&self.inner.stats.decode_errors);
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
        let outcome = if redis_ok {
            Outcome::Miss
        } else {
            Outcome::Fallback
        };
        let result = match result.split(policy) {
            Split::Store(value, _) | Split::Pass(value) => R::from_value(value),
            Split::Keep(result) => {
                stats.note(Event::LoadError, policy.name());
                result
            }
        };
        (result, outcome, took)
    }

    /// The local leader: get the value or the lease, load, store, and tell the joiners.
    /// `corrupt` is `None` when Redis is unavailable, else the undecodable bytes found, if any.
    async fn lead<R, F>(
        &self,
        mut leader: Leader<'_>,
        keys: &EntryKeys,
        policy: &Policy,
        loader: F,
        corrupt: Option<Option<Vec<u8>>>,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let inner = &self.inner;
        let lease = match corrupt {
            Some(corrupt) => {
                self.lease_or_value::<R::Value>(&leader, keys, policy, corrupt)
                    .await
            }
            None => Lease::Unavailable,
        };
        let mut lease = match lease {
            Lease::Value(bytes, value, joined) => {
                leader.finish(Shared::Value {
                    bytes: Arc::from(bytes),
                    joined,
                    unleased: false,
                });
                return (R::from_value(value), Outcome::Waited, Duration::ZERO);
            }
            Lease::Held(guard) => Some(guard),
            Lease::WritesRefused => {
                inner.stats.note(Event::WritesRefused, policy.name());
                None
            }
            Lease::Unavailable => None,
        };

        let function = policy.name();
        inner.stats.note(Event::Load, function);
        // The load starts after everyone who joined so far: its value is fresh for them.
        let joined = leader.joined();
        let started = Instant::now();
        let result = self
            .load_bounded(lease.as_ref(), &mut leader, keys, policy, loader)
            .await;
        let load_time = started.elapsed();
        inner.stats.note_load_time(function, load_time);
        let leased = lease.is_some();
        let outcome = if leased {
            Outcome::Miss
        } else {
            Outcome::Fallback
        };

        let (value, ttl) = match result.split(policy) {
            Split::Store(value, ttl) => (value, Some(ttl)),
            Split::Pass(value) => (value, None),
            Split::Keep(result) => {
                inner.stats.note(Event::LoadError, function);
                leader.close();
                if let Some(lease) = lease.take() {
                    lease.release().await;
                }
                leader.finish(Shared::LoadYourself);
                return (result, outcome, load_time);
            }
        };
        let bytes = match codec::encode(&value, load_time) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(key = %keys.value, %error, "value does not encode; not cached");
                if let Some(lease) = lease.take() {
                    lease.release().await;
                }
                leader.finish(Shared::LoadYourself);
                return (R::from_value(value), outcome, load_time);
            }
        };
        // From here on, new callers start a load of their own: one that joined now could have
        // started after an invalidation that our write-back will not see.
        leader.close();
        let current = match (lease.take(), ttl) {
            (Some(lease), Some(ttl)) => lease.write_back(&bytes, policy.draw_ttl_ms(ttl)).await,
            (Some(lease), None) => lease.release().await,
            (None, _) => None,
        };
        let outcome = match current {
            Some(false) => {
                inner.stats.note(Event::StaleRefused, function);
                tracing::debug!(key = %keys.value, "an invalidation revoked this load; not stored");
                leader.finish(Shared::Reread);
                Outcome::StaleRefused
            }
            current => {
                // Only a load that started without a lease is an outage's value; one whose
                // lease's fate is unknown may have been revoked.
                let held = current == Some(true);
                leader.finish(Shared::Value {
                    bytes: Arc::from(bytes),
                    joined: if held { Joined::EVERYONE } else { joined },
                    unleased: !leased,
                });
                outcome
            }
        };
        (R::from_value(value), outcome, load_time)
    }

    /// Runs the loader, renewing the lease, for as long as it runs but at most `max_load`: past
    /// that the lease is released and the joiners read again, so callers here and in other
    /// processes load for themselves; this caller still waits for its own loader, whose
    /// write-back will be refused.
    async fn load_bounded<R: Cacheable>(
        &self,
        lease: Option<&LeaseGuard>,
        leader: &mut Leader<'_>,
        keys: &EntryKeys,
        policy: &Policy,
        loader: impl Future<Output = R>,
    ) -> R {
        let inner = &self.inner;
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
        tokio::select! {
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
        }
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
        // Armed while an ACQUIRE is in flight: if this caller is dropped before the reply, the
        // script may still have taken the lease, and dropping the claim releases it.
        let mut claim = LeaseGuard {
            cache: self.clone(),
            keys: keys.clone(),
            token: random::token(),
            lock_ms,
            armed: false,
        };
        let mut subscription = None;
        let mut waited = false;
        loop {
            let mut conn = inner.writes.clone();
            let acquire =
                lease::acquire(&mut conn, keys, &claim.token, lock_ms, corrupt.as_deref());
            claim.armed = true;
            // A value in the reply is fresh for the callers that joined before it was asked for.
            let joined = leader.joined();
            let reply = inner.guard.write(&inner.stats, "acquire", acquire).await;
            // After an error the outcome is unknown: stay armed so the claim is released.
            claim.armed = matches!(reply, Ok(Acquire::Leased) | Err(_));
            match reply {
                Err(e) if crate::guard::refuses_writes(&e) => return Lease::WritesRefused,
                Err(_) => return Lease::Unavailable,
                Ok(Acquire::Value(bytes)) => match codec::decode(&bytes) {
                    Ok(value) => return Lease::Value(bytes, value, joined),
                    Err(e) => {
                        self.undecodable(&keys.value, &e);
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
                    match &mut subscription {
                        // Subscribe first, then check again: nothing published after the check
                        // can be missed. Subscribing takes at most the lease's remaining time.
                        None => {
                            let wakeups = &inner.wakeups;
                            let sub = wakeups.subscribe(
                                &keys.channel,
                                until_expiry,
                                &inner.guard,
                                &inner.stats,
                            );
                            subscription = Some(sub.await);
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
        }
    }
}

/// How often a woken-by-message waiter checks the lease anyway: a lease can vanish without a
/// message (`FLUSHALL`, an eviction, a restart with an empty dataset), and its waiters must
/// notice well before the expiry they last saw.
fn recheck_every(lock_ttl: Duration) -> Duration {
    (lock_ttl / 4).clamp(POLL_WITHOUT_WAKEUPS, MAX_RECHECK)
}

/// A held lease. Dropped while armed (the loader panicked or the caller was cancelled), it
/// releases the lease in the background so waiters take over at once.
struct LeaseGuard {
    cache: Cache,
    keys: EntryKeys,
    token: String,
    lock_ms: u64,
    armed: bool,
}

impl LeaseGuard {
    /// Runs the loader while renewing the lease every third of its TTL, so a loader slower than
    /// `lock_ttl` keeps it. If the lease is lost (revoked by an invalidation, or expired while
    /// Redis was unreachable), another load may start; that is logged, and this load's
    /// write-back will be refused.
    /// Renewals stop after `max_load`, and the lease then expires on its own.
    async fn hold_while<R>(&self, loader: impl Future<Output = R>, max_load: Duration) -> R {
        let renewing = async {
            let every = Duration::from_millis((self.lock_ms / 3).max(1));
            let until = tokio::time::Instant::now() + max_load.min(crate::policy::LONGEST);
            while tokio::time::Instant::now() + every <= until {
                tokio::time::sleep(every).await;
                let inner = &self.cache.inner;
                let mut conn = inner.writes.clone();
                let op = lease::renew(&mut conn, &self.keys, &self.token, self.lock_ms);
                if let Ok(false) = inner.guard.write(&inner.stats, "renew", op).await {
                    tracing::warn!(
                        key = %self.keys.value,
                        "lease lost while loading (revoked by an invalidation, or expired): another load may run; this one will not be stored"
                    );
                    return std::future::pending::<std::convert::Infallible>().await;
                }
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::pin!(loader);
        tokio::select! {
            biased;
            result = &mut loader => result,
            never = renewing => match never {},
        }
    }

    /// Releases the lease while keeping the guard (the load goes on, its write-back will be
    /// refused), waking waiters so they take over now.
    async fn let_go(&self) {
        let inner = &self.cache.inner;
        let mut conn = inner.writes.clone();
        let publish = inner.writes.publish_command();
        let op = lease::release(&mut conn, &self.keys, &self.token, publish);
        let _ = inner.guard.write(&inner.stats, "release", op).await;
    }

    /// Stores the value if the lease is still ours: `Some(true)` stored, `Some(false)` revoked,
    /// `None` Redis did not answer. The guard stays armed until the reply, so a caller dropped
    /// mid-call (or a failed call) still releases the lease.
    async fn write_back(mut self, bytes: &[u8], ttl_ms: u64) -> Option<bool> {
        let inner = &self.cache.inner;
        let mut conn = inner.writes.clone();
        let publish = inner.writes.publish_command();
        let op = lease::write_back(&mut conn, &self.keys, &self.token, bytes, ttl_ms, publish);
        let stored = inner.guard.write(&inner.stats, "write-back", op).await.ok();
        self.armed = stored.is_none();
        stored
    }

    /// Lets the lease go: `Some(true)` it was still ours, `Some(false)` revoked, `None` unknown.
    async fn release(mut self) -> Option<bool> {
        let inner = &self.cache.inner;
        let mut conn = inner.writes.clone();
        let op = lease::release(
            &mut conn,
            &self.keys,
            &self.token,
            inner.writes.publish_command(),
        );
        let released = inner.guard.write(&inner.stats, "release", op).await.ok();
        self.armed = released.is_none();
        released
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cache = self.cache.clone();
        let keys = self.keys.clone();
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            let inner = &cache.inner;
            let mut conn = inner.writes.clone();
            let op = lease::release(&mut conn, &keys, &token, inner.writes.publish_command());
            let _ = inner.guard.write(&inner.stats, "release", op).await;
        });
    }
}
