//! Near-cache helpers: a cache with one, live, and calls repeated until one is a near hit.

use std::future::Future;
use std::time::Duration;

use cached_redis::Cache;

use crate::eventually;

/// Whether this run is the suite's near pass (`CACHED_REDIS_TEST_NEAR=1`): the caches
/// [`RedisServer::cache`](crate::RedisServer::cache) builds keep every function's values near
/// (`near_by_default`), so the engine's tests run with near copies in front of Redis.
pub fn near_pass() -> bool {
    std::env::var_os("CACHED_REDIS_TEST_NEAR").is_some_and(|v| v == "1")
}

/// `builder` with every function of its cache keeping its values near in the suite's near
/// pass ([`near_pass`]), as it is otherwise.
pub fn in_the_near_pass(builder: cached_redis::CacheBuilder) -> cached_redis::CacheBuilder {
    if near_pass() {
        builder
            .near_cache(10_000)
            .near_by_default(Duration::from_secs(30))
    } else {
        builder
    }
}

/// Waits until `cache`'s near cache, if it has one, has applied every invalidation Redis sent
/// before now. A test that writes Redis from another connection and then reads through the
/// cache waits for this in between: Redis's message reaches another client's copy after the
/// write's reply (within `near_max_lag`, the documented bound). Without a live near cache it
/// returns at once: no copy is served again before a heartbeat sent after now confirms that
/// every invalidation before it was applied.
pub async fn near_caught_up(cache: &Cache) {
    if !cache.near_is_live() {
        return;
    }
    let now = std::time::Instant::now();
    let applied = eventually(Duration::from_secs(10), || async {
        cached_redis::__private::near_applied_since(cache, now)
    });
    assert!(applied.await, "the near cache caught up with Redis");
}

/// A cache on `url` with a near cache allowing `lag`, once its tracking connection is live.
pub async fn near_cache(url: &str, namespace: &str, lag: Duration) -> Cache {
    near_cache_timed(url, namespace, lag, Duration::from_secs(5)).await
}

/// [`near_cache`] with Redis calls bounded by `op_timeout`: a test that holds a reply while it
/// waits for something else gives the held call room on a loaded machine.
pub async fn near_cache_timed(
    url: &str,
    namespace: &str,
    lag: Duration,
    op_timeout: Duration,
) -> Cache {
    let cache = Cache::builder(url)
        .namespace(namespace)
        .op_timeout(op_timeout)
        .near_cache(1_000)
        .near_max_lag(lag)
        .build()
        .await
        .expect("valid cache configuration");
    near_live(&cache).await;
    cache
}

/// A cache on `url` whose functions keep their values near for `keep` (`near_by_default`,
/// with room for 1,000 copies and a 5 s `op_timeout`), once its tracking connection is live.
pub async fn near_by_default_cache(url: &str, namespace: &str, keep: Duration) -> Cache {
    let cache = Cache::builder(url)
        .namespace(namespace)
        .op_timeout(Duration::from_secs(5))
        .near_cache(1_000)
        .near_by_default(keep)
        .build()
        .await
        .expect("valid cache configuration");
    near_live(&cache).await;
    cache
}

/// Waits until `cache`'s tracking connection is up and confirmed: its near copies may then be
/// served.
pub async fn near_live(cache: &Cache) {
    assert!(
        eventually(Duration::from_secs(10), || async { cache.near_is_live() }).await,
        "the tracking connection comes up"
    );
}

/// Makes `call` until one is a near hit of `cache` (the message for a value's own write-back
/// may drop the copy the next read kept, so the first Redis hit is not always kept).
pub async fn until_near_hit<F, Fut>(cache: &Cache, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let kept = eventually(Duration::from_secs(10), || {
        let before = cache.stats().near_hits;
        let called = call();
        async move {
            called.await;
            cache.stats().near_hits > before
        }
    })
    .await;
    assert!(kept, "a call is a near hit");
}
