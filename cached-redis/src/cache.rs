//! The cache handle: what a cache holds, and its operations on entries.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::conn::Conn;
use crate::conn::command::keyed;
use crate::conn::guard::Guard;
use crate::lease;
use crate::memory::Memory;
use crate::read::flight::Flights;
use crate::read::near::Near;
use crate::read::wake::Wakeups;
use crate::read::write_backs::WriteBacks;
use crate::stats::{Counters, Stats};
use crate::stored::codec;
use crate::stored::format::Format;
use crate::write::pending::Pending;
use crate::write::replicated::{Replicated, Report};
use crate::write::turns::UpdateQueue;
use crate::{Error, Key};

/// A handle to a Redis-backed cache: cheap to clone, shared by every cached function that uses
/// it. Inside are auto-reconnecting multiplexed connections for reads, for writes and for waiter
/// wake-ups.
///
/// ```no_run
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cached_redis::Error> {
/// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379")
///     .namespace("myapp")
///     .op_timeout(Duration::from_millis(100))
///     .lock_ttl(Duration::from_secs(5))
///     .build()
///     .await?;
/// cached_redis::set_global(cache);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Reads (GET, SCAN, PING) and writes (the lease scripts, invalidations) go over
    /// connections of their own: Redis runs one connection's commands in order, so a write
    /// held by a failover's `CLIENT PAUSE ... WRITE` would hold up every hit behind it.
    pub(crate) reads: Conn,
    pub(crate) writes: Conn,
    /// Set by [`Cache::disabled`] or an empty URL: every call runs its loader, Redis is never
    /// asked.
    pub(crate) disabled: bool,
    pub(crate) namespace: String,
    pub(crate) lock_ttl: Duration,
    /// The bound on one load; `None`: three lease TTLs.
    pub(crate) max_load: Option<Duration>,
    pub(crate) guard: Guard,
    pub(crate) stats: Counters,
    pub(crate) flights: Flights,
    /// The write-backs left running after their callers had their values.
    pub(crate) write_backs: WriteBacks,
    pub(crate) updates: UpdateQueue,
    pub(crate) wakeups: Wakeups,
    /// Set by [`CacheBuilder::near_cache`](crate::CacheBuilder::near_cache).
    pub(crate) near: Option<Near>,
    /// Set by [`Cache::in_memory`]: entries live in process memory, Redis is never asked.
    pub(crate) memory: Option<Memory>,
    /// Invalidations Redis did not take, until they are replayed.
    pub(crate) pending: Pending,
    /// Which request each function's calls start with.
    pub(crate) first_reads: crate::read::score::FirstReads,
    /// Keys answered by `fail_safe` lately, not loaded again for a moment.
    pub(crate) back_off: crate::read::back_off::BackOff,
    /// Whether the task replaying them runs.
    pub(crate) replaying: std::sync::atomic::AtomicBool,
    /// Set by [`CacheBuilder::invalidate_replicas`](crate::CacheBuilder::invalidate_replicas).
    pub(crate) replicated: Option<Replicated>,
    /// How values are written unless a policy says otherwise.
    pub(crate) format: Format,
    pub(crate) url: String,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .field("op_timeout", &self.inner.guard.op_timeout())
            .field("lock_ttl", &self.inner.lock_ttl)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Drops this process's near copy of `key`'s entry, if there is a near cache.
    pub(crate) fn forget_near(&self, key: &Key) {
        if let Some(near) = &self.inner.near {
            near.forget(key.as_str());
        }
    }
}

impl Inner {
    /// Where a replica confirmation's outcome is counted.
    pub(crate) fn report(&self) -> Report<'_> {
        Report {
            guard: &self.guard,
            stats: &self.stats,
        }
    }
}

