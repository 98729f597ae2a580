//! Near-cache helpers: a cache with one, live, and calls repeated until one is a near hit.

use std::future::Future;
use std::time::Duration;

use cached_redis::Cache;

use crate::eventually;

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
    assert!(
        eventually(Duration::from_secs(10), || async { cache.near_is_live() }).await,
        "the tracking connection comes up"
    );
    cache
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