impl Cache {
    /// A snapshot of the counters.
    ///
    /// ```
    /// let cache = cached_redis::Cache::disabled();
    /// assert_eq!(cache.stats().hits, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.stats.snapshot();
        if let Some(near) = &self.inner.near {
            let near = near.stats();
            stats.near_hits = near.hits;
            stats.near_entries = near.entries;
            stats.near_flushes = near.flushes;
            stats.near_rejected = near.rejected;
        }
        let pending = &self.inner.pending;
        stats.invalidations_pending = pending.len() as u64;
        stats.invalidations_replayed = pending.replayed.load(Ordering::Relaxed);
        stats.invalidations_dropped = pending.dropped.load(Ordering::Relaxed);
        stats
    }

    /// Sets every counter back to zero.
    ///
    /// ```
    /// let cache = cached_redis::Cache::disabled();
    /// cache.reset_stats();
    /// assert_eq!(cache.stats(), cached_redis::Stats::default());
    /// ```
    pub fn reset_stats(&self) {
        self.inner.stats.reset();
        if let Some(near) = &self.inner.near {
            near.reset_stats();
        }
        self.inner.pending.replayed.store(0, Ordering::Relaxed);
        self.inner.pending.dropped.store(0, Ordering::Relaxed);
    }

    /// The namespace every key of this cache starts with.
    ///
    /// ```
    /// assert_eq!(cached_redis::Cache::disabled().namespace(), "cache");
    /// ```
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Whether this cache is disabled ([`Cache::disabled`], or an empty URL): it never asks
    /// Redis, and every call runs its loader.
    ///
    /// ```
    /// assert!(cached_redis::Cache::disabled().is_disabled());
    /// ```
    pub fn is_disabled(&self) -> bool {
        self.inner.disabled
    }

    /// Whether near copies are served now: the cache has a
    /// [near cache](crate::CacheBuilder::near_cache) whose tracking connection is up and has
    /// confirmed, within the allowed lag, every invalidation Redis sent. While it is not, near
    /// hits go to Redis. For readiness probes and dashboards.
    ///
    /// ```
    /// assert!(!cached_redis::Cache::disabled().near_is_live());
    /// ```
    pub fn near_is_live(&self) -> bool {
        self.inner.near.as_ref().is_some_and(Near::is_live)
    }

    /// The Redis key under which `key`'s value is stored: `<namespace>:{<key>}`.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) {
    /// let key = cached_redis::Key::raw("user:42:v1");
    /// assert_eq!(cache.redis_key(&key), format!("{}:{{user:42:v1}}", cache.namespace()));
    /// # }
    /// ```
    pub fn redis_key(&self, key: &Key) -> String {
        lease::value_key(&self.inner.namespace, key).into_string()
    }

    /// Waits until the write-backs this process has started are done.
    ///
    /// On a miss, the caller gets the loaded value as soon as it is loaded, and the value is
    /// stored in Redis in the background: the miss costs the caller two round trips (the read
    /// and the lease), not three. Callers of the same key in this process wait for that
    /// store, and callers in other processes are woken by it, so no guarantee depends on it;
    /// call `settle` where a program needs the stores to have landed: before it exits (a
    /// write-back still running when the runtime shuts down is lost, and the entry is loaded
    /// again by the next caller), or in a test that looks at Redis right after a miss.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) {
    /// // At shutdown, after the server stopped taking requests:
    /// cache.settle().await;
    /// # }
    /// ```
    pub async fn settle(&self) {
        self.inner.write_backs.settled().await;
    }

    /// Asks Redis for `PING` (bounded by `op_timeout`, through the breaker) and returns how long
    /// the answer took: a health check for dashboards and readiness probes.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) {
    /// let reachable = cache.ping().await.is_ok();
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<Duration, Error> {
        let inner = &self.inner;
        if inner.disabled {
            return Err(Error::Disabled);
        }
        if inner.memory.is_some() {
            return Ok(Duration::ZERO);
        }
        let started = std::time::Instant::now();
        let mut conn = inner.reads.clone();
        let ping = redis::cmd("PING");
        inner
            .guard
            .read(&inner.stats, "PING", ping.query_async::<String>(&mut conn))
            .await?;
        Ok(started.elapsed())
    }

    /// How long Redis keeps `key`'s entry, or `None` if it is not cached. For a function with
    /// `stale` or `fail_safe` this is past the end of its TTL by that much: the entry is
    /// served stale (or kept for a failed load) after its TTL, until then.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let key = cached_redis::Key::builder().text("user:").part(&42u64).text(":v1").build();
    /// if let Some(left) = cache.ttl(&key).await? {
    ///     println!("cached for another {left:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ttl(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let inner = &self.inner;
        if inner.disabled {
            return Ok(None);
        }
        if let Some(memory) = &inner.memory {
            let found = memory.get(&lease::value_key(&inner.namespace, key));
            return Ok(found.map(|found| memory.remaining(&found)));
        }
        let mut conn = inner.reads.clone();
        let pttl = keyed("PTTL", &[lease::value_key(&inner.namespace, key).as_str()]);
        let millis = inner
            .guard
            .read(&inner.stats, "PTTL", pttl.query_async::<i64>(&mut conn))
            .await?;
        Ok(u64::try_from(millis).ok().map(Duration::from_millis))
    }

    /// How long `key`'s entry stays fresh: until its TTL ends, `Some(ZERO)` once it has (an
    /// entry of a function with `stale` or `fail_safe`, kept past it: see [`Cache::ttl`] for
    /// how long), `None` if it is not cached. For a function without those, the same as
    /// [`Cache::ttl`].
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let key = cached_redis::Key::raw("featured");
    /// if cache.fresh_for(&key).await? == Some(std::time::Duration::ZERO) {
    ///     println!("served stale while it is refreshed");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn fresh_for(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let inner = &self.inner;
        if inner.disabled || inner.memory.is_some() {
            return self.ttl(key).await;
        }
        let mut conn = inner.reads.clone();
        let get = keyed("GET", &[lease::value_key(&inner.namespace, key).as_str()]);
        let read = get.query_async::<Option<Vec<u8>>>(&mut conn);
        let Some(bytes) = inner.guard.read(&inner.stats, "GET", read).await? else {
            return Ok(None);
        };
        match codec::origin_of(&bytes).and_then(|origin| origin.fresh_ms()) {
            Some(ms) => Ok(Some(Duration::from_millis(ms))),
            None => self.ttl(key).await,
        }
    }
}
